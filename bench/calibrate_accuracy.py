"""Calibrate select's predicted accuracy on generated tasks of one seed and measure it on another.

    python bench/calibrate_accuracy.py [--index indexes/default] [--tasks 200] [--per-cell 2]

Draws `--tasks` generated tasks with seed 1 (calibration) and seed 2 (report) from the full emoji
world, scores MLL's selections (k = 1 and 3) on their images (bench/generated_tasks.py), fits the
linear rules of mll_index/predict.py on seed 1 by least squares, takes the 80% interval from the
residuals' 10th and 90th percentiles there, and writes the rules with how they were chosen and
what they scored on seed 2 to mll_index/data/accuracy_calibration.json. The task's labels are
used only here, as ground truth; `select` reads the rules, never a task's labels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS  # noqa: E402
from generated_tasks import TASKS_SEEDS, embed_pool_cached, generated_task_file, score_tasks  # noqa: E402


def outcomes_for(index: Path, n: int, per_cell: int) -> dict[str, list[dict]]:
    """Per seed, every task's predicted-accuracy features and truth (cached in results/)."""
    from dataclasses import asdict

    from mll_index.hub import load_hub
    from mll_index.select import open_selector
    from mll_index.world import load_world

    cached = RESULTS / f"calibration_outcomes-{n}-{per_cell}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    world = load_world("full")
    hub = load_hub(world.hub_path)
    tasks = {name: generated_task_file(None, n, seed)["tasks"] for name, seed in TASKS_SEEDS.items()}
    pool = embed_pool_cached(world, hub, [t for ts in tasks.values() for t in ts], per_cell)
    selector = open_selector(index, models=list(hub.ids))
    out = {}
    for name, ts in tasks.items():
        started = time.perf_counter()
        scored, _ = score_tasks(selector, hub, pool, ts)
        out[name] = [asdict(o) for o in scored]
        print(f"{name}: {len(ts)} tasks scored in {time.perf_counter() - started:.0f} s", flush=True)
    cached.write_text(json.dumps(out))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("indexes/default"))
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--per-cell", type=int, default=2)
    args = parser.parse_args()
    outcomes_for(args.index, args.tasks, args.per_cell)
