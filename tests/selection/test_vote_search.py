"""vote_search.search_votes scores each move on the images it changes and keeps the vote's row facts
up to date; its picks must equal a search that scores every move on every image."""

from __future__ import annotations

import numpy as np
import pytest

from mll_index.models.zeroshot import entropy_weights
from mll_index.selection.vote_search import _objective, search_votes


def dense_search(probs: np.ndarray, true: np.ndarray, k: int, beta: float = 1.0,
                 passes: int = 4) -> list[list[int]]:
    """The search as vote_search states it, every move scored on every image with the vote recomputed."""
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


def _restricted(rng: np.random.Generator, m: int, n: int, c: int, top: int, ties: bool) -> np.ndarray:
    """(m, n, c) softmaxes over each image's `top` best classes, 0 elsewhere (as from stored top-K logits)."""
    logits = rng.standard_normal((m, n, c)) * 3
    if ties:
        logits = np.round(logits)
    cut = np.sort(logits, axis=2)[:, :, -top][:, :, None]
    logits = np.where(logits >= cut, logits, -np.inf)
    p = np.exp(logits - logits.max(axis=2, keepdims=True))
    return p / p.sum(axis=2, keepdims=True)


@pytest.mark.parametrize("seed", range(24))
def test_search_equals_the_dense_search(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, n, c = int(rng.integers(1, 10)), int(rng.integers(1, 200)), int(rng.integers(1, 25))
    probs = _restricted(rng, m, n, c, top=int(rng.integers(1, c + 1)), ties=seed % 3 == 0)
    if seed % 4 == 0 and m > 1:
        probs[1] = probs[0]                       # two identical candidates: the first is kept
    true = rng.integers(0, c, n)
    for k in (1, 2, 3):
        assert search_votes(probs, true, k) == dense_search(probs, true, k)
