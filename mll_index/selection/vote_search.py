"""Per-class models chosen jointly, for the vote `reuse` runs, on the task's own sample images.

The vote (reuse.ensemble.combine) scores class c on an image by the sum, over c's models, of
1/entropy x P(c). A model picked for c because its F1 on c is high can still lose the task images
of other classes to c when it is more confident than their models; so picks made class by class
do not add up. Here the picks are searched together on the sample images of the task's nodes (its
domain's, where it names one), with each model's probabilities over the task's classes read from
its stored top-K logits (`pseudo_tasks.restricted_probabilities`):

1. start from the single model whose vote scores best;
2. pass over the classes: while class c has one model, replace it by the one that most raises the
   objective (kept only where it does); below k models, add the model that raises it most (always:
   k is the number of models asked for per class);
3. stop after PASSES passes or when a pass changes nothing.

The objective is the vote's accuracy on those images plus `beta` x the mean share of the vote the
true class gets: with a handful of images per class accuracy moves in steps, and the share breaks
its ties towards the surer vote. beta = 1 was chosen on generated tasks of seed 1 (bench/
selection_quality.py reports seed 2 and the shipped tasks).
"""

from __future__ import annotations

import numpy as np

from mll_index.labels.store import LabelStore
from mll_index.models.zeroshot import entropy_weights
from mll_index.selection.pseudo_tasks import PseudoTask, restricted_probabilities

PASSES = 4
BETA = 1.0


def _objective(scores: np.ndarray, true: np.ndarray, beta: float) -> float:
    acc = float((scores.argmax(axis=1) == true).mean())
    share = scores[np.arange(len(true)), true] / np.maximum(scores.sum(axis=1), 1e-12)
    return acc + beta * float(share.mean())


def search_votes(probs: np.ndarray, true: np.ndarray, k: int, beta: float = BETA,
                 passes: int = PASSES) -> list[list[int]]:
    """Per class, the positions (into probs' first axis) of its models in the vote, best first.

    Args:
        probs: (n_models, n_images, C) each candidate model's probabilities over the task's classes.
        true: (n_images,) each sample image's class.
        k: models per class (at most n_models).
    """
    n_models, n_images, n_classes = probs.shape
    k = min(k, n_models)
    weighted = np.stack([entropy_weights(p)[:, None] * p for p in probs])          # (M, n, C)
    start = int(np.argmax([_objective(weighted[m], true, beta) for m in range(n_models)]))
    members = [[start] for _ in range(n_classes)]
    scores = weighted[start].copy()
    current = _objective(scores, true, beta)
    rows = np.arange(n_images)
    for _ in range(passes):
        changed = False
        for c in range(n_classes):
            others = scores.copy()
            others[:, c] = -np.inf
            best_other, best_at = others.max(axis=1), others.argmax(axis=1)
            is_c = true == c
            other_right = ~is_c & (best_at == true)
            rest = scores.sum(axis=1) - scores[:, c]
            mine = scores[rows, true]
            moves = [("replace", weighted[:, :, c])] if len(members[c]) == 1 else []
            if len(members[c]) < k:
                moves.append(("add", scores[:, c][None, :] + weighted[:, :, c]))
            for move, column in moves:
                right = np.where(is_c[None, :], column > best_other, other_right[None, :] & (best_other >= column))
                share = np.where(is_c[None, :], column, mine[None, :]) / np.maximum(rest[None, :] + column, 1e-12)
                value = right.mean(axis=1) + beta * share.mean(axis=1)
                if move == "add":
                    value[members[c]] = -np.inf
                m = int(np.argmax(value))
                if (move == "add" and np.isfinite(value[m])) or value[m] > current + 1e-12:
                    members[c] = [m] if move == "replace" else members[c] + [m]
                    scores[:, c] = column[m]
                    current = float(value[m]) if np.isfinite(value[m]) else _objective(scores, true, beta)
                    changed = True
                    break
        if not changed:
            break
    for c in range(n_classes):      # a class still short of k models (more classes than passes allow) takes the
        while len(members[c]) < k:  # next by its own probability-weighted evidence
            gain = (weighted[:, true == c, c].sum(axis=1) if (true == c).any() else weighted[:, :, c].sum(axis=1))
            gain[members[c]] = -np.inf
            members[c].append(int(np.argmax(gain)))
    return members


SHORTLIST = 8       # candidates per class, by the calibrated rule's predicted F1
MAX_CANDIDATES = 64  # models whose probabilities are read per task, at most


def shortlist(predicted: np.ndarray) -> np.ndarray:
    """Model positions worth searching: each class's SHORTLIST best by predicted F1 ((M, C)), at most
    MAX_CANDIDATES of them (those with the highest best prediction), ascending."""
    top = np.argsort(-predicted, axis=0, kind="stable")[:SHORTLIST]
    picked = np.unique(top)
    if len(picked) > MAX_CANDIDATES:
        picked = np.sort(picked[np.argsort(-predicted[picked].max(axis=1), kind="stable")[:MAX_CANDIDATES]])
    return picked


def sample_votes(store: LabelStore, class_nodes: np.ndarray, domain: str | None, predicted: np.ndarray,
                 k: int, half: dict[str, np.ndarray] | None = None) -> list[list[int]] | None:
    """Per class, its vote's models (store positions), searched on the sample images of each class's
    best node (`search_votes`); None where that cannot be done (two classes share their best node,
    the nodes have no sample images, or the models were labeled on several sample sets).

    Args:
        class_nodes: (C,) each class's best matched node (node-axis position).
        domain: the domain tag whose images alone count (None: every image).
        predicted: (M, C) the calibrated rule's predicted F1 (`shortlist`).
        half: per sample fingerprint, (n_images,) > 0 for the images searched on (None: all;
            calibration searches on the feature half of pseudo-tasks, `pseudo_tasks.Halves`).
    """
    groups = store.groups()
    if len(groups) != 1 or len(set(class_nodes.tolist())) < len(class_nodes):
        return None
    group = store.sample_group(next(iter(groups)))
    local = np.full(len(store.node_wnids), -1, np.int64)
    local[class_nodes] = np.arange(len(class_nodes))
    keep = local[group.image_nodes] >= 0
    if half is not None:
        keep &= half[group.fingerprint] > 0
    rows = np.flatnonzero(keep)
    if domain:
        in_domain = rows[group.domains[rows] == domain.lower()]
        rows = in_domain if len(in_domain) else rows
    if len(rows) == 0:
        return None
    true = local[group.image_nodes[rows]]
    candidates = shortlist(predicted)
    task = PseudoTask(np.asarray(class_nodes, np.int64), domain, "task")
    probs = np.stack([restricted_probabilities(store, int(m), task, rows) for m in candidates])
    return [[int(candidates[m]) for m in ms] for ms in search_votes(probs, true, k)]
