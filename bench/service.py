"""The selection service under load: throughput and latency at 1, 8 and 32 concurrent clients.

Starts `mll-index serve` on 127.0.0.1 (a free port) for an index, sends 20-class tasks drawn
from the CLIP benchmark class names, and compares with `select_models` in this process on the
same tasks. Also times `mll-index select --server` from a cold process (the path that imports
no text runtime) beside the local `mll-index select`. Every level is bounded in requests and
seconds; the server is stopped at the end, whatever happens.

Then three bars beyond speed:
  - answers: every task's answer equals `select_models` in this process (JSON, index_version dropped);
  - reload under load: 8 clients select for --reload-seconds (and until the writers are done) from a
    second service on a COPY of the index, while other processes label one more model (the world
    hub's first checkpoint under a new id) and add 100 nodes; no request may fail, and every answer
    after a writer finished names the new version (the seconds until it did are recorded);
  - fuzz: about --fuzz-cases requests generated from the service's OpenAPI schema
    (bench/service_fuzz.py); none may get a 5xx.

    python bench/service.py --index indexes/default [--tasks 48] [--classes 20] [--seconds 90]
    python bench/service.py --smoke     # a minute or two: fewer tasks, 20 nodes added, nothing labeled

Writes bench/results/service.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import write_results  # noqa: E402

CLASSNAMES = REPO.parent / "shared" / "data" / "clip_benchmark_classnames.json"
LEVELS = (1, 8, 32)
WORLD = Path.home() / ".cache" / "mll-index" / "world" / "full"   # `mll-index world build`'s output
WORLD_HUB = WORLD / "hub" / "hub.json"
WORLD_SAMPLES = WORLD / "samples"
RELOAD_MODEL = "vit-s-general-2"


def draw_tasks(n_tasks: int, n_classes: int, seed: int) -> list[list[str]]:
    """n_tasks tasks of n_classes benchmark class names each (no name twice in a task), each a valid task."""
    from mll_index.errors import InputError
    from mll_index.selection.task import make_task

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
            why = (proc.stderr.read() if proc.stderr else "").strip().splitlines()[-1:]
            raise SystemExit(f"the service exited with status {proc.returncode}: {' '.join(why)}")
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


def post_select(url: str, task: list[str], timeout: float = 300) -> tuple[int, dict[str, Any] | str]:
    """(HTTP status, answer JSON or error text) of POST /v1/select; status 0 when no answer came."""
    request = urllib.request.Request(url + "/v1/select", data=json.dumps({"task": task}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:300]
    except OSError as exc:
        return 0, f"{type(exc).__name__}: {exc}"


def copy_index(source: Path, target: Path) -> None:
    """Copy an index for writers to change: large files hard-linked, small ones copied.

    Every large file of an index is replaced by rename, never written in place, so a link is
    safe; the label matrix's log (appended) is copied before an append when linked, and a lock
    file must not be shared (a lock on one inode would lock both indexes): small files are copied.
    """
    def link_or_copy(src: str, dst: str) -> None:
        if os.path.getsize(src) >= 1 << 20:
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)


def new_wnids(index: Path, n: int, seed: int) -> list[str]:
    """n WordNet noun synsets of the index's graph that are not nodes of the index yet."""
    graph = json.loads((index / "graph.json").read_text())
    tables = [index / seg["table"] for seg in json.loads((index / "manifest.json").read_text())["segments"]]
    present = {json.loads(line)["wnid"] for table in tables for line in table.open() if line.strip()}
    free = sorted(w for w in graph["wnids"] if w not in present)
    return random.Random(seed).sample(free, n)


def second_hub(path: Path, model_id: str) -> None:
    """A hub file giving the world hub's first checkpoint a new id (a model the index has no label for)."""
    hub = json.loads(WORLD_HUB.read_text())
    entry = dict(hub["models"][0], id=model_id)
    for key in ("checkpoint", "config"):
        if entry.get(key):
            entry[key] = str(WORLD_HUB.parent / entry[key])
    path.write_text(json.dumps({"name": "reload-bench", "source": hub["source"], "models": [entry]}))


def reload_under_load(index: Path, tasks: list[list[str]], *, seconds: float, clients: int, n_nodes: int,
                      label: bool, seed: int) -> dict[str, Any]:
    """Serve a copy of `index` to `clients` selecting threads while writers change it in other processes.

    Writers run one after the other (each takes the index lock): `mll-index label` for one new
    model, then `mll-index add-nodes` for `n_nodes` new nodes. The load runs for `seconds`, and on
    until 15 s after the last writer finished.
    """
    from mll_index.service.version import index_version

    work = Path(tempfile.mkdtemp(prefix="mll-index-reload-"))
    copy = work / "index"
    copy_index(index, copy)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "mll_index.cli", "serve", "--index", str(copy), "--port",
                             str(port)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    answers: list[tuple[float, float, int, str]] = []   # (sent, received, status, version or error)
    stop = threading.Event()
    writers: list[dict[str, Any]] = []
    try:
        wait_ready(url, proc)
        start = time.monotonic()

        def client(c: int) -> None:
            i = c
            while not stop.is_set():
                sent = time.monotonic()
                status, body = post_select(url, tasks[i % len(tasks)])
                version = body.get("index_version", "?") if isinstance(body, dict) else body
                answers.append((sent - start, time.monotonic() - start, status, version))
                i += clients

        threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
        for t in threads:
            t.start()
        commands = []
        if label:
            hub = work / "hub.json"
            second_hub(hub, RELOAD_MODEL)
            commands.append(("label", ["label", "--index", str(copy), "--hub", str(hub), "--samples",
                                       str(WORLD_SAMPLES), "--model", RELOAD_MODEL, "--device", "cpu"]))
        if n_nodes:
            wnids = work / "wnids.txt"
            wnids.write_text("\n".join(new_wnids(index, n_nodes, seed)) + "\n")
            commands.append(("add-nodes", ["add-nodes", "--index", str(copy), "--file", str(wnids)]))
        time.sleep(5)                       # a few answers from the first version
        for name, args in commands:
            began = time.monotonic() - start
            run = subprocess.run([sys.executable, "-m", "mll_index.cli", *args], cwd=REPO, capture_output=True,
                                 text=True, timeout=1800, check=False)
            if run.returncode != 0:
                raise SystemExit(f"{name}: {run.stderr.strip().splitlines()[-1:]}")
            writers.append({"writer": name, "started_s": round(began, 2),
                            "finished_s": round(time.monotonic() - start, 2), "version": index_version(copy)})
            time.sleep(5)
        while time.monotonic() - start < max(seconds, (writers[-1]["finished_s"] + 15) if writers else 0):
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads if "threads" in locals() else []:
            t.join(timeout=310)
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)

    answers.sort()
    failed = [a for a in answers if a[2] != 200]
    for w in writers:
        after = [a for a in answers if a[3] == w["version"] and a[1] >= w["finished_s"]]
        first = min((a[1] for a in after), default=None)
        w["new_version_after_s"] = None if first is None else round(first - w["finished_s"], 2)
        # Stale: sent after the first answer from the new version, yet answered from another one
        # (until the next writer started).
        until = next((v["started_s"] for v in writers if v["started_s"] > w["finished_s"]), float("inf"))
        w["stale_after_swap"] = 0 if first is None else sum(
            1 for a in answers if first <= a[0] < until and a[2] == 200 and a[3] != w["version"])
    seen: dict[str, int] = {}
    for a in answers:
        if a[2] == 200:
            seen[a[3]] = seen.get(a[3], 0) + 1
    return {"clients": clients, "seconds": round(answers[-1][1], 1) if answers else 0, "requests": len(answers),
            "reload_failed_requests": len(failed), "first_failures": [list(a) for a in failed[:5]],
            "versions_seen": seen, "writers": writers,
            "stale_after_swap": sum(w["stale_after_swap"] for w in writers),
            "all_swapped": all(w["new_version_after_s"] is not None for w in writers)}


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
    parser.add_argument("--reload-seconds", type=float, default=60,
                        help="Length of the reload-under-load run (0: skip it); it lasts until the writers are done.")
    parser.add_argument("--reload-nodes", type=int, default=100, help="Nodes added during the reload run.")
    parser.add_argument("--no-reload-label", action="store_true", help="Label no model during the reload run.")
    parser.add_argument("--fuzz-cases", type=int, default=1000, help="Requests generated from the schema (0: none).")
    parser.add_argument("--smoke", action="store_true",
                        help="A quick check: 8 tasks, 16 requests a level, a 20 s reload adding 20 nodes, 100 fuzz cases.")
    args = parser.parse_args()
    if args.smoke:
        args.tasks, args.requests, args.seconds = 8, 16, 30
        args.reload_seconds, args.reload_nodes, args.no_reload_label, args.fuzz_cases = 20, 20, True, 100

    from mll_index.index.embed import EmbeddingCache
    from mll_index.selection.selector import open_selector, select_models
    from mll_index.selection.task import make_task

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
        remote = [select_remote(url, t, timeout=600) for t in tasks]  # warm: every caption embedded once, cached
        warm_s = time.perf_counter() - t0
        levels = {c: load_level(url, tasks, c, args.requests, args.seconds) for c in LEVELS}

        selector = open_selector(args.index, cache=EmbeddingCache.default())
        made = [make_task(t) for t in tasks]
        select_models(selector, made[0])
        # The same answer as in process: the service's JSON less index_version, against to_dict read back.
        mismatches = [t.name for t, r in zip(made, remote)
                      if {k: v for k, v in r.items() if k != "index_version"}
                      != json.loads(json.dumps(select_models(selector, t).to_dict()))]
        t0 = time.perf_counter()
        for task in made:
            select_models(selector, task)
        inprocess_rps = round(len(made) / (time.perf_counter() - t0), 2)

        names = tasks[0]
        server_s = cli_seconds("select", "--server", url, *names)
        local_s = cli_seconds("select", "--index", str(args.index), *names)
        fuzz: dict[str, Any] = {"fuzz_cases": 0, "fuzz_5xx": 0, "statuses": {}, "failures": []}
        if args.fuzz_cases:
            from bench.service_fuzz import fuzz_service

            fuzz = fuzz_service(url, args.fuzz_cases, seed=args.seed)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    # After the first service is gone, so that the writers and this run do not slow the figures above.
    reload = (reload_under_load(args.index, tasks, seconds=args.reload_seconds, clients=8, n_nodes=args.reload_nodes,
                                label=not args.no_reload_label, seed=args.seed) if args.reload_seconds else None)

    figures = {
        "index": str(args.index), "tasks": len(tasks), "classes_per_task": args.classes,
        "requests_per_level": args.requests, "service_start_s": round(start_s, 2), "warm_pass_s": round(warm_s, 2),
        "throughput_rps": {str(c): v["rps"] for c, v in levels.items()},
        "p50_ms": {str(c): v["p50_ms"] for c, v in levels.items()},
        "p99_ms": {str(c): v["p99_ms"] for c, v in levels.items()},
        "levels": {str(c): v for c, v in levels.items()},
        "inprocess_rps": inprocess_rps,
        "cli_server_select_s": server_s, "cli_local_select_s": local_s,
        "answers_equal": len(mismatches), "answers_compared": len(made), "answers_differing": mismatches[:5],
        "reload_failed_requests": reload["reload_failed_requests"] if reload else None, "reload": reload,
        "fuzz_cases": fuzz["fuzz_cases"], "fuzz_5xx": fuzz["fuzz_5xx"], "fuzz_statuses": fuzz["statuses"],
        "fuzz_failures": fuzz["failures"],
        "bars": {"throughput_8_vs_inprocess": round(levels[8]["rps"] / inprocess_rps, 2),
                 "p99_over_p50_8": round(levels[8]["p99_ms"] / levels[8]["p50_ms"], 2)},
        "loadavg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }
    rows = "\n".join(f"| {c} | {v['requests']} | {v['rps']} | {v['p50_ms']} | {v['p99_ms']} |" for c, v in levels.items())
    markdown = (f"# Selection service under load\n\n{len(tasks)} tasks of {args.classes} benchmark class names, "
                f"index `{args.index}`, {os.cpu_count()} CPUs, one uvicorn worker; 1-minute load average "
                f"{figures['loadavg_1min']['before']} before, {figures['loadavg_1min']['after']} after.\n\n"
                "| clients | requests | requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|\n" + rows +
                f"\n\nIn process (`select_models`, one thread): {inprocess_rps} tasks/s.\n\n"
                f"`mll-index select --server` from a cold process: {server_s} s; local `mll-index select`: {local_s} s.\n"
                f"\nAt 8 clients: {figures['bars']['throughput_8_vs_inprocess']}x the in-process throughput "
                f"(bar >= 0.8), p99 {figures['bars']['p99_over_p50_8']}x p50 (bar <= 4).\n"
                f"\nAnswers differing from in-process `select_models`: {len(mismatches)} of {len(made)} tasks.\n"
                f"\nFuzzing from the OpenAPI schema: {fuzz['fuzz_cases']} requests, {fuzz['fuzz_5xx']} answered 5xx.\n"
                + (_reload_markdown(reload) if reload else ""))
    path = write_results("service", figures, markdown)
    print(markdown)
    print(f"written: {path}")


def _reload_markdown(reload: dict[str, Any]) -> str:
    rows = "\n".join(f"| {w['writer']} | {w['started_s']} | {w['finished_s']} | {w['new_version_after_s']} | "
                     f"{w['stale_after_swap']} |" for w in reload["writers"])
    return (f"\n## Reload under load\n\n{reload['clients']} clients for {reload['seconds']} s on a copy of the index: "
            f"{reload['requests']} requests, {reload['reload_failed_requests']} failed; versions answered from: "
            f"{reload['versions_seen']}.\n\n| writer | started s | finished s | new version answered after s | "
            "stale answers after the swap |\n|---|---|---|---|---|\n" + rows + "\n")


if __name__ == "__main__":
    main()
