"""What every bench script records beside its figures: the command, the machine, the versions."""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def cpu() -> dict[str, Any]:
    """The CPU: model name, torch's capability level (AVX2, AVX512, ...), native bf16, cores."""
    model, flags = "", []
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    try:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    except ImportError:
        capability = None
    return {"model": model, "cpu_capability": capability, "cores": os.cpu_count(),
            "native_bf16": any(f in flags for f in ("avx512_bf16", "amx_bf16")),
            "avx512f": "avx512f" in flags}


def machine() -> dict[str, Any]:
    """CPU, cores, memory, Python and library versions of this run."""
    try:
        with open("/proc/meminfo") as handle:
            mem_kb = int(handle.readline().split()[1])
    except OSError:
        mem_kb = 0
    versions = {}
    for dist in ("mll-index", "numpy", "faiss-cpu", "torch", "sentence-transformers", "open_clip_torch", "nltk",
                 "onnxruntime", "tokenizers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"cpu": cpu(), "cpus": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1), "platform": platform.platform(),
            "processor": platform.machine(), "python": platform.python_version(), "versions": versions}


def write_results(name: str, figures: dict[str, Any], markdown: str) -> Path:
    """Write results/<name>.json (figures + command + machine + date) and results/<name>.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **figures}
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    (RESULTS / f"{name}.md").write_text(markdown)
    return path


def linked_copy(index: Path, target: Path, leave_out: tuple[str, ...] = (".lock",)) -> Path:
    """The index's files hard-linked into `target` (copied where a link cannot cross devices), without the
    names in `leave_out`. Writers replace files by renaming, so the copy's writes never reach the index;
    a bench that writes into files in place needs a full copy (`shutil.copytree`)."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    shutil.copytree(index, target, copy_function=link, ignore=shutil.ignore_patterns(*leave_out))
    return target
