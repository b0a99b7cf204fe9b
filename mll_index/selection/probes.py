"""Probe images: a few unlabeled images of a task say which sample images are like the task's.

Each label folder stores its model's embedding of every sample image. The probe images are
encoded by one labeled model per sample set (by default the one whose labels are most accurate;
`n_models` for more), and each sample image is weighted by how much it leans the way the probes
lean, in that model's embedding space (PROBE_AGGREGATE "coherent"):

- a sample image's direction is its offset from its node's mean embedding, as a unit vector;
- a probe's direction is its offset from the mean embedding of its nearest node, as a unit vector;
- the image's score is the cosine-weighted agreement with the probes' mean direction.

The class content cancels on both sides; what remains is the task's style or domain. The mean of
the probes' unit directions is long when they share a style and short when they do not (a task
drawn from several domains), so the weights sharpen only as far as the probes agree. Measured
alternatives: "residual" (the probes' mean minus the whole sample set's mean, as one unit
direction: sharp even for a mixed task), "max" (cosine to the closest probe) and "mean" (to the
probes' mean). Within each node the weights are a softmax of these scores (temperature
PROBE_TEMPERATURE), scaled so that the node keeps its image count: no node gains or loses weight
against another. The restricted confusion is then counted with these weights
(confusion.restricted_confusion).

Cost: P probe images (at most 16 by default) encoded by `n_models` models, once per task; no
other model runs. Evaluating every hub model on the task's images would encode every image
with every model. Aggregate and temperature were chosen on 200 generated tasks of the emoji world
(seed 1) and are reported on 200 others (seed 2) and on the 14 shipped tasks
(bench/selection_quality.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.errors import InputError
from mll_index.images.decoding import image_files
from mll_index.labels.store import LabelStore

log = logging.getLogger(__name__)

PROBE_LIMIT = 16
# Softmax temperature over the scores within a node, and how probes are compared with sample
# images (see the module docstring); chosen on the emoji world (bench/selection_quality.py).
PROBE_TEMPERATURE = 0.1
PROBE_AGGREGATE = "coherent"


@dataclass(frozen=True)
class ProbeSet:
    """Encoded probe images.

    paths: the probe files used, in order; skipped: (file, reason) of those that could not be
    read; embeddings: model id -> (len(paths), d) float32 unit rows; seconds: encoding time.
    """

    paths: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    embeddings: dict[str, np.ndarray]
    seconds: float

    def summary(self) -> dict[str, Any]:
        """What selection reports: images used, those skipped and why, the encoding models, the time."""
        return {"images": len(self.paths), "skipped": [list(s) for s in self.skipped],
                "models": sorted(self.embeddings), "images_encoded": len(self.paths) * len(self.embeddings),
                "seconds": round(self.seconds, 3)}


def probe_files(sources: Sequence[str | Path], limit: int = PROBE_LIMIT) -> list[Path]:
    """The probe image files, sorted by path: each source is a file, or a folder whose image files
    are read directly in it and in its immediate subfolders (one per class, as in
    `<task>/<class>/*.png`). Deeper folders are not walked, so that a path such as "/" given to
    the service costs one listing of it and of its subfolders; hidden and unreadable subfolders
    are passed over.

    More than `limit` files: `limit` of them, evenly spaced in sorted order (deterministic; with
    one subfolder per class, the choice spans the classes).

    Raises:
        InputError: a source that does not exist (naming the path looked at, and the current
            folder when it is relative), or no image file at all (one line naming the folders and
            how many subfolders were looked in).
    """
    files: list[Path] = []
    looked: list[str] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            try:
                files += image_files(path, recursive=False)
            except OSError as exc:
                raise InputError(f"probe images: cannot list {path} ({exc.strerror or exc})") from None
            subfolders = _subfolders(path)
            for sub in subfolders:
                try:
                    files += image_files(sub, recursive=False)
                except OSError:  # a subfolder we may not list (e.g. under "/"): not a task's images
                    continue
            looked.append(f"{path} and its {len(subfolders)} subfolder{'' if len(subfolders) == 1 else 's'}"
                          if subfolders else f"{path} (no subfolder)")
        elif path.is_file():
            files.append(path)
            looked.append(str(path))
        elif path.exists():
            raise InputError(f"probe images: {path} is not a regular file or folder (a FIFO, device or socket "
                             "is never read)")
        else:
            where = "" if path.is_absolute() else f" (relative to the current folder {Path.cwd()})"
            raise InputError(f"probe images: {path} does not exist{where}: give a folder of images or image files")
    files = sorted(dict.fromkeys(files))
    if not files:
        raise InputError(f"probe images: no image file in {'; '.join(looked)} (image suffixes: "
                         ".jpg, .png, .webp, ...)")
    if len(files) > limit:
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    return files


def probe_identity(sources: Sequence[str | Path], limit: int = PROBE_LIMIT) -> tuple[tuple[Any, ...], ...]:
    """What the probe images of `sources` are now, for a cache key: per file chosen (`probe_files`), its
    path, size, mtime_ns, inode and device; per source folder, its own mtime_ns and inode (a file added,
    removed or renamed in it changes them). Files replaced (a new inode or mtime), grown or deleted, and
    folders deleted or listed differently, all give another key; the path strings alone never stand
    for the content.

    Raises:
        InputError: as probe_files (a source gone, no image file).
    """
    key: list[tuple[Any, ...]] = []
    for source in sources:
        try:
            st = os.stat(source)
        except OSError:
            continue  # probe_files below names it
        key.append(("source", str(source), st.st_ino, st.st_dev, st.st_mtime_ns))
    for path in probe_files(sources, limit):
        try:
            st = os.stat(path)
        except OSError:
            key.append(("file", str(path), None))
            continue
        key.append(("file", str(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev))
    return tuple(key)


def _subfolders(folder: Path) -> list[Path]:
    """The non-hidden folders directly in `folder`, sorted; none where it cannot be listed."""
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())
    except OSError:
        return []


def skipped_warning(skipped: Sequence[Sequence[str]]) -> str | None:
    """One line naming the probe files that could not be read (the first five; `ProbeSet.skipped`
    or its summary's "skipped" list of (file, reason)), or None when there are none."""
    if not skipped:
        return None
    shown = ", ".join(str(p) for p, _ in skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
    return (f"probe images: skipped {len(skipped)} unreadable file{'s' if len(skipped) > 1 else ''} "
            f"({shown}; first reason: {skipped[0][1]})")


def probe_models(store: LabelStore, n_models: int = 1) -> dict[str, list[str]]:
    """Sample fingerprint -> the `n_models` models labeled on it whose labels are most accurate
    (TP / images over the sample set's nodes, from the label matrix; ties by id)."""
    out = {}
    ids = store.model_ids
    for fingerprint, members in store.groups().items():
        axis = store.sample_group(fingerprint).axis
        counts = store.matrix.gather(axis)[:, members]                 # (n_nodes, n_members, 3)
        tp, fn = counts[:, :, 0].sum(axis=0, dtype=np.float64), counts[:, :, 2].sum(axis=0, dtype=np.float64)
        accuracy = tp / np.maximum(tp + fn, 1)
        order = sorted(range(len(members)), key=lambda j: (-accuracy[j], ids[members[j]]))
        out[fingerprint] = [ids[members[j]] for j in order[:n_models]]
    return out


def _hub_model(entry: dict[str, Any]) -> Any:
    from mll_index.models.hub import HubModel

    def path(value: Any) -> Path | None:
        return Path(value) if value else None

    return HubModel(id=entry["id"], arch=entry["arch"], pretrained=entry.get("pretrained") or None,
                    checkpoint=path(entry.get("checkpoint")), config=path(entry.get("config")))


def encode_probes(store: LabelStore, sources: Sequence[str | Path], *, limit: int = PROBE_LIMIT, n_models: int = 1,
                  device: str = "cpu") -> ProbeSet:
    """Encode the probe images with the probe models (`probe_models`), loaded from their label's hub entry.

    Images of any size or mode are converted as labeling converts them (`images.open_image`,
    then each model's own preprocessing); files that cannot be read are skipped and listed.

    Raises:
        InputError: no probe image file, or none readable (one line, with the first file's reason).
        ModelLoadError: a probe model cannot be loaded.
    """
    from mll_index.images.encoding import encode_image_set
    from mll_index.images.loader import ImageSet
    from mll_index.models.hub import load_model

    files = probe_files(sources, limit)
    started = time.perf_counter()
    images = ImageSet(Path("/"), tuple(str(p.resolve()) for p in files))
    chosen = sorted({m for ids in probe_models(store, n_models).values() for m in ids})
    embeddings: dict[str, np.ndarray] = {}
    positions = np.arange(len(files))
    skipped: list[tuple[str, str]] = []
    for model_id in chosen:
        loaded = load_model(_hub_model(store.entries[model_id]), device)
        # Not logged here: the selection lists the skipped files once in its warnings (`skipped_warning`).
        encoded = encode_image_set([loaded], images, device=device, batch_size=len(files), desc="probe images",
                                   log_unreadable=False)
        embeddings[model_id] = np.asarray(encoded.embeddings[model_id], np.float32)
        positions, skipped = encoded.positions, list(encoded.unreadable)
    if len(positions) == 0:
        first = f" ({skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise InputError(f"probe images: none of the {len(files)} files in {', '.join(str(s) for s in sources)} "
                         f"could be read{first}")
    paths = tuple(str(files[i]) for i in positions)
    return ProbeSet(paths, tuple((str(p), str(r)) for p, r in skipped), embeddings, time.perf_counter() - started)


def probe_weights(store: LabelStore, probes: ProbeSet, temperature: float | None = None,
                  aggregate: str | None = None) -> dict[str, np.ndarray]:
    """Sample fingerprint -> (n_images,) float32 weight of each sample image (see the module docstring).

    aggregate: "coherent", "residual", "max" or "mean" (see the module docstring); default PROBE_AGGREGATE.
    Sample sets without a probe model keep weight 1 everywhere (they are left out of the result).
    """
    temperature = PROBE_TEMPERATURE if temperature is None else temperature
    aggregate = aggregate or PROBE_AGGREGATE
    position = {m: i for i, m in enumerate(store.model_ids)}
    out = {}
    for fingerprint, members in store.groups().items():
        models = [m for m in probes.embeddings if m in position and position[m] in members]
        if not models:
            continue
        group = store.sample_group(fingerprint)
        similarity = np.zeros(len(group.image_nodes), np.float64)
        for model_id in models:
            label = store.image_labels(position[model_id])
            emb = np.asarray(label.image_embeddings, np.float32)       # type: ignore[union-attr]
            q = probes.embeddings[model_id]
            if aggregate in ("coherent", "residual"):
                # Class content removed on both sides: each image's offset from its node's centre,
                # against the probes' offsets (the task's style).
                _, inverse, count = np.unique(group.image_nodes, return_inverse=True, return_counts=True)
                centres = np.zeros((len(count), emb.shape[1]))
                np.add.at(centres, inverse, emb)
                centres /= count[:, None]
                offset = emb - centres[inverse]
                offset /= np.maximum(np.linalg.norm(offset, axis=1, keepdims=True), 1e-12)
                if aggregate == "coherent":
                    # Each probe's offset from the centre of its nearest node, as a unit vector; their
                    # mean is long when the probes share a style and short when they do not (a mixed
                    # task), so the weights sharpen only as far as the probes agree.
                    unit_centres = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
                    probe_offset = q - centres[(q @ unit_centres.T).argmax(axis=1)]
                    probe_offset /= np.maximum(np.linalg.norm(probe_offset, axis=1, keepdims=True), 1e-12)
                    similarity += offset @ probe_offset.mean(axis=0)
                else:
                    shift = q.mean(axis=0) - emb.mean(axis=0)
                    similarity += offset @ (shift / max(float(np.linalg.norm(shift)), 1e-12))
            elif aggregate == "mean":
                centre = q.mean(axis=0)
                similarity += emb @ (centre / max(float(np.linalg.norm(centre)), 1e-12))
            else:
                similarity += (emb @ q.T).max(axis=1)
        similarity /= len(models)
        out[fingerprint] = node_softmax(similarity, group.image_nodes, temperature)
    return out


def node_softmax(score: np.ndarray, nodes: np.ndarray, temperature: float) -> np.ndarray:
    """(n,) float32 softmax of score / temperature within each node's images, times the node's image count."""
    _, inverse, count = np.unique(nodes, return_inverse=True, return_counts=True)
    top = np.full(len(count), -np.inf)
    np.maximum.at(top, inverse, score)
    e = np.exp((score - top[inverse]) / temperature)
    total = np.bincount(inverse, weights=e, minlength=len(count))
    return (e / total[inverse] * count[inverse]).astype(np.float32)
