"""Whether a task is one of the table's own datasets, and then that dataset's column ranks its models.

Leave-one-dataset-out (how `published_rule` chooses its weights, and how LOVM scores a selector)
always hides the task's own column, so the neighbour rule never learns to trust a column that is
the task itself. A user whose class names are EuroSAT's, though, asks about EuroSAT, and the
table's EuroSAT column is the best evidence there is. So this is a rule of its own:

- **overlap** of a task with a dataset is the lesser of two means: over the task's classes, each
  one's cosine similarity to its most similar class of the dataset; and over the dataset's classes,
  each one's similarity to its most similar task class. Both must be high: a two-class task of
  "forest" and "river" is not EuroSAT, nor is ImageNet's class list a three-class task.
- A task whose best overlap with a visible dataset reaches the table's **threshold** is ranked by
  that dataset's column alone (its z-scores; a model without a figure there ranks last). Datasets
  within `TIE` of the best overlap (ImageNet's variants share its class list) are told apart by the
  task's domain and description where given, else the table's order decides.
- The threshold is set at import (`same_dataset_threshold`): at least `FLOOR`, and above every
  overlap between two datasets of different families whose column would have misled: ranking
  dataset A by the column of a dataset B that overlaps it chose a model worse on A than general
  strength did. So a threshold the table's own near-twins break is raised until they no longer
  reach it.

Only numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FLOOR = 0.9    # names written from memory for a dataset's classes reach about 0.9 to 0.97 with MiniLM
TIE = 0.01     # overlaps this close are the same list (ImageNet 1k and its variants)
CEILING = 0.99  # a threshold is never raised past this: exact names (overlap 1.0) always qualify


@dataclass(frozen=True)
class SameDataset:
    """The task's nearest dataset by overlap: `name`, `overlap` (0-1), and whether it ranks the task (`used`)."""

    name: str
    overlap: float
    used: bool
    threshold: float


def dataset_overlap(sims: np.ndarray, class_dataset: np.ndarray, n_datasets: int) -> np.ndarray:
    """(n_datasets,) float64 overlap of a task with each dataset (module docstring), -inf for a dataset without classes.

    Args:
        sims: (n_task_classes, n_bench_classes) cosine similarities of the task's classes to the benchmark classes.
        class_dataset: (n_bench_classes,) int, each benchmark class's dataset.
    """
    sims = np.asarray(sims, np.float64)
    out = np.full(n_datasets, -np.inf)
    if sims.shape[0] == 0:
        return out
    forward_all = sims.max(axis=0)   # per benchmark class, its best task class
    for k in range(n_datasets):
        members = class_dataset == k
        if members.any():
            out[k] = min(float(sims[:, members].max(axis=1).mean()), float(forward_all[members].mean()))
    return out


def nearest_dataset(overlap: np.ndarray, visible: np.ndarray, text: np.ndarray | None, datasets: Sequence[str],
                    threshold: float) -> SameDataset | None:
    """The visible dataset the task overlaps most (ties within TIE broken by `text`, the task's domain and
    description similarity per dataset, then by table order), or None when no dataset is visible."""
    scored = np.where(visible, overlap, -np.inf)
    if not np.isfinite(scored).any():
        return None
    top = float(scored.max())
    tied = np.flatnonzero(scored >= top - TIE)
    if text is not None and len(tied) > 1:
        tied = tied[np.argsort(-np.asarray(text)[tied], kind="stable")]
    j = int(tied[0])
    return SameDataset(datasets[j], round(float(overlap[j]), 4), bool(overlap[j] >= threshold), threshold)


def column_scores(z: np.ndarray, j: int) -> np.ndarray:
    """(n_models,) the z-scores of column j, a model without a figure there just below the lowest."""
    column = np.asarray(z[:, j], np.float64)
    if np.isnan(column).all():
        return np.zeros(len(column))
    return np.where(np.isnan(column), np.nanmin(column) - 1.0, column)


def same_dataset_threshold(accuracy: np.ndarray, datasets: Sequence[str], families: Sequence[str],
                           class_vectors: np.ndarray, class_dataset: np.ndarray,
                           strength: np.ndarray) -> tuple[float, str]:
    """The table's same-dataset threshold and how it was set (module docstring).

    Args:
        accuracy: (n_models, n_datasets), NaN missing.
        datasets: the column names; families: per dataset, its family (datasets of one family share classes and are never compared).
        class_vectors: (n_classes, d) unit rows; class_dataset: (n_classes,) their datasets.
        strength: (n_models,) general strength, the fallback a misleading column is compared with.
    Returns:
        (threshold, a sentence saying how it was set).
    """
    n = accuracy.shape[1]
    vectors = np.asarray(class_vectors, np.float32)
    misleading: list[tuple[float, int, int]] = []
    pairs = 0
    for a in range(n):
        rows = class_dataset == a
        if not rows.any() or np.isnan(accuracy[:, a]).all():
            continue
        # One dataset's rows at a time: the whole (n_classes, n_classes) matrix is 170 MB for open_clip's table.
        overlap = dataset_overlap(vectors[rows] @ vectors.T, class_dataset, n)
        truth = np.where(np.isnan(accuracy[:, a]), -np.inf, accuracy[:, a])
        base = truth[int(np.argmax(np.where(np.isfinite(truth), strength, -np.inf)))]
        for b in range(n):
            if b == a or families[b] == families[a] or overlap[b] < FLOOR:
                continue
            pairs += 1
            column = np.where(np.isnan(accuracy[:, b]), -np.inf, accuracy[:, b])
            pick = truth[int(np.argmax(np.where(np.isfinite(truth), column, -np.inf)))]
            if pick < base - 1e-9:
                misleading.append((float(overlap[b]), a, b))
    if not misleading:
        return FLOOR, (f"{FLOOR} (the floor): {pairs} pair(s) of datasets of different families overlap at "
                       f"{FLOOR} or more, and none of their columns misled")
    worst = max(misleading)
    threshold = round(min(CEILING, np.ceil((worst[0] + 1e-9) * 100) / 100 + 0.01), 2)
    return threshold, (f"{threshold}: raised above the overlap {worst[0]:.3f} of {datasets[worst[1]]} with "
                       f"{datasets[worst[2]]}, whose column ranked {datasets[worst[1]]}'s models worse than general "
                       f"strength ({len(misleading)} of {pairs} pair(s) of different families above the floor {FLOOR} "
                       "misled)")
