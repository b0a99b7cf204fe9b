"""The ranking rule of published labels: neighbour datasets, general strength, and when to fall back.

Accuracies differ in level from dataset to dataset (CLEVR's 25% is good, Stanford Cars' 85% is
average), so every dataset's column is standardised over the models first (a z-score: how many
standard deviations a model stands above the table's mean there). For a task:

1. **Neighbour weights.** Each task class is matched to the `n` most similar benchmark classes;
   each match adds its (positive) cosine similarity to its dataset's weight, and the class's
   weights are normalised to sum to 1. When the task gives a domain or a description and the
   table's datasets have them, a second weight per dataset comes from those texts: the mean
   cosine similarity of the task's domain to the dataset's and of its description to the
   dataset's, clipped at 0 and raised to the power `TEXT_SHARPNESS` (so that "medical image
   classification" picks out the medical datasets rather than spreading over all), normalised.
   A class's neighbour weights are `(class weights + text_weight * text weights) / (1 + text_weight)`.
2. **Neighbour evidence** for a model and class: the weighted mean of its z-scores on the
   neighbour datasets (weights renormalised over the datasets it has figures on).
3. **General strength**: the model's z-score on ImageNet (`ImageNet 1k` / `imagenet1k`) when that
   column is visible, else its mean z-score over the visible datasets.
4. **Score** = `neighbour_weight * evidence + (1 - neighbour_weight) * strength`, per class;
   the task's ranking is the mean over its classes.
5. **Clear evidence, or fall back**, per class. Let A be the model the blend ranks first for
   the class and B the strongest model in general. The evidence is clear when A is B (both
   agree), or when A beats B on the class's neighbour datasets holding at least `AGREEMENT`
   (2/3) of its neighbour weight. Otherwise the neighbours are split about the one question
   that changes the answer (is A better than B here?), and the class's scores fall back to
   general strength, saying so and why. A class also falls back when no benchmark class and no
   dataset text resembles it at all (every similarity <= 0). The task falls back when all its
   classes do. Only the published labels enter this rule; it never sees the task's own
   accuracies.

`neighbour_weight` and `text_weight` are chosen per table by `calibrate_rule`: leave one dataset
out over the imported table itself (each dataset's column hidden in turn, its model chosen from
the others as above), the pair with the least mean regret of the chosen model wins (the defaults
0.75 and 0.5 when they tie for least). `AGREEMENT`
and `TEXT_SHARPNESS` are fixed, not fitted. Only numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

AGREEMENT = 2 / 3
TEXT_SHARPNESS = 8
NEIGHBOUR_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
TEXT_WEIGHTS: tuple[float, ...] = (0.0, 0.5, 1.0)
STRENGTH_COLUMNS = ("ImageNet 1k", "imagenet1k")


@dataclass(frozen=True)
class PublishedRule:
    """The rule's two fitted weights (see the module docstring) and how they were chosen."""

    neighbour_weight: float = 0.75
    text_weight: float = 0.5
    chosen_by: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PublishedRule:
        if not isinstance(data, dict):
            return cls()
        return cls(float(data.get("neighbour_weight", cls.neighbour_weight)),
                   float(data.get("text_weight", cls.text_weight)), str(data.get("chosen_by", "default")))


@dataclass(frozen=True)
class TaskRanking:
    """A task's published ranking.

    scores: (n_models, n_classes) float64, per class the rule's score (z-score units); models
        without any figure on the neighbour datasets get their strength.
    weights: (n_datasets,) float64, the task's neighbour weights (mean over its classes), sum 1 or all 0.
    reasons: per class, None when its evidence is clear, else why its scores are general strength.
    strength: the column general strength was read from, or "mean z-score".
    """

    scores: np.ndarray
    weights: np.ndarray
    reasons: tuple[str | None, ...]
    strength: str

    @property
    def fallback(self) -> bool:
        """Whether every class fell back: the task's ranking is then general strength alone."""
        return bool(self.reasons) and all(r is not None for r in self.reasons)


def standardise(accuracy: np.ndarray) -> np.ndarray:
    """(n_models, n_datasets) z-scores per dataset column, NaN kept; a column with no spread is all 0."""
    acc = np.asarray(accuracy, np.float64)
    with np.errstate(invalid="ignore"):
        counts = (~np.isnan(acc)).sum(axis=0)
        mean = np.where(counts > 0, np.nansum(acc, axis=0) / np.maximum(counts, 1), 0.0)
        std = np.sqrt(np.where(counts > 0, np.nansum((acc - mean) ** 2, axis=0) / np.maximum(counts, 1), 0.0))
        return np.where(std > 1e-12, (acc - mean) / np.where(std > 1e-12, std, 1.0), np.where(np.isnan(acc), np.nan, 0.0))


def class_weights(sims: np.ndarray, class_dataset: np.ndarray, n_datasets: int, visible: np.ndarray,
                  n: int) -> np.ndarray:
    """Per query class, the weights of the datasets its `n` most similar visible benchmark classes belong to.

    Args:
        sims: (n_queries, n_classes) cosine similarities to the benchmark classes.
        class_dataset: (n_classes,) int, each benchmark class's dataset.
        visible: (n_datasets,) bool.
    Returns:
        (n_queries, n_datasets) float64, rows summing to 1 (all 0 where no similarity is positive).
    """
    s = np.where(visible[class_dataset][None, :], np.asarray(sims, np.float64), -np.inf)
    n = max(1, min(n, int(visible[class_dataset].sum())))
    top = np.argpartition(-s, n - 1, axis=1)[:, :n] if s.shape[1] > n else np.tile(np.arange(s.shape[1]), (len(s), 1))
    w = np.zeros((len(s), n_datasets))
    vals = np.maximum(np.take_along_axis(s, top, axis=1), 0.0)
    vals[~np.isfinite(vals)] = 0.0
    np.add.at(w, (np.repeat(np.arange(len(s)), top.shape[1]), class_dataset[top].ravel()), vals.ravel())
    total = w.sum(axis=1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def text_weights(task_vectors: Sequence[np.ndarray | None], dataset_vectors: Sequence[np.ndarray | None],
                 visible: np.ndarray) -> np.ndarray | None:
    """Dataset weights from the task's domain and description (step 1 of the module docstring).

    Args:
        task_vectors: per text field (domain, description), the task's (d,) unit vector or None.
        dataset_vectors: per field, (n_datasets, d) unit rows (zero rows where a dataset has no text), or None.
    Returns:
        (n_datasets,) float64 summing to 1, or None when no field is given on both sides.
    """
    parts = [np.maximum(np.asarray(dv, np.float64) @ np.asarray(tv, np.float64), 0.0)
             for tv, dv in zip(task_vectors, dataset_vectors) if tv is not None and dv is not None]
    if not parts:
        return None
    s = np.where(visible, np.mean(parts, axis=0), 0.0) ** TEXT_SHARPNESS
    total = s.sum()
    return s / total if total > 0 else None


def strength_of(z: np.ndarray, datasets: Sequence[str], visible: np.ndarray) -> tuple[np.ndarray, str]:
    """(n_models,) general strength: the z-score on ImageNet if visible, else the mean visible z-score."""
    for name in STRENGTH_COLUMNS:
        if name in datasets and visible[list(datasets).index(name)]:
            column = z[:, list(datasets).index(name)]
            if not np.isnan(column).all():
                return np.where(np.isnan(column), np.nanmin(column), column), name
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(np.where(visible[None, :], z, np.nan), axis=1) if visible.any() else np.zeros(len(z))
    return np.nan_to_num(mean, nan=np.nanmin(mean) if not np.isnan(mean).all() else 0.0), "mean z-score"


def _weighted_z(z: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n_models, q) weighted mean z over the datasets each model has figures on, and its weight total."""
    known = ~np.isnan(z)
    total = known.astype(np.float64) @ w.T
    value = np.where(known, z, 0.0) @ w.T
    return np.divide(value, total, out=np.zeros_like(value), where=total > 1e-12), total


def rank_task(z: np.ndarray, datasets: Sequence[str], visible: np.ndarray, class_w: np.ndarray,
              text_w: np.ndarray | None, rule: PublishedRule, model_ids: Sequence[str] | None = None) -> TaskRanking:
    """Score every model for a task's classes (steps 1-5 of the module docstring).

    Args:
        z: (n_models, n_datasets) standardised accuracies (`standardise`), NaN missing.
        visible: (n_datasets,) bool, datasets the rule may use.
        class_w: (n_classes, n_datasets) per task class, its neighbour weights (`class_weights`).
        text_w: (n_datasets,) weights from the task's domain and description, or None.
        model_ids: names for the fallback message (positions when None).
    """
    strength, source = strength_of(z, datasets, visible)
    w = np.asarray(class_w, np.float64)
    if text_w is not None:
        w = (w + rule.text_weight * text_w[None, :]) / (1 + rule.text_weight)
    w = np.where(visible[None, :], w, 0.0)
    evidence, total = _weighted_z(z, w)
    evidence = np.where(total > 1e-12, evidence, strength[:, None])
    beta = rule.neighbour_weight
    scores = beta * evidence + (1 - beta) * strength[:, None]
    task_w = w.mean(axis=0)
    names = list(model_ids) if model_ids is not None else [str(i) for i in range(len(z))]
    best = int(np.argmax(strength))
    reasons: list[str | None] = []
    for c in range(w.shape[0]):
        reason = None
        if w[c].sum() <= 0:
            reason = "no benchmark class or dataset text resembles it (every similarity <= 0)"
        else:
            a = int(np.argmax(scores[:, c]))
            both = ~np.isnan(z[a]) & ~np.isnan(z[best])
            share = float(w[c][both & (z[a] > z[best])].sum() / max(w[c][both].sum(), 1e-12))
            if a != best and share < AGREEMENT:
                reason = (f"neighbour datasets split: {names[a]} (first by the rule) beats {names[best]} (strongest "
                          f"in general) on datasets holding {share:.0%} of its neighbour weight, less than "
                          f"{AGREEMENT:.0%}")
        if reason is not None:
            scores[:, c] = strength
        reasons.append(reason)
    total = task_w.sum()
    return TaskRanking(scores, task_w / total if total > 0 else task_w, tuple(reasons), source)


def hidden_mask(datasets: Sequence[str], families: Sequence[str], hidden: Sequence[str]) -> np.ndarray:
    """(n_datasets,) bool, False for the hidden datasets and every dataset of their families."""
    fam = {families[list(datasets).index(h)] for h in hidden if h in datasets}
    return np.array([d not in set(hidden) and f not in fam for d, f in zip(datasets, families)])


def calibrate_rule(accuracy: np.ndarray, datasets: Sequence[str], families: Sequence[str], class_vectors: np.ndarray,
                   class_dataset: np.ndarray, text_vectors: Sequence[np.ndarray | None] = (), *, n: int = 5,
                   hidden: Sequence[str] = (), targets: Sequence[str] | None = None) -> PublishedRule:
    """Choose `neighbour_weight` and `text_weight` by leaving one dataset out of the table.

    Each target dataset (every visible one but the general-strength column, or `targets`) is hidden
    with its family; its own classes and texts select a ranking from the rest, for every pair of
    weights on the grid (NEIGHBOUR_WEIGHTS x TEXT_WEIGHTS); the pair whose first-ranked models have
    the least mean regret (best accuracy on the target minus the chosen model's) wins; ties keep the
    defaults when they are among the best, else go to the smaller weights (closer to general strength). `hidden` datasets are left out of
    everything (a benchmark's held-out dataset: its column must not choose the weights).

    Args:
        accuracy: (n_models, n_datasets) in [0, 1], NaN missing.
        class_vectors: (n_classes, d) unit rows; class_dataset: (n_classes,) their datasets.
        text_vectors: per text field (domain, description), (n_datasets, d) unit rows (zero where none).
    """
    datasets = list(datasets)
    base = hidden_mask(datasets, families, hidden)
    z = standardise(np.where(base[None, :], accuracy, np.nan))
    chosen = targets if targets is not None else [d for d, v in zip(datasets, base) if v and d not in STRENGTH_COLUMNS]
    has_text = [tv is not None and bool(np.any(tv)) for tv in text_vectors]
    grid_text = TEXT_WEIGHTS if any(has_text) else (0.0,)
    regrets = np.zeros((len(NEIGHBOUR_WEIGHTS), len(grid_text)))
    count = 0
    for target in chosen:
        j = datasets.index(target)
        truth = accuracy[:, j]
        if np.isnan(truth).all():
            continue
        visible = base & hidden_mask(datasets, families, [target])
        rows = class_dataset == j
        cw = class_weights(class_vectors[rows] @ class_vectors.T, class_dataset, len(datasets), visible, n)
        own = [tv[j] if tv is not None and np.any(tv[j]) else None for tv in text_vectors]
        tw = text_weights(own, list(text_vectors), visible) if text_vectors else None
        count += 1
        for a, beta in enumerate(NEIGHBOUR_WEIGHTS):
            for b, gamma in enumerate(grid_text):
                ranking = rank_task(z, datasets, visible, cw, tw, PublishedRule(beta, gamma))
                task = np.where(np.isnan(truth), -np.inf, ranking.scores.mean(axis=1))
                regrets[a, b] += float(np.nanmax(truth) - truth[int(np.argmax(task))])
    if not count:
        return PublishedRule(chosen_by="default (no dataset to leave out)")
    mean = np.round(regrets / count, 9)
    default = PublishedRule()
    a, b = np.unravel_index(int(np.argmin(mean)), mean.shape)
    if default.neighbour_weight in NEIGHBOUR_WEIGHTS and (default.text_weight in grid_text or len(grid_text) == 1):
        # A table too small to tell the weights apart keeps the defaults.
        da = NEIGHBOUR_WEIGHTS.index(default.neighbour_weight)
        db = grid_text.index(default.text_weight) if default.text_weight in grid_text else 0
        if mean[da, db] <= mean[a, b]:
            a, b = da, db
    return PublishedRule(NEIGHBOUR_WEIGHTS[a], grid_text[b],
                         f"leave-one-dataset-out over {count} datasets of the table: least mean regret "
                         f"{100 * regrets[a, b] / count:.2f} points")
