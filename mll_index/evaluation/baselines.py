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
  per-class recall): an upper bound that knows the labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mll_index.models.hub import Hub, LoadedModel
from mll_index.models.zeroshot import encode_texts

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
