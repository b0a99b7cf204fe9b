"""Model labels: every hub model evaluated once on the sample images of the graph's nodes.

A model's label, per labeled node (a node with sample images), is its confusion there
(true count, true positives, false positives, false negatives) over the whole labeled
node set, and per image what selection needs to recompute that confusion on any subset
of nodes: the model's top-K nodes with their logits and the true node's logit. The
image and node embeddings are kept too (float16), so that growing the graph never
re-encodes an image a model has already encoded.

    <index>/labels/
        samples-<fp>.json       a sample image table (root, images: relative path + wnid, labeled nodes),
                                named by the sample set's fingerprint; each label names the one it uses
        <model folder>/         one folder per model, written atomically, named by its id percent-encoded
                                (layout.model_folder_name: one-to-one, never a reserved name)
            manifest.json       kind "model-label": hub entry, preprocess key, prompt, K, counts, files
            image_embeddings.npy  (n_images, d) float16, unit rows; row i = image i of samples.json
            node_embeddings.npy   (n_nodes, d) float16, unit rows; row j = labeled node j
            topk_nodes.npy        (n_images, K) int32, labeled-node positions, best first
            topk_logits.npy       (n_images, K) float16, logit scale applied
            true_logit.npy        (n_images,) float16, the logit of the image's own node
            counts.npy            (n_nodes, 4) int32: n_true, TP, FP, FN over all labeled nodes
        matrix/                 every model's TP, FP, FN stacked node-major (see label_matrix.py);
                                a model's counts join it as soon as its folder is written

Only the model being labeled can be lost to a crash: each model's folder appears whole
or not at all. Models are encoded without a lock; each folder, sample table and matrix append
is written under the index's writer lock, so a rebuild or growth of the index meanwhile keeps it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.core.artifacts import (
    MANIFEST, SELF_DIGEST, atomic_dir, check_manifest, check_self_digest, index_lock, load_arrays, manifest_digest,
    new_manifest, read_json, read_manifest, seal_manifest, write_json, writing,
)
from mll_index.index.captions import node_concept, templates
from mll_index.errors import IndexFormatError, MLLIndexError, ModelLoadError
from mll_index.models.hub import Hub, HubModel, LoadedModel, load_model
from mll_index.index.node_index import NodeIndex, load_index
from mll_index.labels.matrix import LabelMatrix, append_labels, has_matrix, open_matrix
from mll_index.core.layout import (
    PIXEL_CACHE, SAMPLE_TABLE_PREFIX, is_reserved, labels_dir, legacy_folder_name, model_folder_name,
    model_id_of_folder, sample_table_path,
)
from mll_index.images.loader import MODELS_PER_PASS, EncodeStats, ImageSet, encode_image_set, model_passes, temperature
from mll_index.labeling.samples import SampleSet, scan_samples, write_pixel_cache
from mll_index.models.zeroshot import all_finite, encode_texts

log = logging.getLogger(__name__)

KIND = "model-label"
TOP_K = 32
LABEL_FILES = ["image_embeddings.npy", "node_embeddings.npy", "topk_nodes.npy", "topk_logits.npy",
               "true_logit.npy", "counts.npy"]


@dataclass(frozen=True)
class SampleTable:
    """The sample images the labels refer to: image i has wnid `wnids[i]`, labeled node `image_nodes[i]`.

    Labeled nodes are named by wnid (`node_wnids`, sorted), not by node-index position, so
    that labels survive a rebuild or growth of the node index.
    """

    root: str
    paths: tuple[str, ...]
    wnids: tuple[str, ...]
    node_wnids: tuple[str, ...]
    stamps: tuple[str, ...] = ()  # "size:mtime_ns" per image: a replaced file is encoded again

    @property
    def image_nodes(self) -> np.ndarray:
        pos = {w: j for j, w in enumerate(self.node_wnids)}
        return np.array([pos[w] for w in self.wnids], np.int32)

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "node_wnids": list(self.node_wnids),
                "images": [{"path": p, "wnid": w, "stamp": t} for p, w, t in zip(self.paths, self.wnids, self.stamps)]}

    @staticmethod
    def from_json(data: dict[str, Any]) -> SampleTable:
        images = data["images"]
        return SampleTable(data["root"], tuple(i["path"] for i in images), tuple(i["wnid"] for i in images),
                           tuple(data["node_wnids"]), tuple(i["stamp"] for i in images))

    def image_keys(self) -> list[str]:
        """One key per image that changes when the file is replaced: path and stamp."""
        return [f"{p}|{t}" for p, t in zip(self.paths, self.stamps)]


def sample_table(samples: SampleSet, kept: Sequence[int] | None = None,
                 stamps: Sequence[str] | None = None) -> SampleTable:
    """The table of `samples`, only the `kept` positions if given (images that decoded).

    `stamps` ("size:mtime_ns" of every sample image, as a full table holds them) saves statting the files again.
    """
    positions = range(len(samples.paths)) if kept is None else [int(i) for i in kept]
    paths = tuple(samples.paths[i] for i in positions)
    wnids = tuple(samples.wnids[i] for i in positions)
    if stamps is not None:
        stamps = tuple(stamps[i] for i in positions)
    else:
        stats = [os.stat(Path(samples.root) / p) for p in paths]
        stamps = tuple(f"{st.st_size}:{st.st_mtime_ns}" for st in stats)
    return SampleTable(str(samples.root), paths, wnids, tuple(sorted(set(wnids))), stamps)


def node_prompts(index: NodeIndex, node_wnids: Sequence[str]) -> list[str]:
    """The text prompt of each labeled node (template `label_prompt`: lemma and gloss)."""
    t = templates()["label_prompt"]
    out = []
    for w in node_wnids:
        c = node_concept(index.graph, index.graph.row(w))
        out.append(t.format(lemma=c.name, gloss=c.gloss))
    return out


def confusion_counts(topk_nodes: np.ndarray, image_nodes: np.ndarray, n_nodes: int) -> np.ndarray:
    """(n_nodes, 4) int32 n_true, TP, FP, FN from each image's top-1 over all labeled nodes."""
    pred = topk_nodes[:, 0].astype(np.int64)
    true = image_nodes.astype(np.int64)
    hit = pred == true
    n_true = np.bincount(true, minlength=n_nodes)
    tp = np.bincount(true[hit], minlength=n_nodes)
    fp = np.bincount(pred[~hit], minlength=n_nodes)
    return np.stack([n_true, tp, fp, n_true - tp], axis=1).astype(np.int32)


def score_images(image_emb: np.ndarray, node_emb: np.ndarray, image_nodes: np.ndarray, logit_scale: float,
                 k: int = TOP_K, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k labeled nodes per image and the true node's logit.

    Args:
        image_emb: (n, d) unit rows; node_emb: (m, d) unit rows; image_nodes: (n,) int in [0, m).
    Returns:
        topk_nodes (n, k') int32, topk_logits (n, k') float16, true_logit (n,) float16, k' = min(k, m).
    Raises:
        ModelLoadError: an embedding or the scale is not finite (a NaN ranks arbitrarily in a partition,
            so the counts would be noise that looks like a label).
    """
    if not all_finite(logit_scale) or not all_finite(node_emb) or not all_finite(image_emb):
        raise ModelLoadError("cannot score a label from embeddings or a logit scale that are not finite (NaN or "
                             "infinite)")
    n, m = len(image_emb), len(node_emb)
    k = min(k, m)
    nodes = np.empty((n, k), np.int32)
    logits = np.empty((n, k), np.float16)
    true = np.empty(n, np.float16)
    node_t = np.asarray(node_emb, np.float32).T
    for s in range(0, n, chunk):
        block = logit_scale * (np.asarray(image_emb[s:s + chunk], np.float32) @ node_t)
        part = np.argpartition(-block, k - 1, axis=1)[:, :k] if k < m else np.tile(np.arange(m), (len(block), 1))
        vals = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        nodes[s:s + chunk] = np.take_along_axis(part, order, axis=1)
        logits[s:s + chunk] = np.take_along_axis(vals, order, axis=1)
        true[s:s + chunk] = block[np.arange(len(block)), image_nodes[s:s + chunk]]
    return nodes, logits, true


@dataclass
class ModelLabel:
    """A stored label, arrays memory-mapped; see the module docstring for shapes."""

    model_id: str
    manifest: dict[str, Any]
    image_embeddings: np.ndarray
    node_embeddings: np.ndarray
    topk_nodes: np.ndarray
    topk_logits: np.ndarray
    true_logit: np.ndarray
    counts: np.ndarray


def read_sample_table(index_path: Path, fingerprint: str) -> SampleTable:
    """The sample table a label refers to (labels/samples-<fingerprint>.json)."""
    path = sample_table_path(index_path, fingerprint)
    try:
        return SampleTable.from_json(read_json(path))
    except (KeyError, TypeError, AttributeError) as exc:
        raise IndexFormatError(f"{path}: not a sample table (missing {exc})") from None


def _manifest_model(folder: Path) -> str | None:
    """The model id a label folder's manifest names; None if it cannot be read."""
    try:
        model_id = read_json(folder / MANIFEST)["model"]["id"]
    except (IndexFormatError, KeyError, TypeError):
        return None
    return model_id if isinstance(model_id, str) else None


def label_folder(index_path: Path, model_id: str) -> Path:
    """The folder holding (or to hold) a model's label: labels/<model_folder_name(id)>, or the folder
    an older version named by the lossy rule (`legacy_folder_name`) when its manifest names this model.

    Raises:
        InputError: an empty model id.
    """
    folder = labels_dir(index_path) / model_folder_name(model_id)
    if (folder / MANIFEST).is_file():
        return folder
    return _legacy_folder(index_path, model_id) or folder


def _legacy_folder(index_path: Path, model_id: str) -> Path | None:
    """The folder an older version wrote `model_id`'s label to, if it is there and its manifest names the model."""
    name = legacy_folder_name(model_id)
    if name == model_folder_name(model_id) or is_reserved(name) or len(name.encode()) > 255:
        return None     # the same folder; the layout's own; or a name no file system took
    legacy = labels_dir(index_path) / name
    return legacy if _manifest_model(legacy) == model_id else None


def relabel_hint(model_id: str) -> str:
    """What a user runs to replace a damaged label of `model_id`."""
    return f"label it again: `mll-index label --model {model_id} --hub <hub> --samples <samples>`"


def load_label(index_path: Path, model_id: str, verify: bool = False) -> ModelLabel:
    """Open one model's label (memory-mapped); errors name the file.

    Raises:
        IndexFormatError: a missing, truncated (or, with `verify`, corrupt) file, or a manifest naming
        another model.
    """
    folder = label_folder(index_path, model_id)
    manifest = read_manifest(folder, KIND, verify=verify)
    own = check_self_digest(folder, manifest)
    if own:
        raise IndexFormatError(own)
    try:
        named, n = manifest["model"]["id"], int(manifest["counts"]["images"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{folder / MANIFEST}: missing or malformed field {exc}") from None
    if named != model_id:
        raise IndexFormatError(f"{folder / MANIFEST}: holds the label of {named!r}, not of {model_id!r}")
    arrays = load_arrays(folder, LABEL_FILES)
    if arrays["topk_nodes"].shape[0] != n or arrays["image_embeddings"].shape[0] != n:
        raise IndexFormatError(f"{folder}: arrays disagree with the manifest's {n} images")
    return ModelLabel(model_id, manifest, **arrays)


@dataclass(frozen=True)
class LabelFolders:
    """The model label folders of an index, as found (see `scan_labels`)."""

    folders: dict[str, Path]    # model id -> its label folder (sizes checked against its manifest)
    samples: dict[str, str]     # model id -> the sample fingerprint it was labeled on
    damaged: dict[str, str]     # model id (the folder's name decoded, or the name) -> why it cannot be used, one line
    # model id -> its manifest's own checksum ("" for an older label without one): what a table built
    # from the folder (topk_table) records, to know the folder has not been written again since
    digests: dict[str, str] = field(default_factory=dict)


def _model_folders(index_path: Path) -> list[Path]:
    """Every folder of labels/ that is not the layout's own (matrix, sample tables, hidden and temporary names)."""
    root = labels_dir(index_path)
    if not root.is_dir():
        return []
    return [f for f in sorted(root.iterdir()) if f.is_dir() and not is_reserved(f.name)]


def _open_folder(folder: Path) -> tuple[str, str, bool, str]:
    """(model id, sample fingerprint, whether the folder has the id's current name, the manifest's own
    checksum or "") of a label folder whose manifest and file sizes check out.

    Raises:
        IndexFormatError: the manifest is missing, unreadable or names a model another folder belongs to.
    """
    manifest = read_manifest(folder, KIND)
    own = check_self_digest(folder, manifest)
    if own:
        raise IndexFormatError(own)
    try:
        model_id, samples = manifest["model"]["id"], manifest["samples"]
        if not isinstance(model_id, str) or not model_id or not isinstance(samples, str):
            raise TypeError("model id or samples")
    except (KeyError, TypeError) as exc:
        raise IndexFormatError(f"{folder / MANIFEST}: missing or malformed field {exc}") from None
    digest = str(manifest.get(SELF_DIGEST, ""))
    if folder.name == model_folder_name(model_id):
        return model_id, samples, True, digest
    if folder.name == legacy_folder_name(model_id):
        return model_id, samples, False, digest
    raise IndexFormatError(f"{folder / MANIFEST}: names model {model_id!r}, whose label belongs in "
                           f"{model_folder_name(model_id)}/, not {folder.name}/ (a damaged manifest, or a folder "
                           "renamed by hand)")


def scan_labels(index_path: Path) -> LabelFolders:
    """Every model label folder of an index: those that open (manifest read, file sizes checked), and
    the damaged ones with the reason, never left out silently.

    A model with a folder under its current name and one under the older lossy name is read from
    the current one. A damaged folder's model is its name decoded (`model_id_of_folder`), or the
    name itself where none decodes; it is not reported when another folder of that model opens.
    """
    found: dict[str, tuple[Path, str, bool, str]] = {}
    damaged: dict[str, str] = {}
    for folder in _model_folders(index_path):
        try:
            model_id, samples, current, digest = _open_folder(folder)
        except IndexFormatError as exc:
            damaged.setdefault(model_id_of_folder(folder.name) or folder.name, str(exc))
            continue
        if model_id not in found or (current and not found[model_id][2]):
            found[model_id] = (folder, samples, current, digest)
    return LabelFolders({m: f[0] for m, f in found.items()}, {m: f[1] for m, f in found.items()},
                        {m: why for m, why in damaged.items() if m not in found}, {m: f[3] for m, f in found.items()})


def labeled_models(index_path: Path) -> dict[str, str]:
    """Model id -> sample fingerprint, for every label folder of the index that opens (see `scan_labels`
    for the damaged ones)."""
    scan = scan_labels(index_path)
    for model_id, why in scan.damaged.items():
        log.warning("label of %s cannot be used: %s", model_id, why)
    return scan.samples


def check_labels(index_path: Path, checksums: bool = False) -> list[str]:
    """Every problem of an index's model labels and sample tables, one line each naming the file.

    Checks each label folder's manifest, that it names the model the folder is for, every file's
    size (with `checksums` also its SHA-256 and the arrays' shapes) and the sample table it refers
    to; then every sample table. Returns [] when all is sound.
    """
    problems: list[str] = []
    fingerprints: set[str] = set()
    for folder in _model_folders(index_path):
        manifest, listed = check_manifest(folder, KIND, checksums=checksums)
        guess = model_id_of_folder(folder.name) or folder.name
        hint = f" (the label of {guess!r}; {relabel_hint(guess)})"
        if manifest is None or listed:
            problems += [p + hint for p in listed]
            continue
        try:
            model_id, samples, _, _ = _open_folder(folder)
            fingerprints.add(samples)
            if checksums and label_folder(index_path, model_id) == folder:
                load_label(index_path, model_id)      # the arrays' headers and shapes
        except IndexFormatError as exc:
            problems.append(str(exc) + hint)
            continue
        try:
            read_sample_table(index_path, samples)
        except IndexFormatError as exc:
            problems.append(str(exc))
    root = labels_dir(index_path)
    tables = sorted(root.glob(f"{SAMPLE_TABLE_PREFIX}*.json")) if root.is_dir() else []
    for table in tables:
        fingerprint = table.name[len(SAMPLE_TABLE_PREFIX):-len(".json")]
        if fingerprint in fingerprints:
            continue            # read above
        try:
            read_sample_table(index_path, fingerprint)
        except IndexFormatError as exc:
            problems.append(str(exc))
    return list(dict.fromkeys(problems))


def reusable_embeddings(index_path: Path, model: HubModel) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The image and node embeddings an existing label of `model` holds, by image path and wnid."""
    if not (label_folder(index_path, model.id) / MANIFEST).is_file():
        return {}, {}
    try:
        old = load_label(index_path, model.id)
        same = old.manifest["model"] == model.describe() and old.manifest["prompt"] == templates()["label_prompt"]
        if not same:
            return {}, {}
        table = read_sample_table(index_path, old.manifest["samples"])
    except MLLIndexError as exc:
        log.warning("labeling %s from scratch: %s", model.id, exc)
        return {}, {}
    return dict(zip(table.image_keys(), old.image_embeddings)), dict(zip(table.node_wnids, old.node_embeddings))


def _label_sound(index_path: Path, model_id: str) -> bool:
    """Whether a stored label opens (sizes match its manifest); a damaged one is labeled again."""
    try:
        load_label(index_path, model_id)
        return True
    except MLLIndexError as exc:
        log.warning("labeling %s again: %s", model_id, exc)
        return False


@dataclass
class LabelReport:
    """What a labeling run did."""

    labeled: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    images_per_s: dict[str, float] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    unreadable_reasons: dict[str, str] = field(default_factory=dict)  # path in `unreadable` → why
    skipped_folders: list[str] = field(default_factory=list)
    stats: list[EncodeStats] = field(default_factory=list)  # per pass over the images: decode vs encode time


@dataclass
class LabelPlan:
    """What a labeling run must do: the models to label (`todo`) and those already current (`report.skipped`).

    `full` is the table of every sample image (None when there is nothing to do); `report` is the run's
    report, started here with the skipped models and folders.
    """

    index: NodeIndex
    samples: SampleSet
    todo: list[HubModel]
    report: LabelReport
    full: SampleTable | None


def plan_labels(index_path: Path, hub: Hub, samples_root: Path, models: Sequence[str] | None = None) -> LabelPlan:
    """Which models of `hub` (or of `models`) lack a sound, current label on the samples at `samples_root`.

    The one rule of resuming for every labeler (this process's and the cluster's): a model whose label
    folder holds this sample set's fingerprint and opens is skipped; every other one is labeled.

    Raises:
        InputError: a bad sample folder, or a model id the hub does not hold.
    """
    index = load_index(index_path)
    chosen = [hub.get(m) for m in models] if models else list(hub)
    valid = {index.graph.wnids[r] for r in index.graph.nodes}
    samples = scan_samples(Path(samples_root), valid)
    report = LabelReport(skipped_folders=list(samples.skipped_folders))
    done = labeled_models(index_path)
    todo: list[HubModel] = []
    for model in chosen:
        if done.get(model.id) == samples.fingerprint and _label_sound(index_path, model.id):
            report.skipped.append(model.id)
        else:
            todo.append(model)
    return LabelPlan(index, samples, todo, report, sample_table(samples) if todo else None)


def label_models(index_path: Path, hub: Hub, samples_root: Path, *, models: Sequence[str] | None = None,
                 device: str | None = None, batch_size: int = 64, progress: bool = False,
                 workers: int = 0, pixel_cache: bool = False, cache_dir: Path | None = None,
                 models_per_pass: int = MODELS_PER_PASS, notify: Callable[[str], None] | None = None) -> LabelReport:
    """Label every model of `hub` (or the `models` named) that the index does not hold for these samples.

    The sample images stream through `mll_index.images.loader.encode_image_set`: per preprocessing
    configuration (per `models_per_pass` of its models) one pass over the images that some model of
    the pass has not encoded yet, decoded by `workers` processes, every model of the pass run on each
    batch. A model whose label is current (same sample images) is skipped; one labeled on fewer images
    or nodes encodes only what is new (its stored embeddings are kept). Models that cannot be loaded,
    or whose outputs are not finite, are reported in `failed`; the others go on. Logits are scaled by
    `pipeline.temperature` (the learned logit scale, capped at 100).

    Args:
        pixel_cache: also keep the decoded images at the model's input resolution, uint8, in `cache_dir`
            (default labels/.pixels), so that a later run decodes nothing; its size goes to `notify`
            before it is written. Without it nothing but the labels is written.
        notify: receives one line for people (the pixel cache's size); default: the log.
    Raises:
        InputError: a bad sample folder; with `pixel_cache`, a disk too small for the cache.
    """
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    plan = plan_labels(index_path, hub, samples_root, models)
    index, samples, report, full = plan.index, plan.samples, plan.report, plan.full
    cache_dir = cache_dir or labels_dir(index_path) / PIXEL_CACHE
    todo = plan.todo
    for group in model_passes(todo, models_per_pass):
        loaded: list[LoadedModel] = []
        for model in group:
            try:
                loaded.append(load_model(model, device))
            except MLLIndexError as exc:
                report.failed[model.id] = str(exc)
                log.info("%s", exc)
        if not loaded:
            continue
        _label_pass(index_path, index, loaded, samples, full, report, device=device, batch_size=batch_size,
                    workers=workers, progress=progress, cache_dir=cache_dir if pixel_cache else None, notify=notify)
        del loaded
    sync_matrix(index_path)  # a model skipped above may have missed the matrix (a crash between the two writes)
    return report


def _label_pass(index_path: Path, index: NodeIndex, loaded: list[LoadedModel], samples: SampleSet, full: SampleTable,
                report: LabelReport, *, device: str, batch_size: int, workers: int, progress: bool,
                cache_dir: Path | None, notify: Callable[[str], None] | None) -> None:
    """One pass over the sample images some model of `loaded` (one preprocessing configuration) lacks,
    then each model's label written; fills `report`."""
    keys = full.image_keys()
    held = {m.hub_model.id: reusable_embeddings(index_path, m.hub_model) for m in loaded}
    # An image no model of the pass has encoded (new, replaced, or unreadable so far) is decoded once for all.
    need = [i for i, key in enumerate(keys) if any(key not in old for old, _ in held.values())]
    key = loaded[0].preprocess_key
    decode = None
    if cache_dir is not None and need:
        decode = write_pixel_cache(samples, loaded[0].preprocess, key, cache_dir, batch_size=batch_size,
                                   workers=workers, progress=progress, notify=notify).decoder()
    encoded = encode_image_set(loaded, ImageSet(samples.root, samples.paths).subset(need), batch_size=batch_size,
                               workers=workers, device=device, decode=decode, progress=progress,
                               desc=f"label {key}") if need else None
    unreadable = dict(encoded.unreadable) if encoded else {}
    if encoded:
        report.stats.append(encoded.stats)
    report.unreadable = sorted(set(report.unreadable) | set(unreadable))
    report.unreadable_reasons.update(unreadable)
    kept = [i for i, rel in enumerate(samples.paths) if rel not in unreadable]
    table = sample_table(samples, kept, stamps=full.stamps)
    write_sample_table(index_path, samples.fingerprint, table)
    # Sample position → row of the pass's embeddings.
    row_of = {need[int(p)]: r for r, p in enumerate(encoded.positions)} if encoded else {}
    for model in loaded:
        mid = model.hub_model.id
        fresh = encoded.embeddings[mid] if encoded else np.zeros((0, 0), np.float32)
        try:
            encoded_images = _label_one(index_path, index, model, table, samples.fingerprint, device,
                                        [keys[i] for i in kept], [row_of.get(i, -1) for i in kept], fresh, held[mid])
        except ModelLoadError as exc:   # outputs that are not finite: this model only
            report.failed[mid] = str(exc)
            log.info("%s", exc)     # the report carries it (the CLI prints its failures)
            continue
        report.labeled.append(mid)
        rate = encoded.stats.encode_images_per_s.get(mid, 0.0) if encoded and encoded_images else 0.0
        report.images_per_s[mid] = rate if np.isfinite(rate) else 0.0
        append_to_matrix(index_path, mid)


def matrix_entry(label: ModelLabel) -> dict[str, Any]:
    """A label folder's model entry in the label matrix: its hub entry and the sample set it was labeled on."""
    return {**label.manifest["model"], "label_samples": label.manifest["samples"]}


def stale_in_matrix(index_path: Path, folders: dict[str, str] | None = None,
                    matrix: LabelMatrix | None = None) -> list[str]:
    """Models whose label folder is missing from the label matrix, or newer than what it holds.

    `folders` (labeled_models) and `matrix` (open_matrix) are read here unless the caller has them.
    """
    done = labeled_models(index_path) if folders is None else folders
    if not done:
        return []
    if matrix is None and has_matrix(index_path):
        matrix = open_matrix(index_path)
    held = {m: e.get("label_samples") for m, e in zip(matrix.model_ids, matrix.entries)} if matrix else {}
    return [m for m, fp in done.items() if held.get(m) != fp]


def folder_counts(index_path: Path, model_id: str) -> tuple[list[str], dict[str, Any], np.ndarray]:
    """(node wnids, matrix entry, (n_nodes, 3) TP, FP, FN) of a label folder."""
    label = load_label(index_path, model_id)
    table = read_sample_table(index_path, label.manifest["samples"])
    return list(table.node_wnids), matrix_entry(label), np.asarray(label.counts[:, 1:4])


def append_to_matrix(index_path: Path, model_id: str) -> None:
    """Append a label folder's counts to the label matrix (under the index's writer lock)."""
    wnids, entry, counts = folder_counts(index_path, model_id)
    append_labels(index_path, wnids, [(model_id, entry)], counts[:, None, :], what=f"label of {model_id}")


def sync_matrix(index_path: Path) -> list[str]:
    """Append to the label matrix the counts of every label folder it lacks; returns their model ids."""
    with index_lock(index_path):
        stale = stale_in_matrix(index_path)
        for model_id in stale:
            append_to_matrix(index_path, model_id)
    return stale


def write_label(index_path: Path, model: dict[str, Any], table: SampleTable, fingerprint: str,
                image_emb: np.ndarray, node_emb: np.ndarray, logit_scale: float, *, preprocess: str = "",
                encoded: dict[str, int] | None = None) -> None:
    """Score a model's image and node embeddings and write its label folder atomically.

    Args:
        model: the model's hub entry (its "id" names the folder).
        table: the sample table (already written as labels/samples-<fingerprint>.json).
        image_emb: (len(table.paths), d) unit rows; node_emb: (len(table.node_wnids), d) unit rows.
    """
    image_emb = np.asarray(image_emb, np.float16)
    node_emb = np.asarray(node_emb, np.float16)
    image_nodes = table.image_nodes
    topk_nodes, topk_logits, true_logit = score_images(image_emb, node_emb, image_nodes, logit_scale)
    counts = confusion_counts(topk_nodes, image_nodes, len(table.node_wnids))
    model_id = model["id"]
    folder = labels_dir(index_path) / model_folder_name(model_id)
    with index_lock(index_path):       # the legacy move, the swap and the old folder's removal as one write
        _move_legacy_tenant(folder, model_id)
        with atomic_dir(folder) as tmp:
            for name, array in (("image_embeddings", image_emb), ("node_embeddings", node_emb),
                                ("topk_nodes", topk_nodes), ("topk_logits", topk_logits),
                                ("true_logit", true_logit), ("counts", counts)):
                with writing(folder / f"{name}.npy"):
                    np.save(tmp / f"{name}.npy", array)
            manifest = new_manifest(KIND, model=model, samples=fingerprint, preprocess=preprocess,
                                    prompt=templates()["label_prompt"], top_k=int(topk_nodes.shape[1]),
                                    logit_scale=logit_scale, dim=int(node_emb.shape[1]),
                                    counts={"images": len(table.paths), "nodes": len(table.node_wnids), **(encoded or {})},
                                    accuracy=round(float(counts[:, 1].sum() / max(1, len(table.paths))), 4))
            seal_manifest(tmp, manifest, LABEL_FILES)
            # Sealed once more with its own checksum: a label's manifest is never rewritten, so any change
            # to it (a model id, a count) is damage that `scan_labels` and `info` name.
            manifest[SELF_DIGEST] = manifest_digest(manifest)
            write_json(tmp / MANIFEST, manifest)
        legacy = _legacy_folder(index_path, model_id)
        if legacy is not None:
            shutil.rmtree(legacy, ignore_errors=True)   # the same model under the old name: replaced by `folder`


def _move_legacy_tenant(folder: Path, model_id: str) -> None:
    """Before `model_id`'s label is written to `folder`: if an older version wrote another model's label
    there (the lossy rule gave `a/b` the folder `a_b`), move that label to its own folder rather than
    overwrite it."""
    tenant = _manifest_model(folder)
    if tenant is None or tenant == model_id:
        return
    home = folder.parent / model_folder_name(tenant)
    if home != folder and not home.exists():
        os.rename(folder, home)
        log.info("moved the label of %s from %s to %s", tenant, folder.name, home.name)


def write_sample_table(index_path: Path, fingerprint: str, table: SampleTable) -> None:
    """Write labels/samples-<fingerprint>.json (once: a fingerprint names one table)."""
    path = sample_table_path(index_path, fingerprint)
    with index_lock(index_path):
        if not path.is_file():
            write_json(path, table.to_json())


def _label_one(index_path: Path, index: NodeIndex, loaded: LoadedModel, table: SampleTable, fingerprint: str,
               device: str, keys: Sequence[str], rows: Sequence[int], fresh: np.ndarray,
               held: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]) -> int:
    """Encode one model's node prompts it lacks, then `finish_label`; returns how many images it had to encode."""
    new_nodes = [w for w in table.node_wnids if w not in held[1]]
    fresh_nodes = dict(zip(new_nodes, encode_texts(loaded, node_prompts(index, new_nodes), device)))
    # The one temperature rule of labeling, reuse and evaluation: the learned scale, capped at 100.
    logit_scale = temperature(loaded) if hasattr(loaded.model, "logit_scale") else 100.0
    return finish_label(index_path, loaded.hub_model, table, fingerprint, keys, rows, fresh, held, fresh_nodes,
                        logit_scale, loaded.preprocess_key)


def finish_label(index_path: Path, model: HubModel, table: SampleTable, fingerprint: str, keys: Sequence[str],
                 rows: Sequence[int], fresh: np.ndarray, held: tuple[dict[str, np.ndarray], dict[str, np.ndarray]],
                 fresh_nodes: dict[str, np.ndarray], logit_scale: float, preprocess_key: str) -> int:
    """Assemble a model's embeddings, score them and write its label folder atomically; returns how many
    images it had to encode. The one writer of labels for every labeler (this process's and the cluster's).

    Args:
        table: the sample table (already written); image i has key `keys[i]` (`SampleTable.image_keys`).
        rows: per image of `table`, its row in `fresh` ((m, d) unit rows from this run), or -1 when `held`
            has it.
        held: (image key → embedding, wnid → node embedding) the model's stored label already holds
            (`reusable_embeddings`).
        fresh_nodes: wnid → (d,) unit text embedding of every labeled node `held` lacks.
        logit_scale: the model's temperature (`pipeline.temperature`).
    Raises:
        ModelLoadError: an image or node without an embedding, or embeddings or a scale that are not finite.
    """
    old_images, old_nodes = held
    missing = [w for w in table.node_wnids if w not in old_nodes and w not in fresh_nodes]
    if missing:
        raise ModelLoadError(f"model {model.id!r}: no text embedding of the labeled node {missing[0]}")
    node_emb = np.stack([old_nodes[w] if w in old_nodes else fresh_nodes[w] for w in table.node_wnids])
    image_emb = np.empty((len(table.paths), node_emb.shape[1]), np.float16)
    encoded_images = 0
    for i, (key, row) in enumerate(zip(keys, rows)):
        if key in old_images:
            image_emb[i] = old_images[key]
        elif row >= 0:
            image_emb[i] = fresh[row]
            encoded_images += 1
        else:
            raise ModelLoadError(f"model {model.id!r}: the sample image {table.paths[i]} was not encoded (unreadable "
                                 "when this model's images were decoded); label it again")
    # Checked before anything is written: a label of NaN embeddings would give the model counts
    # (every image "predicting" one node) that selection trusts like any other.
    bad = [what for what, values in (("image embeddings", image_emb), ("node text embeddings", node_emb),
                                     ("logit scale", logit_scale)) if not all_finite(values)]
    if bad:
        raise ModelLoadError(f"model {model.id!r} ({model.weights}): its {' and '.join(bad)} are not finite (NaN or "
                             "infinite); its label is refused (a damaged checkpoint, or an fp16 overflow: try --device cpu)")
    write_label(index_path, model.describe(), table, fingerprint, image_emb, node_emb, logit_scale,
                preprocess=preprocess_key,
                encoded={"encoded_images": encoded_images, "encoded_nodes": len(fresh_nodes)})
    return encoded_images
