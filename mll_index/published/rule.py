"""The ranking rule of published labels: neighbour datasets, general strength, and when to fall back.

Accuracies differ in level from dataset to dataset (CLEVR's 25% is good, Stanford Cars' 85% is
average), so every dataset's column is standardised over the models first (a z-score: how many
standard deviations a model stands above the table's mean there). For a task:

1. **Neighbour weights.** A task class's similarity to a benchmark dataset is its cosine
   similarity to the most similar class of that dataset. When the task gives a domain or a
   description and the table's datasets have them, it is mixed with the mean cosine similarity
   of those texts to the dataset's: `(class similarity + text_weight * text similarity) /
   (1 + text_weight)`. The class's weights over the visible datasets are a softmax of these
   similarities at temperature `TEMPERATURE` (0.02: a dataset 0.05 less similar weighs 12 times
   less), so the few datasets most like the class decide, whatever their size (a dataset of
   1,000 classes does not outweigh one of 10 by holding more near matches).
2. **Neighbour evidence** for a model and class: the weighted mean of its z-scores on the
   neighbour datasets (weights renormalised over the datasets it has figures on).
3. **General strength**: the model's z-score on ImageNet (`ImageNet 1k` / `imagenet1k`) when that
   column is visible, else its mean z-score over the visible datasets.
4. **Score** = `neighbour_weight * evidence + (1 - neighbour_weight) * strength`, per class;
   the task's ranking is the mean over its classes.
5. **Clear evidence, or fall back**, per class. A class's evidence is unclear, and its scores
   fall back to general strength (saying so and why), when
   - its best similarity to any visible dataset is below `WEAK_SIMILARITY` (0.45, the bar below
     which `match` flags a class's match as weak): no benchmark dataset resembles it; or
   - none of its name's words is a WordNet lemma (the caller's `unknown`, `match.is_weak`'s other
     test): an embedding finds some near benchmark class for any string ("zzkk vvmp" reaches 0.58
     to a DTD class), so the similarity alone does not show evidence; or
   - the model A the blend ranks first is not the strongest model in general, B, yet A loses
     to B on the neighbour datasets holding more than 2/3 of the class's weight (`CONTRADICTED`):
     the weighted mean rests on a minority of its neighbours.
   The task falls back when all its classes do. Only the published labels enter this rule; it
   never sees the task's own accuracies.

`neighbour_weight` and `text_weight` are chosen per table by `calibrate_rule`: leave one dataset
out over the imported table itself (each dataset's column hidden in turn, its model chosen from
the others as above), the pair with the least mean regret of the chosen model wins, among the
pairs that qualify. A pair qualifies when the datasets where its first-ranked model beats general
strength's (won) outnumber those where it loses (lost) by more than chance would: a one-sided
sign test, P(at least `won` heads in `won + lost` fair coin flips) <= `QUALIFY_LEVEL` (0.2). So
3 won and 1 lost (p 0.31) is not enough, 4 won and 1 lost (p 0.19) or 3 won and 0 lost (p 0.125)
is. General strength itself (neighbour weight 0) always qualifies. The weights are tried on a grid,
`NEIGHBOUR_WEIGHTS` x `TEXT_WEIGHTS`.

`TEMPERATURE`, `WEAK_SIMILARITY`, `CONTRADICTED` and `QUALIFY_LEVEL` are fixed, not fitted.
`QUALIFY_LEVEL` was set by looking at leave-one-dataset-out results on LOVM's and open_clip's
tables (bench/published_lovm.py). The levels 0.05 and 0.1 fall back to general strength too often
on LOVM's table: its regret rises from 4.55 to 6.6 or 6.4 points. The levels 0.35 and 0.5 let a
3-won-1-lost pair through on open_clip's table, which loses SVHN by 10.7 points. It is one
constant, not a per-table fit. Only numpy and the standard library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from math import comb
from typing import Any

import numpy as np

from mll_index.published.same_dataset import FLOOR, SameDataset, column_scores, nearest_dataset

TEMPERATURE = 0.02
WEAK_SIMILARITY = 0.45   # match.LOW_CONFIDENCE: the same bar that flags a weak match elsewhere
CONTRADICTED = 1 / 3     # A beats B on less than this share of the neighbour weight
QUALIFY_LEVEL = 0.2     # one-sided sign test on won/lost datasets against general strength
MIN_TARGETS = 3          # fewer datasets to leave out than this choose nothing: the defaults stay
NEIGHBOUR_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
TEXT_WEIGHTS: tuple[float, ...] = (0.0, 0.5, 1.0)
STRENGTH_COLUMNS = ("ImageNet 1k", "imagenet1k")


@dataclass(frozen=True)
class PublishedRule:
    """The rule's two fitted weights (see the module docstring) and how they were chosen, and the overlap at
    which a task counts as one of the table's datasets (`same_dataset`) and how that was set."""

    neighbour_weight: float = 0.5
    text_weight: float = 1.0
    chosen_by: str = "default"
    same_dataset: float = FLOOR
    same_dataset_by: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PublishedRule:
        if not isinstance(data, dict):
            return cls()
        return cls(float(data.get("neighbour_weight", cls.neighbour_weight)),
                   float(data.get("text_weight", cls.text_weight)), str(data.get("chosen_by", "default")),
                   float(data.get("same_dataset", cls.same_dataset)), str(data.get("same_dataset_by", "default")))


def describe_choice(rule: PublishedRule) -> str:
    """One sentence for `published import`: how this table will rank, and whether that is INB's ranking."""
    if rule.neighbour_weight == 0:
        return ("this table ranks by general strength alone (each model's ImageNet z-score, INB's ranking), except a "
                "task that is one of its datasets: leave-one-dataset-out on it showed no gain from the neighbour "
                f"datasets ({rule.chosen_by})")
    return (f"this table ranks by {rule.neighbour_weight} x the neighbour datasets + "
            f"{round(1 - rule.neighbour_weight, 4)} x general strength ({rule.chosen_by})")


@dataclass(frozen=True)
class TaskRanking:
    """A task's published ranking.

    scores: (n_models, n_classes) float64, per class the rule's score (z-score units); models
        without any figure on the neighbour datasets get their strength.
    weights: (n_datasets,) float64, the task's neighbour weights (mean over its classes), sum 1 or all 0.
    reasons: per class, None when its evidence is clear, else why its scores are general strength.
    strength: the column general strength was read from, or "mean z-score".
    nearest: the visible dataset the task's class list overlaps most (`same_dataset`), when the caller
        gave the overlaps; `nearest.used` when its column ranked the task.
    """

    scores: np.ndarray
    weights: np.ndarray
    reasons: tuple[str | None, ...]
    strength: str
    nearest: SameDataset | None = None

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


def dataset_similarity(sims: np.ndarray, class_dataset: np.ndarray, n_datasets: int) -> np.ndarray:
    """Per query class and dataset, the cosine similarity of its most similar class there.

    Args:
        sims: (n_queries, n_classes) cosine similarities to the benchmark classes.
        class_dataset: (n_classes,) int, each benchmark class's dataset.
    Returns:
        (n_queries, n_datasets) float64, -inf for a dataset without classes.
    """
    sims = np.asarray(sims, np.float64)
    out = np.full((sims.shape[0], n_datasets), -np.inf)
    for k in range(n_datasets):
        members = class_dataset == k
        if members.any():
            out[:, k] = sims[:, members].max(axis=1)
    return out


def text_similarity(task_vectors: Sequence[np.ndarray | None],
                    dataset_vectors: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """(n_datasets,) mean cosine similarity of the task's domain and description to the datasets', or None
    when no field is given on both sides.

    Args:
        task_vectors: per text field (domain, description), the task's (d,) unit vector or None.
        dataset_vectors: per field, (n_datasets, d) unit rows (zero rows where a dataset has no text), or None.
    """
    parts = [np.asarray(dv, np.float64) @ np.asarray(tv, np.float64)
             for tv, dv in zip(task_vectors, dataset_vectors) if tv is not None and dv is not None]
    return np.mean(parts, axis=0) if parts else None


def neighbour_weights(similarity: np.ndarray, text: np.ndarray | None, visible: np.ndarray,
                      text_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the combined similarity to each dataset and the softmax weights (step 1).

    Args:
        similarity: (n_classes, n_datasets) from `dataset_similarity`.
        text: (n_datasets,) from `text_similarity`, or None.
    Returns:
        (combined, weights): (n_classes, n_datasets) float64; combined is -inf on hidden datasets,
        weights rows sum to 1 over the visible ones.
    """
    combined = np.asarray(similarity, np.float64)
    if text is not None:
        combined = (combined + text_weight * text[None, :]) / (1 + text_weight)
    combined = np.where(visible[None, :], combined, -np.inf)
    top = combined.max(axis=1, keepdims=True)
    weights = np.exp((combined - np.where(np.isfinite(top), top, 0.0)) / TEMPERATURE)
    weights = np.where(np.isfinite(combined), weights, 0.0)
    total = weights.sum(axis=1, keepdims=True)
    return combined, np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)


def strength_of(z: np.ndarray, datasets: Sequence[str], visible: np.ndarray) -> tuple[np.ndarray, str]:
    """(n_models,) general strength: the z-score on ImageNet if visible, else the mean visible z-score."""
    for name in STRENGTH_COLUMNS:
        if name in datasets and visible[list(datasets).index(name)]:
            column = z[:, list(datasets).index(name)]
            if not np.isnan(column).all():
                return np.where(np.isnan(column), np.nanmin(column), column), name
    # The mean over each model's known visible figures, NaN for a model with none (summed by hand: nanmean
    # warns "Mean of empty slice" on stderr for such a model).
    seen = np.where(visible[None, :], z, np.nan)
    known = (~np.isnan(seen)).sum(axis=1)
    mean = np.where(known > 0, np.nansum(seen, axis=1) / np.maximum(known, 1), np.nan)
    return np.nan_to_num(mean, nan=np.nanmin(mean) if not np.isnan(mean).all() else 0.0), "mean z-score"


def _weighted_z(z: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n_models, q) weighted mean z over the datasets each model has figures on, and its weight total."""
    known = ~np.isnan(z)
    total = known.astype(np.float64) @ w.T
    value = np.where(known, z, 0.0) @ w.T
    return np.divide(value, total, out=np.zeros_like(value), where=total > 1e-12), total


def rank_task(z: np.ndarray, datasets: Sequence[str], visible: np.ndarray, similarity: np.ndarray,
              text: np.ndarray | None, rule: PublishedRule, model_ids: Sequence[str] | None = None,
              unknown: Sequence[bool] | None = None, overlap: np.ndarray | None = None) -> TaskRanking:
    """Score every model for a task's classes (steps 1-5 of the module docstring), or by one column when the
    task is that dataset (`same_dataset`).

    Args:
        z: (n_models, n_datasets) standardised accuracies (`standardise`), NaN missing.
        visible: (n_datasets,) bool, datasets the rule may use.
        similarity: (n_classes, n_datasets) per task class (`dataset_similarity`).
        text: (n_datasets,) the task's domain and description similarity (`text_similarity`), or None.
        model_ids: names for the fallback messages (positions when None).
        unknown: (n_classes,) whether a class's name holds no WordNet lemma (None: every name known).
        overlap: (n_datasets,) the task's overlap with each dataset (`same_dataset.dataset_overlap`), or None.
    """
    strength, source = strength_of(z, datasets, visible)
    combined, w = neighbour_weights(similarity, text, visible, rule.text_weight)
    nearest = nearest_dataset(overlap, visible, text, datasets, rule.same_dataset) if overlap is not None else None
    if nearest is not None and nearest.used:
        column = column_scores(z, list(datasets).index(nearest.name))
        scores = np.repeat(column[:, None], w.shape[0], axis=1)
        return TaskRanking(scores, w.mean(axis=0), tuple(None for _ in range(w.shape[0])), source, nearest)
    evidence, total = _weighted_z(z, w)
    evidence = np.where(total > 1e-12, evidence, strength[:, None])
    beta = rule.neighbour_weight
    scores = beta * evidence + (1 - beta) * strength[:, None]
    names = list(model_ids) if model_ids is not None else [str(i) for i in range(len(z))]
    best = int(np.argmax(strength))
    reasons: list[str | None] = []
    for c in range(w.shape[0]):
        reason = None
        closest = float(combined[c].max()) if np.isfinite(combined[c]).any() else -1.0
        a = int(np.argmax(scores[:, c]))
        both = ~np.isnan(z[a]) & ~np.isnan(z[best])
        share = float(w[c][both & (z[a] > z[best])].sum() / max(w[c][both].sum(), 1e-12))
        if closest < WEAK_SIMILARITY:
            reason = (f"no benchmark dataset resembles it: best similarity {closest:.2f} < {WEAK_SIMILARITY}")
        elif unknown is not None and unknown[c]:
            reason = "none of its words is a WordNet lemma: its match to benchmark classes rests on the embedding alone"
        elif a != best and share < CONTRADICTED:
            reason = (f"neighbours contradict the rule: {names[a]} (first by the rule) beats {names[best]} (strongest "
                      f"in general) only on datasets holding {share:.0%} of the neighbour weight")
        if reason is not None:
            scores[:, c] = strength
        reasons.append(reason)
    task_w = w.mean(axis=0)
    return TaskRanking(scores, task_w, tuple(reasons), source, nearest)


def sign_test_p(won: int, lost: int) -> float:
    """One-sided sign test: the chance of at least `won` heads in `won + lost` fair coin flips (1.0 for none).

    Used by `calibrate_rule` to ask whether weights beat general strength on more datasets than chance would.
    """
    n = won + lost
    if n == 0:
        return 1.0
    return sum(comb(n, k) for k in range(won, n + 1)) / 2 ** n


def hidden_mask(datasets: Sequence[str], families: Sequence[str], hidden: Sequence[str]) -> np.ndarray:
    """(n_datasets,) bool, False for the hidden datasets and every dataset of their families."""
    fam = {families[list(datasets).index(h)] for h in hidden if h in datasets}
    return np.array([d not in set(hidden) and f not in fam for d, f in zip(datasets, families)])


def calibrate_rule(accuracy: np.ndarray, datasets: Sequence[str], families: Sequence[str], class_vectors: np.ndarray,
                   class_dataset: np.ndarray, text_vectors: Sequence[np.ndarray | None] = (), *,
                   hidden: Sequence[str] = (), targets: Sequence[str] | None = None) -> PublishedRule:
    """Choose `neighbour_weight` and `text_weight` by leaving one dataset out of the table.

    Each target dataset (every visible one but the general-strength column, or `targets`) is hidden
    with its family; its own classes and texts rank the models from the rest, for every pair of
    weights on the grid (NEIGHBOUR_WEIGHTS x TEXT_WEIGHTS). A pair is eligible when its first-ranked
    models beat general strength alone (neighbour weight 0) on more targets than they lose to it by
    more than chance: `sign_test_p(won, lost) <= QUALIFY_LEVEL`. Among the eligible pairs (general
    strength always is), the least mean regret (best accuracy on the target minus the chosen
    model's) wins. Ties keep the defaults when they are among the best, else go to the smaller
    weights (closer to general strength). A table with fewer than MIN_TARGETS datasets to leave
    out keeps the defaults. `hidden` datasets are left out of everything (a benchmark's held-out dataset: its column must not
    choose the weights).

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
    picked: list[np.ndarray] = []   # per target, (n_weights, n_text) accuracy of the first-ranked model
    best: list[float] = []
    for target in chosen:
        j = datasets.index(target)
        truth = accuracy[:, j]
        if np.isnan(truth).all():
            continue
        visible = base & hidden_mask(datasets, families, [target])
        similarity = dataset_similarity(class_vectors[class_dataset == j] @ class_vectors.T, class_dataset,
                                        len(datasets))
        own = [tv[j] if tv is not None and np.any(tv[j]) else None for tv in text_vectors]
        text = text_similarity(own, list(text_vectors)) if text_vectors else None
        acc = np.zeros((len(NEIGHBOUR_WEIGHTS), len(grid_text)))
        for a, beta in enumerate(NEIGHBOUR_WEIGHTS):
            for b, gamma in enumerate(grid_text):
                ranking = rank_task(z, datasets, visible, similarity, text, PublishedRule(beta, gamma))
                acc[a, b] = truth[int(np.argmax(np.where(np.isnan(truth), -np.inf, ranking.scores.mean(axis=1))))]
        picked.append(acc)
        best.append(float(np.nanmax(truth)))
    if len(picked) < MIN_TARGETS:
        return PublishedRule(chosen_by=f"default ({len(picked)} dataset(s) to leave out, fewer than {MIN_TARGETS})")
    acc = np.stack(picked)                                   # (n_targets, n_weights, n_text)
    regret = np.round(np.mean(np.array(best)[:, None, None] - acc, axis=0), 9)
    strength = acc[:, [NEIGHBOUR_WEIGHTS.index(0.0)], :1]   # neighbour weight 0: general strength alone
    wins, losses = (acc > strength + 1e-9).sum(axis=0), (acc < strength - 1e-9).sum(axis=0)
    qualified = np.array([[sign_test_p(int(w), int(l)) <= QUALIFY_LEVEL for w, l in zip(rw, rl)]
                          for rw, rl in zip(wins, losses)])
    regret = np.where(qualified | (np.arange(len(NEIGHBOUR_WEIGHTS)) == NEIGHBOUR_WEIGHTS.index(0.0))[:, None],
                      regret, np.inf)
    a, b = np.unravel_index(int(np.argmin(regret)), regret.shape)
    default = PublishedRule()
    if default.neighbour_weight in NEIGHBOUR_WEIGHTS:
        # A table too small to tell the weights apart keeps the defaults.
        da = NEIGHBOUR_WEIGHTS.index(default.neighbour_weight)
        db = grid_text.index(default.text_weight) if default.text_weight in grid_text else 0
        if regret[da, db] <= regret[a, b]:
            a, b = da, db
    return PublishedRule(NEIGHBOUR_WEIGHTS[a], grid_text[b],
                         f"leave-one-dataset-out over {len(picked)} datasets of the table: least mean regret "
                         f"{100 * regret[a, b]:.2f} points among the weights that beat general strength on more datasets "
                         f"than they lose, by more than chance (one-sided sign test p <= {QUALIFY_LEVEL}); chosen: "
                         f"{int(wins[a, b])} won, {int(losses[a, b])} lost")
