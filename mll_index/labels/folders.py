"""Label folders: the on-disk format of model labels, read and written (the labeling run is `mll_index.labeling.run`).

A model's label, per labeled node (a node with sample images), is its confusion there
(true count, true positives, false positives, false negatives) over the whole labeled
node set, and per image what selection needs to recompute that confusion on any subset
of nodes: the model's top-K nodes with their logits and the true node's logit. The
image and node embeddings are kept too (float16), so that growing the graph never
re-encodes an image a model has already encoded.

    <index>/labels/
        samples-<fp>.json       a sample image table (root, images: relative path + wnid, labeled nodes),
                                named by the sample set's fingerprint; each label names the one it uses;
                                format_version 2 adds `sha256`, the checksum of its content
                                (`sample_table_digest`; tables written before open without one)
        <model folder>/         one folder per model, written atomically, named by its id percent-encoded
                                (layout.model_folder_name: one-to-one, never a reserved name)
            manifest.json       kind "model-label": hub entry, preprocess key, prompt, K, counts, files
            image_embeddings.npy  (n_images, d) float16, unit rows; row i = image i of samples.json
            node_embeddings.npy   (n_nodes, d) float16, unit rows; row j = labeled node j
            topk_nodes.npy        (n_images, K) int32, labeled-node positions, best first
            topk_logits.npy       (n_images, K) float16, logit scale applied
            true_logit.npy        (n_images,) float16, the logit of the image's own node
            counts.npy            (n_nodes, 4) int32: n_true, TP, FP, FN over all labeled nodes
        matrix/                 every model's TP, FP, FN stacked node-major (see labels/matrix.py);
                                a model's counts join it as soon as its folder is written

Only the model being labeled can be lost to a crash: each model's folder appears whole
or not at all. Models are encoded without a lock; each folder, sample table and matrix append
is written under the index's writer lock, so a rebuild or growth of the index meanwhile keeps it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.core.artifacts import (
    MANIFEST, SELF_DIGEST, atomic_dir, check_manifest, check_self_digest, index_lock, load_arrays, manifest_digest,
    new_manifest, read_json, read_manifest, seal_manifest, write_json, writing,
)
from mll_index.core.layout import (
    SAMPLE_TABLE_PREFIX, is_reserved, labels_dir, legacy_folder_name, model_folder_name, model_id_of_folder,
    sample_table_path,
)
from mll_index.errors import IndexFormatError, ModelLoadError
from mll_index.index.captions import templates
from mll_index.models.zeroshot import all_finite

log = logging.getLogger(__name__)

KIND = "model-label"
TOP_K = 32
SAMPLE_TABLE_VERSION = 2   # 2: the table carries `sha256`, the checksum of its content
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
        return {"format_version": SAMPLE_TABLE_VERSION, "sha256": sample_table_digest(self), "root": self.root,
                "node_wnids": list(self.node_wnids),
                "images": [{"path": p, "wnid": w, "stamp": t} for p, w, t in zip(self.paths, self.wnids, self.stamps)]}

    @staticmethod
    def from_json(data: dict[str, Any]) -> SampleTable:
        images = data["images"]
        return SampleTable(data["root"], tuple(i["path"] for i in images), tuple(i["wnid"] for i in images),
                           tuple(data["node_wnids"]), tuple(i["stamp"] for i in images))

    def image_keys(self) -> list[str]:
        """One key per image that changes when the file is replaced: path and stamp."""
        return [f"{p}|{t}" for p, t in zip(self.paths, self.stamps)]


def sample_table_digest(table: SampleTable) -> str:
    """Hex SHA-256 of a sample table's content: root, nodes, and every image's path, wnid and stamp.

    Selection reads the images' domain tags from their paths, so a renamed path is a changed answer:
    the checksum makes it damage that opening names. Hashed field by field (no JSON re-encoding):
    a few ms for 27,552 images.
    """
    digest = hashlib.sha256()
    for part in ([table.root], table.node_wnids, table.paths, table.wnids, table.stamps):
        digest.update("\0".join(part).encode("utf-8", "surrogatepass"))
        digest.update(b"\1")
    return digest.hexdigest()


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
    """The sample table a label refers to (labels/samples-<fingerprint>.json).

    Raises:
        IndexFormatError: a missing, unreadable or malformed table, or (format 2) one whose content
            differs from its checksum, naming the file.
    """
    path = sample_table_path(index_path, fingerprint)
    try:
        data = read_json(path)
        table = SampleTable.from_json(data)
        version, digest = data.get("format_version", 1), data.get("sha256")
    except (KeyError, TypeError, AttributeError) as exc:
        raise IndexFormatError(f"{path}: not a sample table (missing {exc})") from None
    if version not in (1, SAMPLE_TABLE_VERSION):
        raise IndexFormatError(f"{path}: sample table format version {version!r}, this mll-index reads 1 and "
                               f"{SAMPLE_TABLE_VERSION}")
    if version == SAMPLE_TABLE_VERSION and digest != sample_table_digest(table):
        raise IndexFormatError(f"{path}: its content differs from its checksum (changed or corrupt); label the "
                               "models on it again (`mll-index label`)")
    return table


def sample_tables_without_checksum(index_path: Path) -> list[Path]:
    """The sample tables written before they carried a checksum (format 1), readable ones only."""
    root = labels_dir(index_path)
    out = []
    for path in sorted(root.glob(f"{SAMPLE_TABLE_PREFIX}*.json")) if root.is_dir() else []:
        try:
            data = read_json(path)
        except IndexFormatError:
            continue
        if isinstance(data, dict) and "sha256" not in data:
            out.append(path)
    return out


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


