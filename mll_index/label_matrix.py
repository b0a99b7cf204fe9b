"""The label matrix: every model's confusion counts on every labeled node, stacked and memory-mapped.

Selection in `counts` mode needs, for a task's few hundred nodes, the TP/FP/FN of every model.
Kept node-major, those are a few hundred contiguous rows of one file whatever the hub's size,
so a selection over 10,000 models reads megabytes, not the whole matrix. The matrix grows by
shards, each an immutable block written once:

    <index>/labels/matrix/
        manifest.json       kind "label-matrix": the node axis (wnids), the model axis (id + hub entry),
                            and the shards in write order
        shard-<n>/          written atomically, never modified
            manifest.json   kind "label-shard": its rows, columns and dtype, checksums of the files
            rows.npy        (r,) int32 positions on the node axis, ascending
            cols.npy        (c,) int32 positions on the model axis, ascending
            counts.npy      (r, c, 3) uint16 (uint32 if a count exceeds 65,535): TP, FP, FN

Adding a model writes one (n_nodes, 1) shard and rewrites the manifest; adding nodes writes
one (n_new, n_models) shard: neither touches what is there. Where shards overlap, the later
one wins (a model labeled again). An all-zero entry means "no label": the model was never
evaluated on that node, and it then adds nothing to any score. `compact_matrix` merges the
shards into one when many small ones have piled up.

A (model, node) label costs 6 bytes (12 with uint32 counts). One writer at a time (a lock
file); readers see the manifest's shards, each whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.artifacts import atomic_dir, atomic_file, load_arrays, new_manifest, read_manifest, seal_manifest
from mll_index.errors import IndexFormatError, InputError

log = logging.getLogger(__name__)

KIND = "label-matrix"
SHARD_KIND = "label-shard"
SHARD_FILES = ["rows.npy", "cols.npy", "counts.npy"]
MANY_SHARDS = 64  # beyond this, opening and gathering pay per shard: `compact` is suggested


def matrix_dir(index_path: Path) -> Path:
    return Path(index_path) / "labels" / "matrix"


def has_matrix(index_path: Path) -> bool:
    return (matrix_dir(index_path) / "manifest.json").is_file()


@dataclass
class Shard:
    """One block of the matrix: counts[i, j] is node rows[i] x model cols[j] (TP, FP, FN)."""

    name: str
    rows: np.ndarray    # (r,) int64 ascending node-axis positions
    cols: np.ndarray    # (c,) int64 ascending model-axis positions
    counts: np.ndarray  # (r, c, 3) uint16|uint32, memory-mapped
    take: np.ndarray | None = None  # columns of `counts` to read when only some models are opened

    @property
    def col_range(self) -> tuple[int, int] | None:
        """(start, stop) when the columns are one contiguous run (the common case): a slice, not a scatter."""
        c = self.cols
        if len(c) and c[-1] - c[0] + 1 == len(c):
            return int(c[0]), int(c[-1]) + 1
        return None


@dataclass
class LabelMatrix:
    """The opened matrix: node axis, model axis (ids and hub entries) and shards.

    `gather` is the one read selection needs.
    """

    path: Path
    node_wnids: list[str]
    model_ids: list[str]
    entries: list[dict[str, Any]]
    shards: list[Shard]

    @property
    def n_nodes(self) -> int:
        return len(self.node_wnids)

    @property
    def n_models(self) -> int:
        return len(self.model_ids)

    @property
    def label_bytes(self) -> int:
        return sum(int(s.counts.nbytes) for s in self.shards)

    def gather(self, nodes: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """TP, FP, FN of every model on the given nodes.

        Args:
            nodes: (s,) int node-axis positions.
        Returns:
            (s, n_models, 3) float32, node-major; zeros where a model has no label on a node.
        """
        nodes = np.asarray(nodes, np.int64)
        if out is None and len(self.shards) == 1 and self.shards[0].take is None \
                and self.shards[0].col_range == (0, self.n_models):
            # One shard holding every model (a compacted matrix): read and convert in one pass.
            shard = self.shards[0]
            at = np.minimum(np.searchsorted(shard.rows, nodes), max(len(shard.rows) - 1, 0))
            if len(shard.rows) and bool((shard.rows[at] == nodes).all()):
                return shard.counts[at].astype(np.float32)
        if out is None:
            out = np.zeros((len(nodes), self.n_models, 3), np.float32)
        for shard in self.shards:
            if not len(shard.rows):
                continue
            at = np.minimum(np.searchsorted(shard.rows, nodes), len(shard.rows) - 1)
            hit = np.flatnonzero(shard.rows[at] == nodes)
            if not len(hit):
                continue
            # Reading rows in ascending order keeps the memory-mapped reads sequential.
            order = np.argsort(at[hit], kind="stable")
            hit = hit[order]
            block = shard.counts[at[hit]]
            if shard.take is not None:
                block = block[:, shard.take]
            span = shard.col_range
            if span is not None:
                out[hit, span[0]:span[1]] = block
            else:
                out[np.ix_(hit, shard.cols)] = block
        return out

    def subset(self, model_ids: Sequence[str]) -> LabelMatrix:
        """The same matrix with only these models, in this order (no data is read).

        Raises:
            InputError: a model id the matrix does not hold.
        """
        pos = {m: j for j, m in enumerate(self.model_ids)}
        missing = [m for m in model_ids if m not in pos]
        if missing:
            raise InputError(f"model(s) {missing} have no label in {self.path}; labeled: {sorted(pos)[:20]}")
        new_of_old = np.full(self.n_models, -1, np.int64)
        new_of_old[[pos[m] for m in model_ids]] = np.arange(len(model_ids))
        shards = []
        for shard in self.shards:
            base = shard.take if shard.take is not None else np.arange(len(shard.cols))
            mapped = new_of_old[shard.cols[base]]
            keep = np.flatnonzero(mapped >= 0)
            if len(keep):
                order = keep[np.argsort(mapped[keep], kind="stable")]
                take = base[order]
                whole = len(take) == shard.counts.shape[1] and bool((take == np.arange(len(take))).all())
                shards.append(Shard(shard.name, shard.rows, mapped[order], shard.counts, None if whole else take))
        return LabelMatrix(self.path, self.node_wnids, list(model_ids),
                           [self.entries[pos[m]] for m in model_ids], shards)

    def dense(self) -> np.ndarray:
        """(n_nodes, n_models, 3) float32, the whole matrix (for checks and small hubs)."""
        return self.gather(np.arange(self.n_nodes))


def _read_shard(folder: Path, n_nodes: int, n_models: int) -> Shard:
    manifest = read_manifest(folder, SHARD_KIND)
    arrays = load_arrays(folder, SHARD_FILES)
    rows = np.asarray(arrays["rows"], np.int64)
    cols = np.asarray(arrays["cols"], np.int64)
    counts = arrays["counts"]
    if counts.shape != (len(rows), len(cols), 3) or counts.shape[:2] != (manifest["n_rows"], manifest["n_cols"]):
        raise IndexFormatError(f"{folder / 'counts.npy'}: shape {counts.shape}, the shard lists "
                               f"{len(rows)} rows x {len(cols)} columns")
    if (len(rows) and (rows[-1] >= n_nodes or rows[0] < 0)) or (len(cols) and (cols[-1] >= n_models or cols[0] < 0)):
        raise IndexFormatError(f"{folder}: positions beyond the matrix's {n_nodes} nodes x {n_models} models")
    return Shard(folder.name, rows, cols, counts)


def open_matrix(index_path: Path) -> LabelMatrix:
    """Open an index's label matrix; counts are memory-mapped, nothing is read until gathered.

    Raises:
        IndexFormatError: a missing, truncated or inconsistent file, named.
    """
    folder = matrix_dir(index_path)
    manifest = read_manifest(folder, KIND)
    try:
        nodes = list(manifest["nodes"])
        models = manifest["models"]
        ids = [m["id"] for m in models]
        entries = [m["entry"] for m in models]
        shard_names = list(manifest["shards"])
    except (KeyError, TypeError) as exc:
        raise IndexFormatError(f"{folder / 'manifest.json'}: missing or malformed field {exc}") from None
    shards = [_read_shard(folder / name, len(nodes), len(ids)) for name in shard_names]
    if len(shards) > MANY_SHARDS:
        log.info("%s: %d shards; `mll-index labels compact` merges them and speeds up selection",
                    folder, len(shards))
    return LabelMatrix(folder, nodes, ids, entries, shards)


@contextlib.contextmanager
def _writer_lock(folder: Path) -> Iterator[None]:
    """One writer at a time: appends and compaction read, extend and rewrite the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_axes(folder: Path) -> dict[str, Any]:
    if not (folder / "manifest.json").is_file():
        return new_manifest(KIND, nodes=[], models=[], shards=[], next_shard=0)
    return read_manifest(folder, KIND)


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Compact JSON: with 50,000 nodes and 10,000 models it is rewritten on every append."""
    with atomic_file(folder / "manifest.json") as handle:
        handle.write(json.dumps(manifest, ensure_ascii=False, separators=(",", ":")))
        handle.write("\n")


def _counts_dtype(max_count: int) -> type:
    if max_count > np.iinfo(np.uint32).max:
        raise InputError(f"a count of {max_count} does not fit the label matrix (at most 2**32 - 1)")
    return np.uint16 if max_count <= np.iinfo(np.uint16).max else np.uint32


def _write_shard(folder: Path, rows: np.ndarray, cols: np.ndarray, fill: Any, dtype: type, what: str) -> None:
    """Write a shard folder atomically; `fill(target)` writes the (r, c, 3) counts into a memory-mapped target."""
    with atomic_dir(folder) as tmp:
        np.save(tmp / "rows.npy", rows.astype(np.int32))
        np.save(tmp / "cols.npy", cols.astype(np.int32))
        target = np.lib.format.open_memmap(tmp / "counts.npy", mode="w+", dtype=dtype, shape=(len(rows), len(cols), 3))
        fill(target)
        target.flush()
        del target
        manifest = new_manifest(SHARD_KIND, n_rows=int(len(rows)), n_cols=int(len(cols)),
                                dtype=np.dtype(dtype).name, content=what)
        seal_manifest(tmp, manifest, SHARD_FILES)


def append_labels(index_path: Path, node_wnids: Sequence[str], models: Sequence[tuple[str, dict[str, Any]]],
                  counts: np.ndarray, what: str = "labels") -> str:
    """Add one block of labels: `counts[i, j]` = TP, FP, FN of model j on node i.

    New nodes and models join the axes; models already there keep their position and their
    labels elsewhere; where they overlap, these counts replace the old ones. Nothing that is
    there is rewritten: one shard and the manifest are written, whatever the matrix's size.
    Returns the new shard's name.

    Args:
        node_wnids: (r,) distinct wnids.
        models: (c,) distinct (model id, hub entry) pairs; the entry replaces a stored one.
        counts: (r, c, 3) non-negative integers.
    """
    counts = np.asarray(counts)
    if counts.ndim != 3 or counts.shape != (len(node_wnids), len(models), 3):
        raise InputError(f"counts of shape {counts.shape}, expected ({len(node_wnids)}, {len(models)}, 3)")
    if len(set(node_wnids)) != len(node_wnids) or len({m for m, _ in models}) != len(models):
        raise InputError("node wnids and model ids of a label block must be distinct")
    if counts.size and counts.min() < 0:
        raise InputError("label counts must be non-negative")
    dtype = _counts_dtype(int(counts.max()) if counts.size else 0)
    folder = matrix_dir(index_path)
    with _writer_lock(folder):
        manifest = _read_axes(folder)
        node_pos = {w: j for j, w in enumerate(manifest["nodes"])}
        for w in node_wnids:
            if w not in node_pos:
                node_pos[w] = len(manifest["nodes"])
                manifest["nodes"].append(w)
        model_pos = {m["id"]: j for j, m in enumerate(manifest["models"])}
        for model_id, entry in models:
            if model_id in model_pos:
                manifest["models"][model_pos[model_id]]["entry"] = entry
            else:
                model_pos[model_id] = len(manifest["models"])
                manifest["models"].append({"id": model_id, "entry": entry})
        rows = np.array([node_pos[w] for w in node_wnids], np.int64)
        cols = np.array([model_pos[m] for m, _ in models], np.int64)
        r_order, c_order = np.argsort(rows, kind="stable"), np.argsort(cols, kind="stable")

        same_rows = bool((r_order == np.arange(len(r_order))).all())
        same_cols = bool((c_order == np.arange(len(c_order))).all())

        def fill(target: np.ndarray) -> None:
            for s in range(0, len(r_order), 4096):
                block = counts[s:s + 4096] if same_rows else counts[r_order[s:s + 4096]]
                target[s:s + 4096] = block if same_cols else block[:, c_order]

        name = f"shard-{int(manifest.get('next_shard', 0)):06d}"
        _write_shard(folder / name, rows[r_order], cols[c_order], fill, dtype, what)
        manifest["shards"].append(name)
        manifest["next_shard"] = int(manifest.get("next_shard", 0)) + 1
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _write_manifest(folder, manifest)
    return name


def compact_matrix(index_path: Path, rows_per_chunk: int = 1024) -> dict[str, Any]:
    """Merge every shard into one (later shards winning), then delete the old ones.

    A crash before the manifest is rewritten leaves the old shards in use; after it, only
    unlisted folders remain, which the next compaction deletes.
    """
    folder = matrix_dir(index_path)
    with _writer_lock(folder):
        matrix = open_matrix(index_path)
        manifest = _read_axes(folder)
        before = len(matrix.shards)
        listed = set(manifest["shards"])
        if before > 1:
            rows = np.unique(np.concatenate([s.rows for s in matrix.shards]))
            cols = np.unique(np.concatenate([s.cols for s in matrix.shards]))
            dtype = np.result_type(*[s.counts.dtype for s in matrix.shards])
            full_cols = len(cols) == matrix.n_models

            def fill(target: np.ndarray) -> None:
                for s in range(0, len(rows), rows_per_chunk):
                    block = matrix.gather(rows[s:s + rows_per_chunk])
                    target[s:s + rows_per_chunk] = block if full_cols else block[:, cols]

            name = f"shard-{int(manifest['next_shard']):06d}"
            _write_shard(folder / name, rows, cols, fill, dtype, "compacted")
            manifest["shards"] = [name]
            manifest["next_shard"] = int(manifest["next_shard"]) + 1
            _write_manifest(folder, manifest)
            listed = {name}
        removed = 0
        for child in folder.iterdir():
            if child.is_dir() and child.name.startswith(("shard-", ".shard-")) and child.name not in listed:
                shutil.rmtree(child, ignore_errors=True)
                removed += 1
    return {"shards_before": before, "shards_after": len(listed), "folders_removed": removed}


def matrix_counts(index_path: Path) -> dict[str, Any]:
    """Sizes of an index's label matrix, for `info`: nodes, models, shards, bytes, bytes per label."""
    if not has_matrix(index_path):
        return {}
    m = open_matrix(index_path)
    cells = sum(len(s.rows) * len(s.cols) for s in m.shards)
    return {"nodes": m.n_nodes, "models": m.n_models, "shards": len(m.shards), "label_bytes": m.label_bytes,
            "bytes_per_label": round(m.label_bytes / cells, 2) if cells else None}

