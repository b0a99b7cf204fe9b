"""Calibrate select's predicted accuracy on generated tasks of one seed and measure it on another.

    python bench/calibrate_accuracy.py [--index indexes/default] [--tasks 200] [--per-cell 8]

Draws `--tasks` generated tasks with seed 1 (calibration) and seed 2 (report) from the full emoji
world, scores MLL's selections (k = 1 and 3) on their images (bench/generated_tasks.py), and, on
seed 1 alone, chooses each rule's features and link (identity or logit) among CANDIDATES by 5-fold
cross-validated MAE (folds by task), fits the chosen one by least squares on the link's scale and
takes the 80% interval from the residuals' 10th and 90th percentiles on that scale. It writes the
rules with how they were chosen and what they scored on seed 2 to
mll_index/data/accuracy_calibration.json. The task's labels are used only here, as ground truth;
`select` reads the rules, never a task's labels.
"""

from __future__ import annotations

import argparse
import hashlib
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

    from mll_index.core.paths import cache_dir
    from mll_index.models.hub import load_hub
    from mll_index.selection.accuracy import FEATURES
    from mll_index.selection.selector import open_selector
    from mll_index.world import load_world

    # Keyed by the feature names too: a change of features scores the tasks again.
    key = hashlib.sha256(json.dumps(FEATURES).encode()).hexdigest()[:8]
    cached = cache_dir() / "bench" / f"calibration_outcomes-{n}-{per_cell}-{key}.json"
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


FEATURE_SETS = (("f1_best",), ("f1_best", "log_classes"), ("f1_best", "log_classes", "f1_task"),
                ("f1_best", "log_classes", "f1_task", "match_score"),
                ("f1_best", "log_classes", "f1_task", "match_score", "domain_images"),
                ("f1_best", "log_classes", "relatedness"), ("f1_best", "log_classes", "f1_task", "relatedness"),
                ("f1_best", "log_classes", "f1_task", "match_score", "domain_images", "relatedness"),
                ("f1_best", "log_classes", "relatedness_sq"), ("f1_best", "log_classes", "relatedness", "relatedness_sq"),
                ("f1_best", "log_classes", "f1_task", "match_score", "domain_images", "relatedness", "relatedness_sq"))
CANDIDATES = tuple((names, link) for link in ("identity", "logit") for names in FEATURE_SETS)
# The logit of a truth of 0 or 1 (a class's recall often is) is cut at this distance from the ends.
LOGIT_EPS = 0.005


def _rows(outcomes: list[dict], level: str) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Feature dicts, truths and task numbers (for folds), for k = 1 and 3 pooled."""
    from mll_index.selection.accuracy import task_features

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


def _to_link(y: np.ndarray, link: str) -> np.ndarray:
    if link == "logit":
        y = np.clip(y, LOGIT_EPS, 1 - LOGIT_EPS)
        return np.log(y / (1 - y))
    return y


def _from_link(z: np.ndarray, link: str) -> np.ndarray:
    from mll_index.selection.accuracy import logistic

    return np.asarray(logistic(z)) if link == "logit" else np.clip(z, 0, 1)


def _fit(x: np.ndarray, y: np.ndarray, link: str) -> np.ndarray:
    """Least squares on the link's scale."""
    return np.linalg.lstsq(x, _to_link(y, link), rcond=None)[0]


def _residuals(x: np.ndarray, y: np.ndarray, beta: np.ndarray, link: str) -> np.ndarray:
    """Truth minus the rule on the link's scale (the interval's quantiles are taken there)."""
    z = x @ beta
    return _to_link(y, link) - z if link == "logit" else y - np.clip(z, 0, 1)


def _key(names: tuple[str, ...], link: str) -> str:
    return f"{link}: {'+'.join(names)}"


def choose_rule(outcomes: list[dict], level: str, folds: int = 5) -> tuple[tuple[str, ...], dict, dict]:
    """The candidate (features, link) of least 5-fold (by task) cross-validated MAE on the calibration
    tasks, its rule fitted on all of them, and the cross-validation table: per candidate, the MAE
    of the estimate and the coverage of its 80% interval on the held-out folds."""
    feats, y, group = _rows(outcomes, level)
    fold = group % folds
    table = {}
    for names, link in CANDIDATES:
        x = _design(feats, names)
        pred, low, high = np.zeros_like(y), np.zeros_like(y), np.zeros_like(y)
        for f in range(folds):
            train, test = fold != f, fold == f
            beta = _fit(x[train], y[train], link)
            q_low, q_high = np.quantile(_residuals(x[train], y[train], beta, link), [0.1, 0.9])
            z = x[test] @ beta
            if link == "logit":
                pred[test], low[test], high[test] = (_from_link(z + q, link) for q in (0.0, q_low, q_high))
            else:
                pred[test] = _from_link(z, link)
                low[test], high[test] = pred[test] + q_low, pred[test] + q_high
        table[_key(names, link)] = {"mae": round(float(np.abs(y - pred).mean()), 4),
                                    "coverage_80": round(float(np.mean((low <= y) & (y <= high))), 4)}
    names, link = min(CANDIDATES, key=lambda c: table[_key(*c)]["mae"])
    x = _design(feats, names)
    beta = _fit(x, y, link)
    q_low, q_high = np.quantile(_residuals(x, y, beta, link), [0.1, 0.9])
    rule = {"intercept": round(float(beta[0]), 5), "coef": {n: round(float(b), 5) for n, b in zip(names, beta[1:])},
            "q_low": round(float(q_low), 5), "q_high": round(float(q_high), 5), "link": link}
    return names, rule, table


def report(outcomes: list[dict], calibration: object) -> dict:
    """MAE and 80% coverage of the rules on other tasks, per k and pooled, task and class level."""
    from mll_index.selection.accuracy import predict_features

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
    from mll_index.selection.accuracy import CALIBRATION_FORMAT, calibration_path, load_calibration

    outcomes = outcomes_for(index, n, per_cell)
    chosen, rules, tables = {}, {}, {}
    for level in ("task", "class"):
        chosen[level], rules[level], tables[level] = choose_rule(outcomes["calibrate"], level)
    # Where the task rule was fitted: outside these ranges it extrapolates (its logit is quadratic in relatedness).
    task_feats = _rows(outcomes["calibrate"], "task")[0]
    ranges = {f: [round(min(t[f] for t in task_feats), 4), round(max(t[f] for t in task_feats), 4)]
              for f in chosen["task"]}
    version = 2
    data = {"format": CALIBRATION_FORMAT, "version": version,
            "about": {"summary": (f"linear rules (task: {rules['task']['link']} link, class: "
                                  f"{rules['class']['link']} link) fitted by least squares on {n} generated tasks of "
                                  f"seed {TASKS_SEEDS['calibrate']} (k = 1 and 3 pooled), features and link chosen by "
                                  "5-fold cross-validated MAE on that seed, 80% interval from the residuals' 10th and "
                                  "90th percentiles on the link's scale"),
                      "calibration_seed": TASKS_SEEDS["calibrate"], "report_seed": TASKS_SEEDS["report"],
                      "tasks": n, "world": "full emoji world, its 13-model hub, indexes/default labels",
                      "images_per_class_and_domain": per_cell, "mode": "restricted", "alpha": 0.7,
                      "cross_validation": tables, "task_feature_range": ranges,
                      "command": f"python bench/calibrate_accuracy.py --tasks {n} --per-cell {per_cell}"},
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
    parser.add_argument("--per-cell", type=int, default=8, help="task-pool images per class and domain (all 8)")
    args = parser.parse_args()
    result = calibrate(args.index, args.tasks, args.per_cell)
    print(json.dumps({k: result[k] for k in ("task", "class")}, indent=1))
    print(json.dumps(result["about"]["scored"], indent=1))
