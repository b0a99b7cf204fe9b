"""Predicted accuracy of a selection, with an 80% interval, from the labels alone.

What the labels say about a selection is each chosen model's F1 on the class's matched nodes,
counted on the sample images (the restricted confusion among the task's nodes, or the label
matrix's counts). The prediction maps those F1s to accuracy with a linear rule whose constants
were fitted on generated tasks of one seed, where the chosen ensemble's real accuracy on the
task's images is known, and whose interval is the residuals' 10th and 90th percentiles there
(`data/accuracy_calibration.json` says how, on what, and what it scored on another seed). The
task's own labels are never read.

    class c:  x_c = best F1 among the models chosen for c   -> estimate_c = a_class + b_class * x_c
    task:     x   = mean over classes of x_c                  -> estimate = a_task + b_task * x
    interval: [estimate + q10, estimate + q90] (residuals on the calibration tasks), clipped to [0, 1]

A selection's scores are alpha * F1 + (1 - alpha) * (mean F1 of the task's other classes), and
its task-level ranking is each model's mean F1: so F1 is read back from the scores exactly (to
their 4-decimal rounding) instead of computing the confusion a second time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.artifacts import read_json
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


@dataclass(frozen=True)
class Rule:
    """estimate = intercept + slope * x; the interval adds the residual quantiles q_low, q_high."""

    intercept: float
    slope: float
    q_low: float
    q_high: float

    def apply(self, x: float) -> Interval:
        est = float(np.clip(self.intercept + self.slope * x, 0.0, 1.0))
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
        IndexFormatError: not a calibration file, or a rule without its four numbers (naming the file).
    """
    path = Path(path) if path else calibration_path()
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
        raise IndexFormatError(f"{path}: not an accuracy calibration file (format {CALIBRATION_FORMAT!r})")
    try:
        rules = {name: Rule(*(float(data[name][f]) for f in ("intercept", "slope", "q_low", "q_high")))
                 for name in ("task", "class")}
    except (KeyError, TypeError, ValueError):
        raise IndexFormatError(f"{path}: 'task' and 'class' each need intercept, slope, q_low and q_high") from None
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


def selection_matrix(selection: Any) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """(ids, (n, C) scores, (n,) task scores) from a selection whose task ranking lists every model
    (ranking_size None); a score is NaN where the class's chosen models do not include the model (all
    are there when it was made with k = every model). None for published labels (ranks, not F1)."""
    if selection.labels != "image":
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


def predict_from_f1(class_f1: np.ndarray, calibration: Calibration) -> tuple[Interval, list[Interval]]:
    """The task's and each class's predicted accuracy from the chosen models' best F1 per class ((C,))."""
    x = np.asarray(class_f1, np.float64)
    return calibration.task.apply(float(x.mean())), [calibration.cls.apply(float(v)) for v in x]


def predict_selection(full: Any, chosen: Sequence[Sequence[str]], alpha: float,
                      calibration: Calibration | None = None) -> tuple[Interval, list[Interval]] | None:
    """Predicted accuracy of the ensemble `chosen` (per class, model ids, each among the class's models
    in `full`) under a selection `full` whose ranking lists every model; None where the labels give no F1."""
    got = selection_matrix(full)
    if got is None:
        return None
    ids, scores, task_scores = got
    f1 = f1_matrix(ids, scores, task_scores, alpha)     # NaN where a score is missing: no chosen model's
    return predict_from_f1(chosen_f1(f1, ids, chosen), calibration or load_calibration())
