"""What the match benches share: scoring a method on a labelled name list, and the same figures
for the matcher of another commit (`--compare-ref`), measured in the same run on the same machine,
the two timed in turn `--repeats` times (the median: a shared machine's load comes and goes)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# Run inside an export of another commit: its match_names, timed like ours (embedder loaded and
# warmed first, no caption cache), answering top-5 wnids per name.
_OTHER = """
import json, sys, time
from mll_index.index.embed import embedder_for
from mll_index.index.node_index import load_index
from mll_index.index.match import match_names
job = json.load(open(sys.argv[1]))
index = load_index(job["index"])
embedder = embedder_for(index.embedder)
embedder.encode(["warm up"])
started = time.perf_counter()
results = match_names(index, job["names"], embedder, k=5, cache=None)
seconds = time.perf_counter() - started
json.dump({"seconds": seconds, "top5": [[m.wnid for m in r] for r in results]}, open(sys.argv[2], "w"))
"""


def score_results(results: Sequence[Sequence[str]], truth: Sequence[str], groups: Sequence[str] | None = None,
                  seconds: float | None = None) -> dict[str, Any]:
    """top1 / top5 (and per group) of top-5 wnid lists against the true wnids."""
    n = len(truth)
    hit1 = [bool(r) and r[0] == w for r, w in zip(results, truth)]
    hit5 = [w in r[:5] for r, w in zip(results, truth)]
    out: dict[str, Any] = {"top1": round(sum(hit1) / n, 4), "top5": round(sum(hit5) / n, 4)}
    if groups is not None:
        out["by_frequency"] = {}
        for g in sorted(set(groups)):
            rows = [i for i, x in enumerate(groups) if x == g]
            out["by_frequency"][g] = {"top1": round(sum(hit1[i] for i in rows) / len(rows), 4),
                                      "top5": round(sum(hit5[i] for i in rows) / len(rows), 4), "names": len(rows)}
    if seconds is not None:
        out["seconds_per_name"] = round(seconds / n, 5)
    return out


class MatcherAt:
    """The default matcher of commit `ref`, exported once with git archive and run in a subprocess
    per call (the subprocess's start and model load are not timed). Use as a context manager."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self._tmp = tempfile.TemporaryDirectory()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "mll_index"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", self._tmp.name], input=archive, check=True)

    def __enter__(self) -> MatcherAt:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()

    def run(self, index: Path, names: Sequence[str]) -> dict[str, Any]:
        """{"seconds": float, "top5": [[wnid, ...] per name]}; `names` must be distinct (older matchers refuse repeats)."""
        tmp = Path(self._tmp.name)
        job, answer = tmp / "job.json", tmp / "answer.json"
        job.write_text(json.dumps({"index": str(Path(index).resolve()), "names": list(names)}))
        env = {**os.environ, "PYTHONPATH": str(tmp)}
        subprocess.run([sys.executable, "-c", _OTHER, str(job), str(answer)], check=True, cwd=tmp, env=env)
        return json.loads(answer.read_text())


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def timed(fn):  # type: ignore[no-untyped-def]
    """(result, seconds) of fn()."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def run_methods(index: Any, names: Sequence[str], embedder: Any, repeats: int, compare_ref: str | None,
                index_path: Path) -> dict[str, Any]:
    """Every match method over `names` (no caption cache), and `compare_ref`'s matcher in turn with them.

    Returns {"answers": {method: [[wnid]*5 per name]}, "combined": the default method's Match lists,
    "seconds": {method: [run seconds]}, "ref_top5": {name: [wnid]} or None, "ref_seconds": [per run,
    scaled to len(names)]}. The reference gets the distinct names (older matchers refuse repeats).
    """
    from mll_index.index.match import METHODS, Matcher, match_names

    unique = list(dict.fromkeys(names))
    out: dict[str, Any] = {"answers": {}, "combined": None, "seconds": {m: [] for m in METHODS},
                           "ref_top5": None, "ref_seconds": []}
    with contextlib.ExitStack() as stack:
        other = stack.enter_context(MatcherAt(compare_ref)) if compare_ref else None
        for _ in range(repeats):
            for method in METHODS:
                # A fresh matcher per run: its per-index work (prior, caches) is part of the cost.
                results, spent = timed(lambda: match_names(index, list(names), embedder, k=5, method=method,
                                                           cache=None, matcher=Matcher(index)))
                out["seconds"][method].append(spent)
                out["answers"][method] = [[m.wnid for m in r] for r in results]
                if method == "combined":
                    out["combined"] = results
            if other is not None:
                answer = other.run(index_path, unique)
                out["ref_top5"] = dict(zip(unique, answer["top5"]))
                out["ref_seconds"].append(answer["seconds"] * len(names) / len(unique))
    return out
