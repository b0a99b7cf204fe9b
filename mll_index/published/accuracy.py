"""Predicted top-1 accuracy, with an interval, of every model of a published results table on a task.

A table says how every model did on its datasets; a task is none of them. For model i the task's
accuracy is predicted as

    estimate_i = level + spread * offset_i,   clipped to [0, 1]

- **level**, the task's mean accuracy over the models: a ridge regression on the neighbour datasets'
  mean accuracy (weighted by the task's similarity to them, below) and the task's chance level
  (1 / its number of classes): a 2-class task sits near 0.5 whatever its neighbours;
- **spread**, the task's standard deviation of accuracy over the models: a linear fit on the
  neighbours' weighted spread;
- **offset_i**, model i's z-score on the task: a least-squares fit (no intercept) on its weighted mean
  z-score over the neighbour datasets and its general strength (`rule.strength_of`: its ImageNet
  z-score where that column is visible).

The neighbour weights are the ranking rule's step 1 (`rule.py`): per task class, a softmax over the
visible datasets of its similarity to each (its closest class there, mixed with the domain and
description similarity at `text_weight`), averaged over the classes; here at a temperature of its
own, chosen with `text_weight` on the grid `TEMPERATURES` x `TEXT_WEIGHTS`. Classes whose best
similarity is below `rule.WEAK_SIMILARITY` (or whose names hold no WordNet lemma) carry no weight.
A task none of whose classes matches a dataset is **low confidence**: its prediction is the
*fallback* one, from chance level and general strength alone (level on chance, spread the table's
mean, offset on strength), with the fallback's own interval.

**Calibration** (`fit_accuracy_model`) is leave one dataset out over the visible datasets only: each
in turn (with its family) is hidden, its own class names and texts are the task, and the rest of
the table predicts it. The regressions are fitted on those pairs, and their leave-one-dataset-out
predictions give the residuals from which the grid point is chosen (least mean absolute error) and
the interval is read: the 10th and 90th percentiles of the residuals (split conformal), so that an
80% interval covered 80% of the (model, dataset) pairs left out. A `hidden` dataset is left out of
all of it, so a benchmark's target never chooses its own parameters. When the fallback predicts
the left-out datasets at least as well as the neighbours do, it is used for every task.

Fewer than `MIN_DATASETS` datasets or `MIN_MODELS` models with figures: no prediction, and the
model's `about` says why in one line. Only numpy, scipy and scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import numpy as np

from mll_index.published.rule import (
    WEAK_SIMILARITY, dataset_similarity, hidden_mask, standardise, strength_of, text_similarity,
)

MIN_DATASETS = 5
MIN_MODELS = 5
COVERAGE = 0.8
TEMPERATURES: tuple[float, ...] = (0.02, 0.05, 0.1)
TEXT_WEIGHTS: tuple[float, ...] = (0.0, 0.5, 1.0)
RIDGE_ALPHAS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)   # on standardised features, chosen by RidgeCV's LOO
TEXT_FIELDS = ("domain", "description")


@dataclass(frozen=True)
class Linear:
    """A fitted linear map: `intercept + x @ coef` for x (n, len(coef))."""

    intercept: float
    coef: tuple[float, ...]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + np.asarray(x, np.float64).reshape(len(x), -1) @ np.asarray(self.coef, np.float64)


@dataclass(frozen=True)
class Predictor:
    """One predictor's three fits and its interval (see the module docstring).

    low, high: the 10th and 90th percentiles of its leave-one-dataset-out residuals (truth minus
    estimate, accuracy as a fraction); l1: their mean absolute value (mean over datasets of the mean
    over models); coverage: the share of left-out (model, dataset) pairs inside [estimate + low,
    estimate + high]; datasets: how many datasets were left out.
    """

    level: Linear
    spread: Linear
    offset: Linear
    low: float
    high: float
    l1: float
    coverage: float
    datasets: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: each fit's coefficients as a list."""
        data = asdict(self)
        for k in ("level", "spread", "offset"):
            data[k]["coef"] = list(data[k]["coef"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Predictor:
        fits = {k: Linear(float(data[k]["intercept"]), tuple(float(c) for c in data[k]["coef"]))
                for k in ("level", "spread", "offset")}
        return cls(**fits, **{k: float(data[k]) for k in ("low", "high", "l1", "coverage")},
                   datasets=int(data["datasets"]))


@dataclass(frozen=True)
class AccuracyModel:
    """The accuracy model of a table, as `fit_accuracy_model` chose it; stored in the published manifest.

    matched: the predictor from neighbour datasets (None when the fallback predicted the left-out
    datasets at least as well, or when there is no model at all); fallback: from chance level and
    general strength; about: one sentence on how it was calibrated, or why there is no prediction.
    """

    temperature: float
    text_weight: float
    closeness: float          # the left-out datasets' mean closeness: a one-class task's
    matched: Predictor | None
    fallback: Predictor | None
    about: str

    @property
    def usable(self) -> bool:
        return self.fallback is not None

    def summary(self) -> dict[str, Any]:
        """What `published import` reports: usable, the predictor used, its held-out L1 and coverage, `about`."""
        used = self.matched or self.fallback
        if used is None:
            return {"usable": False, "about": self.about}
        return {"usable": True, "predictor": "neighbours" if self.matched else "fallback", "datasets": used.datasets,
                "l1": round(used.l1, 4), f"coverage_{round(100 * COVERAGE)}": round(used.coverage, 4),
                "about": self.about}

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "text_weight": self.text_weight,
                "closeness": self.closeness, "about": self.about,
                "matched": self.matched.to_dict() if self.matched else None,
                "fallback": self.fallback.to_dict() if self.fallback else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccuracyModel:
        return cls(float(data["temperature"]), float(data["text_weight"]), float(data["closeness"]),
                   Predictor.from_dict(data["matched"]) if data.get("matched") else None,
                   Predictor.from_dict(data["fallback"]) if data.get("fallback") else None, str(data["about"]))


@dataclass(frozen=True)
class AccuracyPrediction:
    """Every model's predicted top-1 accuracy on a task.

    estimate, low, high: (n_models,) float64 fractions in [0, 1], low <= estimate <= high (the 80%
    interval); level: the predicted mean over the models; low_confidence: no class of the task
    matched a dataset, so the prediction rests on chance level and general strength alone;
    about: how the predictor was calibrated, one sentence.
    """

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    level: float
    low_confidence: bool
    about: str

    def of(self, i: int) -> dict[str, float]:
        """Model i's `{estimate, low, high}`, rounded to 4 places."""
        return {"estimate": round(float(self.estimate[i]), 4), "low": round(float(self.low[i]), 4),
                "high": round(float(self.high[i]), 4)}


class PublishedLike(Protocol):
    """What `predict_published_accuracy` reads of `store.PublishedLabels` (typed here to import nothing above)."""

    accuracy: np.ndarray
    class_dataset: np.ndarray
    text_vectors: dict[str, np.ndarray]

    @property
    def dataset_names(self) -> list[str]: ...

    @property
    def families(self) -> list[str]: ...

    @property
    def accuracy_model(self) -> AccuracyModel | None: ...


@dataclass(frozen=True)
class _Table:
    """A table's per-column statistics: z-scores (n_models, n_datasets); level, spread and above-chance
    level `(level - chance) / (1 - chance)` (n_datasets,)."""

    accuracy: np.ndarray
    z: np.ndarray
    level: np.ndarray
    spread: np.ndarray
    above: np.ndarray
    datasets: list[str]
    families: list[str]


def _table(accuracy: np.ndarray, datasets: Sequence[str], families: Sequence[str], class_dataset: np.ndarray) -> _Table:
    acc = np.asarray(accuracy, np.float64)
    known = (~np.isnan(acc)).sum(axis=0)
    with np.errstate(invalid="ignore"):
        level = np.where(known > 0, np.nanmean(np.where(known > 0, acc, 0.0), axis=0), np.nan)
        spread = np.where(known > 0, np.nanstd(np.where(known > 0, acc, 0.0), axis=0), np.nan)
    chance = 1.0 / np.maximum(np.bincount(np.asarray(class_dataset), minlength=acc.shape[1]), 1)
    # z is per column, so it does not depend on which other columns are hidden: computed once.
    return _Table(acc, standardise(acc), level, spread, _above_chance(level, chance), list(datasets), list(families))


def _above_chance(level: np.ndarray | float, chance: np.ndarray | float) -> Any:
    """How far a level stands from chance towards 1 (0 at chance, 1 at perfect)."""
    return (level - chance) / np.maximum(1.0 - np.asarray(chance), 1e-6)


def _closeness(vectors: np.ndarray | None) -> float:
    """The mean over a task's classes of the cosine similarity to its closest other class (NaN for < 2 classes).

    Names close to each other (fine-grained or abstract classes: distances, counts, grades) make a hard task.
    """
    if vectors is None or len(vectors) < 2:
        return float("nan")
    sims = np.asarray(vectors, np.float32) @ np.asarray(vectors, np.float32).T
    np.fill_diagonal(sims, -np.inf)
    return float(sims.max(axis=1).mean())


@dataclass(frozen=True)
class _Features:
    """A task's inputs to the fits. weights: (n_datasets,) or None when no class matched (low confidence)."""

    weights: np.ndarray | None
    chance: float
    close: float
    strength: np.ndarray     # (n_models,)
    evidence: np.ndarray     # (n_models,) weighted mean z on the neighbours; strength where none
    nb_above: float
    nb_spread: float
    best: float              # mean over the matched classes of their best similarity to a visible dataset


def _features(table: _Table, visible: np.ndarray, similarity: np.ndarray, text: np.ndarray | None,
              unknown: Sequence[bool] | None, close: float, temperature: float, text_weight: float) -> _Features:
    """The task's neighbour weights and the features of the module docstring, from the visible columns."""
    from scipy.special import softmax

    combined = np.asarray(similarity, np.float64)
    if text is not None:
        combined = (combined + text_weight * np.asarray(text, np.float64)[None, :]) / (1 + text_weight)
    combined = np.where(visible[None, :], combined, -np.inf)
    clear = combined.max(axis=1) >= WEAK_SIMILARITY
    if unknown is not None:
        clear &= ~np.asarray(unknown, bool)
    strength, _ = strength_of(table.z, table.datasets, visible)
    weights = softmax(combined[clear] / temperature, axis=1).mean(axis=0) if clear.any() else None
    evidence, nb_above, nb_spread = strength, float("nan"), float("nan")
    best = float(combined[clear].max(axis=1).mean()) if clear.any() else float("nan")
    if weights is not None:
        known = ~np.isnan(table.z)
        total = known.astype(np.float64) @ weights
        value = np.where(known, table.z, 0.0) @ weights
        evidence = np.where(total > 1e-12, value / np.maximum(total, 1e-12), strength)
        nb_above, nb_spread = float(weights[visible] @ table.above[visible]), float(weights[visible] @ table.spread[visible])
    return _Features(weights, 1.0 / max(len(combined), 1), close, strength, evidence, nb_above, nb_spread, best)


def _design(rows: Sequence[_Features], kind: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The level, spread and per-task offset design matrices of a predictor kind ("matched" or "fallback").

    Both read the task's own closeness and number of classes; "matched" adds its neighbours'.
    """
    own = np.array([[r.close, -np.log(r.chance)] for r in rows])
    if kind == "matched":
        level = np.column_stack([own, [r.nb_above for r in rows], [r.best for r in rows]])
        spread = np.column_stack([own, [r.nb_spread for r in rows]])
        offset = [np.column_stack([r.evidence, r.strength]) for r in rows]
    else:
        level, spread = own, own
        offset = [r.strength[:, None] for r in rows]
    return level, spread, offset


def _ridge() -> Any:
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))


def _as_linear(pipeline: Any) -> Linear:
    """A fitted StandardScaler + ridge pipeline as one `Linear` on the raw features."""
    scaler, ridge = pipeline[0], pipeline[-1]
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    coef = ridge.coef_ / scale
    return Linear(float(ridge.intercept_ - scaler.mean_ @ coef), tuple(float(c) for c in coef))


def _fit_predict(x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, intercept: bool) -> tuple[Linear, np.ndarray]:
    """The fit on all rows and its leave-one-group-out predictions (n,), honest for every row."""
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict

    estimator = _ridge() if intercept else LinearRegression(fit_intercept=False)
    loo = cross_val_predict(estimator, x, y, groups=groups, cv=LeaveOneGroupOut())
    estimator.fit(x, y)
    fitted = _as_linear(estimator) if intercept else Linear(0.0, tuple(float(c) for c in estimator.coef_))
    return fitted, loo


def _estimate(above: float, spread: float, offset: np.ndarray, chance: float) -> np.ndarray:
    """(n_models,) accuracy from a predicted above-chance level, spread and z-scores, clipped to [0, 1]."""
    return np.clip(chance + (1 - chance) * above + max(spread, 0.0) * offset, 0.0, 1.0)


def _calibrate(table: _Table, targets: Sequence[int], rows: Sequence[_Features],
               kind: str) -> tuple[Predictor, list[np.ndarray]]:
    """Fit a predictor on the left-out targets' rows; its interval and errors from their held-out predictions.

    Returns the predictor and, per target, its held-out residuals (n_models,), NaN where no figure.
    """
    level_x, spread_x, offset_x = _design(rows, kind)
    truth = [table.accuracy[:, j] for j in targets]
    groups = np.arange(len(targets))
    level, level_loo = _fit_predict(level_x, table.above[list(targets)], groups, intercept=True)
    spread, spread_loo = _fit_predict(spread_x, table.spread[list(targets)], groups, intercept=True)
    known = [~np.isnan(t) for t in truth]
    pooled = np.concatenate([x[k] for x, k in zip(offset_x, known)])
    pooled_z = np.concatenate([table.z[k, j] for j, k in zip(targets, known)])
    pooled_groups = np.concatenate([np.full(int(k.sum()), g) for g, k in zip(groups, known)])
    offset, offset_loo = _fit_predict(pooled, pooled_z, pooled_groups, intercept=False)
    residuals, start = [], 0
    for g, (t, k) in enumerate(zip(truth, known)):
        z_hat = np.full(len(t), np.nan)
        z_hat[k] = offset_loo[start:start + int(k.sum())]
        start += int(k.sum())
        residuals.append(t - _estimate(level_loo[g], spread_loo[g], z_hat, rows[g].chance))
    return _summarise(level, spread, offset, residuals), residuals


def _summarise(level: Linear, spread: Linear, offset: Linear, residuals: Sequence[np.ndarray]) -> Predictor:
    """A predictor with its conformal interval and errors read from its held-out residuals."""
    pooled = np.concatenate([r[~np.isnan(r)] for r in residuals])
    # Split conformal's finite-sample step, counted in datasets: a dataset's residuals move together
    # (its level's error), so the left-out datasets, not the pairs, are the exchangeable units.
    tail = (1 - COVERAGE) / 2 * len(residuals) / (len(residuals) + 1)
    low, high = (float(np.quantile(pooled, q)) for q in (tail, 1 - tail))
    covered = float(np.mean((pooled >= low) & (pooled <= high)))
    l1 = float(np.mean([np.nanmean(np.abs(r)) for r in residuals]))
    return Predictor(level, spread, offset, min(low, 0.0), max(high, 0.0), l1, covered, len(residuals))


def _unavailable(reason: str) -> AccuracyModel:
    return AccuracyModel(0.0, 0.0, 0.0, None, None, f"no predicted accuracy: {reason}")


def _left_out_tasks(table: _Table, targets: Sequence[int], class_vectors: np.ndarray, class_dataset: np.ndarray,
                    text_vectors: Sequence[np.ndarray | None]) -> list[tuple[np.ndarray, np.ndarray | None, float]]:
    """Each target dataset as a task: its classes' similarity to every dataset (n_classes, n_datasets),
    its text similarity (n_datasets,) or None, and its closeness."""
    has_text = any(tv is not None and bool(np.any(tv)) for tv in text_vectors)
    vectors = np.asarray(class_vectors, np.float32)
    tasks = []
    for j in targets:
        own_vectors = vectors[class_dataset == j]
        similarity = dataset_similarity(own_vectors @ vectors.T, class_dataset, len(table.datasets))
        own = [tv[j] if tv is not None and np.any(tv[j]) else None for tv in text_vectors]
        tasks.append((similarity, text_similarity(own, list(text_vectors)) if has_text else None,
                      _closeness(own_vectors)))
    return tasks


def fit_accuracy_model(accuracy: np.ndarray, datasets: Sequence[str], families: Sequence[str],
                       class_vectors: np.ndarray, class_dataset: np.ndarray,
                       text_vectors: Sequence[np.ndarray | None] = (), *, hidden: Sequence[str] = ()) -> AccuracyModel:
    """Calibrate the accuracy model on a table by leaving one visible dataset out at a time (module docstring).

    Args:
        accuracy: (n_models, n_datasets) top-1 accuracy as fractions in [0, 1], NaN missing.
        datasets, families: (n_datasets,) column names and their families (hiding one hides its family).
        class_vectors: (n_classes, d) float32 unit rows, the benchmark classes' embeddings;
            class_dataset: (n_classes,) int, each class's dataset position.
        text_vectors: per text field (domain, description), (n_datasets, d) unit rows (zero rows where
            a dataset has none), or None.
        hidden: datasets left out of everything (with their families): a benchmark's target.
    Returns:
        The chosen model; not `usable` (with the reason in `about`) when fewer than MIN_MODELS models
        or MIN_DATASETS visible datasets with MIN_MODELS figures each remain.
    """
    table = _table(accuracy, datasets, families, class_dataset)
    n_models = table.accuracy.shape[0]
    visible = hidden_mask(table.datasets, table.families, hidden) & ~np.isnan(table.level)
    targets = [int(j) for j in np.where(visible)[0] if (~np.isnan(table.accuracy[:, j])).sum() >= MIN_MODELS]
    if n_models < MIN_MODELS or len(targets) < MIN_DATASETS:
        return _unavailable(f"the table has {n_models} models and {len(targets)} datasets with figures of at "
                            f"least {MIN_MODELS} models; at least {MIN_MODELS} of each are needed")
    tasks = _left_out_tasks(table, targets, class_vectors, class_dataset, text_vectors)
    closeness = float(np.nanmean([c for _, _, c in tasks])) if any(np.isfinite(c) for _, _, c in tasks) else 0.5
    inner = [visible & hidden_mask(table.datasets, table.families, [table.datasets[j]]) for j in targets]
    grid = [(t, g) for t in TEMPERATURES for g in (TEXT_WEIGHTS if tasks[0][1] is not None else (0.0,))]
    rows = {(t, g): [_features(table, v, s, x, None, closeness if np.isnan(c) else c, t, g)
                     for v, (s, x, c) in zip(inner, tasks)] for t, g in grid}
    fallback, fallback_residuals = _calibrate(table, targets, rows[grid[0]], "fallback")
    best: tuple[float, float, Predictor] | None = None
    for (t, g), feats in rows.items():
        matched = [i for i, f in enumerate(feats) if f.weights is not None]
        if len(matched) < MIN_DATASETS:
            continue
        predictor, residuals = _calibrate(table, [targets[i] for i in matched], [feats[i] for i in matched], "matched")
        # Judged as predictions are made: left-out datasets that matched nothing get the fallback's.
        mixed = [residuals[matched.index(i)] if i in matched else fallback_residuals[i] for i in range(len(targets))]
        judged = _summarise(predictor.level, predictor.spread, predictor.offset, mixed)
        if best is None or judged.l1 < best[2].l1 - 1e-12:
            best = (t, g, replace(predictor, l1=judged.l1, coverage=judged.coverage, datasets=len(targets)))
    if best is None or best[2].l1 >= fallback.l1:
        return AccuracyModel(grid[0][0], 0.0, closeness, None, fallback, _about(fallback, len(targets), False))
    return AccuracyModel(best[0], best[1], closeness, best[2], fallback, _about(best[2], len(targets), True))


def _about(predictor: Predictor, n: int, matched: bool) -> str:
    source = ("the task's class names and the neighbour datasets' results" if matched else
              "the task's class names and general strength (the neighbour datasets' results predicted the "
              "left-out datasets no better)")
    return (f"predicted from {source}; calibrated by leaving out each of the table's {n} datasets in turn: mean "
            f"absolute error {predictor.l1:.3f}, {COVERAGE:.0%} intervals covered {predictor.coverage:.0%} of "
            f"the left-out (model, dataset) pairs")


def predict_accuracy(accuracy: np.ndarray, datasets: Sequence[str], families: Sequence[str],
                     class_dataset: np.ndarray, similarity: np.ndarray, task_vectors: np.ndarray | None,
                     model: AccuracyModel, *, text: np.ndarray | None = None, unknown: Sequence[bool] | None = None,
                     hidden: Sequence[str] = ()) -> AccuracyPrediction | None:
    """Every model's predicted top-1 accuracy on a task, with its 80% interval.

    Args:
        accuracy: (n_models, n_datasets) fractions, NaN missing: the table the model was fitted on;
            class_dataset: (n_classes,) int, its benchmark classes' datasets (their counts give chance levels).
        similarity: (n_classes_task, n_datasets) float, the task's classes' similarity to each dataset
            (`rule.dataset_similarity`, `store.PublishedEvidence.similarity`).
        task_vectors: (n_classes_task, d) the task's unit class embeddings (their closeness to each
            other enters the level), or None (the table's mean closeness is used).
        model: from `fit_accuracy_model` (the same `hidden`, for a benchmark).
        text: (n_datasets,) the task's domain and description similarity (`rule.text_similarity`), or None.
        unknown: (n_classes_task,) whether a class's name holds no WordNet lemma: such a class matches nothing.
        hidden: datasets (with their families) the prediction may not read.
    Returns:
        The prediction (`low_confidence` when no class matched a visible dataset), or None when the
        model is not usable (`model.about` says why) or fewer than MIN_DATASETS datasets are visible.
    """
    table = _table(accuracy, datasets, families, class_dataset)
    visible = hidden_mask(table.datasets, table.families, hidden) & ~np.isnan(table.level)
    if not model.usable or int(visible.sum()) < MIN_DATASETS or similarity.shape[0] == 0:
        return None
    close = _closeness(task_vectors)
    feats = _features(table, visible, similarity, text, unknown, model.closeness if np.isnan(close) else close,
                      model.temperature, model.text_weight)
    low_confidence = feats.weights is None
    kind = "fallback" if low_confidence or model.matched is None else "matched"
    predictor = model.fallback if kind == "fallback" else model.matched
    assert predictor is not None
    level_x, spread_x, offset_x = _design([feats], kind)
    above, spread = float(predictor.level(level_x)[0]), float(predictor.spread(spread_x)[0])
    estimate = _estimate(above, spread, predictor.offset(offset_x[0]), feats.chance)
    about = model.about if not low_confidence else (
        f"low confidence: no class of the task resembles a benchmark dataset (best similarity below "
        f"{WEAK_SIMILARITY}), so predicted without neighbours; {model.about}")
    level = float(np.clip(feats.chance + (1 - feats.chance) * above, 0.0, 1.0))
    return AccuracyPrediction(estimate, np.clip(estimate + predictor.low, 0.0, estimate),
                              np.clip(estimate + predictor.high, estimate, 1.0), level, low_confidence, about)


def predict_published_accuracy(pub: PublishedLike, similarity: np.ndarray, task_vectors: np.ndarray | None, *,
                               domain: np.ndarray | None = None, description: np.ndarray | None = None,
                               unknown: Sequence[bool] | None = None, hidden: Sequence[str] = (),
                               model: AccuracyModel | None = None) -> AccuracyPrediction | None:
    """`predict_accuracy` for an index's published labels, with the model fitted at import.

    Args:
        pub: `store.PublishedLabels`.
        similarity: (n_classes, n_datasets) the task's rows of `PublishedEvidence.similarity`.
        task_vectors: (n_classes, d) the task's unit class embeddings (the queries of `published_evidence`).
        domain, description: the task's (d,) unit text vectors (`store.task_text_vectors`), or None.
        unknown, hidden: as `predict_accuracy`.
        model: overrides `pub.accuracy_model` (a benchmark's model fitted with `hidden`).
    Returns:
        None when there is no usable model: labels imported before there was one, or a table too small
        (`pub.accuracy_model.about` says why).
    """
    model = model or pub.accuracy_model
    if model is None:
        return None
    text = text_similarity([domain, description], [pub.text_vectors.get(f) for f in TEXT_FIELDS])
    return predict_accuracy(pub.accuracy, pub.dataset_names, pub.families, pub.class_dataset, similarity,
                            task_vectors, model, text=text, unknown=unknown, hidden=hidden)
