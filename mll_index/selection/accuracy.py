"""Predicted accuracy of a selection, with an 80% interval, from the labels alone.

What the labels say about a selection is each model's F1 on each class's matched nodes, counted
on the sample images (the restricted confusion among the task's nodes, or the label matrix's
counts), plus how well each class name matched its nodes and how close the classes' nodes sit in
the index's graph. The prediction is a linear rule over a few such features, read through a link
(the identity, or the logit: the estimate is then the logistic of the linear rule, which keeps it
inside (0, 1) and lets the features matter less near the ends). Its constants were fitted on
generated tasks of one seed, where the chosen ensemble's real accuracy on the task's images is
known; its interval is the residuals' 10th and 90th percentiles there, on the link's scale (with
the logit, an interval narrows towards 0 and 1). `data/accuracy_calibration.json` says which
features and link, how they were chosen (cross-validation on that seed alone), on what, and what
the rule scored on another seed. The task's own labels are never read.

Features (per class; the task's are their means over classes, and `log_classes` = ln C):
    f1_best       the best F1 among the models chosen for the class
    f1_task       the chosen models' mean F1 over all the task's classes (how strong they are here)
    match_score   the class's best node match score (a weak match: F1 of the wrong nodes)
    domain_images 1 where the confusion used only the task's domain's sample images, else 0
    relatedness   the share of the class's node's hypernyms that the nearest other class's node has too
                  (farm animals: high; a mixed task: low), from the index's graph
    relatedness_sq  relatedness squared (the task's: the classes' mean square), so that the effect of
                  relatedness can bend: in the shipped task rule accuracy falls faster the closer
                  a class's nearest neighbour is
    z = intercept + sum(coef[f] * feature[f])
    identity link: estimate = z, interval = [z + q_low, z + q_high] (each clipped to [0, 1])
    logit link:    estimate = 1 / (1 + exp(-z)), interval = [logistic(z + q_low), logistic(z + q_high)]

The shipped rules (calibration v2): the task's, the logit link over f1_best, log_classes,
relatedness and relatedness_sq; each class's, the identity link over all seven features. The task
rule was fitted on tasks of 10 to 60 classes whose mean relatedness lay in 0.56-0.92 (the file's
`task_feature_range`); a task far outside that, such as two unrelated classes, is an extrapolation.

A selection's scores are alpha * F1 + (1 - alpha) * (mean F1 of the task's other classes), and
its task-level ranking is each model's mean F1: so F1 is read back from the scores exactly (to
their 4-decimal rounding) instead of computing the confusion a second time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from mll_index.core.artifacts import read_json
from mll_index.errors import IndexFormatError, InputError

CALIBRATION_FORMAT = "mll-index-accuracy-calibration"
# Below this |alpha - (1 - alpha) / (C - 1)| the scores hardly depend on a class's own F1 (e.g. alpha
# 0.5 with 2 classes), and reading F1 back would amplify their rounding: the scores stand in for it.
MIN_INVERTIBLE = 0.05


@dataclass(frozen=True)
class Interval:
    """A predicted accuracy in [0, 1] and its 80% interval."""

    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"estimate": round(self.estimate, 4), "low": round(self.low, 4), "high": round(self.high, 4)}


FEATURES = ("f1_best", "f1_task", "match_score", "domain_images", "log_classes", "relatedness", "relatedness_sq")
Link = Literal["identity", "logit"]
LINKS: tuple[str, ...] = get_args(Link)


def logistic(z: np.ndarray | float) -> np.ndarray | float:
    """1 / (1 + exp(-z)), the logit link's inverse."""
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


@dataclass(frozen=True)
class Rule:
    """z = intercept + sum of coef[f] * features[f], read through `link`; the interval adds the
    residual quantiles q_low <= 0 <= q_high on the link's scale (see the module docstring)."""

    intercept: float
    coef: dict[str, float]
    q_low: float
    q_high: float
    link: Link = "identity"

    def apply(self, features: dict[str, float]) -> Interval:
        z = self.intercept + sum(c * features[f] for f, c in self.coef.items())
        if self.link == "logit":
            return Interval(float(logistic(z)), float(logistic(z + self.q_low)), float(logistic(z + self.q_high)))
        est = float(np.clip(z, 0.0, 1.0))
        return Interval(est, float(np.clip(est + self.q_low, 0.0, 1.0)), float(np.clip(est + self.q_high, 0.0, 1.0)))


@dataclass(frozen=True)
class Calibration:
    """The task-level and class-level rules, and where they came from (`about`, free-form)."""

    task: Rule
    cls: Rule
    version: int
    about: dict[str, Any]


def calibration_path() -> Path:
    return Path(str(resources.files("mll_index").joinpath("data/accuracy_calibration.json")))


def load_calibration(path: Path | None = None) -> Calibration:
    """Read a calibration file (the shipped one by default).

    Raises:
        IndexFormatError: not a calibration file, a rule without its four numbers, an unknown feature
            or link (naming the file).
    """
    path = Path(path) if path else calibration_path()
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
        raise IndexFormatError(f"{path}: not an accuracy calibration file (format {CALIBRATION_FORMAT!r})")
    rules = {}
    for name in ("task", "class"):
        raw = data.get(name)
        try:
            coef = {str(f): float(v) for f, v in raw["coef"].items()}
            link = raw.get("link", "identity")
            rules[name] = Rule(float(raw["intercept"]), coef, float(raw["q_low"]), float(raw["q_high"]), link)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise IndexFormatError(f"{path}: {name!r} needs intercept, coef (feature -> number), q_low and q_high") \
                from None
        if link not in LINKS:
            raise IndexFormatError(f"{path}: {name!r} has unknown link {link!r}; links: {list(LINKS)}")
        unknown = sorted(set(coef) - set(FEATURES))
        if unknown:
            raise IndexFormatError(f"{path}: {name!r} uses unknown feature(s) {unknown}; features: {list(FEATURES)}")
    return Calibration(rules["task"], rules["class"], int(data.get("version", 0)), dict(data.get("about", {})))


def f1_matrix(ids: Sequence[str], scores: np.ndarray, task_scores: np.ndarray, alpha: float) -> np.ndarray:
    """(n_models, n_classes) F1 read back from smoothed scores.

    Args:
        ids: the n model ids (for messages only).
        scores: (n, C) alpha * F1 + (1 - alpha) * mean F1 on the other classes.
        task_scores: (n,) each model's mean over classes of the scores (= its mean F1).
        alpha: the smoothing weight the scores were made with.
    Returns:
        (n, C) float64 in [0, 1]; the scores themselves where C = 1 or the map is not invertible.
    """
    scores = np.asarray(scores, np.float64)
    n, c = scores.shape
    if len(ids) != n or len(task_scores) != n:
        raise InputError(f"{len(ids)} model ids, {n} score rows and {len(task_scores)} task scores do not agree")
    if c < 2:
        return np.clip(scores, 0.0, 1.0)
    denom = alpha - (1 - alpha) / (c - 1)
    if abs(denom) < MIN_INVERTIBLE:
        return np.clip(scores, 0.0, 1.0)
    total = np.asarray(task_scores, np.float64)[:, None] * c
    return np.clip((scores - (1 - alpha) * total / (c - 1)) / denom, 0.0, 1.0)


def selection_matrix(selection: Any, labels: str = "image") -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """(ids, (n, C) scores, (n,) task scores) from a selection whose task ranking lists every model
    (ranking_size None); a score is NaN where the class's chosen models do not include the model (all
    are there when it was made with k = every model). None unless the selection's labels are `labels`
    (by default image-based: published z-scores and merged ranks are not F1)."""
    if selection.labels != labels:
        return None
    ids = [m.model for m in selection.ranking]
    pos = {m: i for i, m in enumerate(ids)}
    scores = np.full((len(ids), len(selection.classes)), np.nan)
    for c, cls in enumerate(selection.classes):
        for m in cls.models:
            if m.model not in pos:
                return None     # the ranking was cut: the model's mean F1 is not there
            scores[pos[m.model], c] = m.score
    return ids, scores, np.array([m.score for m in selection.ranking])


def chosen_f1(f1: np.ndarray, ids: Sequence[str], chosen: Sequence[Sequence[str]]) -> np.ndarray:
    """(C,) per class, the best F1 among the models chosen for it (`chosen[c]`: model ids, >= 1).

    The best, not the mean: an ensemble is about as good as its best member on a class or better
    (the calibration measures how much), and a weaker extra model must not lower the prediction."""
    pos = {m: i for i, m in enumerate(ids)}
    return np.array([float(np.max([f1[pos[m], c] for m in models])) if models else 0.0
                     for c, models in enumerate(chosen)])


def relatedness(wnids: Sequence[str | None], ancestors: Callable[[str], set[str]]) -> list[float]:
    """Per class (its best node's wnid, None: no match), the largest share of its node's hypernyms
    (itself included) that another class's node shares: 1 for a node under another, near 0 when apart."""
    paths = [ancestors(w) | {w} if w else set() for w in wnids]
    out = []
    for i, mine in enumerate(paths):
        shares = [len(mine & other) / len(mine) for j, other in enumerate(paths) if j != i and mine]
        out.append(float(max(shares)) if shares else 0.0)
    return out


def class_features(selection: Any, f1: np.ndarray, ids: Sequence[str], task_scores: np.ndarray,
                   chosen: Sequence[Sequence[str]], ancestors: Callable[[str], set[str]]) -> list[dict[str, float]]:
    """Per class of `selection`, the features of the ensemble `chosen` (see the module docstring).

    Args:
        f1: (n_models, C) from `f1_matrix`; NaN allowed except for a class's chosen models.
        ids, task_scores: (n,) the models and their mean F1 over the task's classes (the task ranking).
        chosen: per class, the model ids of the ensemble.
        ancestors: wnid -> its hypernyms' wnids (the index's graph: `Graph.ancestors`).
    """
    pos = {m: i for i, m in enumerate(ids)}
    best = chosen_f1(f1, ids, chosen)
    log_classes = float(np.log(len(selection.classes)))
    related = relatedness([cls.nodes[0].wnid if cls.nodes else None for cls in selection.classes], ancestors)
    out = []
    for c, cls in enumerate(selection.classes):
        rows = [pos[m] for m in chosen[c]]
        out.append({"f1_best": float(best[c]),
                    "f1_task": float(np.mean(np.asarray(task_scores)[rows])) if rows else 0.0,
                    "match_score": float(cls.nodes[0].score) if cls.nodes else 0.0,
                    "domain_images": float(bool(selection.domain_images)), "log_classes": log_classes,
                    "relatedness": related[c], "relatedness_sq": related[c] ** 2})
    return out


def task_features(per_class: Sequence[dict[str, float]]) -> dict[str, float]:
    """The task's features: the classes' means."""
    return {f: float(np.mean([c[f] for c in per_class])) for f in FEATURES}


def predict_features(per_class: Sequence[dict[str, float]], calibration: Calibration) -> tuple[Interval, list[Interval]]:
    """The task's and each class's predicted accuracy from the classes' features."""
    return calibration.task.apply(task_features(per_class)), [calibration.cls.apply(c) for c in per_class]


def extrapolation(per_class: Sequence[dict[str, float]], calibration: Calibration) -> list[str]:
    """The task features of the task rule that lie outside the range they were calibrated on
    (`about.task_feature_range`: [min, max] per feature over the calibration tasks), one phrase each;
    empty when every feature is inside or the file records no range. Such an estimate is an
    extrapolation: its interval was not measured there."""
    ranges = calibration.about.get("task_feature_range") or {}
    values = task_features(per_class)
    out = []
    for name in calibration.task.coef:
        if name not in ranges or name.endswith("_sq"):
            continue  # a square is outside exactly when its base is
        low, high = (float(v) for v in ranges[name])
        value = values[name]
        if low <= value <= high:
            continue
        if name == "log_classes":
            out.append(f"{round(float(np.exp(value)))} classes (calibrated on {round(float(np.exp(low)))} to "
                       f"{round(float(np.exp(high)))})")
        else:
            out.append(f"{name} {value:.2f} (calibrated on {low:.2f} to {high:.2f})")
    return out


def predict_selection(full: Any, chosen: Sequence[Sequence[str]], alpha: float, ancestors: Callable[[str], set[str]],
                      calibration: Calibration | None = None) -> tuple[Interval, list[Interval]] | None:
    """Predicted accuracy of the ensemble `chosen` (per class, model ids, each among the class's models
    in `full`) under a selection `full` whose ranking lists every model; None where the labels give no F1."""
    got = selection_matrix(full)
    if got is None:
        return None
    ids, scores, task_scores = got
    f1 = f1_matrix(ids, scores, task_scores, alpha)
    return predict_features(class_features(full, f1, ids, task_scores, chosen, ancestors),
                            calibration or load_calibration())
