"""Selection at the speed limit: warm in-process selection by stage beside a bound from the machine,
and cold CLI calls in fresh processes.

    python bench/speed.py [--index indexes/default] [--reps 30] [--cli-runs 7]

On the default index with the emoji world's labels (real class names: the shipped tasks' classes,
then ImageNet-1k's from ../shared/data for 100), in `auto` mode:

- `select_warm_p50_s`: `answer_tasks` (what `select`, the service and the client return) of a 20-
  and a 100-class task, warm: the same names answered once before, as a service sees repeats;
- `stage_s`: the warm p50 of each stage on its own: embedding the class captions (in-process
  vectors), node scoring (`Matcher.node_scores` over every node), matching to labeled nodes, the
  selection (confusion, rule, vote) and the answer around it;
- `stage_bound_s`: node scoring's FLOPs (2 x classes x dimensions x nodes) at the GEMM rate this
  machine measured on the same shape, and the label bytes a restricted confusion reads (the top-K
  rows of the task nodes' sample images of every model) at the measured memory bandwidth; `ratio`
  is stage / bound;
- `cli_select_s`, `cli_match_s`: medians of fresh `mll-index select` (20 classes) and `match tiger`
  processes (one untimed run first, so that Python's bytecode and the caches are written), with
  PYTHONDONTWRITEBYTECODE unset as on a user's machine; `cli_without_bytecode_s` the same with the
  environment's setting (where it is set, every module is compiled on every call).

- `service_rps`: `mll-index serve --workers W` (W = 1, 2) answering `/v1/select` for 48 tasks of
  20 CLIP-benchmark class names (each task asked once per worker before, so warm), from 1 and 8
  client threads on keep-alive connections that read the answer's bytes and parse nothing (the
  load generator shares the machine's 2 cores with the service); requests/s and p50 latency;
- `batch_10000_real_s`: one fresh `mll-index select --batch` process over 10,000 tasks of 10-100
  real class names (a seeded draw from LVIS's, ImageNet-1k's and LOVM's class lists in
  ../shared/data: one list per task), end to end, answers written to a file; the names embedded
  once for the whole batch (`--batch-runs 2` times a second, warm run too).

    python bench/speed.py [--batch-tasks 10000] [--batch-runs 1] [--no-service]

Writes bench/results/speed.{json,md} with the machine. Figures, not tests: compare within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_results  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def class_names(n: int) -> list[str]:
    """n real class names: the emoji world's task classes, then ImageNet-1k's where the shared data is here."""
    from mll_index.world import load_world

    names = list(dict.fromkeys(c for t in load_world("full").tasks for c in t.class_names))
    source = SHARED / "imagenet1k_classes.tsv"
    if len(names) < n and source.is_file():
        rows = [line.split("\t") for line in source.read_text().splitlines()[1:] if line.strip()]
        names += [r[2] for r in rows if r[2] not in names]
    return names[:n]


def real_tasks(n: int, seed: int = 0) -> list[list[str]]:
    """n tasks of 10-100 distinct real class names, each from one class list of the shared data
    (ImageNet-1k, LVIS, and LOVM's lists of 10 names or more), that `make_task` accepts."""
    import random

    from mll_index.errors import InputError
    from mll_index.selection.task import make_task

    lists: dict[str, list[str]] = {}
    rows = [line.split("\t") for line in (SHARED / "imagenet1k_classes.tsv").read_text().splitlines()[1:] if line.strip()]
    lists["imagenet1k"] = [r[2] for r in rows]
    rows = [line.split("\t") for line in (SHARED / "lvis_v1_synsets.tsv").read_text().splitlines()[1:] if line.strip()]
    lists["lvis"] = list(dict.fromkeys(r[0].replace("_", " ") for r in rows))
    for path in sorted((SHARED / "lovm" / "classnames").glob("*.txt")):
        names = list(dict.fromkeys(line.strip() for line in path.read_text().splitlines() if line.strip()))
        if len(names) >= 10:
            lists[f"lovm/{path.stem}"] = names
    keys, rng, tasks = sorted(lists), random.Random(seed), []
    while len(tasks) < n:
        names = lists[rng.choice(keys)]
        chosen = rng.sample(names, rng.randint(10, min(100, len(names))))
        try:
            make_task(chosen)
        except InputError:
            continue
        tasks.append(chosen)
    return tasks


def batch_seconds(index: Path, tasks: list[list[str]], runs: int) -> dict[str, Any]:
    """Seconds of fresh `mll-index select --batch` processes over `tasks` (JSONL), answers to a file."""
    import json

    work = Path(tempfile.mkdtemp(prefix="mll-index-speed-"))
    batch, out = work / "tasks.jsonl", work / "answers.jsonl"
    batch.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    seconds = []
    for _ in range(runs):
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "mll_index", "select", "--index", str(index), "--batch", str(batch),
                               "--out", str(out)], capture_output=True, text=True)
        seconds.append(round(time.perf_counter() - t, 1))
        if done.returncode != 0:
            raise SystemExit(f"select --batch failed: {done.stderr.strip()[-500:]}")
    answered = sum(1 for _ in out.open())
    out_mb = round(out.stat().st_size / 2**20, 1)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return {"tasks": len(tasks), "classes": sum(map(len, tasks)), "distinct_names": len({n for t in tasks for n in t}),
            "answered": answered, "answers_mb": out_mb, "seconds": seconds}


def service_rps(index: Path, workers: int, levels: tuple[int, ...] = (1, 8), per_level: int = 160,
                seconds: float = 60) -> dict[str, Any]:
    """Requests/s and p50 ms of /v1/select (20 CLIP-benchmark names, 48 tasks round-robin, warm) at
    each client count, from `serve --workers workers`."""
    import http.client
    import json
    import threading

    from service import draw_tasks, free_port, wait_ready

    tasks = draw_tasks(48, 20, 0)
    bodies = [json.dumps({"task": t}).encode() for t in tasks]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mll_index", "serve", "--index", str(index), "--port", str(port),
                             "--workers", str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)

        def run(clients: int, total: int) -> dict[str, float]:
            latencies: list[float] = []
            counter = iter(range(total))
            lock = threading.Lock()
            deadline = time.monotonic() + seconds

            def client() -> None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                while time.monotonic() < deadline:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        break
                    t0 = time.perf_counter()
                    conn.request("POST", "/v1/select", bodies[i % len(bodies)], {"Content-Type": "application/json"})
                    response = conn.getresponse()
                    response.read()
                    if response.status != 200:
                        raise SystemExit(f"/v1/select answered {response.status}")
                    latencies.append(time.perf_counter() - t0)
                conn.close()

            threads = [threading.Thread(target=client) for _ in range(clients)]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - start
            return {"requests": len(latencies), "rps": round(len(latencies) / wall, 1),
                    "p50_ms": round(1000 * statistics.median(latencies), 1)}

        run(max(2, workers) * 2, len(bodies) * max(2, workers) * 2)     # every task answered by every worker
        return {str(c): run(c, per_level) for c in levels}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def p50(fn: Any, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 5)


def gemm_rate(m: int, k: int, n: int, reps: int = 20) -> float:
    """FLOP/s of float32 (m, k) @ (k, n) on this machine, best of `reps`."""
    a = np.random.default_rng(0).standard_normal((m, k), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((k, n), dtype=np.float32)
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2.0 * m * k * n / best


def bandwidth(nbytes: int = 256 << 20, reps: int = 5) -> float:
    """Bytes/s this machine reads and writes in a large numpy copy (both counted), best of `reps`."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(reps))
    return 2.0 * nbytes / best


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def label_bytes(sel: Any, prepared: Any) -> int:
    """Bytes of stored top-K rows a restricted confusion reads for the task: per model, the (image, K)
    node ids and logits of the sample images of the task's matched nodes."""
    store = sel.store
    pos = store.node_position
    nodes = {pos[m.wnid] for ms in prepared.matched for m in ms}
    total = 0
    for fp in store.groups():
        group = store.sample_group(fp)
        images = int(np.isin(group.image_nodes, list(nodes)).sum())
        k = int(getattr(store, "top_k", 32))
        total += images * k * (4 + 4) * len(store.model_ids)
    return total


def stages(sel: Any, names: list[str], reps: int) -> dict[str, float]:
    from mll_index.index.embed import embed_classes
    from mll_index.index.match import read_class_names
    from mll_index.selection.answer import answer_tasks
    from mll_index.selection.selector import prepare_tasks, select_prepared
    from mll_index.selection.settings import SelectionSettings
    from mll_index.selection.task import make_task

    task = make_task(names, f"speed-{len(names)}")
    answer_tasks(sel, [task], SelectionSettings(rule="mll"))
    answer_tasks(sel, [task])                      # warm: the names answered once before
    queries = embed_classes(names, sel.embedder, expander=sel.expander, cache=sel.cache)
    read = read_class_names(names)
    prepared = prepare_tasks(sel, [task])
    return {"embed": p50(lambda: embed_classes(names, sel.embedder, expander=sel.expander, cache=sel.cache), reps),
            "node_scoring": p50(lambda: sel.matcher.node_scores(queries, read), reps),
            "match": p50(lambda: sel.match(names, queries, 5), reps),
            "select": p50(lambda: select_prepared(sel, prepared), reps),
            "answer_total": p50(lambda: answer_tasks(sel, [task]), reps),
            "answer_total_mll": p50(lambda: answer_tasks(sel, [task], SelectionSettings(rule="mll")), reps),
            "label_bytes": label_bytes(sel, prepared), "queries": queries.shape}


def cli_median(args: list[str], runs: int, bytecode: bool) -> float:
    """Median seconds of `runs` fresh processes. bytecode: with Python's .pyc files written and read,
    as on a user's machine (PYTHONDONTWRITEBYTECODE unset); else as this environment sets it."""
    env = dict(os.environ)
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run(args, capture_output=True, check=True, env=env)        # bytecode and caches written
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(args, capture_output=True, check=True, env=env)
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("indexes/default"))
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--cli-runs", type=int, default=7)
    parser.add_argument("--batch-tasks", type=int, default=10000, help="Real tasks in the batch (0: no batch figure).")
    parser.add_argument("--batch-runs", type=int, default=1, help="Fresh batch processes timed, one after the other.")
    parser.add_argument("--no-service", action="store_true", help="Leave out the service's requests/s.")
    args = parser.parse_args()
    from mll_index.selection.selector import open_selector

    sel = open_selector(args.index)
    rule = "calibrated" if sel.calibrated_rule("auto") is not None else "mll"
    figures: dict[str, Any] = {"index": str(args.index), "rule_auto_takes": rule, "select_warm_p50_s": {},
                               "stage_s": {}, "stage_bound_s": {}, "ratio": {}}
    n_nodes, dim = np.asarray(sel.index.vectors).shape
    rate_bw = bandwidth()
    figures["machine_rates"] = {"memory_bytes_per_s": round(rate_bw), "gemm_flop_per_s": {}}
    for n in (20, 100):
        names = class_names(n)
        got = stages(sel, names, args.reps)
        rate = gemm_rate(len(names), dim, n_nodes)
        figures["machine_rates"]["gemm_flop_per_s"][str(n)] = round(rate)
        bound = {"node_scoring": round(2.0 * len(names) * dim * n_nodes / rate, 5),
                 "select": round(got["label_bytes"] / rate_bw, 5)}
        figures["select_warm_p50_s"][str(n)] = got["answer_total"]
        figures.setdefault("select_warm_p50_s_mll_rule", {})[str(n)] = got["answer_total_mll"]
        figures["stage_s"][str(n)] = {k: got[k] for k in ("embed", "node_scoring", "match", "select", "answer_total",
                                                           "answer_total_mll")}
        figures["stage_bound_s"][str(n)] = {**bound, "label_bytes": got["label_bytes"]}
        figures["ratio"][str(n)] = {k: round(got[k] / v, 1) for k, v in bound.items() if v > 0}
        print(n, figures["stage_s"][str(n)], bound, flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(class_names(20)) + "\n")
    exe = [sys.executable, "-m", "mll_index"]
    select_cmd = [*exe, "select", "--index", str(args.index), "--file", handle.name]
    match_cmd = [*exe, "match", "--index", str(args.index), "tiger"]
    figures["cli_select_s"] = cli_median(select_cmd, args.cli_runs, bytecode=True)
    figures["cli_match_s"] = cli_median(match_cmd, args.cli_runs, bytecode=True)
    figures["cli_without_bytecode_s"] = {"select": cli_median(select_cmd, args.cli_runs, bytecode=False),
                                         "match": cli_median(match_cmd, args.cli_runs, bytecode=False),
                                         "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE")}
    Path(handle.name).unlink()
    if not args.no_service:
        figures["service_rps"] = {str(w): service_rps(args.index, w) for w in (1, 2)}
        print("service", figures["service_rps"], flush=True)
    if args.batch_tasks:
        figures["batch_real"] = batch_seconds(args.index, real_tasks(args.batch_tasks), args.batch_runs)
        figures[f"batch_{args.batch_tasks}_real_s"] = figures["batch_real"]["seconds"][-1]
        print("batch", figures["batch_real"], flush=True)
    md = ["# Selection speed (default index, emoji world's labels, `auto` mode: the "
          f"{rule} rule)", "",
          "| classes | answer p50 s | paper's rule | embed | node scoring (bound) | match | select (label-read bound) |",
          "|---|---|---|---|---|---|---|"]
    for n in ("20", "100"):
        s, b = figures["stage_s"][n], figures["stage_bound_s"][n]
        md.append(f"| {n} | {s['answer_total']} | {s['answer_total_mll']} | {s['embed']} | {s['node_scoring']} ({b['node_scoring']}) | "
                  f"{s['match']} | {s['select']} ({b['select']}) |")
    nb = figures["cli_without_bytecode_s"]
    md += ["", f"Cold CLI, median of {args.cli_runs} fresh processes with Python's bytecode cached: `select` of 20 "
           f"classes {figures['cli_select_s']} s, `match tiger` {figures['cli_match_s']} s; with "
           f"PYTHONDONTWRITEBYTECODE={nb['PYTHONDONTWRITEBYTECODE']} (every module compiled each time): "
           f"{nb['select']} s and {nb['match']} s.", ""]
    for w, levels in figures.get("service_rps", {}).items():
        md.append(f"`serve --workers {w}`, /v1/select of 20 classes: " + "; ".join(
            f"{c} client(s) {v['rps']} requests/s, p50 {v['p50_ms']} ms" for c, v in levels.items()) + ".")
    if "batch_real" in figures:
        b = figures["batch_real"]
        md.append(f"One `select --batch` of {b['tasks']} real tasks ({b['classes']} classes, {b['distinct_names']} "
                  f"distinct names): {b['seconds']} s end to end ({b['answers_mb']} MB of answers).")
    write_results("speed", figures, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
