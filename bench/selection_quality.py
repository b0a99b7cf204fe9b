"""Selection quality and speed on the emoji world: MLL against INB, random, text proxy and the oracles.

    python bench/selection_quality.py [--index indexes/default]

Builds or loads the full emoji world, labels its hub into the index (once), evaluates every
method on every target task, sweeps alpha x k x selection mode, and times selection: one task
with a cold caption cache (every caption embedded anew), and a batch of 1,000 tasks of 20
classes drawn from the world's concept names. Writes bench/results/selection_quality.{json,md,png}.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, write_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("indexes/default"))
    parser.add_argument("--batch-tasks", type=int, default=1000)
    args = parser.parse_args()

    from mll_index.demo import run_demo
    from mll_index.hub import load_hub
    from mll_index.select import make_task, open_selector, select_batch, select_models
    from mll_index.world import load_world

    demo = run_demo(args.index, RESULTS / "selection_quality_eval", progress=True)
    result, files = demo.evaluation, demo.files
    world = load_world("full")
    selector = open_selector(args.index, models=list(load_hub(world.hub_path).ids))

    timings: dict[str, list[float]] = {"restricted": [], "counts": []}
    for mode in timings:
        for t in world.tasks:
            task = make_task(t.class_names, t.name)
            started = time.perf_counter()
            select_models(selector, task, k=1, mode=mode)  # no caption cache: every caption is embedded
            timings[mode].append(time.perf_counter() - started)
    names = sorted({c["name"] for c in world.concepts})
    rng = np.random.default_rng(0)
    tasks = [make_task(list(rng.choice(names, 20, replace=False)), f"t{i}") for i in range(args.batch_tasks)]
    batch = {}
    for mode in ("restricted", "counts"):
        started = time.perf_counter()
        select_batch(selector, tasks, k=1, mode=mode)
        batch[mode] = round(time.perf_counter() - started, 2)

    mean = result.mean
    figures = {
        "tasks": result.tasks, "mean": mean,
        "select_seconds_per_task": round(statistics.mean(timings["restricted"]), 4),
        "select_seconds_per_task_max": round(max(timings["restricted"]), 4),
        "select_seconds_per_task_counts_mode": round(statistics.mean(timings["counts"]), 4),
        "batch_1000_seconds": batch["restricted"], "batch_1000_seconds_counts_mode": batch["counts"],
        "batch_tasks": args.batch_tasks, "sweep": result.sweep, "chosen": result.chosen,
        "settings": result.settings, "evaluation_seconds": result.seconds,
        "bars": {"mll_k3_minus_oracle_single": round(mean["mll_k3"] - mean["oracle_single"], 4),
                 "mll_k1_minus_inb": round(mean["mll_k1"] - mean["inb"], 4),
                 "mll_k1_minus_text_proxy": round(mean["mll_k1"] - mean["text_proxy"], 4)},
    }
    shutil.copy(files["png"], RESULTS / "selection_quality.png")
    md = ["# Selection quality on the emoji world\n", result.table(),
          f"\nBars: MLL k=3 minus oracle single = {figures['bars']['mll_k3_minus_oracle_single']:+.3f}; "
          f"MLL k=1 minus INB = {figures['bars']['mll_k1_minus_inb']:+.3f}; "
          f"MLL k=1 minus text proxy = {figures['bars']['mll_k1_minus_text_proxy']:+.3f}.\n",
          f"Selection of one task, cold caption cache: {figures['select_seconds_per_task']:.3f} s mean, "
          f"{figures['select_seconds_per_task_max']:.3f} s max (restricted); "
          f"{figures['select_seconds_per_task_counts_mode']:.3f} s (counts).\n",
          f"Batch of {args.batch_tasks} tasks of 20 classes: {batch['restricted']} s (restricted), "
          f"{batch['counts']} s (counts).\n", "![](selection_quality.png)\n",
          "## Sweep" + (RESULTS / "selection_quality_eval" / "evaluation.md").read_text().split("## Sweep", 1)[-1]]
    write_results("selection_quality", figures, "\n".join(md))
    print((RESULTS / "selection_quality.md").read_text())


if __name__ == "__main__":
    main()
