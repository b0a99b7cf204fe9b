"""Baselines that every evaluation reports beside MLL.

- `inb`: the hub's model with the best ImageNet accuracy (in the emoji world: the general
  benchmark's accuracy), whatever the task;
- `random`: a model drawn at random, accuracy averaged over seeds;
- `text_proxy`: a text-only proxy in the spirit of ModelGPT (LOVM): each model's text tower
  classifies generated captions of the task's classes against the class prompts; the
  model with the most captions right wins (no image is used);
- `oracle_single`: the best single model on the task's labeled images, found by evaluating
  every model (the cost that selection avoids);
- `oracle_per_class`: for each image, the accuracy of the model best on its true class (its
  per-class recall): a bound that knows the labels and that no vote reaches (a model's recall on
  its class ignores the images of other classes it takes);
- `split_half_ceiling`: the honest ceiling of per-class choice under `reuse`'s vote: per class the
  models chosen with ground truth on half of the task's images, scored on the other half (and
  the halves swapped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mll_index.models.hub import Hub, LoadedModel
from mll_index.models.zeroshot import encode_texts, entropy_weights
from mll_index.selection.vote_search import search_votes

RANDOM_SEEDS = (0, 1, 2, 3, 4)


def accuracy_of(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == labels).mean())


def inb_model(hub: Hub, among: Sequence[str] | None = None) -> str:
    """The model with the best ImageNet accuracy (models without one come last)."""
    ids = list(among) if among else list(hub.ids)
    return max(ids, key=lambda m: (hub.get(m).imagenet_acc is not None, hub.get(m).imagenet_acc or 0.0))


def random_accuracy(probs: Mapping[str, np.ndarray], labels: np.ndarray, seeds: Sequence[int] = RANDOM_SEEDS) -> float:
    """Mean accuracy of a model drawn with each seed."""
    ids = sorted(probs)
    return float(np.mean([accuracy_of(probs[ids[np.random.default_rng(s).integers(len(ids))]], labels)
                          for s in seeds]))


def oracle_single(probs: Mapping[str, np.ndarray], labels: np.ndarray) -> tuple[str, float]:
    """The best single model on the labeled images and its accuracy."""
    accs = {m: accuracy_of(p, labels) for m, p in probs.items()}
    best = max(sorted(accs), key=lambda m: accs[m])
    return best, accs[best]


def oracle_per_class(probs: Mapping[str, np.ndarray], labels: np.ndarray, n_classes: int) -> float:
    """Mean over images of the best model's recall on the image's true class."""
    recall = np.zeros((len(probs), n_classes))
    counts = np.bincount(labels, minlength=n_classes)
    for i, p in enumerate(probs.values()):
        hit = p.argmax(axis=1) == labels
        recall[i] = np.bincount(labels[hit], minlength=n_classes) / np.maximum(counts, 1)
    return float((recall.max(axis=0) * counts).sum() / counts.sum())


def text_proxy_score(loaded: LoadedModel, captions: Sequence[Sequence[str]], class_emb: np.ndarray,
                     device: str = "cpu") -> float:
    """The fraction of the classes' generated captions (captions[c] for class c) that the model's
    text tower assigns to their own class, given its (n_classes, d) class prompt embeddings."""
    flat = [c for caps in captions for c in caps]
    owner = np.repeat(np.arange(len(captions)), [len(c) for c in captions])
    text = encode_texts(loaded, flat, device)
    return float(((text @ class_emb.T).argmax(axis=1) == owner).mean())


def split_halves(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n,) bool: the first half of each class's images (a seeded shuffle within each class, so both
    halves hold every class with at least 2 images)."""
    rng = np.random.default_rng(seed)
    first = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        first[rows[: (len(rows) + 1) // 2]] = True
    return first


def split_half_ceiling(probs: Mapping[str, np.ndarray], labels: np.ndarray, k: int = 1, seed: int = 0) -> float:
    """Accuracy of per-class model choice for the entropy-weighted vote when the choice may use ground
    truth, but is scored on images it did not see.

    Each class's k models are searched jointly (`selection.vote_search.search_votes`: the same
    search the calibrated rule runs on sample images, here on the task's labeled images) on one half
    of each class's images (`split_halves`), the vote is scored on the other half, then the halves
    swap; the figure is the mean over all images. A greedy joint search, so a ceiling for this kind
    of choice, not a proof that no assignment does better.

    Args:
        probs: model id → (n, C) probabilities over the task's classes.
        labels: (n,) true class of each image.
        k: models per class.
    """
    ids = sorted(probs)
    stacked = np.stack([np.asarray(probs[m], np.float64) for m in ids])              # (M, n, C)
    weighted = np.stack([entropy_weights(p)[:, None] * p for p in stacked])
    first = split_halves(labels, seed)
    hits = 0
    for fit in (first, ~first):
        score = ~fit
        if not fit.any() or not score.any():
            continue
        members = search_votes(stacked[:, fit], labels[fit], k)
        votes = np.stack([weighted[ms][:, score, c].sum(axis=0) for c, ms in enumerate(members)], axis=1)
        hits += int((votes.argmax(axis=1) == labels[score]).sum())
    return hits / len(labels)


def split_half_single(probs: Mapping[str, np.ndarray], labels: np.ndarray, seed: int = 0) -> float:
    """The best single model chosen with ground truth on one half of each class's images and scored
    on the other, halves swapped (`split_halves`): `oracle_single` under `split_half_ceiling`'s
    protocol, so that the two compare like with like."""
    ids = sorted(probs)
    first = split_halves(labels, seed)
    hits = 0
    for fit in (first, ~first):
        score = ~fit
        if not fit.any() or not score.any():
            continue
        best = max(ids, key=lambda m: (accuracy_of(probs[m][fit], labels[fit]), -ids.index(m)))
        hits += int((probs[best][score].argmax(axis=1) == labels[score]).sum())
    return hits / len(labels)
