"""The label matrix: every model's confusion counts on every labeled node, stacked and memory-mapped.

Selection in `counts` mode needs, for a task's few hundred nodes, the TP/FP/FN of every model.
Kept node-major, those are a few hundred contiguous rows of one file whatever the hub's size,
so a selection over 10,000 models reads megabytes, not the whole matrix. The matrix grows by
shards, each an immutable block written once:

    <index>/labels/matrix/
        manifest.json       kind "label-matrix", the base: the node axis (wnids), the model axis (id + hub
                            entry), the shards in write order, and the name of the log
        log-<n>.jsonl       append-only, one line per shard written since the base: its name, the nodes
                            and models it adds to the axes (and hub entries it changes); read to its last
                            complete line
        shard-<n>/          written atomically, never modified
            manifest.json   kind "label-shard": its rows, columns and dtype, checksums of the files
            rows.npy        (r,) int32 positions on the node axis, ascending
            cols.npy        (c,) int32 positions on the model axis, ascending
            counts.npy      (r, c, 3) uint16 (uint32 if a count exceeds 65,535): TP, FP, FN

The axes are the base's, then each log record's additions in order. Adding a model writes one
(n_nodes, 1) shard and appends one line to the log; adding nodes writes one (n_new, n_models)
shard and one line: an append writes bytes in proportion to its shard, whatever the hub's size,
and touches nothing that is there. Where shards overlap, the later one wins (a model labeled
again). An all-zero entry means "no label": the model was never evaluated on that node, and it
then adds nothing to any score. `compact_matrix` merges the shards into one and writes a fresh
base (a new manifest and an empty log) when many small ones have piled up.

A (model, node) label costs 6 bytes (12 with uint32 counts). One writer at a time (the index's
writer lock); readers see the shards the manifest and the log's complete lines list, each whole. A
crash leaves at worst a shard no line lists (ignored; compaction deletes it) or a torn last
line (ignored; the next append cuts it off). The log is copied before an append when it has
other hard links (an index copied with links): appends never write into a file another
folder shares. Format version 1 (no log: the manifest listed every shard and was rewritten on
each append) is still read, and its first append turns it into a base.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.core.artifacts import (
    atomic_dir, atomic_file, check_manifest, index_lock, load_arrays, new_manifest, read_consistent, read_manifest,
    seal_manifest, writing,
)
from mll_index.core.layout import MANIFEST, matrix_dir, shard_name
from mll_index.core.layout import log_name as log_file_name
from mll_index.errors import IndexFormatError, InputError

log = logging.getLogger(__name__)

KIND = "label-matrix"
FORMAT_VERSION = 2          # 2: a base and an append-only log; 1: a manifest rewritten on every append
READ_VERSIONS = (1, 2)
SHARD_KIND = "label-shard"
SHARD_FILES = ["rows.npy", "cols.npy", "counts.npy"]
SHARD_NAME = re.compile(r"shard-\d+")
MANY_SHARDS = 64  # beyond this, opening and gathering pay per shard: `compact` is suggested


def has_matrix(index_path: Path) -> bool:
    return (matrix_dir(index_path) / MANIFEST).is_file()


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

    A compaction replacing the shards meanwhile makes it read again: what is returned is one version.

    Raises:
        IndexFormatError: a missing, truncated or inconsistent file, named.
    """
    folder = matrix_dir(index_path)
    return read_consistent(lambda: _open_matrix(folder), [Path(index_path), folder, folder / MANIFEST])


def _open_matrix(folder: Path) -> LabelMatrix:
    axes = _read_axes(folder, missing_ok=False)
    ids = [m["id"] for m in axes.models]
    shards = [_read_shard(folder / name, len(axes.nodes), len(ids)) for name in axes.shards]
    if len(shards) > MANY_SHARDS:
        log.info("%s: %d shards; `mll-index labels compact` merges them and speeds up selection",
                    folder, len(shards))
    return LabelMatrix(folder, axes.nodes, ids, [m["entry"] for m in axes.models], shards)


@dataclass
class _Axes:
    """The matrix as its writer sees it: the base manifest, then the log's records applied."""

    manifest: dict[str, Any]            # the base (version 1 or 2), or a new one's
    nodes: list[str] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)   # {"id", "entry"} in axis order
    shards: list[str] = field(default_factory=list)
    next_shard: int = 0
    log_end: int = 0                    # bytes of the log's complete lines

    @property
    def log_name(self) -> str | None:
        return self.manifest.get("log")

    def apply(self, record: dict[str, Any], node_pos: dict[str, int], model_pos: dict[str, int]) -> None:
        for w in record.get("nodes", []):
            if w not in node_pos:
                node_pos[w] = len(self.nodes)
                self.nodes.append(w)
        for m in record.get("models", []):
            if m["id"] in model_pos:
                self.models[model_pos[m["id"]]]["entry"] = m["entry"]
            else:
                model_pos[m["id"]] = len(self.models)
                self.models.append({"id": m["id"], "entry": m["entry"]})
        self.shards.append(record["shard"])
        self.next_shard = max(self.next_shard, _shard_number(record["shard"]) + 1)


def _shard_number(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def _read_axes(folder: Path, missing_ok: bool = True) -> _Axes:
    """The base manifest with the log's complete records applied (a new matrix's empty axes if
    there is none yet and `missing_ok`)."""
    if missing_ok and not (folder / MANIFEST).is_file():
        return _Axes(new_manifest(KIND, version=FORMAT_VERSION, nodes=[], models=[], shards=[], next_shard=0))
    manifest = read_manifest(folder, KIND, versions=READ_VERSIONS)
    try:
        axes = _Axes(manifest, list(manifest["nodes"]), [{"id": m["id"], "entry": m["entry"]} for m in manifest["models"]],
                     list(manifest["shards"]), int(manifest.get("next_shard", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{folder / MANIFEST}: missing or malformed field {exc}") from None
    if axes.log_name is None:
        return axes
    file = folder / axes.log_name
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise IndexFormatError(f"{file}: the log the manifest names is missing") from None
    node_pos = {w: i for i, w in enumerate(axes.nodes)}
    model_pos = {m["id"]: j for j, m in enumerate(axes.models)}
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], 1):      # lines[-1]: after the last newline, torn or empty
        record = _parse_record(line)
        if record is None:
            if number == len(lines) - 1 and not lines[-1]:
                break       # the last line, damaged by a crash as it was written: ignored like a torn one
            raise IndexFormatError(f"{file}: line {number} is not a valid log record")
        axes.apply(record, node_pos, model_pos)
        axes.log_end += len(line) + 1
    return axes


def _parse_record(line: bytes) -> dict[str, Any] | None:
    """A log line's record, or None if it is not one: {"shard": "shard-<n>", "nodes": [wnid], "models": [{"id", "entry"}]}."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("shard"), str) \
            or not SHARD_NAME.fullmatch(record["shard"]):
        return None
    nodes, models = record.get("nodes", []), record.get("models", [])
    if not isinstance(nodes, list) or not all(isinstance(w, str) for w in nodes) or not isinstance(models, list) \
            or not all(isinstance(m, dict) and isinstance(m.get("id"), str) and "entry" in m for m in models):
        return None
    return record


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Compact JSON: with 50,000 nodes and 10,000 models the base is megabytes."""
    with atomic_file(folder / MANIFEST) as handle:
        handle.write(json.dumps(manifest, ensure_ascii=False, separators=(",", ":")))
        handle.write("\n")


def _new_base(axes: _Axes, shards: list[str], next_shard: int, log_name: str) -> dict[str, Any]:
    """A version-2 manifest holding the axes as they are, these shards and this (empty or new) log."""
    return new_manifest(KIND, version=FORMAT_VERSION, nodes=axes.nodes, models=axes.models, shards=shards,
                        next_shard=next_shard, log=log_name,
                        updated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def _log_line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _append_record(folder: Path, axes: _Axes, record: dict[str, Any]) -> None:
    """Record a shard just written: one line appended to the log, fsynced.

    A matrix without a log (a new one, or one of format version 1) gets a base first: its log is
    written holding the line, then the manifest naming it, replaced last.
    """
    if axes.log_name is None or axes.manifest.get("format_version") != FORMAT_VERSION:
        name = log_file_name(_shard_number(record["shard"]))
        with atomic_file(folder / name, "wb") as handle:
            handle.write(_log_line(record))
        _write_manifest(folder, _new_base(axes, axes.shards, axes.next_shard, name))
        return
    file = folder / axes.log_name
    stat = file.stat()
    if stat.st_nlink > 1 or stat.st_size != axes.log_end:
        # Shared with a linked copy, or a torn last line: write a private copy of the complete lines.
        with open(file, "rb") as handle:
            kept = handle.read(axes.log_end)
        with atomic_file(file, "wb") as handle:
            handle.write(kept)
    with writing(file):
        fd = os.open(file, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, _log_line(record))
            os.fsync(fd)
        finally:
            os.close(fd)


def _counts_dtype(max_count: int) -> type:
    if max_count > np.iinfo(np.uint32).max:
        raise InputError(f"a count of {max_count} does not fit the label matrix (at most 2**32 - 1)")
    return np.uint16 if max_count <= np.iinfo(np.uint16).max else np.uint32


def _write_shard(folder: Path, rows: np.ndarray, cols: np.ndarray, blocks: Iterable[np.ndarray], dtype: type,
                 what: str) -> None:
    """Write a shard folder atomically; `blocks` yields the (r, c, 3) counts in consecutive row blocks.

    The counts go through a file handle, not a memory map: on a full disk a write through a map
    is a SIGBUS that kills the process, through a handle an error that leaves the matrix as it was.
    """
    shape = (len(rows), len(cols), 3)
    with atomic_dir(folder) as tmp:
        for name, array in (("rows.npy", rows), ("cols.npy", cols)):
            with writing(folder / name):
                np.save(tmp / name, array.astype(np.int32))
        with writing(folder / "counts.npy"), open(tmp / "counts.npy", "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                          "fortran_order": False, "shape": shape})
            written = 0
            for block in blocks:
                block = np.ascontiguousarray(block, dtype=dtype)
                handle.write(block.data)
                written += len(block)
            if written != shape[0]:
                raise ValueError(f"{folder}: {written} rows of counts written, the shard has {shape[0]}")
            handle.flush()
            os.fsync(handle.fileno())
        manifest = new_manifest(SHARD_KIND, n_rows=len(rows), n_cols=len(cols),
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
    with index_lock(index_path):
        axes = _read_axes(folder)
        node_pos = {w: i for i, w in enumerate(axes.nodes)}
        model_pos = {m["id"]: j for j, m in enumerate(axes.models)}
        # The record holds what the axes gain: new nodes, new models and changed hub entries.
        record: dict[str, Any] = {
            "shard": shard_name(axes.next_shard),
            "nodes": [w for w in node_wnids if w not in node_pos],
            "models": [{"id": m, "entry": e} for m, e in models
                       if m not in model_pos or axes.models[model_pos[m]]["entry"] != e],
            "content": what,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        for w in record["nodes"]:
            node_pos[w] = len(node_pos)
        for m in record["models"]:
            model_pos.setdefault(m["id"], len(model_pos))
        rows = np.array([node_pos[w] for w in node_wnids], np.int64)
        cols = np.array([model_pos[m] for m, _ in models], np.int64)
        r_order, c_order = np.argsort(rows, kind="stable"), np.argsort(cols, kind="stable")

        same_rows = bool((r_order == np.arange(len(r_order))).all())
        same_cols = bool((c_order == np.arange(len(c_order))).all())

        def blocks() -> Iterator[np.ndarray]:
            for s in range(0, len(r_order), 4096):
                block = counts[s:s + 4096] if same_rows else counts[r_order[s:s + 4096]]
                yield block if same_cols else block[:, c_order]

        _write_shard(folder / record["shard"], rows[r_order], cols[c_order], blocks(), dtype, what)
        _append_record(folder, axes, record)
    return record["shard"]


def compact_matrix(index_path: Path, rows_per_chunk: int = 1024) -> dict[str, Any]:
    """Merge every shard into one (later shards winning) in a fresh base, then delete the old files.

    The fresh base (the manifest holding the axes, and an empty log) is written even when there is
    one shard, if the log has records or the matrix is of format version 1.

    A crash before the manifest is replaced leaves the old shards and log in use; after it, only
    unlisted folders and logs remain, which the next compaction deletes.
    """
    folder = matrix_dir(index_path)
    with index_lock(index_path):
        matrix = open_matrix(index_path)
        axes = _read_axes(folder)
        before = len(matrix.shards)
        listed = set(axes.shards)
        log_name = axes.log_name
        if before > 1:
            rows = np.unique(np.concatenate([s.rows for s in matrix.shards]))
            cols = np.unique(np.concatenate([s.cols for s in matrix.shards]))
            dtype = np.result_type(*[s.counts.dtype for s in matrix.shards])
            full_cols = len(cols) == matrix.n_models

            def blocks() -> Iterator[np.ndarray]:
                for s in range(0, len(rows), rows_per_chunk):
                    block = matrix.gather(rows[s:s + rows_per_chunk])
                    yield block if full_cols else block[:, cols]

            name = shard_name(axes.next_shard)
            _write_shard(folder / name, rows, cols, blocks(), dtype, "compacted")
            listed = {name}
        if before > 1 or axes.log_end or axes.manifest.get("format_version") != FORMAT_VERSION:
            # A fresh base: the axes and shards in the manifest, and an empty log.
            next_shard = axes.next_shard + (before > 1)
            log_name = log_file_name(next_shard)
            with atomic_file(folder / log_name, "wb"):
                pass
            _write_manifest(folder, _new_base(axes, sorted(listed), next_shard, log_name))
        removed = 0
        for child in folder.iterdir():
            if child.is_dir() and child.name.startswith(("shard-", ".shard-")) and child.name not in listed:
                shutil.rmtree(child, ignore_errors=True)
                removed += 1
            elif child.is_file() and child.name.startswith(("log-", ".log-")) and child.name != log_name:
                child.unlink(missing_ok=True)
    return {"shards_before": before, "shards_after": len(listed), "folders_removed": removed}


def matrix_counts(index_path: Path) -> dict[str, Any]:
    """Sizes of an index's label matrix, for `info`: nodes, models, shards, bytes, bytes per label."""
    if not has_matrix(index_path):
        return {}
    m = open_matrix(index_path)
    cells = sum(len(s.rows) * len(s.cols) for s in m.shards)
    return {"nodes": m.n_nodes, "models": m.n_models, "shards": len(m.shards), "label_bytes": m.label_bytes,
            "bytes_per_label": round(m.label_bytes / cells, 2) if cells else None}



def check_matrix(index_path: Path, checksums: bool = False) -> list[str]:
    """Every problem of an index's label matrix, one line each naming the file; [] when all is sound
    (or there is no matrix).

    Checks the base manifest, every line of the log (a damaged last complete line too, which
    readers skip as torn: the shard it names is then not read), and every shard the manifest and
    the log list: its manifest, each file's size (with `checksums` its SHA-256) and its shape.
    """
    folder = matrix_dir(index_path)
    if not folder.is_dir():
        return []
    if not (folder / MANIFEST).is_file() and all(c.name.startswith(".") for c in folder.iterdir()):
        return []       # a first write killed before its manifest: only leftovers, which `info` lists
    manifest, problems = check_manifest(folder, KIND, checksums=checksums, versions=READ_VERSIONS)
    if manifest is None:
        return problems
    try:
        axes = _read_axes(folder, missing_ok=False)
    except IndexFormatError as exc:
        return problems + [str(exc)]
    if axes.log_name is not None:
        rest = (folder / axes.log_name).read_bytes()[axes.log_end:]
        if rest.endswith(b"\n"):
            problems.append(f"{folder / axes.log_name}: its last line is not a valid log record (damaged; "
                            "the shard it names is not read)")
        # A crash between a shard and its log line leaves that one shard, numbered next_shard; complete
        # shards beyond it that no line lists mean lost lines (a truncated log), not a crash.
        beyond = sorted((c.name for c in folder.iterdir() if c.is_dir() and SHARD_NAME.fullmatch(c.name)
                         and _shard_number(c.name) > axes.next_shard and (c / MANIFEST).is_file()
                         and c.name not in axes.shards), key=_shard_number)
        if beyond:
            problems.append(f"{folder / axes.log_name}: {len(beyond)} shard(s) after its last record that no line "
                            f"lists ({beyond[0]} to {beyond[-1]}): lines lost (a truncated or edited log), more "
                            "than a crash leaves; those shards are not read")
    for name in axes.shards:
        shard, listed = check_manifest(folder / name, SHARD_KIND, checksums=checksums)
        problems += listed
        if shard is not None and not listed:
            try:
                _read_shard(folder / name, len(axes.nodes), len(axes.models))
            except IndexFormatError as exc:
                problems.append(str(exc))
    return problems
