"""The emoji world: size, build time (cold and from the cache) and the hub's ground-truth accuracy table.

    python bench/emoji_world.py            # build cold (drops the cached world and trained weights; npm tarballs kept), then load warm
    python bench/emoji_world.py --reuse    # measure the world already in the cache (no cold build)

Writes bench/results/emoji_world.{json,md}: concepts, domains, images, mapping_checked,
mapping_correct, accuracy (model → task → accuracy, plus `general`), per task the oracle
(best single model) and the INB model (best general accuracy), and the build seconds.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from importlib import resources
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reuse", action="store_true", help="measure the world in the user's cache, no cold build")
    args = parser.parse_args()

    from mll_index.world import build_world, default_world_dir, fetch_world_art

    fetch_world_art()  # the registry download is set-up's, not the build's
    seconds = {}
    if not args.reuse:
        from mll_index.core.paths import cache_dir
        from mll_index.index.graph import load_taxonomy

        load_taxonomy()  # WordNet is set-up's, not the world's
        for folder in (default_world_dir("full"), cache_dir() / "world" / "models"):
            shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        build_world("full", progress=True)
        seconds["cold_build"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    world = build_world("full")
    seconds["warm_load"] = round(time.perf_counter() - started, 2)
    m = world.manifest
    accuracy = world.accuracy
    from mll_index.models.hub import load_hub

    hub = load_hub(world.hub_path, validate=False)
    inb = max(hub.ids, key=lambda i: hub.get(i).imagenet_acc or 0)
    check = resources.files("mll_index").joinpath("data/emoji_wnids_check.md").read_text()
    checked = int(re.search(r"^checked: (\d+)", check, re.M).group(1))
    correct = int(re.search(r"^correct: (\d+)", check, re.M).group(1))
    tasks = [t.name for t in world.tasks]
    per_task = {}
    for t in tasks:
        best = max(accuracy, key=lambda mid: accuracy[mid][t])
        per_task[t] = {"oracle_model": best, "oracle_acc": accuracy[best][t], "inb_model": inb,
                       "inb_acc": accuracy[inb][t], "classes": len(next(x for x in world.tasks if x.name == t).classes),
                       "images": m["task_images"][t]}
    best_models = sorted({v["oracle_model"] for v in per_task.values()})
    figures = {"concepts": m["concepts"], "domains": m["domains"], "images": sum(m["images"].values()),
               "images_per_pool": m["images"], "mapping_checked": checked, "mapping_correct": correct,
               "accuracy": accuracy, "tasks": per_task, "distinct_best_models": best_models,
               "seconds": {**seconds, "build_breakdown": m["seconds"]}, "models": m["models"]}
    cols = ["general", *tasks]
    md = [f"# The emoji world\n\n{m['concepts']} concepts, {len(m['domains'])} domains ({', '.join(m['domains'])}), "
          f"{sum(m['images'].values())} images ({m['images']}). Mapping spot check: {correct}/{checked} right.\n",
          f"Cold build: {seconds.get('cold_build', 'not measured')} s; load from cache: {seconds['warm_load']} s.\n",
          "## Accuracy of every hub model (rows) on the general benchmark and each target task\n",
          "| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for mid, row in accuracy.items():
        md.append(f"| {mid} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")
    md.append("| **oracle** | " + " | ".join(["", *[f"{per_task[t]['oracle_acc']:.3f} ({per_task[t]['oracle_model']})"
                                                   for t in tasks]]) + " |")
    md.append(f"| **INB ({inb})** | " + " | ".join(["", *[f"{per_task[t]['inb_acc']:.3f}" for t in tasks]]) + " |")
    md.append(f"\nDistinct best models across tasks: {len(best_models)} ({', '.join(best_models)}).\n")
    path = write_results("emoji_world", figures, "\n".join(md) + "\n")
    print(Path(path.with_suffix(".md")).read_text())


if __name__ == "__main__":
    main()
