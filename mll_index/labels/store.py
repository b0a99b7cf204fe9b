"""The label store: every labeled model's counts (the label matrix) and, on demand, its image-level label.

The selection's restricted confusion reads image-level labels (`ImageLabels`); the counts mode
reads only the matrix. Sample images may carry a domain tag in their file names (`image_domain`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.errors import IndexFormatError, InputError
from mll_index.labels.folders import SampleTable, load_label, read_sample_table, relabel_hint, scan_labels
from mll_index.labels.matrix import LabelMatrix, Shard, has_matrix, open_matrix
from mll_index.labels.sync import folder_counts, stale_in_matrix
from mll_index.labels.topk_table import TopkTable, open_topk_table

log = logging.getLogger(__name__)

DOMAIN_TAG_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)-")


@dataclass
class ImageLabels:
    """One model's image-level label, on the store's node axis (read only by the restricted mode).

    image_nodes: (n_images,) int64 node-axis positions; image_embeddings: (n_images, d) float16
    memory-mapped; node_axis: (m_model,) node-axis positions of the rows of node_embeddings
    (m_model, d); domains: (n_images,) str, "" where untagged; topk_nodes: (n_images, K) int32
    memory-mapped, the model's top nodes per image as rows of node_embeddings, best first;
    topk_logits: (n_images, K) float16 memory-mapped, their logits (logit scale applied).
    """

    image_nodes: np.ndarray
    image_embeddings: np.ndarray
    node_axis: np.ndarray
    node_embeddings: np.ndarray
    domains: np.ndarray
    topk_nodes: np.ndarray
    topk_logits: np.ndarray | None = None

    def images_of(self, in_set: np.ndarray) -> np.ndarray:
        """Rows of the images whose node is in the set (in_set: (n_axis,) bool)."""
        return np.flatnonzero(in_set[self.image_nodes])

    @cached_property
    def _axis_order(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.node_axis, kind="stable")
        return order, self.node_axis[order]

    @cached_property
    def node_vectors(self) -> np.ndarray:
        """node_embeddings as float32 in memory (a few thousand rows, read by every task)."""
        return np.asarray(self.node_embeddings, np.float32)

    @cached_property
    def domain_set(self) -> frozenset[str]:
        return frozenset(self.domains.tolist())

    def node_rows(self, nodes: np.ndarray) -> np.ndarray:
        """Rows of node_embeddings for node-axis positions (-1 where this model has no such node)."""
        order, sorted_axis = self._axis_order
        at = np.minimum(np.searchsorted(sorted_axis, nodes), len(order) - 1)
        return np.where(sorted_axis[at] == nodes, order[at], -1)


@dataclass
class SampleGroup:
    """A sample set that models were labeled on, seen from the store's node axis (read once, shared by its models).

    axis: (n_table_nodes,) int64 node-axis positions of the sample table's nodes; image_nodes:
    (n_images,) int64 node-axis positions; domains: (n_images,) str, "" where untagged.
    """

    fingerprint: str
    table: SampleTable
    axis: np.ndarray
    image_nodes: np.ndarray
    domains: np.ndarray

    @cached_property
    def domain_set(self) -> frozenset[str]:
        return frozenset(self.domains.tolist())


@dataclass
class LabelStore:
    """The labels of an index's models on one node axis: the label matrix, and image-level labels on demand.

    `matrix` gives every model's TP, FP, FN per node (the `counts` mode reads only it);
    `image_labels(i)` opens model i's label folder the first time the restricted mode needs it.
    """

    index_path: Path
    matrix: LabelMatrix
    folders: dict[str, str]  # model id -> sample fingerprint, for models with a label folder
    # Model id -> why its label folder cannot be used (labels.scan_labels): the restricted and auto
    # modes refuse while there is one, rather than leave the model out or fall back to counts.
    damaged: dict[str, str] = field(default_factory=dict)
    # Model id -> its label manifest's own checksum (labels.scan_labels): which columns of a top-K
    # table are still the model's label.
    digests: dict[str, str] = field(default_factory=dict)
    _image: dict[int, ImageLabels | None] = field(default_factory=dict, repr=False)
    # Sample tables, their images' domain tags and top-K tables, read once per fingerprint: every
    # model of a hub labeled on one sample set shares them.
    _groups: dict[str, SampleGroup] = field(default_factory=dict, repr=False)
    _topk: dict[str, TopkTable | None] = field(default_factory=dict, repr=False)

    @property
    def model_ids(self) -> tuple[str, ...]:
        return tuple(self.matrix.model_ids)

    @property
    def node_wnids(self) -> list[str]:
        return self.matrix.node_wnids

    @property
    def entries(self) -> dict[str, dict[str, Any]]:
        return dict(zip(self.matrix.model_ids, self.matrix.entries))

    @cached_property
    def node_position(self) -> dict[str, int]:
        return {w: j for j, w in enumerate(self.node_wnids)}

    @cached_property
    def has_image_labels(self) -> bool:
        """Whether every model has an image-level label (the restricted mode needs them)."""
        return all(m in self.folders for m in self.matrix.model_ids)

    def image_labels(self, i: int) -> ImageLabels | None:
        """Model i's image-level label, opened once; None if it has only counts."""
        if i not in self._image:
            model_id = self.matrix.model_ids[i]
            self._image[i] = self._open_image_labels(model_id) if model_id in self.folders else None
        return self._image[i]

    def sample_group(self, fingerprint: str) -> SampleGroup:
        """The sample set `fingerprint` on the store's node axis, read once.

        Raises:
            IndexFormatError: its sample table names a node the label matrix lacks.
        """
        if fingerprint not in self._groups:
            table = read_sample_table(self.index_path, fingerprint)
            try:
                axis = np.array([self.node_position[w] for w in table.node_wnids], np.int64)
            except KeyError as exc:
                raise IndexFormatError(f"sample table {fingerprint!r}: node {exc} is not in the label matrix; "
                                       "run `mll-index labels compact`") from None
            self._groups[fingerprint] = SampleGroup(fingerprint, table, axis, axis[table.image_nodes],
                                                    image_domains(table.paths))
        return self._groups[fingerprint]

    def topk_table(self, fingerprint: str) -> TopkTable | None:
        """The stacked top nodes of the models labeled on `fingerprint` (None: not written yet), opened once."""
        if fingerprint not in self._topk:
            self._topk[fingerprint] = open_topk_table(self.index_path, fingerprint)
        return self._topk[fingerprint]

    def groups(self) -> dict[str, list[int]]:
        """Sample fingerprint -> the positions of the models labeled on it (models with a label folder)."""
        out: dict[str, list[int]] = {}
        for i, model_id in enumerate(self.matrix.model_ids):
            if model_id in self.folders:
                out.setdefault(self.folders[model_id], []).append(i)
        return out

    def _open_image_labels(self, model_id: str) -> ImageLabels:
        label = load_label(self.index_path, model_id)
        group = self.sample_group(label.manifest["samples"])
        if label.counts.shape[0] != len(group.axis):
            raise IndexFormatError(f"label of {model_id!r}: counts for {label.counts.shape[0]} nodes, "
                                   f"its sample table has {len(group.axis)}")
        return ImageLabels(group.image_nodes, label.image_embeddings, group.axis, label.node_embeddings,
                           group.domains, label.topk_nodes, label.topk_logits)


def open_labels(index_path: Path, models: Sequence[str] | None = None) -> LabelStore:
    """Open the labels of an index (all labeled models, or those named).

    Label folders the matrix does not hold yet (written by an older version, or a crash between
    the two writes) are read into it in memory; `mll-index labels compact` stores them.

    Raises:
        InputError: no model is labeled, or a named model is not.
    """
    scan = scan_labels(index_path)
    folders = scan.samples
    damaged = {m: why for m, why in scan.damaged.items() if not models or m in models}
    if not folders and not has_matrix(index_path):
        if damaged:
            raise InputError(damaged_message(damaged))
        raise InputError(f"{index_path}: no model is labeled in this index; run `mll-index label`, or import "
                         "published results with `mll-index published import`")
    matrix = open_matrix(index_path) if has_matrix(index_path) else LabelMatrix(index_path, [], [], [], [])
    lost = {m: why for m, why in damaged.items() if m not in matrix.model_ids}
    if models and lost:
        raise InputError(damaged_message(lost))
    stale = stale_in_matrix(index_path, folders, matrix)
    if stale:
        log.info("%s: %d label folder(s) not in the label matrix yet; read in memory", index_path, len(stale))
        matrix = _with_folders(index_path, matrix, stale)
    if models:
        matrix = matrix.subset(list(models))
    else:
        matrix = matrix.subset(sorted(matrix.model_ids))
    return LabelStore(Path(index_path), matrix, folders, damaged, scan.digests)


def damaged_message(damaged: dict[str, str], mode: str | None = None) -> str:
    """One line: the first model whose label cannot be used, why, and what to run (see LabelStore.damaged)."""
    model_id, why = next(iter(damaged.items()))
    more = f"; {len(damaged) - 1} more model(s) likewise: {list(damaged)[1:4]}" if len(damaged) > 1 else ""
    counts = " (or select with --mode counts, from the label matrix's counts)" if mode else ""
    return f"the label of model {model_id!r} cannot be used ({why}); {relabel_hint(model_id)}{counts}{more}"


def refuse_damaged(store: LabelStore, mode: str) -> None:
    """The restricted mode (and auto, which would otherwise fall back to counts unasked) needs every label."""
    if store.damaged:
        raise InputError(damaged_message(store.damaged, mode))


def _with_folders(index_path: Path, matrix: LabelMatrix, model_ids: Sequence[str]) -> LabelMatrix:
    """The matrix extended in memory with these models' label folders (later, so they win)."""
    nodes, ids, entries = list(matrix.node_wnids), list(matrix.model_ids), list(matrix.entries)
    node_pos, model_pos = {w: j for j, w in enumerate(nodes)}, {m: j for j, m in enumerate(ids)}
    shards = list(matrix.shards)
    for model_id in model_ids:
        wnids, entry, counts = folder_counts(index_path, model_id)
        for w in wnids:
            if w not in node_pos:
                node_pos[w] = len(nodes)
                nodes.append(w)
        if model_id not in model_pos:
            model_pos[model_id] = len(ids)
            ids.append(model_id)
            entries.append(entry)
        else:
            entries[model_pos[model_id]] = entry
        rows = np.array([node_pos[w] for w in wnids], np.int64)
        order = np.argsort(rows, kind="stable")
        shards.append(Shard(f"folder:{model_id}", rows[order], np.array([model_pos[model_id]], np.int64),
                            counts[order][:, None, :]))
    return LabelMatrix(matrix.path, nodes, ids, entries, shards)


def image_domain(path: str) -> str:
    """The domain tag of a sample image: its file name's prefix before the first '-' (lower case), or "".

    The emoji world names its sample images `<domain>-<n>.png`; any sample set can do the same.
    """
    match = DOMAIN_TAG_RE.match(path.rpartition("/")[2])
    return match.group(1).lower() if match else ""


def image_domains(paths: Sequence[str]) -> np.ndarray:
    """(n,) str: image_domain of every path, each distinct file name parsed once."""
    names = [p.rpartition("/")[2] for p in paths]
    tags = {n: image_domain(n) for n in set(names)}
    return np.array([tags[n] for n in names]) if names else np.zeros(0, "<U1")
