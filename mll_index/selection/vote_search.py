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
from mll_index.selection.pseudo_tasks import PseudoTask, restricted_probabilities_of

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
    # A restricted probability is 0 where the class is outside the image's top K, so a move on class c
    # changes only the images where some candidate votes for c: each move is scored on those alone.
    touched = (weighted != 0).any(axis=0)                                         # (n, C)
    rows_of = [np.flatnonzero(touched[:, c]) for c in range(n_classes)]
    columns_of = [np.ascontiguousarray(weighted[:, rows, c]) for c, rows in enumerate(rows_of)]
    untouched_of = ~touched.T                                                     # (C, n): images no move on c changes
    members = [[start] for _ in range(n_classes)]
    vote = _Vote(weighted[start].copy(), true)
    current = _objective(vote.scores, true, beta)
    for _ in range(passes):
        changed = False
        for c in range(n_classes):
            held = len(members[c])
            moves = (["replace"] if held == 1 else []) + (["add"] if held < k else [])
            if not moves:
                continue
            rows, column, untouched = rows_of[c], columns_of[c], untouched_of[c]
            for move in moves:
                candidate = column if move == "replace" else vote.scores[rows, c][None, :] + column
                value = vote.values(c, rows, untouched, candidate, beta)
                if move == "add":
                    value[members[c]] = -np.inf
                m = int(np.argmax(value))
                # Below k models a class always takes the one that raises the objective most.
                if (move == "add" and np.isfinite(value[m])) or value[m] > current + 1e-12:
                    members[c] = [m] if move == "replace" else members[c] + [m]
                    vote.set(c, rows, candidate[m])
                    current = float(value[m]) if np.isfinite(value[m]) else _objective(vote.scores, true, beta)
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


class _Vote:
    """The vote's (n_images, C) scores, with what every move's value reads kept beside them: each
    image's best and second-best class, the scores' row sums, and the true class's score. A kept
    move updates them on the images it changed; nothing is recomputed per class."""

    def __init__(self, scores: np.ndarray, true: np.ndarray) -> None:
        self.scores, self.true = scores, true
        n = len(true)
        self.first, self.second = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.first_value, self.second_value = np.zeros(n), np.zeros(n)
        self.total, self.mine = np.zeros(n), np.zeros(n)
        self._refresh(np.arange(n))

    def _refresh(self, rows: np.ndarray) -> None:
        sub = self.scores[rows]
        at = np.arange(len(rows))
        self.first[rows] = first = sub.argmax(axis=1)
        self.first_value[rows] = sub[at, first]
        self.total[rows] = sub.sum(axis=1)
        self.mine[rows] = sub[at, self.true[rows]]
        sub[at, first] = -np.inf
        self.second[rows] = second = sub.argmax(axis=1)
        self.second_value[rows] = sub[at, second]

    def set(self, c: int, rows: np.ndarray, column: np.ndarray) -> None:
        """Class c's scores on `rows` become `column` (elsewhere they are unchanged)."""
        self.scores[rows, c] = column
        self._refresh(rows)

    def values(self, c: int, rows: np.ndarray, untouched: np.ndarray, columns: np.ndarray, beta: float) -> np.ndarray:
        """(M,) the objective if class c's scores on `rows` became columns[m] ((M, len(rows))), all
        else kept: an image of class c is right where its new score beats every other class's, another
        image where its own best class (not c) still wins; the true class's share of the vote beside
        it. `untouched`: the images outside `rows`, whose terms the move leaves as they are."""
        own = self.first == c
        best_other = np.where(own, self.second_value, self.first_value)
        is_c = self.true == c
        other_right = ~is_c & (np.where(own, self.second, self.first) == self.true)
        current = self.scores[:, c]
        rest = self.total - current
        kept = untouched
        right_kept = np.count_nonzero(np.where(is_c[kept], current[kept] > best_other[kept],
                                               other_right[kept] & (best_other[kept] >= current[kept])))
        share_kept = (np.where(is_c[kept], current[kept], self.mine[kept])
                      / np.maximum(rest[kept] + current[kept], 1e-12)).sum()
        best_other, is_c, other_right = best_other[rows], is_c[rows], other_right[rows]
        right = np.where(is_c, columns > best_other, other_right & (best_other >= columns))
        share = np.where(is_c, columns, self.mine[rows]) / np.maximum(rest[rows] + columns, 1e-12)
        n = len(self.true)
        return (right_kept + np.count_nonzero(right, axis=1)) / n + beta * ((share_kept + share.sum(axis=1)) / n)


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
    probs = restricted_probabilities_of(store, [int(m) for m in candidates], task, rows)
    return [[int(candidates[m]) for m in ms] for ms in search_votes(probs, true, k)]
