"""Model reuse: the selected models predict on the task's images, and vote per class.

Each selected model classifies zero-shot: the softmax of its scaled cosine similarity to
the class prompts (the `zero_shot` templates: "a photo of a {name}.", "an emoji of a
{name}.", "a drawing of a {name}.", "{name}", averaged per class). For each image, a model's
weight is 1 / the entropy of its prediction in bits (floored at 1e-3 bits); the score of
class c is the sum, over the models selected for c, of weight x probability of c, and the
prediction is the best-scoring class. Models are loaded one at a time; images are decoded
once per preprocessing configuration.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.artifacts import atomic_file
from mll_index.errors import InputError
from mll_index.hub import Hub, load_model, preprocess_key
from mll_index.images import IMAGE_SUFFIXES, UnreadableImageError, image_files, open_image
from mll_index.zeroshot import class_embeddings, class_probabilities, encode_pixels, logit_scale

log = logging.getLogger(__name__)

MIN_ENTROPY_BITS = 1e-3


@dataclass
class TaskImages:
    """A task's images: paths relative to `root`, labels (class positions; -1 where unknown).

    `unreadable` lists the relative paths that could not be decoded or were refused as too
    large (`mll_index.images.open_image`); `reasons` maps each to why, in one line.
    """

    root: Path
    paths: list[str]
    labels: np.ndarray
    unreadable: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def labeled(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels >= 0).all())


def scan_task_images(folder: Path, class_names: Sequence[str]) -> TaskImages:
    """The images of a folder: ImageFolder by class name (labels known) or a flat folder of images.

    Images are the files named by `mll_index.images.IMAGE_SUFFIXES`; hidden files are skipped.

    Raises:
        InputError: no such folder, no image in it, or a subfolder that is not a class of the task.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such image folder")
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths: list[str] = []
    labels: list[int] = []
    if subdirs:
        index = {name: i for i, name in enumerate(class_names)}
        unknown = [p.name for p in subdirs if p.name not in index]
        if unknown:
            raise InputError(f"{folder}: subfolder(s) {unknown[:5]} are not classes of the task; an image folder "
                             f"is either flat or one subfolder per class name ({list(class_names)[:10]})")
        for sub in subdirs:
            for f in image_files(sub):
                paths.append(str(f.relative_to(folder)))
                labels.append(index[sub.name])
    else:
        for f in image_files(folder, recursive=False):
            paths.append(f.name)
            labels.append(-1)
    if not paths:
        raise InputError(f"{folder}: no images (looked for {sorted(IMAGE_SUFFIXES)})")
    return TaskImages(folder, paths, np.array(labels, np.int64))


def decode_images(images: TaskImages, preprocess: Any) -> tuple[np.ndarray, list[int]]:
    """Decode the task's images (`mll_index.images.open_image`) and apply a model's eval transform.

    Returns:
        (n_ok, 3, H, W) float32 pixels and the positions in `images.paths` that decoded. An
        image that cannot be decoded, or is over the pixel limit, is skipped and recorded in
        `images.unreadable` and `images.reasons`.
    Raises:
        InputError: no image could be read (the message gives the first reasons), or
            `$MLL_INDEX_MAX_PIXELS` is invalid.
    """
    pixels, ok = [], []
    for i, rel in enumerate(images.paths):
        try:
            image = open_image(images.root / rel)
        except UnreadableImageError as exc:
            if rel not in images.reasons:
                images.unreadable.append(rel)
                images.reasons[rel] = exc.reason
            continue
        pixels.append(np.asarray(preprocess(image), np.float32))
        ok.append(i)
    if not pixels:
        why = "; ".join(f"{rel}: {images.reasons[rel]}" for rel in images.unreadable[:3])
        more = f" (and {len(images.unreadable) - 3} more)" if len(images.unreadable) > 3 else ""
        raise InputError(f"{images.root}: none of the {len(images.paths)} images could be read: {why}{more}")
    return np.stack(pixels), ok


def entropy_weights(probs: np.ndarray) -> np.ndarray:
    """(n,) 1 / entropy in bits of each row of (n, C) probabilities (entropy floored at 1e-3 bits)."""
    p = np.clip(probs, 1e-12, 1.0)
    h = -(p * np.log2(p)).sum(axis=1)
    return 1.0 / np.maximum(h, MIN_ENTROPY_BITS)


def combine(probs: Mapping[str, np.ndarray], chosen: Mapping[str, Sequence[str]],
            class_names: Sequence[str]) -> np.ndarray:
    """(n, C) class scores: per class c, the sum over its chosen models of 1/entropy x P(c).

    Args:
        probs: model id → (n, C) probabilities over `class_names`.
        chosen: class name → model ids selected for it.
    """
    n = len(next(iter(probs.values())))
    scores = np.zeros((n, len(class_names)))
    weights = {m: entropy_weights(p) for m, p in probs.items()}
    for c, name in enumerate(class_names):
        for m in chosen[name]:
            scores[:, c] += weights[m] * probs[m][:, c]
    return scores


def predict_probabilities(hub: Hub, model_ids: Sequence[str], images: TaskImages, class_names: Sequence[str],
                          device: str = "cpu", progress: bool = False) -> dict[str, np.ndarray]:
    """Zero-shot probabilities of each model on the images: model id → (n, C) float32, rows summing to 1.

    Images are decoded once per preprocessing configuration; unreadable ones are dropped
    (and listed in `images.unreadable`), so n counts the readable images.
    """
    from tqdm import tqdm

    models = [hub.get(m) for m in model_ids]
    groups: dict[str, list[Any]] = {}
    for m in models:
        groups.setdefault(preprocess_key(m), []).append(m)
    out: dict[str, np.ndarray] = {}
    keep: list[int] | None = None
    with tqdm(total=len(models), desc="predict", unit="model", disable=not progress) as bar:
        for group in groups.values():
            pixels = None
            for model in group:
                loaded = load_model(model, device)
                if pixels is None:
                    pixels, ok = decode_images(images, loaded.preprocess)
                    if keep is not None and ok != keep:
                        raise InputError("images decoded differently for two preprocessings")
                    keep = ok
                emb = encode_pixels(loaded, pixels, device)
                out[model.id] = class_probabilities(emb, class_embeddings(loaded, class_names, device),
                                                    logit_scale(loaded))
                bar.update(1)
    if keep is not None and len(keep) < len(images.paths):
        images.paths = [images.paths[i] for i in keep]
        images.labels = images.labels[keep]
    return out


@dataclass
class ReuseResult:
    """Predictions for a task's images: `predictions[i]` is a class name; accuracy when labels are known."""

    task: str
    class_names: list[str]
    images: TaskImages
    scores: np.ndarray
    models: dict[str, list[str]]

    @property
    def predicted(self) -> np.ndarray:
        return self.scores.argmax(axis=1)

    @property
    def predictions(self) -> list[str]:
        return [self.class_names[i] for i in self.predicted]

    @property
    def accuracy(self) -> float | None:
        if not self.images.labeled:
            return None
        return float((self.predicted == self.images.labels).mean())

    def summary(self) -> dict[str, Any]:
        return {"task": self.task, "images": len(self.images.paths), "unreadable": self.images.unreadable,
                "accuracy": None if self.accuracy is None else round(self.accuracy, 4), "models": self.models}


def reuse_models(hub: Hub, models: Mapping[str, Sequence[str]], folder: Path, *, task: str = "task",
                 device: str | None = None, progress: bool = False) -> ReuseResult:
    """Run the models chosen per class on a task's images and combine them by inverse entropy.

    Args:
        models: class name → model ids (a Selection's `models_for()`), in the task's class order.
    Raises:
        InputError: a model missing from the hub, a bad image folder.
    """
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    class_names = list(models)
    needed = list(dict.fromkeys(m for ids in models.values() for m in ids))
    for m in needed:
        hub.get(m)  # an unknown model is an InputError naming the hub's models
    images = scan_task_images(folder, class_names)
    probs = predict_probabilities(hub, needed, images, class_names, device, progress)
    return ReuseResult(task, class_names, images, combine(probs, models, class_names),
                       {c: list(v) for c, v in models.items()})


def write_predictions(result: ReuseResult, path: Path, fmt: str = "csv") -> None:
    """Write one row per image (path, prediction, label if known), through a temporary file."""
    if fmt not in ("csv", "jsonl"):
        raise InputError(f"unknown predictions format {fmt!r}; formats: ['csv', 'jsonl']")
    predictions = result.predictions
    rows = [{"path": rel, "prediction": predictions[i],
             "label": result.class_names[label] if label >= 0 else ""}
            for i, (rel, label) in enumerate(zip(result.images.paths, result.images.labels.tolist()))]
    with atomic_file(Path(path), "w") as handle:
        if fmt == "jsonl":
            for row in rows:
                handle.write(json.dumps(row) + "\n")
        else:
            writer = csv.DictWriter(handle, fieldnames=["path", "prediction", "label"])
            writer.writeheader()
            writer.writerows(rows)
