"""The calibrated selection rule against the paper's rule and the oracle single model, on the emoji world.

    python bench/calibrated_rule.py [--index indexes/default] [--tasks 200]

Copies the index, runs `calibrate` on the copy (pseudo-tasks of its labels only; timed), then scores
MLL k=1 / k=3 under both rules, with and without the domain word, on the 14 shipped tasks and on
`--tasks` generated tasks of seed 2 (the calibration itself used no task; the vote search's beta was
chosen on generated tasks of seed 1). Images: the first `--per-cell` (default 8) task-pool images per class and domain of
the world (bench/generated_tasks.py), encoded once by every model. Writes
bench/results/calibrated_rule.{json,md} and merges the figures into selection_quality.json under
`calibrated`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, write_results  # noqa: E402


def score(sel, pool, tasks: list[dict]) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Mean accuracy of MLL under both rules (k=1, 3; with and without the domain word), the oracle
    single model, the split-half per-class ceilings (k=1, 3), the fraction of the gap from oracle single
    to the k=1 ceiling each rule closes, and the calibrated rule's predicted accuracy (task-level MAE and
    80% interval coverage) read from `answer_tasks`, the answer every front end prints."""
    from generated_tasks import ensemble_accuracy, task_probabilities

    from mll_index.evaluation.baselines import oracle_single, split_half_ceiling, split_half_single
    from mll_index.selection.answer import answer_tasks
    from mll_index.selection.selector import prepare_tasks, select_prepared
    from mll_index.selection.settings import SelectionSettings
    from mll_index.selection.task import make_task

    made = [make_task([c["name"] for c in t["classes"]], t["name"],
                      domain=t["domains"][0] if len(t["domains"]) == 1 else None) for t in tasks]
    names = [[c["name"] for c in t["classes"]] for t in tasks]
    prepared = prepare_tasks(sel, made)
    truth = [task_probabilities(pool, t) for t in tasks]
    out: dict[str, float] = {}
    for use_domain, tail in ((True, ""), (False, "_no_domain")):
        for rule in ("mll", "calibrated"):
            for k in (1, 3):
                chosen = select_prepared(sel, prepared, k=k, mode="restricted", use_domain=use_domain, rule=rule)
                out[f"{rule}_k{k}{tail}"] = float(np.mean([
                    ensemble_accuracy(p, y, s.models_for(), n)[0] for n, s, (p, y) in zip(names, chosen, truth)]))
    out["oracle_single"] = float(np.mean([oracle_single(p, y)[1] for p, y in truth]))
    out["split_half_single"] = float(np.mean([split_half_single(p, y) for p, y in truth]))
    rule = sel.calibrated_rule("calibrated")
    for k in (1, 3):
        out[f"split_half_ceiling_k{k}"] = float(np.mean([split_half_ceiling(p, y, k) for p, y in truth]))
        answers = answer_tasks(sel, made, SelectionSettings(k=k, mode="restricted", rule="calibrated"))
        rows, own = [], []
        for a, n, (p, y) in zip(answers, names, truth):
            acc = ensemble_accuracy(p, y, {c["name"]: [m["model"] for m in c["models"]] for c in a["classes"]}, n)[0]
            rows.append((a["predicted_accuracy"], acc))
            # The rule's own accuracy model (pseudo-task votes against its predicted F1), which answers do not use.
            own.append(abs(rule.predict_accuracy(np.array([max(m["score"] for m in c["models"])
                                                           for c in a["classes"]]))[0].estimate - acc))
        out[f"pseudo_task_accuracy_model_mae_k{k}"] = float(np.mean(own))
        out[f"answer_k{k}"] = float(np.mean([acc for _, acc in rows]))
        out[f"predicted_mae_k{k}"] = float(np.mean([abs(pr["estimate"] - acc) for pr, acc in rows]))
        out[f"predicted_coverage_80_k{k}"] = float(np.mean([pr["low"] <= acc <= pr["high"] for pr, acc in rows]))
    # The fraction of the gap from the single model to per-class choice that a rule closes, both ends
    # measured under the split-half protocol (chosen on one half, scored on the other).
    gap = out["split_half_ceiling_k1"] - out["split_half_single"]
    for key in ("mll_k1", "mll_k3", "calibrated_k1", "calibrated_k3"):
        out[f"gap_closed_{key}"] = (out[key] - out["split_half_single"]) / gap if gap > 0.005 else float("nan")
    return {k: round(v, 4) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("indexes/default"))
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--per-cell", type=int, default=8, help="Task-pool images per class and domain (at most 8; "
                        "8, as bench/selection_quality.py --per-cell 8 and the shipped tasks' own folders).")
    parser.add_argument("--name", default="calibrated_rule", help="Results file stem (the default also merges "
                        "into selection_quality.json).")
    args = parser.parse_args()
    from generated_tasks import bench_tasks, embed_pool

    from mll_index.models.hub import load_hub
    from mll_index.selection.calibrate import calibrate_rule
    from mll_index.selection.selector import open_selector
    from mll_index.world import load_world

    world = load_world("full")
    hub = load_hub(world.hub_path)
    sets = bench_tasks(world, args.tasks)
    pool = embed_pool(world, hub, [t for ts in sets.values() for t in ts], args.per_cell)
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        shutil.copytree(args.index, index, ignore=shutil.ignore_patterns(".lock", "selection_rule"))
        started = time.perf_counter()
        report = calibrate_rule(index)
        calibrate_s = round(time.perf_counter() - started, 1)
        sel = open_selector(index, models=list(hub.ids))
        figures = {"calibrate_s": calibrate_s, "calibration": report,
                   "shipped": score(sel, pool, sets["shipped"]), "generated_seed2": score(sel, pool, sets["report"]),
                   "images": f"{args.per_cell} task-pool images per class and domain (bench/generated_tasks.py)",
                   "tasks": {"shipped": len(sets["shipped"]), "generated_seed2": len(sets["report"])}}
    for name in ("shipped", "generated_seed2"):
        f = figures[name]
        f["bars"] = {"k1_minus_oracle_single": round(f["calibrated_k1"] - f["oracle_single"], 4),
                     "k3_minus_oracle_single": round(f["calibrated_k3"] - f["oracle_single"], 4),
                     "ceiling_k1_minus_oracle_single": round(f["split_half_ceiling_k1"] - f["oracle_single"], 4),
                     "ceiling_k3_minus_oracle_single": round(f["split_half_ceiling_k3"] - f["oracle_single"], 4)}
    rows = ["| tasks | rule | k=1 | k=3 | k=1 no domain | k=3 no domain | oracle single | split-half single | "
            "split-half ceiling k=1 / k=3 | gap closed k=1 / k=3 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in ("shipped", "generated_seed2"):
        f = figures[name]
        for rule in ("mll", "calibrated"):
            rows.append(f"| {name} | {rule} | {f[f'{rule}_k1']:.3f} | {f[f'{rule}_k3']:.3f} | "
                        f"{f[f'{rule}_k1_no_domain']:.3f} | {f[f'{rule}_k3_no_domain']:.3f} | {f['oracle_single']:.3f} | "
                        f"{f['split_half_single']:.3f} | {f['split_half_ceiling_k1']:.3f} / {f['split_half_ceiling_k3']:.3f} | "
                        f"{f[f'gap_closed_{rule}_k1']:.2f} / {f[f'gap_closed_{rule}_k3']:.2f} |")
    rows += ["", "Predicted accuracy of the calibrated rule's answer (`select --rule calibrated`):", "",
             "| tasks | k | MAE | 80% coverage | MAE of the rule's own pseudo-task accuracy model |",
             "|---|---|---|---|---|"]
    for name in ("shipped", "generated_seed2"):
        f = figures[name]
        rows += [f"| {name} | {k} | {f[f'predicted_mae_k{k}']:.3f} | {f[f'predicted_coverage_80_k{k}']:.2f} | "
                 f"{f[f'pseudo_task_accuracy_model_mae_k{k}']:.3f} |" for k in (1, 3)]
    held = report["held_out"]
    md = "\n".join(["# Calibrated selection rule (emoji world)", "",
                    f"`calibrate`: {report['pseudo_tasks']} pseudo-tasks, {calibrate_s} s. On its "
                    f"{report['held_out_tasks']} held-out pseudo-tasks (evaluation halves): vote accuracy k=1 "
                    f"{held['calibrated_k1']} (paper's rule {held['mll_k1']}), k=3 {held['calibrated_k3']} "
                    f"(paper's rule {held['mll_k3']}).", "", *rows, ""])
    write_results(args.name, figures, md)
    path = RESULTS / "selection_quality.json"
    if path.is_file() and args.name == "calibrated_rule":
        record = json.loads(path.read_text())
        record["calibrated"] = {**figures, "machine": machine()}
        tmp_path = path.with_suffix(".json.tmp")
        tmp_path.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp_path, path)
    print(md)


if __name__ == "__main__":
    main()
