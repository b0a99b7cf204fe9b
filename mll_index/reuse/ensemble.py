"""Model reuse: the selected models predict on the task's images, and vote per class.

Each selected model classifies zero-shot: the softmax of its scaled cosine similarity to
the class prompts (the `zero_shot` templates: "a photo of a {name}.", "an emoji of a
{name}.", "a drawing of a {name}.", "{name}", averaged per class). For each image, a model's
weight is 1 / the entropy of its prediction in bits (floored at 1e-3 bits); the score of
class c is the sum, over the models selected for c, of weight x probability of c, and the
prediction is the best-scoring class. The images stream through `mll_index.images.loader`: per
preprocessing configuration, one pass over them in batches (decoded by DataLoader workers) runs
every selected model of that configuration on each batch and keeps only each model's (n, C)
probabilities, so memory is set by the batch size and the number of models, not the image count.

A class's prompts name it by its matched node's lemma when the typed name is a plural of that
lemma ("apples" → "apple"): captions and CLIP's training text name one thing in the singular.
Before a model votes, its tokenizer is checked: a class name cut at the model's context length,
or two classes whose prompts become the same tokens, stop the run (unless forced), since the
model would then pick among indistinguishable classes. A model whose outputs are not finite
(NaN or infinite: an fp16 overflow, a damaged checkpoint) is left out of the vote and reported.
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

from mll_index.core.artifacts import atomic_file
from mll_index.errors import InputError, ModelLoadError
from mll_index.images.decoding import IMAGE_SUFFIXES, image_files
from mll_index.images.encoding import MODELS_PER_PASS, EncodeStats, hub_probabilities, rates
from mll_index.images.loader import image_set_from_task
from mll_index.models.hub import Hub, LoadedModel
from mll_index.models.zeroshot import all_finite, check_prompts, entropy_weights, prompt_names

log = logging.getLogger(__name__)

@dataclass
class TaskImages:
    """A task's images: paths relative to `root`, labels (class positions; -1 where unknown).

    `unreadable` lists the relative paths that could not be decoded or were refused as too
    large (`mll_index.images.decoding.open_image`); `reasons` maps each to why, in one line.
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

    Images are the files named by `mll_index.images.decoding.IMAGE_SUFFIXES`; hidden files are skipped.

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


def combine(probs: Mapping[str, np.ndarray], chosen: Mapping[str, Sequence[str]],
            class_names: Sequence[str]) -> np.ndarray:
    """(n, C) class scores: per class c, the sum over its chosen models of 1/entropy x P(c).

    Args:
        probs: model id → (n, C) probabilities over `class_names`.
        chosen: class name → model ids selected for it.
    Raises:
        ModelLoadError: a chosen model's probabilities are not finite (a NaN would win every argmax).
    """
    n = len(next(iter(probs.values())))
    scores = np.zeros((n, len(class_names)))
    used = {m for name in class_names for m in chosen[name]}
    for m in sorted(used):
        if not all_finite(probs[m]):
            raise ModelLoadError(f"model {m!r}: its predictions are not finite (NaN or infinite); "
                                 "leave it out of the selection")
    weights = {m: entropy_weights(probs[m]) for m in used}
    for c, name in enumerate(class_names):
        for m in chosen[name]:
            scores[:, c] += weights[m] * probs[m][:, c]
    return scores


@dataclass
class Predictions:
    """What the models said: model id → (n, C) float32 probabilities (finite models only) over the n readable
    images of `images` (a new record: the caller's is left as it was), the models left out with why, the
    prompt problems each model's tokenizer showed, and the timing of each pass over the images."""

    probs: dict[str, np.ndarray] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    prompt_problems: dict[str, str] = field(default_factory=dict)
    images: TaskImages | None = None
    stats: list[EncodeStats] = field(default_factory=list)


def describe_prompt_problems(model_id: str, loaded: LoadedModel, class_names: Sequence[str],
                             prompt_names: Sequence[str] | None = None) -> str | None:
    """One line on what the model's tokenizer does to the class prompts (cut names, identical
    prompts), or None when every class keeps a distinct, whole prompt."""
    check = check_prompts(loaded, class_names, prompt_names)
    if check.ok:
        return None
    parts = [f"classes {list(g)} get identical prompts" for g in check.identical]
    if check.cut:
        parts.append(f"the name of {list(check.cut)[:5]}{' and others' if len(check.cut) > 5 else ''} is cut")
    return f"model {model_id!r} reads at most {check.context_length} tokens: " + "; ".join(parts)


def _nonfinite(model_id: str, bad_rows: int, n: int, classes: np.ndarray, scale: float) -> str | None:
    """Why a model's outputs cannot vote (which of them are not finite), or None."""
    what = [name for name, ok in (("image embeddings", bad_rows == 0), ("class text embeddings",
                                   all_finite(classes)), ("logit scale", all_finite(scale))) if not ok]
    if not what:
        return None
    where = f" ({bad_rows} of {n} images)" if bad_rows else ""
    return f"model {model_id!r}: its {' and '.join(what)} are not finite (NaN or infinite){where}"


def readable_images(images: TaskImages, positions: np.ndarray, unreadable: Sequence[tuple[str, str]]) -> TaskImages:
    """A new TaskImages of the images at `positions` (the readable ones), the others listed with their reason.

    Raises:
        InputError: no image could be read (the message gives the first reasons).
    """
    reasons = dict(images.reasons) | {rel: why for rel, why in unreadable if rel not in images.reasons}
    order = {rel: i for i, rel in enumerate(images.paths)}
    listed = list(images.unreadable) + sorted((rel for rel, _ in unreadable if rel not in images.unreadable),
                                              key=lambda rel: order.get(rel, len(order)))
    if not len(positions):
        why = "; ".join(f"{rel}: {reasons[rel]}" for rel in listed[:3])
        more = f" (and {len(listed) - 3} more)" if len(listed) > 3 else ""
        raise InputError(f"{images.root}: none of the {len(images.paths)} images could be read: {why}{more}")
    keep = [int(i) for i in positions]
    return TaskImages(images.root, [images.paths[i] for i in keep], np.asarray(images.labels)[keep], listed, reasons)


def predict(hub: Hub, model_ids: Sequence[str], images: TaskImages, class_names: Sequence[str],
            device: str = "cpu", progress: bool = False, prompt_names: Sequence[str] | None = None,
            force: bool = False, *, workers: int = 0, batch_size: int = 256, models_per_pass: int = MODELS_PER_PASS) -> Predictions:
    """Zero-shot probabilities of each model on the images, with the models that cannot vote set aside.

    The images stream through `mll_index.images.encoding.zero_shot_probabilities`: one pass per preprocessing
    configuration (per `models_per_pass` of its models), decoded by `workers` processes, every model of
    the pass run on each batch. Unreadable images are dropped and listed in `Predictions.images` (a new
    record; `images` is not modified), so n counts the readable images. A model whose image or text
    embeddings or temperature are not finite goes to `left_out` (a log warning names it).

    Args:
        prompt_names: the name written into each class's prompts (default: the class names).
        force: record prompt problems (cut names, identical prompts) instead of refusing.
        workers, batch_size: see `mll_index.images.loader.image_loader`.
    Raises:
        InputError: a model's tokenizer cuts a class name or makes two classes' prompts identical
            (unless `force`), no readable image, a dead or stuck decoding worker (names the file).
    """
    written = list(prompt_names) if prompt_names is not None else list(class_names)
    out = Predictions()

    def check_prompts_of(loaded: Sequence[LoadedModel]) -> None:
        for model in loaded:
            problem = describe_prompt_problems(model.hub_model.id, model, class_names, written)
            if problem and not force:
                raise InputError(f"{problem}; shorten or rename those classes, or pass --force to predict anyway")
            if problem:
                log.info("%s", problem)
                out.prompt_problems[model.hub_model.id] = problem

    merged = hub_probabilities(hub, model_ids, image_set_from_task(images), written, batch_size=batch_size,
                               workers=workers, device=device, models_per_pass=models_per_pass, progress=progress,
                               before_pass=check_prompts_of)
    out.images = readable_images(images, merged.positions, merged.unreadable)
    out.stats = merged.stats
    n = len(merged.positions)
    for mid in dict.fromkeys(model_ids):
        bad = _nonfinite(mid, merged.nonfinite_rows[mid], n, merged.class_embeddings[mid], merged.scales[mid])
        if bad or not all_finite(merged.probabilities[mid]):
            bad = bad or f"model {mid!r}: its probabilities are not finite (NaN or infinite)"
            log.info("%s; left out of the vote", bad)
            out.left_out[mid] = bad
        else:
            out.probs[mid] = merged.probabilities[mid]
    return out


def predict_probabilities(hub: Hub, model_ids: Sequence[str], images: TaskImages, class_names: Sequence[str],
                          device: str = "cpu", progress: bool = False, *, workers: int = 0) -> dict[str, np.ndarray]:
    """Zero-shot probabilities of each model on the readable images: model id → (n, C) float32, rows summing to 1.

    The models whose outputs are not finite are missing from the result (see `predict`).
    """
    return predict(hub, model_ids, images, class_names, device, progress, force=True, workers=workers).probs


@dataclass
class ReuseResult:
    """Predictions for a task's images: `predictions[i]` is a class name; accuracy when labels are known."""

    task: str
    class_names: list[str]
    images: TaskImages
    scores: np.ndarray
    models: dict[str, list[str]]
    prompts: dict[str, str] = field(default_factory=dict)      # class → the name its prompts used, where not its own
    left_out: dict[str, str] = field(default_factory=dict)     # model → why it did not vote
    warnings: list[str] = field(default_factory=list)
    stats: list[EncodeStats] = field(default_factory=list)     # per pass over the images: decode vs encode time

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
                "accuracy": None if self.accuracy is None else round(self.accuracy, 4), "models": self.models,
                "prompts": self.prompts, "left_out": self.left_out, "warnings": self.warnings,
                "rates": rates(self.stats)}


def reuse_models(hub: Hub, models: Mapping[str, Sequence[str]], folder: Path, *, task: str = "task",
                 device: str | None = None, progress: bool = False, lemmas: Mapping[str, str] | None = None,
                 force: bool = False, workers: int = 0, batch_size: int = 256) -> ReuseResult:
    """Run the models chosen per class on a task's images and combine them by inverse entropy.

    Args:
        models: class name → model ids (a Selection's `models_for()`), in the task's class order.
        lemmas: class name → lemma of its matched node (see `prompt_names`); None: prompts use the names.
        force: predict even where a model's tokenizer cuts a class name or makes prompts identical
            (each such model is then listed in `warnings`).
        workers, batch_size: image decoding processes and images per batch (see `predict`).
    Raises:
        InputError: a model missing from the hub, a bad image folder, prompts a model cannot tell
            apart (unless `force`).
        ModelLoadError: every model chosen for a class has outputs that are not finite (the line
            names the class and the models); a model left out while others remain is only reported.
    """
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    class_names = list(models)
    needed = list(dict.fromkeys(m for ids in models.values() for m in ids))
    for m in needed:
        hub.get(m)  # an unknown model is an InputError naming the hub's models
    images = scan_task_images(folder, class_names)
    written = prompt_names(class_names, lemmas) if lemmas else list(class_names)
    found = predict(hub, needed, images, class_names, device, progress, prompt_names=written, force=force,
                    workers=workers, batch_size=batch_size)
    voting = {c: [m for m in ids if m in found.probs] for c, ids in models.items()}
    for c, ids in models.items():
        if not voting[c]:
            raise ModelLoadError(f"class {c!r}: no model can vote for it, the outputs of {list(ids)} are not finite "
                                 "(NaN or infinite); choose other models for it (select with --k 2 or more)")
    warnings = list(found.prompt_problems.values()) + [f"{why}; left out of the vote" for why in found.left_out.values()]
    return ReuseResult(task, class_names, found.images, combine(found.probs, voting, class_names), voting,
                       {c: p for c, p in zip(class_names, written) if p != c}, dict(found.left_out), warnings,
                       found.stats)


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
