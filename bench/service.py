"""The selection service under load: throughput and latency at 1, 8 and 32 concurrent clients.

Starts `mll-index serve` on 127.0.0.1 (a free port) for an index, sends 20-class tasks drawn
from the CLIP benchmark class names, and compares with `select_models` in this process on the
same tasks. Also times `mll-index select --server` from a cold process (the path that imports
no text runtime) beside the local `mll-index select`. Every level is bounded in requests and
seconds; the server is stopped at the end, whatever happens.

    python bench/service.py --index indexes/default [--tasks 48] [--classes 20] [--seconds 90]

Writes bench/results/service.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import write_results  # noqa: E402

CLASSNAMES = REPO.parent / "shared" / "data" / "clip_benchmark_classnames.json"
LEVELS = (1, 8, 32)


def draw_tasks(n_tasks: int, n_classes: int, seed: int) -> list[list[str]]:
    """n_tasks tasks of n_classes benchmark class names each (no name twice in a task), each a valid task."""
    from mll_index.errors import InputError
    from mll_index.select import make_task

    data = json.loads(CLASSNAMES.read_text())
    names = sorted({" ".join(str(n).split()) for values in data.values() for n in values if str(n).strip()})
    rng = random.Random(seed)
    tasks: list[list[str]] = []
    while len(tasks) < n_tasks:
        classes = rng.sample(names, n_classes)
        try:
            make_task(classes)
        except InputError:
            continue
        tasks.append(classes)
    return tasks


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 300) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url}: not ready after {timeout_s} s")


def load_level(url: str, tasks: list[list[str]], clients: int, requests: int, seconds: float) -> dict[str, float]:
    """`requests` selections (tasks round-robin) from `clients` threads, stopping early after `seconds`."""
    from mll_index.service.client import select_remote

    deadline = time.monotonic() + seconds
    latencies: list[float] = []

    def one(i: int) -> None:
        if time.monotonic() > deadline:
            return
        t0 = time.perf_counter()
        select_remote(url, tasks[i % len(tasks)], timeout=300)
        latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {"requests": len(ordered), "seconds": round(wall, 3), "rps": round(len(ordered) / wall, 2),
            "p50_ms": round(1000 * statistics.median(ordered), 1),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1)}


def cli_seconds(*args: str, repeat: int = 3) -> float:
    """Median wall time of `python -m mll_index.cli ARGS` in a fresh process."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "mll_index.cli", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=600)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{args}: {proc.stderr.strip()}")
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=REPO / "indexes" / "default")
    parser.add_argument("--tasks", type=int, default=48)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--requests", type=int, default=96, help="Requests per concurrency level.")
    parser.add_argument("--seconds", type=float, default=90, help="Time cap per concurrency level.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from mll_index.embed import EmbeddingCache
    from mll_index.graph import cache_dir
    from mll_index.select import make_task, open_selector, select_models

    tasks = draw_tasks(args.tasks, args.classes, args.seed)
    load_before = os.getloadavg()[0]  # the figures mean little on a machine busy with other work
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "mll_index.cli", "serve", "--index", str(args.index),
                             "--port", str(port)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        start_s = wait_ready(url, proc)
        from mll_index.service.client import select_remote

        t0 = time.perf_counter()
        for t in tasks:                       # warm: every caption embedded once, into the shared cache
            select_remote(url, t, timeout=600)
        warm_s = time.perf_counter() - t0
        levels = {c: load_level(url, tasks, c, args.requests, args.seconds) for c in LEVELS}

        selector = open_selector(args.index, cache=EmbeddingCache(cache_dir() / "embeddings.sqlite"))
        made = [make_task(t) for t in tasks]
        select_models(selector, made[0])
        t0 = time.perf_counter()
        for task in made:
            select_models(selector, task)
        inprocess_rps = round(len(made) / (time.perf_counter() - t0), 2)

        names = tasks[0]
        server_s = cli_seconds("select", "--server", url, *names)
        local_s = cli_seconds("select", "--index", str(args.index), *names)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()

    figures = {
        "index": str(args.index), "tasks": len(tasks), "classes_per_task": args.classes,
        "requests_per_level": args.requests, "service_start_s": round(start_s, 2), "warm_pass_s": round(warm_s, 2),
        "throughput_rps": {str(c): v["rps"] for c, v in levels.items()},
        "p50_ms": {str(c): v["p50_ms"] for c, v in levels.items()},
        "p99_ms": {str(c): v["p99_ms"] for c, v in levels.items()},
        "levels": {str(c): v for c, v in levels.items()},
        "inprocess_rps": inprocess_rps,
        "cli_server_select_s": server_s, "cli_local_select_s": local_s,
        "loadavg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }
    rows = "\n".join(f"| {c} | {v['requests']} | {v['rps']} | {v['p50_ms']} | {v['p99_ms']} |" for c, v in levels.items())
    markdown = (f"# Selection service under load\n\n{len(tasks)} tasks of {args.classes} benchmark class names, "
                f"index `{args.index}`, {os.cpu_count()} CPUs, one uvicorn worker; 1-minute load average "
                f"{figures['loadavg_1min']['before']} before, {figures['loadavg_1min']['after']} after.\n\n"
                "| clients | requests | requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|\n" + rows +
                f"\n\nIn process (`select_models`, one thread): {inprocess_rps} tasks/s.\n\n"
                f"`mll-index select --server` from a cold process: {server_s} s; local `mll-index select`: {local_s} s.\n")
    path = write_results("service", figures, markdown)
    print(markdown)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
