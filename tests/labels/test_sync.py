"""Label-matrix sync: a label folder the matrix lacks (a crash between the two writes) is appended
once, and a folder written again replaces what the matrix held for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mll_index.labels.folders import load_label
from mll_index.labels.matrix import open_matrix
from mll_index.labels.sync import folder_counts, stale_in_matrix, sync_matrix
from tests.fakelabels import fake_label

WNIDS = ["n01440764", "n02099601", "n03642806"]


def test_sync_appends_the_folders_the_matrix_lacks_once(tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    fake_label(index, "model-a", WNIDS, matrix=False)
    fake_label(index, "model-b", WNIDS, seed=1, matrix=False)
    assert sorted(stale_in_matrix(index)) == ["model-a", "model-b"]
    assert sorted(sync_matrix(index)) == ["model-a", "model-b"]
    assert stale_in_matrix(index) == [] and sync_matrix(index) == []
    matrix = open_matrix(index)
    assert sorted(matrix.model_ids) == ["model-a", "model-b"]
    wnids, entry, counts = folder_counts(index, "model-a")
    assert wnids == WNIDS and entry["label_samples"] == load_label(index, "model-a").manifest["samples"]
    np.testing.assert_array_equal(counts, load_label(index, "model-a").counts[:, 1:4])
    fake_label(index, "model-a", WNIDS, per_node=3, seed=2, matrix=False)   # labeled again on more images
    assert stale_in_matrix(index) == ["model-a"]
    assert sync_matrix(index) == ["model-a"] and stale_in_matrix(index) == []
