"""Speed on the CPU at hand: every text-embedder runtime and precision, CLI start-up, set-up and the test suite.

    python bench/portable.py [--index indexes/default] [--runs 10] [--tests]

Records, with the CPU (model name, torch's capability level, native bf16, cores):
- `embed_texts_per_s` and `cosine_to_fp32`, keyed by runtime@precision: short texts (class names)
  and long ones (node captions with their gloss), each embedder timed after a warm-up batch, and
  the cosine of its vectors to torch fp32 (min over the texts);
- the CLI's cold-start medians, each run a fresh process (hyperfine when installed, else a loop of
  subprocesses): `mll-index select` of a 20-class task from the index with the emoji world's labels,
  with a warm and a cold caption cache, and `mll-index match` of one name;
- the set-up time split by step, as `bash setup.sh` logged it in <cache>/setup_times.json;
- with --tests, the wall time of the README's test command.

Figures drift on shared machines: compare the ratios of one run, not runs of different days.
Writes bench/results/portable.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu, write_results  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EMBEDDERS = {"onnxruntime@fp32": "minilm@fp32/onnx", "torch@fp32": "minilm@fp32/torch", "torch@bf16": "minilm@bf16"}


def _texts(index: Path, n: int) -> dict[str, list[str]]:
    """Short texts (node lemmas, as class names are) and long ones (node captions) from the index's node table."""
    short, long = [], []
    with open(index / "nodes.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            short.append(row["synset"].split(".")[0].replace("_", " "))
            long.append(max(row["captions"], key=len))
            if len(long) >= 20 * n:
                break
    rng = np.random.default_rng(0)
    pick = lambda xs: [xs[i] for i in rng.choice(len(xs), n, replace=False)]  # noqa: E731
    return {"short": pick(list(dict.fromkeys(short))), "long": pick(long)}


def embedder_figures(texts: dict[str, list[str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """texts/s and cosine to torch fp32 of every embedder that loads here."""
    from mll_index.index.embed import load_embedder

    speed: dict[str, Any] = {}
    vectors: dict[str, dict[str, np.ndarray]] = {}
    for key, spec in EMBEDDERS.items():
        try:
            embedder = load_embedder(spec)
        except Exception as exc:  # noqa: BLE001 - a runtime not installed here is reported, not fatal
            speed[key] = f"not available: {exc}"
            continue
        speed[key], vectors[key] = {}, {}
        for kind, items in texts.items():
            embedder.encode(items[:32])  # warm-up: first-call allocations and thread start-up
            started = time.perf_counter()
            vectors[key][kind] = embedder.encode(items)
            speed[key][kind] = round(len(items) / (time.perf_counter() - started), 1)
        print(f"{key}: {speed[key]} texts/s", flush=True)
    reference = vectors.get("torch@fp32")
    cosine = {}
    for key, by_kind in vectors.items():
        if reference is not None:
            cosine[key] = {kind: round(float(np.min(np.sum(v.astype(np.float64) * reference[kind], axis=1))), 7)
                           for kind, v in by_kind.items()}
    return speed, cosine


def _bench_cache() -> Path:
    """A cache folder sharing the real one's prepared data (WordNet, the ONNX export) but not its embeddings."""
    from mll_index.core.paths import cache_dir

    real = cache_dir()
    folder = Path(tempfile.mkdtemp(prefix="mll-portable-"))
    for entry in real.iterdir():
        if not entry.name.startswith("embeddings.sqlite"):
            (folder / entry.name).symlink_to(entry)
    return folder


def _time_command(argv: list[str], runs: int, env: dict[str, str], prepare: str | None = None) -> dict[str, Any]:
    """Median and spread of the command's wall time, a fresh process per run."""
    if shutil.which("hyperfine"):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = ["hyperfine", "--runs", str(runs), "--warmup", "1", "--export-json", out.name, "--style", "none",
                   "--command-name", argv[1], *(["--prepare", prepare] if prepare else []),
                   " ".join(_quote(a) for a in argv)]
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            times = json.loads(Path(out.name).read_text())["results"][0]["times"]
        tool = "hyperfine"
    else:
        times = []
        for i in range(runs + 1):
            if prepare:
                subprocess.run(prepare, shell=True, env=env, check=True)
            started = time.perf_counter()
            subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
            if i:  # the first run is a warm-up, as hyperfine's
                times.append(time.perf_counter() - started)
        tool = "subprocess loop"
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "runs": len(times), "tool": tool}


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def cli_figures(index: Path, runs: int) -> dict[str, Any]:
    """Fresh-process times of select (warm and cold caption cache) and match."""
    from mll_index.world import load_world

    world = load_world("full")
    task = [c for t in world.tasks for c in t.class_names]
    classes = list(dict.fromkeys(task))[:20]
    cache = _bench_cache()
    env = {**os.environ, "MLL_INDEX_CACHE": str(cache)}
    exe = shutil.which("mll-index") or "mll-index"
    select = [exe, "select", "--index", str(index), *classes]
    try:
        warm = _time_command(select, runs, env)
        cold = _time_command(select, runs, env, prepare=f"rm -f {_quote(str(cache))}/embeddings.sqlite*")
        match = _time_command([exe, "match", "--index", str(index), "tiger"], runs, env)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {"classes": classes, "select_warm": warm, "select_cold": cold, "match": match}


def setup_figures(path: Path | None = None) -> dict[str, Any] | None:
    """The step times `setup.sh` logged (<cache>/setup_times.json, or the log of another cache's run)."""
    from mll_index.core.paths import cache_dir

    path = path or cache_dir() / "setup_times.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=REPO / "indexes" / "default")
    parser.add_argument("--texts", type=int, default=256, help="Texts per kind (short, long) and embedder.")
    parser.add_argument("--runs", type=int, default=10, help="Runs per CLI command.")
    parser.add_argument("--tests", action="store_true", help="Also time the README's test command.")
    parser.add_argument("--setup-times", type=Path, default=None,
                        help="setup_times.json of a set-up run [default: <cache>/setup_times.json]; a fresh-machine "
                             "run: MLL_INDEX_CACHE=$(mktemp -d) bash setup.sh in a fresh clone.")
    args = parser.parse_args()

    machine_cpu = cpu()
    print(f"CPU: {machine_cpu}", flush=True)
    speed, cosine = embedder_figures(_texts(args.index, args.texts))
    cli = cli_figures(args.index, args.runs)
    print(f"CLI: {cli}", flush=True)
    setup = setup_figures(args.setup_times)
    suite = None
    if args.tests:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=REPO, check=False)
        suite = round(time.perf_counter() - started, 1)
    figures = {
        "cpu_capability": machine_cpu["cpu_capability"], "cpu_model": machine_cpu["model"],
        "native_bf16": machine_cpu["native_bf16"], "texts_per_kind": args.texts,
        "embed_texts_per_s": speed, "cosine_to_fp32": cosine,
        "cli_select_warm_s": cli["select_warm"]["median_s"], "cli_select_cold_s": cli["select_cold"]["median_s"],
        "cli_match_s": cli["match"]["median_s"], "cli": cli,
        "setup_to_demo_s": setup.get("total_s") if setup else None, "setup_steps_s": setup,
        "test_suite_s": suite,
    }
    lines = [f"# Portable speed on {machine_cpu['model']} ({machine_cpu['cpu_capability']}, "
             f"native bf16: {machine_cpu['native_bf16']}, {machine_cpu['cores']} cores)", "",
             "## Text embedders (all-MiniLM-L6-v2)", "",
             "| runtime@precision | short texts/s | long texts/s | cosine to torch fp32 (min) |", "|---|---|---|---|"]
    for key, value in speed.items():
        if isinstance(value, dict):
            lines.append(f"| {key} | {value['short']} | {value['long']} | "
                         f"{cosine.get(key, {}).get('short', '')} / {cosine.get(key, {}).get('long', '')} |")
        else:
            lines.append(f"| {key} | {value} | | |")
    lines += ["", "## CLI, a fresh process per run (median of "
              f"{cli['match']['runs']}, {cli['match']['tool']})", "", "| command | median s | min | max |", "|---|---|---|---|"]
    for name, key in (("select, 20 classes, warm caption cache", "select_warm"),
                      ("select, 20 classes, cold caption cache", "select_cold"), ("match tiger", "match")):
        r = cli[key]
        lines.append(f"| {name} | {r['median_s']} | {r['min_s']} | {r['max_s']} |")
    if setup:
        lines += ["", "## Set-up (bash setup.sh), by step", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in setup.items()]
    if suite is not None:
        lines += ["", f"Test suite (`python3 -m pytest -q`): {suite} s"]
    path = write_results("portable", figures, "\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
