"""The corruption sweep: every file kind an index holds, flipped, truncated and deleted, against
`info --verify` and `select`.

On a hard-linked copy of the index (a corrupted file is always written anew and renamed in, so the
source index's files are never written), each file kind (one file per kind: a model's label folder
stands for all of them, a shard for all shards) is damaged three ways:

- flip: the byte in the middle of the file inverted;
- truncate: the file cut to half its size;
- delete: the file removed.

Each case runs in a fresh process (no in-process cache can hide the damage): `check_index` and
`check_rule` with checksums (what `info --verify` runs), then `select` on a few tasks (auto
labels and mode; one task with a domain word; published labels where the index has them). A case is

- named_by_verify: a verify line names the damaged file;
- refused: select raised an mll-index error (one line) on some task;
- warned: select's answer changed, and its warnings (the answer's, or a logged warning) grew;
- silent_change: select's answer changed without an error or a new warning (the bar: 0);
- crashed: select raised something that is no mll-index error (a traceback for a user).

    python bench/robustness_corruption.py [--index indexes/default] [--name robustness_corruption]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import linked_copy, write_results  # noqa: E402

ACTIONS = ("flip", "truncate", "delete")
CLASSES = ["tiger", "lion", "banana", "laptop", "pizza"]
VOLATILE = {"seconds", "timing", "elapsed"}      # answer fields that differ run to run
_KIND_RULES = [(re.compile(r"^labels/samples-[^/]+\.topk/"), "labels/samples-<fp>.topk/"),
               (re.compile(r"^labels/samples-[^/]+\.json$"), "labels/samples-<fp>.json"),
               (re.compile(r"/shard-\d+/"), "/shard-<n>/"), (re.compile(r"/log-\d+\.jsonl$"), "/log-<n>.jsonl"),
               (re.compile(r"-\d+\.(npy|jsonl)$"), r"-<k>.\1")]


def file_kind(rel: str) -> str:
    """A file's kind: its path in the index with model folders, fingerprints and numbers made generic."""
    for pattern, generic in _KIND_RULES:
        rel = pattern.sub(generic, rel)
    parts = rel.split("/")
    if len(parts) == 3 and parts[0] == "labels" and parts[1] != "matrix" and not parts[1].startswith("samples-"):
        rel = f"labels/<model>/{parts[2]}"
    return rel


def file_kinds(index: Path) -> dict[str, Path]:
    """Kind -> one file of it (the first in sorted order), for every file the index holds."""
    out: dict[str, Path] = {}
    for path in sorted(p for p in index.rglob("*") if p.is_file()):
        rel = path.relative_to(index).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue                # the writer lock, temporary and hidden files
        out.setdefault(file_kind(rel), path)
    return out


def _replace(file: Path, data: bytes) -> None:
    """Write `data` as a new file renamed over `file`: never into the inode it may share with the source."""
    tmp = file.with_name(f".{file.name}.corrupt")
    tmp.write_bytes(data)
    os.replace(tmp, file)


def corrupt(file: Path, action: str) -> None:
    """Apply one of ACTIONS to `file` (a new file renamed in, or the link removed)."""
    if action == "delete":
        file.unlink()
        return
    data = bytearray(file.read_bytes())
    if action == "flip":
        if data:
            data[len(data) // 2] ^= 0xFF
        _replace(file, bytes(data))
    elif action == "truncate":
        _replace(file, bytes(data[:len(data) // 2]))
    else:
        raise ValueError(f"unknown action {action!r}; choose among {list(ACTIONS)}")


def restore(source: Path, file: Path) -> None:
    """Put the source's file back in the copy (a hard link renamed in)."""
    tmp = file.with_name(f".{file.name}.restore")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)
    os.replace(tmp, file)


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def default_tasks(index: Path) -> list[dict[str, Any]]:
    """The tasks each case selects: auto labels, the same with a domain word, published labels if any."""
    tasks: list[dict[str, Any]] = [{"classes": CLASSES}, {"classes": CLASSES, "domain": "sketch"}]
    if (index / "published").is_dir():
        tasks.append({"classes": CLASSES, "labels": "published"})
    return tasks


def probe(index: Path, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """What verify says and what select answers on `index` (run in a fresh process by `corruption_sweep`)."""
    from mll_index.errors import MLLIndexError
    from mll_index.selection.calibrated_rule import check_rule
    from mll_index.selection.selector import open_selector, select_models
    from mll_index.selection.task import make_task
    from mll_index.verify import check_index

    logged: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: logged.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    try:
        problems = check_index(index, checksums=True) + check_rule(index, checksums=True)
    except MLLIndexError as exc:
        problems = [str(exc)]
    answers: list[dict[str, Any]] = []
    for spec in tasks:
        before = len(logged)
        try:
            task = make_task(spec["classes"], domain=spec.get("domain"))
            settings = {k: v for k, v in spec.items() if k not in ("classes", "domain")}
            answer = _stable(select_models(open_selector(index), task, k=1, **settings).to_dict())
            answers.append({"answer": answer, "logged": logged[before:]})
        except MLLIndexError as exc:
            answers.append({"error": str(exc)})
        except Exception as exc:  # noqa: BLE001  (counted as a crash: what a user would see as a traceback)
            answers.append({"crash": f"{type(exc).__name__}: {exc}"})
    return {"problems": problems, "answers": answers}


def _probe_in_process(index: Path, tasks: list[dict[str, Any]], timeout: float = 300) -> dict[str, Any]:
    run = subprocess.run([sys.executable, __file__, "--probe", str(index), json.dumps(tasks)],
                         capture_output=True, text=True, timeout=timeout)
    if run.returncode != 0:
        return {"problems": [], "answers": [{"crash": run.stderr.strip()[-300:]} for _ in tasks]}
    return json.loads(run.stdout.strip().splitlines()[-1])


def judge(file: Path, base: dict[str, Any], seen: dict[str, Any]) -> dict[str, Any]:
    """One case's verdicts (see the module docstring) from the clean and the damaged probes."""
    # A line names the file by its path, or by its folder and name ("<index> ... (no manifest.json)").
    named = any(str(file) in p or (str(file.parent) in p and file.name in p) for p in seen["problems"])
    refused = crashed = warned = silent = False
    for clean, damaged in zip(base["answers"], seen["answers"]):
        if "error" in damaged:
            refused = refused or "error" not in clean
        elif "crash" in damaged:
            crashed = True
        elif "answer" in clean and damaged["answer"] != clean["answer"]:
            grew = (len(damaged["answer"].get("warnings", [])) > len(clean["answer"].get("warnings", []))
                    or len(damaged["logged"]) > len(clean["logged"]))
            warned, silent = warned or grew, silent or not grew
    return {"named_by_verify": named, "refused": refused, "warned": warned, "silent_change": silent,
            "crashed": crashed, "problems": seen["problems"][:3],
            "errors": [a.get("error") or a.get("crash") for a in seen["answers"] if "answer" not in a][:2]}


def corruption_sweep(index: Path, *, tasks: list[dict[str, Any]] | None = None,
                     actions: tuple[str, ...] = ACTIONS, scratch: Path | None = None,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Flip, truncate and delete one file of every kind `index` holds, each on a linked copy, and count.

    Returns:
        {"cases", "named_by_verify", "refused", "warned", "silent_change", "crashed": counts over the
        cases; "kinds": the number of file kinds; "baseline_problems": verify's lines on the clean
        copy; "per_case": kind -> action -> the case's verdicts, its first verify lines and errors}.
    """
    index = Path(index).resolve()
    tasks = tasks or default_tasks(index)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        copy = linked_copy(index, Path(tmp) / "index")
        base = _probe_in_process(copy, tasks)
        per_case: dict[str, dict[str, Any]] = {}
        for kind, source in file_kinds(index).items():
            target = copy / source.relative_to(index)
            for action in actions:
                corrupt(target, action)
                try:
                    per_case.setdefault(kind, {})[action] = judge(target, base, _probe_in_process(copy, tasks))
                finally:
                    restore(source, target)
                if progress:
                    progress(f"{kind} {action}: {per_case[kind][action]}")
    cases = [c for by_action in per_case.values() for c in by_action.values()]
    counts = {key: sum(bool(c[key]) for c in cases)
              for key in ("named_by_verify", "refused", "warned", "silent_change", "crashed")}
    return {"cases": len(cases), **counts, "kinds": len(per_case), "baseline_problems": base["problems"],
            "tasks": tasks, "per_case": per_case}


def summary(result: dict[str, Any]) -> str:
    """A Markdown table: one row per file kind and action."""
    lines = ["# Corruption sweep", "",
             f"{result['cases']} cases ({result['kinds']} file kinds x flip, truncate, delete): named by verify "
             f"{result['named_by_verify']}, select refused {result['refused']}, warned {result['warned']}, "
             f"silent answer changes **{result['silent_change']}**, crashes {result['crashed']}.", "",
             "| file kind | action | named by verify | refused | warned | silent change |", "|---|---|---|---|---|---|"]
    for kind, by_action in result["per_case"].items():
        for action, c in by_action.items():
            marks = ["yes" if c[k] else "" for k in ("named_by_verify", "refused", "warned", "silent_change")]
            lines.append(f"| {kind} | {action} | " + " | ".join(marks) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("indexes/default"))
    parser.add_argument("--name", default="robustness_corruption")
    parser.add_argument("--probe", nargs=2, metavar=("INDEX", "TASKS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(Path(args.probe[0]), json.loads(args.probe[1]))))
        return
    result = corruption_sweep(args.index, progress=lambda line: print(line[:200], flush=True))
    counts = {k: v for k, v in result.items() if k not in ("per_case", "baseline_problems", "tasks")}
    print(json.dumps(counts))
    write_results(args.name, result, summary(result))


if __name__ == "__main__":
    main()
