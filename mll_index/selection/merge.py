"""Image-based and published labels merged into one ranking: by rank, since their scores are on two scales.

F1 on sample images and published z-scores cannot be compared, so each source's scores become a
rank among its own models per class, and each source's best model scores 1.0 whatever its real
accuracy (see `merge_by_rank`); `unrelated_sources` warns when the two share few models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _percentile_ranks(scores: np.ndarray) -> np.ndarray:
    """(n_models, n_classes) ranks in [0, 1] per class (1 = best), ties sharing their mean rank."""
    from scipy.stats import rankdata

    n = scores.shape[0]
    if n == 1:
        return np.ones_like(scores, dtype=np.float64)
    return (rankdata(scores, method="average", axis=0) - 1) / (n - 1)


def merge_by_rank(parts: Sequence[tuple[Sequence[str], np.ndarray]]) -> tuple[list[str], np.ndarray]:
    """Merge per-source scores (F1 on sample images, published z-scores: two scales) into one.

    Each source's scores become a rank among its own models per class (1 = best, `_percentile_ranks`),
    and a model's score is the mean of the ranks it has. Ties (each source's best model has 1.0)
    are broken by how clearly the model leads in its sources: the mean over its sources of its
    score's z-score among that source's models, added times 1e-6 (below the 4 decimals an answer
    shows), so neither source wins a tie by its position in the list.

    Args:
        parts: per source, its model ids and (n_models, n_classes) scores.
    Returns:
        The ids (the first source's, then the others' new ones) and (n_ids, n_classes) float64 scores.
    """
    ids: list[str] = []
    for part_ids, _ in parts:
        ids += [m for m in part_ids if m not in set(ids)]
    position = {m: i for i, m in enumerate(ids)}
    n_classes = parts[0][1].shape[1]
    total, lead = np.zeros((len(ids), n_classes)), np.zeros((len(ids), n_classes))
    count = np.zeros((len(ids), 1))
    for part_ids, part in parts:
        rows = [position[m] for m in part_ids]
        part = np.asarray(part, np.float64)
        spread = part.std(axis=0)
        total[rows] += _percentile_ranks(part)
        lead[rows] += np.divide(part - part.mean(axis=0), spread, out=np.zeros_like(part), where=spread > 1e-12)
        count[rows] += 1
    return ids, (total + 1e-6 * lead) / count


# Below this share of the smaller source's models in common, the two sources rank different hubs:
# `auto` then takes the image-based labels alone (the index's own hub), and `both` warns.
SHARED_ENOUGH = 0.5


def sources_related(image_ids: Sequence[str], published_ids: Sequence[str]) -> bool:
    """Whether the image-labeled and the published models are (mostly) the same models: at least
    SHARED_ENOUGH of the smaller source's models in common."""
    shared = len(set(image_ids) & set(published_ids))
    return shared >= SHARED_ENOUGH * min(len(image_ids), len(published_ids))


def unrelated_sources(task_name: str, image_ids: Sequence[str], published_ids: Sequence[str]) -> tuple[str, ...]:
    """One warning when both sources were asked for (`--labels both`) and the image-labeled and the
    published models are (mostly) different models: merged by rank, each source's best model scores
    1.0 whatever its accuracy, so the answer may pair models that were never compared."""
    if sources_related(image_ids, published_ids):
        return ()
    shared = len(set(image_ids) & set(published_ids))
    return ((f"task {task_name!r}: the image-based labels ({len(image_ids)} models) and the published labels "
            f"({len(published_ids)} models) share {shared} model(s); they are merged by rank, so each source's best "
            "model scores 1.0 though the two were never compared: choose one source with --labels image or "
            "--labels published (settings \"labels\")"),)


def published_left_out(task_name: str, image_ids: Sequence[str], published_ids: Sequence[str]) -> str:
    """The line `auto` adds when it leaves the published labels out because they rank another hub's models."""
    shared = len(set(image_ids) & set(published_ids))
    return (f"task {task_name!r}: labels auto used the image-based labels only: the published labels rank "
            f"{len(published_ids)} models, {shared} of them among this index's {len(image_ids)} labeled models; "
            "--labels published (or both) uses them")
