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

from generated_tasks import TASKS_SEEDS, bench_tasks, embed_pool, score_tasks  # noqa: E402


def outcomes_for(index: Path, n: int, per_cell: int) -> dict[str, list[dict]]:
    """Per seed, every task's predicted-accuracy features and truth (cached in <cache>/bench/)."""
    from dataclasses import asdict

    from mll_index.hub import load_hub
    from mll_index.select import open_selector
    from mll_index.world import load_world

    from mll_index.graph import cache_dir

    cached = cache_dir() / "bench" / f"calibration_outcomes-{n}-{per_cell}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    world = load_world("full")
    hub = load_hub(world.hub_path)
    tasks = bench_tasks(world, n)
    pool = embed_pool(world, hub, [t for ts in tasks.values() for t in ts], per_cell)
    selector = open_selector(index, models=list(hub.ids))
    out = {}
    for name, ts in tasks.items():
        if name not in TASKS_SEEDS:
            continue
        started = time.perf_counter()
        scored, _ = score_tasks(selector, hub, pool, ts)
        out[name] = [asdict(o) for o in scored]
        print(f"{name}: {len(ts)} tasks scored in {time.perf_counter() - started:.0f} s", flush=True)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(out))
    return out


CANDIDATES = (("f1_best",), ("f1_best", "log_classes"), ("f1_best", "log_classes", "f1_task"),
              ("f1_best", "log_classes", "f1_task", "match_score"),
              ("f1_best", "log_classes", "f1_task", "match_score", "domain_images"),
              ("f1_best", "log_classes", "relatedness"), ("f1_best", "log_classes", "f1_task", "relatedness"),
              ("f1_best", "log_classes", "f1_task", "match_score", "domain_images", "relatedness"))


def _rows(outcomes: list[dict], level: str) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Feature dicts, truths and task numbers (for folds), for k = 1 and 3 pooled."""
    from mll_index.predict import task_features

    feats, truth, group = [], [], []
    for t, o in enumerate(outcomes):
        for pred in o["prediction"].values():
            if level == "task":
                feats.append(task_features(pred["features"]))
                truth.append(pred["truth"])
                group.append(t)
            else:
                feats += pred["features"]
                truth += pred["class_truth"]
                group += [t] * len(pred["features"])
    return feats, np.array(truth), np.array(group)


def _design(feats: list[dict], names: tuple[str, ...]) -> np.ndarray:
    return np.array([[1.0] + [f[n] for n in names] for f in feats])


def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(x, y, rcond=None)[0]


def choose_rule(outcomes: list[dict], level: str, folds: int = 5) -> tuple[tuple[str, ...], dict, dict]:
    """The feature set of least 5-fold (by task) cross-validated MAE on the calibration tasks, its rule
    fitted on all of them, and the cross-validation table."""
    feats, y, group = _rows(outcomes, level)
    fold = group % folds
    table = {}
    for names in CANDIDATES:
        x = _design(feats, names)
        err = np.zeros_like(y)
        for f in range(folds):
            beta = _fit(x[fold != f], y[fold != f])
            err[fold == f] = y[fold == f] - x[fold == f] @ beta
        table["+".join(names)] = round(float(np.abs(err).mean()), 4)
    names = min(CANDIDATES, key=lambda n: table["+".join(n)])
    x = _design(feats, names)
    beta = _fit(x, y)
    resid = y - np.clip(x @ beta, 0, 1)
    q_low, q_high = np.quantile(resid, [0.1, 0.9])
    rule = {"intercept": round(float(beta[0]), 5), "coef": {n: round(float(b), 5) for n, b in zip(names, beta[1:])},
            "q_low": round(float(q_low), 5), "q_high": round(float(q_high), 5)}
    return names, rule, table


def report(outcomes: list[dict], calibration: object) -> dict:
    """MAE and 80% coverage of the rules on other tasks, per k and pooled, task and class level."""
    from mll_index.predict import predict_features

    out: dict = {}
    for k in ("1", "3", "all"):
        errs, covered, cerrs, ccovered = [], [], [], []
        for o in outcomes:
            for kk, pred in o["prediction"].items():
                if k not in ("all", kk):
                    continue
                task, classes = predict_features(pred["features"], calibration)
                errs.append(abs(task.estimate - pred["truth"]))
                covered.append(task.low <= pred["truth"] <= task.high)
                for c, truth in zip(classes, pred["class_truth"]):
                    cerrs.append(abs(c.estimate - truth))
                    ccovered.append(c.low <= truth <= c.high)
        out[k] = {"task_mae": round(float(np.mean(errs)), 4), "task_coverage_80": round(float(np.mean(covered)), 4),
                  "class_mae": round(float(np.mean(cerrs)), 4), "class_coverage_80": round(float(np.mean(ccovered)), 4),
                  "tasks": len(outcomes)}
    return out


def calibrate(index: Path, n: int, per_cell: int) -> dict:
    from mll_index.predict import CALIBRATION_FORMAT, calibration_path, load_calibration

    outcomes = outcomes_for(index, n, per_cell)
    chosen, rules, tables = {}, {}, {}
    for level in ("task", "class"):
        chosen[level], rules[level], tables[level] = choose_rule(outcomes["calibrate"], level)
    version = 1
    data = {"format": CALIBRATION_FORMAT, "version": version,
            "about": {"summary": (f"linear rules fitted by least squares on {n} generated tasks of seed "
                                  f"{TASKS_SEEDS['calibrate']} (k = 1 and 3 pooled), features chosen by 5-fold "
                                  "cross-validated MAE, 80% interval from the residuals' 10th and 90th percentiles"),
                      "calibration_seed": TASKS_SEEDS["calibrate"], "report_seed": TASKS_SEEDS["report"],
                      "tasks": n, "world": "full emoji world, its 13-model hub, indexes/default labels",
                      "images_per_class_and_domain": per_cell, "mode": "restricted", "alpha": 0.7,
                      "cross_validation_mae": tables, "command": "python bench/calibrate_accuracy.py"},
            "task": rules["task"], "class": rules["class"]}
    path = calibration_path()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    scored = {"calibration_seed": report(outcomes["calibrate"], load_calibration(tmp)),
              "report_seed": report(outcomes["report"], load_calibration(tmp))}
    data["about"]["scored"] = scored
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return data


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("indexes/default"))
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--per-cell", type=int, default=2)
    args = parser.parse_args()
    result = calibrate(args.index, args.tasks, args.per_cell)
    print(json.dumps({k: result[k] for k in ("task", "class")}, indent=1))
    print(json.dumps(result["about"]["scored"], indent=1))
