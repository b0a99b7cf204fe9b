"""The published labels' part of one task's selection: its ranking and every model's predicted accuracy.

The ranking is `published.store.rank_published` (the neighbour rule, or the task's own dataset's
column when its class list is one of the table's). The predicted accuracy is
`published.accuracy.predict_published_accuracy` (the model fitted on the table at import), except
for a task that *is* one of the table's datasets: then each model's figure on that dataset is its
accuracy, read, not predicted (a model without a figure there is predicted as for any task).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mll_index.published.accuracy import AccuracyPrediction, predict_published_accuracy
from mll_index.published.rule import TaskRanking
from mll_index.published.store import PublishedLabels, rank_published, task_text_vectors
from mll_index.selection.confusion import smooth_scores


@dataclass(frozen=True)
class PublishedPart:
    """ranking: the rule's TaskRanking; scores: (n_models, n_classes) smoothed as image scores are;
    accuracy: per model id `{estimate, low, high}` (fractions), or None with `accuracy_about` saying why."""

    ranking: TaskRanking
    scores: np.ndarray
    accuracy: dict[str, dict[str, float]] | None
    accuracy_about: str
    low_confidence: bool


def published_part(pub: PublishedLabels, embedder: Any, cache: Any, similarity: np.ndarray, queries: np.ndarray | None,
                   *, domain: str | None, description: str | None, unknown: Sequence[bool],
                   alpha: float) -> PublishedPart:
    """Rank the models for a task from published labels and predict each one's accuracy.

    Args:
        similarity: (n_classes, n_datasets) the classes' similarity to each dataset (`published_evidence`).
        queries: (n_classes, d) the task's unit class vectors, or None (no same-dataset test, the table's
            mean closeness for the prediction).
        domain, description: the task's texts (None: not used).
        unknown: per class, whether its name holds no WordNet lemma.
        alpha: the smoothing of the selection (`confusion.smooth_scores`).
    """
    domain_vec, description_vec = task_text_vectors(pub, embedder, cache, domain=domain, description=description)
    ranking = rank_published(pub, similarity, domain=domain_vec, description=description_vec, unknown=unknown,
                             queries=queries)
    prediction = predict_published_accuracy(pub, similarity, queries, domain=domain_vec, description=description_vec,
                                            unknown=unknown)
    accuracy, about, weak = _accuracy(pub, ranking, prediction)
    return PublishedPart(ranking, smooth_scores(ranking.scores, alpha), accuracy, about, weak)


def _accuracy(pub: PublishedLabels, ranking: TaskRanking,
              prediction: AccuracyPrediction | None) -> tuple[dict[str, dict[str, float]] | None, str, bool]:
    ids = pub.model_ids
    nearest = ranking.nearest
    if nearest is not None and nearest.used:
        column = pub.accuracy[:, pub.dataset_names.index(nearest.name)].astype(np.float64)
        out = {}
        for i, m in enumerate(ids):
            if not np.isnan(column[i]):
                value = round(float(column[i]), 4)
                out[m] = {"estimate": value, "low": value, "high": value}
            elif prediction is not None:
                out[m] = prediction.of(i)
        missing = int(np.isnan(column).sum())
        tail = f"; the {missing} model(s) without a figure there: {prediction.about}" \
            if missing and prediction is not None else ""
        return out, (f"the table's own figures on {nearest.name}: the task's class names are that dataset's "
                     f"(overlap {nearest.overlap:.2f}), so each model's accuracy there is read, not predicted{tail}"), False
    if prediction is None:
        model = pub.accuracy_model
        why = model.about if model is not None else ("these published labels were imported before predicted accuracy "
                                                    "existed; import the table again")
        return None, why, False
    return {m: prediction.of(i) for i, m in enumerate(ids)}, prediction.about, prediction.low_confidence
