"""Fault injection against a copy of an index: writers at once, readers during writes, kill -9.

    python3 bench/faults.py --index COPY [--kills 20] [--seed 0] [--hub HUB --samples DIR --model ID]

Point it only at a copy: it adds nodes, relabels and rewrites the index. The two entry points
are plain functions that bench/robustness.py (and the tests) call:

    run_races(index)          -> writes_lost, reads, reads_failed, and what each pair of writers did
    run_kills(index, n, seed) -> kills, loads_failed, verify_failed, temp_bytes_seen, temp_bytes_left

Writers are the real command line (`python3 -m mll_index.cli`) or, for the kill loops, a child
running the package's writer functions over and over, killed with SIGKILL at a seeded moment.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mll_index.index.node_index import add_nodes, index_leftovers, load_index, load_index_graph
from mll_index.labels.folders import labeled_models
from mll_index.labels.matrix import has_matrix, open_matrix
from mll_index.verify import check_index


def _start(args: list[str]) -> subprocess.Popen[str]:
    """A child python in the checkout (its package, not an installed one), output captured."""
    return subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def cli(*args: str) -> subprocess.Popen[str]:
    """Start `mll-index ARGS` as a user would run it."""
    return _start(["-m", "mll_index.cli", *args])


def fresh_wnids(index: Path, n: int, seed: int = 0) -> list[str]:
    """n WordNet noun synsets the index does not hold, drawn with a seed."""
    graph = load_index_graph(index)
    present = {graph.wnids[r] for r in graph.nodes}
    pool = sorted(w for w in graph.wnids if w not in present)
    rng = np.random.default_rng(seed)
    return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]


def _nodes(index: Path) -> set[str]:
    graph = load_index_graph(index)
    return {graph.wnids[r] for r in graph.nodes}


def _finish(proc: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _added(out: str) -> int:
    try:
        return int(json.loads(out)["added"])
    except (ValueError, KeyError, TypeError):
        return 0


def race_add_add(index: Path, n: int = 30, seed: int = 1) -> dict[str, Any]:
    """Two add-nodes of n disjoint wnids each, started together; lost: wnids reported added but absent."""
    wnids = fresh_wnids(index, 2 * n, seed)
    parts = [wnids[:n], wnids[n:]]
    procs = [cli("add-nodes", "--index", str(index), *part) for part in parts]
    results = [_finish(p) for p in procs]
    nodes = _nodes(index)
    lost = sum(len([w for w in part if w not in nodes]) for part, (rc, out, _) in zip(parts, results)
               if rc == 0 and _added(out) == len(part))
    return {"exit": [r[0] for r in results], "added": [_added(r[1]) for r in results], "lost": lost,
            "waited": sum("waiting for another writer" in r[2] for r in results),
            "stderr": [r[2].strip()[-300:] for r in results if r[0]]}


def race_add_label(index: Path, hub: Path, samples: Path, model: str, n: int = 30, seed: int = 2) -> dict[str, Any]:
    """add-nodes and `label --model` started together; lost: a reported label or node that is absent."""
    wnids = fresh_wnids(index, n, seed)
    grow = cli("add-nodes", "--index", str(index), *wnids)
    label = cli("label", "--index", str(index), "--hub", str(hub), "--samples", str(samples), "--model", model,
                "--device", "cpu")
    (g_rc, g_out, g_err), (l_rc, l_out, l_err) = _finish(grow), _finish(label)
    nodes = _nodes(index)
    lost = len([w for w in wnids if w not in nodes]) if g_rc == 0 and _added(g_out) == n else 0
    if l_rc == 0 and f"labeled  {model}" in l_out:
        held = open_matrix(index).model_ids if has_matrix(index) else []
        lost += (model not in labeled_models(index)) + (model not in held)
    return {"exit": [g_rc, l_rc], "lost": lost,
            "waited": ("waiting for another writer" in g_err) + ("waiting for another writer" in l_err),
            "stderr": [e.strip()[-300:] for rc, e in ((g_rc, g_err), (l_rc, l_err)) if rc]}


def race_add_compact(index: Path, n: int = 30, seed: int = 3) -> dict[str, Any]:
    """add-nodes and `labels compact` started together; lost: a reported compaction undone (the matrix
    holds another number of shards or fewer models) or a reported node that is absent."""
    wnids = fresh_wnids(index, n, seed)
    models_before = set(open_matrix(index).model_ids) if has_matrix(index) else set()
    grow = cli("add-nodes", "--index", str(index), *wnids)
    compact = cli("labels", "compact", "--index", str(index))
    (g_rc, g_out, g_err), (c_rc, c_out, c_err) = _finish(grow), _finish(compact)
    nodes = _nodes(index)
    lost = len([w for w in wnids if w not in nodes]) if g_rc == 0 and _added(g_out) == n else 0
    if c_rc == 0 and has_matrix(index):
        report = json.loads(c_out)
        matrix = open_matrix(index)
        lost += (len(matrix.shards) != report.get("shards_after", len(matrix.shards)))
        lost += len(models_before - set(matrix.model_ids))
    return {"exit": [g_rc, c_rc], "lost": lost,
            "waited": ("waiting for another writer" in g_err) + ("waiting for another writer" in c_err),
            "stderr": [e.strip()[-300:] for rc, e in ((g_rc, g_err), (c_rc, c_err)) if rc]}


READER = textwrap.dedent("""
    import json, sys, traceback
    from pathlib import Path
    import numpy as np
    from mll_index.index.node_index import load_index
    from mll_index.labels.matrix import has_matrix, open_matrix
    index, stop = Path(sys.argv[1]), Path(sys.argv[2])
    reads = failed = 0
    errors = []
    print("ready", flush=True)
    while True:
        last = stop.exists()
        try:
            loaded = load_index(index)
            n = int(loaded.manifest["counts"]["nodes"])
            assert loaded.size == n == len(loaded.vectors), (loaded.size, n, len(loaded.vectors))
            _, top = loaded.search(np.asarray(loaded.vectors[-1:], np.float32), 1)
            assert top[0, 0] >= 0
            if has_matrix(index):
                open_matrix(index).dense()
        except Exception as exc:
            failed += 1
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
        reads += 1
        if last:
            break
    print(json.dumps({"reads": reads, "reads_failed": failed, "errors": errors[:5]}), flush=True)
""")


def start_reader(index: Path, stop: Path) -> subprocess.Popen[str]:
    """A reader loading and searching the index (and its label matrix) until `stop` exists; it prints
    "ready" when it starts and then a JSON line: reads, reads_failed, errors."""
    proc = _start(["-c", READER, str(index), str(stop)])
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def stop_reader(proc: subprocess.Popen[str], stop: Path) -> dict[str, Any]:
    stop.touch()
    rc, out, err = _finish(proc)
    if rc != 0:
        return {"reads": 0, "reads_failed": 1, "errors": [err.strip()[-300:]]}
    return json.loads(out.strip().splitlines()[-1])


def race_readers(index: Path, rounds: int = 3, n: int = 10, seed: int = 4) -> dict[str, Any]:
    """A reader looping while `rounds` add-nodes run one after another."""
    wnids = fresh_wnids(index, rounds * n, seed)
    with tempfile.TemporaryDirectory() as scratch:
        stop = Path(scratch) / "stop"
        reader = start_reader(index, stop)
        for r in range(rounds):
            _finish(cli("add-nodes", "--index", str(index), *wnids[r * n:(r + 1) * n]))
        return stop_reader(reader, stop)


def run_races(index: Path, hub: Path | None = None, samples: Path | None = None,
              model: str | None = None) -> dict[str, Any]:
    """Every race on `index` (a copy: it grows): add-nodes with add-nodes, with labels compact, with
    `label --model` (when a hub, sample folder and a model not yet labeled are given), and readers
    during growth. Returns writes_lost, reads, reads_failed and each race's details."""
    index = Path(index)
    pairs = {"add_add": race_add_add(index), "add_compact": race_add_compact(index)}
    if hub and samples and model:
        pairs["add_label"] = race_add_label(index, hub, samples, model)
    readers = race_readers(index)
    return {"writes_lost": sum(p["lost"] for p in pairs.values()), "reads": readers["reads"],
            "reads_failed": readers["reads_failed"], "pairs": pairs, "reader_errors": readers["errors"]}


# --- kill -9 --------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    from mll_index.index.node_index import add_nodes, compact_index, load_index_graph
    from mll_index.labels.matrix import append_labels, compact_matrix
    index, kind, seed = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(seed)
    graph = load_index_graph(index)
    present = {graph.wnids[r] for r in graph.nodes}
    pool = [w for w in graph.wnids if w not in present]
    nodes = sorted(present)
    print("ready", flush=True)
    for step in range(10 ** 6):
        if kind == "grow":
            add_nodes(index, [pool[i] for i in rng.choice(len(pool), 8, replace=False)])
        elif kind == "rebuild":
            compact_index(index)
        elif step % 4 == 3:
            compact_matrix(index)
        else:
            counts = rng.integers(0, 5, (len(nodes), 1, 3))
            append_labels(index, nodes, [(f"fault-{seed}-{step}", {"id": f"fault-{seed}-{step}"})], counts)
""")
KINDS = ("rebuild", "labels", "grow")


def run_kills(index: Path, n: int, seed: int = 0, window: float = 1.0) -> dict[str, Any]:
    """Kill -9 a writer of `index` (a copy) n times, at a seeded moment within `window` seconds of
    its start: in turn one rebuilding the index (`compact_index`, the folder swap of a build), one
    appending labels and compacting the matrix, one adding nodes.

    After each kill the index must load and verify (every checksum), and the next writer (an
    add-nodes that finds nothing to add: it takes the lock) must clear what the kill left.
    Returns kills, loads_failed, verify_failed, temp_bytes_seen (left by the kills, summed),
    temp_bytes_left (still there after the next writer, summed) and the errors seen.
    """
    index = Path(index)
    rng = np.random.default_rng(seed)
    anchor = min(_nodes(index))
    out: dict[str, Any] = {"kills": 0, "loads_failed": 0, "verify_failed": 0, "temp_bytes_seen": 0,
                           "temp_bytes_left": 0, "errors": []}
    for i in range(n):
        proc = _start(["-c", WRITER, str(index), KINDS[i % len(KINDS)], str(seed * 1000 + i)])
        assert proc.stdout is not None
        ready = proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0, window)))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            out["kills"] += 1
        _, err = proc.communicate()
        if not ready or proc.returncode not in (-signal.SIGKILL, 0):
            out["errors"].append(f"writer {KINDS[i % len(KINDS)]} failed: {err.strip()[-300:]}")
        try:
            load_index(index)
        except Exception as exc:  # noqa: BLE001 - counted, the run goes on
            out["loads_failed"] += 1
            out["errors"].append(f"load after kill {i}: {exc}")
        try:
            problems = check_index(index, checksums=True)   # what `info --verify` checks
        except Exception as exc:  # noqa: BLE001
            problems = [f"{type(exc).__name__}: {exc}"]
        if problems:
            out["verify_failed"] += 1
            out["errors"].append(f"verify after kill {i}: {problems[:2]}")
        out["temp_bytes_seen"] += index_leftovers(index)["bytes"]
        add_nodes(index, [anchor])
        left = index_leftovers(index)
        out["temp_bytes_left"] += left["bytes"]
        if left["paths"]:
            out["errors"].append(f"left after the next writer: {left['paths'][:3]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="A copy of an index (it is changed).")
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hub", type=Path, default=None)
    parser.add_argument("--samples", type=Path, default=None)
    parser.add_argument("--model", default=None, help="A hub model the index has no label of yet.")
    args = parser.parse_args()
    result = {"races": run_races(args.index, args.hub, args.samples, args.model),
              "kills": run_kills(args.index, args.kills, args.seed)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
