"""Label folders: scoring a model's embeddings (against brute force), and a folder written, read back,
scanned and checked, its damage named by file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import IndexFormatError
from mll_index.labels.folders import (
    check_labels, confusion_counts, label_folder, labeled_models, load_label, read_sample_table, scan_labels,
    score_images,
)
from tests.fakelabels import fake_label

WNIDS = ["n01440764", "n02099601", "n03642806"]


def test_score_images_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(size=(50, 8)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    nodes = rng.normal(size=(40, 8)).astype(np.float32)
    nodes /= np.linalg.norm(nodes, axis=1, keepdims=True)
    truth = rng.integers(0, 40, 50)
    top, logits, true = score_images(img, nodes, truth, 10.0, k=5, chunk=7)
    full = 10.0 * img @ nodes.T
    np.testing.assert_array_equal(top, np.argsort(-full, axis=1)[:, :5])
    np.testing.assert_allclose(true, full[np.arange(50), truth], atol=1e-2)
    counts = confusion_counts(top, truth, 40)
    assert counts[:, 0].sum() == 50 and counts[:, 1].sum() + counts[:, 2].sum() == 50
    np.testing.assert_array_equal(counts[:, 3], counts[:, 0] - counts[:, 1])


def test_score_images_refuses_values_that_are_not_finite() -> None:
    from mll_index.errors import ModelLoadError

    image, node = np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32)
    bad = image.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ModelLoadError, match="not finite"):
        score_images(bad, node, np.arange(3), 100.0)
    with pytest.raises(ModelLoadError, match="not finite"):
        score_images(image, node, np.arange(3), float("nan"))



def test_a_written_label_reads_back_and_damage_names_the_file(tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    fake_label(index, "org/model-a", WNIDS, per_node=3, matrix=False)
    label = load_label(index, "org/model-a")
    assert label.topk_nodes.shape == (9, 3) and label.counts.shape == (3, 4)
    assert label.counts[:, 0].tolist() == [3, 3, 3]         # n_true per labeled node
    table = read_sample_table(index, label.manifest["samples"])
    assert table.node_wnids == tuple(WNIDS) and len(table.paths) == 9
    assert labeled_models(index) == {"org/model-a": label.manifest["samples"]}
    assert check_labels(index, checksums=True) == []
    folder = label_folder(index, "org/model-a")
    assert folder.name == "org%2Fmodel-a"                   # one-to-one, no slash in a folder name
    (folder / "topk_nodes.npy").write_bytes(b"\x93NUMPY broken")
    problems = check_labels(index, checksums=True)
    assert problems and all("topk_nodes.npy" in line for line in problems), problems
    assert "org/model-a" in scan_labels(index).damaged     # a size that disagrees with the manifest
    with pytest.raises(IndexFormatError, match="topk_nodes.npy"):
        load_label(index, "org/model-a", verify=True)
