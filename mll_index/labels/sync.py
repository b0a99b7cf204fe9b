"""Label-matrix sync: every label folder's counts in the label matrix (labels/matrix/).

A model's counts join the matrix as soon as its folder is written (`append_to_matrix`);
`sync_matrix` appends those a crash between the two writes left out. Selection reads the
matrix, so a folder the matrix lacks would be a model selection never sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mll_index.core.artifacts import index_lock
from mll_index.labels.folders import ModelLabel, labeled_models, load_label, read_sample_table
from mll_index.labels.matrix import LabelMatrix, append_labels, has_matrix, open_matrix


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
