"""Every model's stored top nodes on one sample set, stacked: the restricted confusion read, not recomputed.

A label folder holds, per sample image, the model's top-K nodes (best first; labels/folders.py). Among a
task's nodes S, the node of S a model scores highest on an image is the first of its top-K
nodes that is in S, whenever one is: no embedding product is needed. Read model by model, that
is one gather of (images, K) per model; at thousands of models the gathers themselves cost
seconds. So the top nodes of all models labeled on one sample set are stacked depth-major:

    <index>/labels/samples-<fp>.topk/
        manifest.json     kind "topk-table": sample fingerprint, K, the models (id and their label
                          manifest's own checksum, to know a folder written again since, sorted by
                          id), topk_nodes.npy's size and SHA-256, and its own checksum (manifest_sha256;
                          absent in tables written before, which open and which `info --verify` notes)
        topk_nodes.npy    (K, n_images, n_models) int16 (int32 from 32,767 nodes), sample-table node
                          positions, best first; memory-mapped

A task reads depth 1 of its images for every model at once (contiguous rows), then depth 2 only
where depth 1 was not in S, and so on: most images stop at the first depth or two.

Written by `mll-index labels compact` (`write_topk_tables`); a model labeled after it, or labeled
again, is read from its own folder until the next compaction.

Opening checks what a damaged table could change in an answer without failing to parse: the
manifest's own checksum (a reordered or edited models list), that the models are in the order they
were written in (sorted, for tables without that checksum), and topk_nodes.npy's SHA-256 (node ids
overwritten in place keep the file's size). The SHA-256 reads the whole file (about 17 ms for the
default index's 23 MB) once per process and file identity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.core.artifacts import (
    MANIFEST, SELF_DIGEST, atomic_dir, check_manifest, index_lock, load_arrays, manifest_digest, new_manifest,
    read_manifest, seal_manifest, sha256_file, write_json,
)
from mll_index.core.layout import SAMPLE_TABLE_PREFIX, labels_dir, topk_table_path
from mll_index.errors import IndexFormatError
from mll_index.labels.folders import load_label, read_sample_table, scan_labels

log = logging.getLogger(__name__)

KIND = "topk-table"
FILE = "topk_nodes.npy"
MODEL_BLOCK = 256     # models read and written at once while stacking
SUFFIX = ".topk"
# (path, inode, size, mtime_ns) of topk_nodes.npy files whose SHA-256 matched their manifest in this process
_VERIFIED: set[tuple[str, int, int, int]] = set()


@dataclass
class TopkTable:
    """An opened top-K table (see the module docstring).

    nodes: (K, n_images, n_models) int16 or int32 memory-mapped sample-table node positions.
    """

    path: Path
    fingerprint: str
    model_ids: list[str]
    digests: list[str]
    nodes: np.ndarray

    @property
    def depth(self) -> int:
        return int(self.nodes.shape[0])

    def column(self, digests: dict[str, str]) -> dict[str, int]:
        """Model id -> its column, for the models whose label folder is the one the table was built from."""
        return {m: j for j, (m, d) in enumerate(zip(self.model_ids, self.digests)) if digests.get(m) == d}


def write_topk_table(index_path: Path, fingerprint: str, model_ids: Sequence[str],
                     digests: dict[str, str]) -> dict[str, Any]:
    """Stack the top nodes of these models (all labeled on sample set `fingerprint`) into its table.

    Raises:
        IndexFormatError: a label folder that cannot be read, or whose arrays disagree with the
            sample table (naming the model).
    """
    table = read_sample_table(index_path, fingerprint)
    n_images, n_nodes = len(table.paths), len(table.node_wnids)
    ids = sorted(model_ids)
    depth = None
    # Two passes, each label opened and let go in turn: thousands of open memory maps exhaust file handles.
    for m in ids:
        shape = load_label(index_path, m).topk_nodes.shape
        if shape[0] != n_images:
            raise IndexFormatError(f"label of {m!r}: top nodes for {shape[0]} images, its sample table has {n_images}")
        depth = shape[1] if depth is None else min(depth, shape[1])
    dtype = np.int16 if n_nodes <= np.iinfo(np.int16).max else np.int32
    path = topk_table_path(index_path, fingerprint)
    with atomic_dir(path) as tmp:
        out = np.lib.format.open_memmap(tmp / FILE, mode="w+", dtype=dtype, shape=(depth or 0, n_images, len(ids)))
        for s in range(0, len(ids), MODEL_BLOCK):
            block = np.stack([np.asarray(load_label(index_path, m).topk_nodes[:, :depth]).astype(dtype)
                              for m in ids[s:s + MODEL_BLOCK]], axis=2)
            out[:, :, s:s + block.shape[2]] = block.transpose(1, 0, 2)
        out.flush()
        del out
        manifest = new_manifest(KIND, samples=fingerprint, top_k=int(depth or 0),
                                counts={"images": n_images, "nodes": n_nodes, "models": len(ids)},
                                models=[{"id": m, "label_digest": digests.get(m, "")} for m in ids])
        seal_manifest(tmp, manifest, [FILE])
        # Sealed once more with its own checksum: a reordered models list would give one model's
        # column to another, so any change to the manifest is damage that opening names.
        manifest[SELF_DIGEST] = manifest_digest(manifest)
        write_json(tmp / MANIFEST, manifest)
    return {"samples": fingerprint, "models": len(ids), "top_k": int(depth or 0), "bytes": (path / FILE).stat().st_size}


def write_topk_tables(index_path: Path) -> list[dict[str, Any]]:
    """(Re)write the top-K table of every sample set that label folders use; one report per table.

    Written under the index's writer lock, like the label matrix's compaction.
    """
    with index_lock(index_path):
        scan = scan_labels(index_path)
        by_samples: dict[str, list[str]] = {}
        for model_id, fingerprint in scan.samples.items():
            by_samples.setdefault(fingerprint, []).append(model_id)
        return [write_topk_table(index_path, fp, ids, scan.digests) for fp, ids in sorted(by_samples.items())]


def open_topk_table(index_path: Path, fingerprint: str) -> TopkTable | None:
    """The top-K table of a sample set, memory-mapped; None where there is none (or an older format).

    Raises:
        IndexFormatError: a damaged table (its manifest or its own checksum, the models' order, a file
            size or SHA-256, the array's shape), naming the file and what to run.
    """
    path = topk_table_path(index_path, fingerprint)
    if not (path / MANIFEST).is_file():
        return None
    manifest = read_manifest(path, KIND)
    hint = "; run `mll-index labels compact` to write it again"
    if SELF_DIGEST in manifest and manifest[SELF_DIGEST] != manifest_digest(manifest):
        raise IndexFormatError(f"{path / MANIFEST}: its content differs from its own checksum (changed or "
                               f"corrupt){hint}")
    try:
        models = manifest["models"]
        ids, digests = [m["id"] for m in models], [str(m["label_digest"]) for m in models]
        expected = (int(manifest["top_k"]), int(manifest["counts"]["images"]), len(ids))
        record = manifest["files"][FILE]
        if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
            raise TypeError(f"{FILE}'s record")
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{path / 'manifest.json'}: missing or malformed field {exc}{hint}") from None
    if ids != sorted(ids) or len(set(ids)) != len(ids):
        raise IndexFormatError(f"{path / MANIFEST}: its models are not in the order they were written in "
                               f"(sorted by id, each once): a damaged manifest{hint}")
    _check_content(path / FILE, record["sha256"], hint)
    nodes = load_arrays(path, [FILE])[FILE.removesuffix(".npy")]
    if nodes.shape != expected:
        raise IndexFormatError(f"{path / FILE}: shape {nodes.shape}, its manifest says {expected}{hint}")
    return TopkTable(path, fingerprint, ids, digests, nodes)


def _check_content(file: Path, sha256: str, hint: str) -> None:
    """Compare the file's SHA-256 with its manifest's, once per process and file identity."""
    stat = file.stat()
    key = (str(file.absolute()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return
    if sha256_file(file) != sha256:
        raise IndexFormatError(f"{file}: checksum differs from the manifest (corrupt){hint}")
    _VERIFIED.add(key)


def topk_table_dirs(index_path: Path) -> list[Path]:
    """Every top-K table folder of an index (labels/samples-<fp>.topk), sorted."""
    root = labels_dir(index_path)
    return sorted(p for p in root.glob(f"{SAMPLE_TABLE_PREFIX}*{SUFFIX}") if p.is_dir()) if root.is_dir() else []


def check_topk_tables(index_path: Path, checksums: bool = False) -> list[str]:
    """Every problem of an index's top-K tables, one line each naming the file; [] when all is sound.

    The manifest, the file's size, then opening each as selection does (its own checksum, the models'
    order, topk_nodes.npy's SHA-256 and shape): selection reads it whole, so the cheap check does too.
    """
    problems: list[str] = []
    for path in topk_table_dirs(index_path):
        manifest, listed = check_manifest(path, KIND, checksums=checksums)
        problems += listed
        if manifest is None or listed:
            continue
        try:
            open_topk_table(index_path, path.name[len(SAMPLE_TABLE_PREFIX):-len(SUFFIX)])
        except IndexFormatError as exc:
            problems.append(str(exc))
    return list(dict.fromkeys(problems))


def topk_tables_without_checksum(index_path: Path) -> list[Path]:
    """The manifests of top-K tables written before they carried their own checksum."""
    out = []
    for path in topk_table_dirs(index_path):
        manifest, _ = check_manifest(path, KIND)
        if manifest is not None and SELF_DIGEST not in manifest:
            out.append(path / MANIFEST)
    return out


def first_in_set(first: np.ndarray, deeper: Callable[[int, np.ndarray, np.ndarray], np.ndarray], depth: int,
                 local: np.ndarray) -> np.ndarray:
    """Per (image, model), the first of its top nodes that is in the set S.

    Args:
        first: (n_rows, n_cols) the top-1 node of each row's image for each column's model
            (sample-table node positions).
        deeper: deeper(d, rows, cols) -> (len(rows),) the d-th top node (0-based) at those pairs.
        depth: K, the stored depth.
        local: (n_table_nodes,) int, a node's position in S, -1 outside S.
    Returns:
        (n_rows, n_cols) int32 positions in S; -1 where no node of S is among the K top nodes.
    """
    n_rows, n_cols = first.shape
    flat = np.ascontiguousarray(local[first], dtype=np.int32).reshape(-1)
    missing = np.flatnonzero(flat < 0)
    for d in range(1, depth):
        if len(missing) == 0:
            break
        rows, cols = np.divmod(missing, n_cols)
        found = local[deeper(d, rows, cols)]
        flat[missing] = found
        missing = missing[found < 0]
    return flat.reshape(n_rows, n_cols)


def confusion_from_predictions(pred: np.ndarray, true: np.ndarray, n_set: int,
                               weights: np.ndarray | None = None) -> np.ndarray:
    """(n_cols, n_set, 3) float32 TP, FP, FN from restricted predictions.

    Args:
        pred: (n_rows, n_cols) int positions in S of each model's prediction; -1 where none of S is
            among the stored top nodes (then the image counts as missed, its false positive on no node).
        true: (n_rows,) int positions in S of each image's own node, sorted ascending.
        weights: (n_rows,) float image weights (None: 1 each).
    """
    n_rows, n_cols = pred.shape
    out = np.zeros((n_cols, n_set, 3), np.float32)
    if n_rows == 0 or n_cols == 0:
        return out
    hit = pred == true[:, None]
    present, starts = np.unique(true, return_index=True)
    w = np.ones(n_rows, np.float32) if weights is None else np.asarray(weights, np.float32)
    # rows are sorted by true node: each node's TP is a sum over one run of rows
    if weights is None:
        tp = np.add.reduceat(hit, starts, axis=0, dtype=np.int32)
    else:
        tp = np.add.reduceat(hit * w[:, None], starts, axis=0)
    n_true = np.add.reduceat(w, starts)
    out[:, present, 0] = tp.T
    out[:, present, 2] = (n_true[:, None] - tp).T
    wrong = np.flatnonzero((~hit & (pred >= 0)).reshape(-1))
    key = pred.reshape(-1)[wrong].astype(np.int64) * n_cols + (wrong % n_cols)
    fp = np.bincount(key, weights=None if weights is None else w[wrong // n_cols], minlength=n_set * n_cols)
    out[:, :, 1] = fp.reshape(n_set, n_cols).T
    return out
