"""`mll-index calibrate`: fit the selection rule to the index's labels on pseudo-tasks, with no user data.

1. Split every node's sample images into a feature half and an evaluation half, and draw seeded
   pseudo-tasks of 2 to 100 labeled nodes (`pseudo_tasks`: siblings, cousins, random; half of them
   with a domain).
2. Per pseudo-task, every model's features on the feature half (`rule_features`) and its F1 per
   class on the evaluation half, both from the stored top-K nodes.
3. Fit the quadratic rule (scikit-learn's ridge regression over the features, their squares and
   products; `calibrated_rule`) on four fifths of the pseudo-tasks; on the last fifth, measure its
   error and what per-class picks by it, by the paper's rule and by the best single model score
   on the evaluation half; choose the k > 1 margin (a further model joins a class's vote while its
   predicted F1 is within the margin of the class's best) by the simulated vote's accuracy; fit the
   task-level accuracy rule on the simulated votes. Then refit on every pseudo-task and store it.

Why ridge on a quadratic basis rather than a tree ensemble: the rule is applied to every (model,
class) of every selection, 10,000 models x 100 classes at hub scale, so it must be a few matrix
products in numpy without importing scikit-learn; its numbers are stored as JSON (no pickle to
trust). In development, on 600 pseudo-tasks of the emoji hub, its per-class picks reached an
evaluation-half F1 of 0.650 against 0.653 for scikit-learn's HistGradientBoostingRegressor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.core.artifacts import index_lock
from mll_index.errors import IndexFormatError, InputError
from mll_index.index.node_index import load_index
from mll_index.labels.store import LabelStore, open_labels, refuse_damaged
from mll_index.selection.accuracy import Rule
from mll_index.selection.calibrated_rule import CalibratedRule, label_digest, model_label, vote_members, write_rule
from mll_index.selection.confusion import smooth_scores
from mll_index.selection.pseudo_tasks import (
    Halves, PseudoTask, check_calibratable, draw_pseudo_tasks, ensemble_accuracy, eval_f1, half_confusion,
    model_strength, split_halves,
)
from mll_index.selection.rule_features import RULE_FEATURES, rule_features
from mll_index.selection.vote_search import sample_votes

DEFAULT_TASKS = 600
MARGINS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 1.0)
HELD_OUT = 5            # every 5th pseudo-task is held out of the first fit
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 3, 11))
MLL_ALPHA = 0.7         # the paper's rule, reported beside the calibrated one
# The ridge is fitted on at most this many (model, class) examples, drawn seeded from all of them: the
# quadratic basis is 104 float64 columns a row, so a 1,000-model hub's 18 million examples would need
# 15 GB; 400,000 pin 13 coefficients' worth of curvature many times over (the emoji hub has 202,000).
MAX_FIT_ROWS = 400_000


@dataclass
class Example:
    """One pseudo-task's (M, C, F) features, (M, C) evaluation-half F1 and the paper rule's (M, C) scores."""

    task: PseudoTask
    features: np.ndarray
    truth: np.ndarray
    mll: np.ndarray


def _bar(total: int, desc: str, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="task", disable=not progress, leave=False)


def domain_strengths(store: LabelStore, halves: Halves) -> dict[str, np.ndarray]:
    """Domain tag -> (n_models,) top-1 accuracy on that domain's feature-half images."""
    domains = sorted({d for fp in store.groups() for d in store.sample_group(fp).domain_set if d})
    out = {}
    for d in domains:
        weights = {fp: w * (store.sample_group(fp).domains == d) for fp, w in halves.feature.items()}
        out[d] = model_strength(store, weights)
    return out


def examples(store: LabelStore, tasks: Sequence[PseudoTask], halves: Halves, strength: np.ndarray,
             by_domain: dict[str, np.ndarray], progress: bool = False) -> list[Example]:
    """Features on the feature half and F1 on the evaluation half of every pseudo-task (step 2)."""
    out = []
    with _bar(len(tasks), "pseudo-tasks", progress) as bar:
        for task in tasks:
            eye = np.eye(len(task.nodes))
            confusion = half_confusion(store, task, halves.feature)
            every = None
            if task.domain:
                every = half_confusion(store, PseudoTask(task.nodes, None, task.structure), halves.feature)
            features = rule_features(confusion, eye, strength, domain_images=task.domain is not None,
                                     all_domains=every, strength_domain=by_domain.get(task.domain or "", strength))
            f1 = features[..., RULE_FEATURES.index("f1")]
            # float32: at 1,000 models the examples of 600 pseudo-tasks are ~1 GB even so.
            out.append(Example(task, features.astype(np.float32), eval_f1(store, task, halves).astype(np.float32),
                               smooth_scores(f1, MLL_ALPHA).astype(np.float32)))
            bar.update()
    return out


def fit_quadratic(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Ridge regression of y on the standardised features, their squares and products.

    Args:
        x: (n, F) features; y: (n,) targets.
    Returns:
        mean, scale (F,), intercept, linear (F,), quadratic (F, F) upper triangular, ridge_alpha.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import PolynomialFeatures

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (x - mean) / scale
    poly = PolynomialFeatures(degree=2, include_bias=False)
    basis = poly.fit_transform(z)
    ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(basis, y)
    n = x.shape[1]
    linear, quadratic = np.zeros(n), np.zeros((n, n))
    for coef, powers in zip(ridge.coef_, poly.powers_):
        at = np.flatnonzero(powers)
        if powers.sum() == 1:
            linear[at[0]] = coef
        elif len(at) == 1:
            quadratic[at[0], at[0]] = coef
        else:
            quadratic[at[0], at[1]] = coef
    return {"mean": mean, "scale": scale, "intercept": float(ridge.intercept_), "linear": linear,
            "quadratic": quadratic, "ridge_alpha": float(ridge.alpha_)}


def _stack(chosen: Sequence[Example], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The examples' (n, F) features and (n,) targets as float64, at most MAX_FIT_ROWS of them (seeded)."""
    sizes = [e.truth.size for e in chosen]
    total = sum(sizes)
    keep = None
    if total > MAX_FIT_ROWS:
        keep = np.sort(np.random.default_rng(seed).choice(total, MAX_FIT_ROWS, replace=False))
    x, y, start = [], [], 0
    for e, n in zip(chosen, sizes):
        rows = slice(None) if keep is None else keep[(keep >= start) & (keep < start + n)] - start
        x.append(e.features.reshape(-1, len(RULE_FEATURES))[rows])
        y.append(e.truth.reshape(-1)[rows])
        start += n
    return np.concatenate(x).astype(np.float64), np.concatenate(y).astype(np.float64)


def _rule(fit: dict[str, Any], margin: float, store: LabelStore, strength: np.ndarray,
          by_domain: dict[str, np.ndarray], accuracy: Rule, report: dict[str, Any],
          class_q: tuple[float, float] = (0.0, 0.0)) -> CalibratedRule:
    return CalibratedRule(RULE_FEATURES, fit["mean"], fit["scale"], fit["intercept"], fit["linear"], fit["quadratic"],
                          margin, tuple(store.model_ids), strength, by_domain, accuracy, label_digest(store), report,
                          tuple(model_label(store, m) for m in store.model_ids), class_q)


def _picked_f1(scores: np.ndarray, truth: np.ndarray) -> float:
    """Mean over classes of the evaluation-half F1 of each class's top model by `scores`."""
    best = np.argsort(-scores, axis=0, kind="stable")[0]
    return float(truth[best, np.arange(truth.shape[1])].mean())


def held_out_report(store: LabelStore, held: Sequence[Example], rule: CalibratedRule, halves: Halves,
                    progress: bool = False) -> tuple[dict[str, Any], float, Rule]:
    """On held-out pseudo-tasks: the rule's error, what its per-class picks score against the paper's
    rule and the best single model, the margin for k > 1 and the task-level accuracy rule (step 3)."""
    rows = []
    by_margin = {m: [] for m in MARGINS}
    votes: list[tuple[float, float, int]] = []          # (mean best predicted F1, simulated accuracy, C)
    residuals: list[np.ndarray] = []                    # per class, evaluation F1 - predicted, of its best model
    with _bar(len(held), "simulated votes", progress) as bar:
        for e in held:
            predicted = rule.predict(e.features)
            f1 = e.features[..., RULE_FEATURES.index("f1")]
            single = np.argmax(f1.mean(axis=1))
            cache: dict[int, np.ndarray] = {}
            one = vote_members(predicted, 1, 0.0)
            searched = {k: sample_votes(store, e.task.nodes, e.task.domain, predicted, k, halves.feature)
                        or vote_members(predicted, k, 1.0) for k in (1, 3)}
            acc = {"calibrated_k1": ensemble_accuracy(store, e.task, halves, searched[1], cache),
                   "calibrated_k3": ensemble_accuracy(store, e.task, halves, searched[3], cache),
                   "ranked_k1": ensemble_accuracy(store, e.task, halves, one, cache),
                   "mll_k1": ensemble_accuracy(store, e.task, halves, vote_members(e.mll, 1, 0.0), cache),
                   "mll_k3": ensemble_accuracy(store, e.task, halves, vote_members(e.mll, 3, 1.0), cache),
                   "best_single_by_labels": ensemble_accuracy(store, e.task, halves,
                                                              [[int(single)]] * predicted.shape[1], cache)}
            for margin in MARGINS:
                by_margin[margin].append(ensemble_accuracy(store, e.task, halves,
                                                           vote_members(predicted, 3, margin), cache))
            rows.append({"mae": float(np.abs(predicted - e.truth).mean()),
                         "pick_f1_calibrated": _picked_f1(predicted, e.truth), "pick_f1_mll": _picked_f1(e.mll, e.truth),
                         "pick_f1_oracle": float(e.truth.max(axis=0).mean()), **acc})
            top = np.asarray([c[0] for c in one])
            best = predicted[top, np.arange(predicted.shape[1])]
            residuals.append(e.truth[top, np.arange(predicted.shape[1])] - best)
            votes.append((float(best.mean()), acc["calibrated_k1"], predicted.shape[1]))
            bar.update()
    mean_by_margin = {m: float(np.nanmean(v)) for m, v in by_margin.items()}
    margin = max(MARGINS, key=lambda m: (round(mean_by_margin[m], 4), -m))
    accuracy = fit_accuracy(votes)
    report = {key: round(float(np.nanmean([r[key] for r in rows])), 4) for key in rows[0]}
    report["k3_by_margin"] = {str(m): round(v, 4) for m, v in mean_by_margin.items()}
    spread = np.concatenate(residuals)
    report["class_q"] = [round(float(np.percentile(spread, 10)), 4), round(float(np.percentile(spread, 90)), 4)]
    return report, margin, accuracy


def fit_accuracy(votes: Sequence[tuple[float, float, int]]) -> Rule:
    """The task-level accuracy rule: logit(accuracy) linear in the mean best predicted F1 and ln C,
    with the residuals' 10th and 90th percentiles as its 80% interval (accuracy.Rule, logit link)."""
    rows = [(f, a, c) for f, a, c in votes if np.isfinite(a)]
    x = np.array([[f, np.log(c)] for f, _, c in rows])
    acc = np.clip(np.array([a for _, a, _ in rows]), 0.01, 0.99)
    y = np.log(acc / (1 - acc))
    design = np.column_stack([np.ones(len(x)), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    return Rule(float(coef[0]), {"f1_best": float(coef[1]), "log_classes": float(coef[2])},
                float(np.percentile(residual, 10)), float(np.percentile(residual, 90)), "logit")


def calibrate_rule(index_path: Path, *, tasks: int = DEFAULT_TASKS, seed: int = 0,
                   progress: bool = False) -> dict[str, Any]:
    """Fit the selection rule to the index's labels on `tasks` pseudo-tasks and store it in the index.

    Args:
        tasks: pseudo-tasks drawn (>= 2 * HELD_OUT); seed: of the split, the draws and nothing else.
    Returns:
        The training report stored with the rule (pseudo-tasks, held-out error, picks, margin, seconds).
    Raises:
        InputError: labels that cannot give pseudo-tasks (`pseudo_tasks.check_calibratable`), a
            damaged label, too few tasks, or labels changed while calibrating.
    """
    if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 2 * HELD_OUT:
        raise InputError(f"calibration needs at least {2 * HELD_OUT} pseudo-tasks, got {tasks!r}")
    started = time.perf_counter()
    store = open_labels(index_path)
    refuse_damaged(store, "restricted")
    check_calibratable(store)
    index = load_index(index_path)
    halves = split_halves(store, seed)
    strength = model_strength(store, halves.feature)
    by_domain = domain_strengths(store, halves)
    drawn = draw_pseudo_tasks(store, index.graph, tasks, seed)
    made = examples(store, drawn, halves, strength, by_domain, progress)
    train = [e for i, e in enumerate(made) if i % HELD_OUT]
    held = [e for i, e in enumerate(made) if i % HELD_OUT == 0]
    first = fit_quadratic(*_stack(train, seed))
    placeholder = Rule(0.0, {"f1_best": 0.0, "log_classes": 0.0}, 0.0, 0.0, "logit")
    report, margin, accuracy = held_out_report(store, held, _rule(first, 1.0, store, strength, by_domain,
                                                                  placeholder, {}), halves, progress)
    final = fit_quadratic(*_stack(made, seed))
    sizes = [len(e.task.nodes) for e in made]
    report = {"pseudo_tasks": len(made), "held_out_tasks": len(held), "seed": seed,
              "classes": {"min": int(min(sizes)), "median": int(np.median(sizes)), "max": int(max(sizes))},
              "structures": {s: sum(e.task.structure == s for e in made) for s in ("siblings", "cousins", "random")},
              "with_domain": sum(e.task.domain is not None for e in made), "models": len(store.model_ids),
              "examples": int(sum(e.truth.size for e in made)), "ridge_alpha": final["ridge_alpha"],
              "margin": margin, "held_out": report, "seconds": round(time.perf_counter() - started, 1)}
    q = report["held_out"]["class_q"]
    rule = _rule(final, margin, store, strength, by_domain, accuracy, report, (q[0], q[1]))
    with index_lock(index_path):
        if label_digest(open_labels(index_path)) != rule.label_digest:
            raise InputError(f"{index_path}: the labels changed while calibrating; run `mll-index calibrate` again")
        write_rule(index_path, rule)
    return report



def calibrate_if_needed(index_path: Path, *, progress: bool = False) -> dict[str, Any] | None:
    """Calibrate the index's rule (`calibrate_rule`, default settings) unless it holds one fitted to its
    current labels; the demo runs this after labeling so that its table shows both rules.

    Returns:
        The new rule's report, or None where the stored rule is current.
    Raises:
        InputError: as `calibrate_rule` (labels that cannot give pseudo-tasks among them).
    """
    from mll_index.selection.calibrated_rule import has_rule, read_rule

    if has_rule(index_path):
        try:
            read_rule(index_path, open_labels(index_path))
            return None
        except (InputError, IndexFormatError):    # stale or damaged: fit it again, in place
            pass
    return calibrate_rule(index_path, progress=progress)
