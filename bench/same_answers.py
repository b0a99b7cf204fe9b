"""Answers unchanged: the models per class that `answer_tasks` (what `select`, the service and the
client return) chooses on the 14 shipped tasks and 200 generated tasks of the report seed, under
each rule the index has (the paper's, and the calibrated one where it holds one), k = 1 and 3.

    python bench/same_answers.py --save FILE          # before a change: write every answer's choice
    python bench/same_answers.py --against FILE       # after it: compare, write results/same_answers.*

A speed change must leave every task's models per class, and its matched nodes, as they were;
predicted accuracy may move only in its last rounded digit (the index's vectors and BLAS's sums
differ in their last bits between machines). Exits 1 when a choice differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_results  # noqa: E402


def choices(index: Path, n_generated: int) -> dict[str, Any]:
    """Per (rule, k, task): each class's models and matched nodes, and the task's predicted accuracy."""
    from generated_tasks import bench_tasks

    from mll_index.selection.answer import answer_tasks
    from mll_index.selection.selector import open_selector
    from mll_index.selection.settings import SelectionSettings
    from mll_index.selection.task import make_task
    from mll_index.world import load_world

    world = load_world("full")
    sets = bench_tasks(world, n_generated)
    tasks = [make_task([c["name"] for c in t["classes"]], f"{name}/{t['name']}",
                       domain=t["domains"][0] if len(t["domains"]) == 1 else None)
             for name in ("shipped", "report") for t in sets[name]]
    selector = open_selector(index)
    rules = ["mll"] + (["calibrated"] if selector.calibrated_rule("auto") is not None else [])
    out: dict[str, Any] = {}
    for rule in rules:
        for k in (1, 3):
            started = time.perf_counter()
            answers = answer_tasks(selector, tasks, SelectionSettings(k=k, rule=rule))
            print(f"{rule} k={k}: {len(tasks)} tasks in {time.perf_counter() - started:.1f} s", flush=True)
            for task, answer in zip(tasks, answers):
                out[f"{rule}/k{k}/{task.name}"] = {
                    "models": [[m["model"] for m in c["models"]] for c in answer["classes"]],
                    "nodes": [[n["wnid"] for n in c["nodes"]] for c in answer["classes"]],
                    "predicted_accuracy": (answer.get("predicted_accuracy") or {}).get("estimate")}
    return out


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Counts of tasks whose models or nodes differ, and the largest predicted-accuracy change."""
    keys = sorted(set(before) | set(after))
    missing = [k for k in keys if k not in before or k not in after]
    both = [k for k in keys if k in before and k in after]
    models = [k for k in both if before[k]["models"] != after[k]["models"]]
    nodes = [k for k in both if before[k]["nodes"] != after[k]["nodes"]]
    moved = [abs(before[k]["predicted_accuracy"] - after[k]["predicted_accuracy"]) for k in both
             if before[k]["predicted_accuracy"] is not None and after[k]["predicted_accuracy"] is not None]
    return {"answers": len(both), "missing": missing, "models_differ": models, "nodes_differ": nodes,
            "predicted_accuracy_max_change": round(max(moved, default=0.0), 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("indexes/default"))
    parser.add_argument("--generated", type=int, default=200)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--save", type=Path, help="write the choices to this file")
    what.add_argument("--against", type=Path, help="compare with choices saved before")
    args = parser.parse_args()
    got = choices(args.index, args.generated)
    if args.save:
        tmp = args.save.with_suffix(args.save.suffix + ".tmp")
        tmp.write_text(json.dumps(got))
        tmp.replace(args.save)
        print(f"saved {len(got)} answers to {args.save}")
        return
    figures = compare(json.loads(args.against.read_text()), got)
    same = not (figures["models_differ"] or figures["nodes_differ"] or figures["missing"])
    figures["unchanged"] = same
    md = ["# Answers unchanged", "",
          (f"{figures['answers']} answers (rules x k = 1, 3 x 14 shipped and {args.generated} generated tasks): "
           f"models differ in {len(figures['models_differ'])}, nodes in {len(figures['nodes_differ'])}, "
           f"{len(figures['missing'])} missing; predicted accuracy moved by at most "
           f"{figures['predicted_accuracy_max_change']}."), ""]
    write_results("same_answers", figures, "\n".join(md))
    print("\n".join(md))
    for key in figures["models_differ"][:10]:
        print("differs:", key)
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
