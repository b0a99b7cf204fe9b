"""The restricted confusion read from stored top nodes: against the exact recomputation, a brute-force
oracle where top nodes run out, the stacked table, a model labeled again, and a damaged table."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mll_index.errors import IndexFormatError
from mll_index.labels.folders import load_label, read_sample_table, write_label
from mll_index.labels.store import open_labels
from mll_index.labels.topk_table import confusion_from_predictions, first_in_set, write_topk_tables
from mll_index.selection.confusion import exact_restricted_confusion, restricted_confusion
from mll_index.selection.selector import open_selector, select_models
from mll_index.selection.task import make_task


@pytest.fixture()
def labeled_copy(world_index: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(world_index, copy)
    return copy


def _node_sets(store, rng: np.random.Generator) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    labeled = np.array(sorted({j for fp in store.groups() for j in store.sample_group(fp).axis}), np.int64)
    sets = [labeled, labeled[:2]]
    sets += [np.sort(rng.choice(labeled, size, replace=False)) for size in (3, 5, len(labeled) // 2)]
    return sets


def test_stored_top_nodes_give_the_exact_confusion(labeled_copy: Path) -> None:
    store = open_labels(labeled_copy)
    depth = min(int(load_label(labeled_copy, m).topk_nodes.shape[1]) for m in store.model_ids)
    assert all(len(store.sample_group(fp).axis) <= depth for fp in store.groups())   # every node is stored
    rng = np.random.default_rng(0)
    sets = _node_sets(store, rng)
    for nodes in sets:           # model by model, from the label folders
        for domain in (None, "noto"):
            assert np.array_equal(restricted_confusion(store, nodes, domain), exact_restricted_confusion(store, nodes, domain))
    reports = write_topk_tables(labeled_copy)
    assert [r["models"] for r in reports] == [len(store.model_ids)]
    stacked = open_labels(labeled_copy)
    assert stacked.topk_table(reports[0]["samples"]) is not None
    for nodes in sets:           # all models at once, from the table
        assert np.array_equal(restricted_confusion(stacked, nodes), exact_restricted_confusion(stacked, nodes))
    weights = {fp: np.linspace(0.1, 1.0, len(stacked.sample_group(fp).image_nodes)) for fp in stacked.groups()}
    weighted = restricted_confusion(stacked, sets[0], image_weights=weights)
    unweighted = restricted_confusion(open_labels(labeled_copy), sets[0])
    assert weighted.shape == unweighted.shape and (weighted <= unweighted + 1e-4).all() and weighted.sum() > 0
    task = make_task(["tiger", "lion", "banana"])
    selector = open_selector(labeled_copy)
    assert select_models(selector, task, k=2, mode="restricted") == select_models(open_selector(labeled_copy), task,
                                                                                     k=2, mode="restricted")


def test_a_model_labeled_again_is_read_from_its_folder_not_the_stale_table(labeled_copy: Path) -> None:
    write_topk_tables(labeled_copy)
    store = open_labels(labeled_copy)
    model = store.model_ids[0]
    label = load_label(labeled_copy, model)
    table = read_sample_table(labeled_copy, label.manifest["samples"])
    # Labeled again with its node embeddings shuffled: other predictions, a new manifest checksum.
    nodes = np.asarray(label.node_embeddings, np.float32)[::-1]
    write_label(labeled_copy, label.manifest["model"], table, label.manifest["samples"],
                np.asarray(label.image_embeddings, np.float32), nodes, 100.0)
    fresh = open_labels(labeled_copy)
    columns = fresh.topk_table(label.manifest["samples"]).column(fresh.digests)  # type: ignore[union-attr]
    assert model not in columns and len(columns) == len(fresh.model_ids) - 1
    for s in _node_sets(fresh, np.random.default_rng(1)):
        assert np.array_equal(restricted_confusion(fresh, s), exact_restricted_confusion(fresh, s))


def test_a_truncated_table_names_its_file(labeled_copy: Path) -> None:
    report = write_topk_tables(labeled_copy)[0]
    path = labeled_copy / "labels" / f"samples-{report['samples']}.topk" / "topk_nodes.npy"
    path.write_bytes(path.read_bytes()[:-10])
    store = open_labels(labeled_copy)
    with pytest.raises(IndexFormatError, match="topk_nodes.npy"):
        restricted_confusion(store, np.arange(3))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n_nodes=st.integers(2, 12), depth=st.integers(1, 5), n_set=st.integers(1, 6),
       weighted=st.booleans())
def test_first_in_set_and_confusion_against_brute_force(seed: int, n_nodes: int, depth: int, n_set: int,
                                                        weighted: bool) -> None:
    rng = np.random.default_rng(seed)
    n_images, n_models = 15, 4
    depth = min(depth, n_nodes)
    s_nodes = rng.choice(n_nodes, min(n_set, n_nodes), replace=False)
    local = np.full(n_nodes, -1, np.int32)
    local[s_nodes] = np.arange(len(s_nodes))
    true = np.sort(rng.integers(0, len(s_nodes), n_images))
    top = np.stack([np.stack([rng.permutation(n_nodes)[:depth] for _ in range(n_models)]) for _ in range(n_images)])
    # top: (n_images, n_models, depth) node ids, best first
    pred = first_in_set(top[:, :, 0], lambda d, r, c: top[r, c, d], depth, local)
    w = rng.random(n_images) if weighted else np.ones(n_images)
    conf = confusion_from_predictions(pred, true, len(s_nodes), w if weighted else None)
    for m in range(n_models):
        expect = np.zeros((len(s_nodes), 3))
        for i in range(n_images):
            inside = [local[n] for n in top[i, m] if local[n] >= 0]
            p = inside[0] if inside else -1
            assert pred[i, m] == p
            if p == true[i]:
                expect[p, 0] += w[i]
            else:
                expect[true[i], 2] += w[i]
                if p >= 0:
                    expect[p, 1] += w[i]
        np.testing.assert_allclose(conf[m], expect, rtol=1e-5, atol=1e-5)


def test_pairs_beyond_the_stored_top_nodes_are_recomputed(labeled_copy: Path) -> None:
    from mll_index.selection.confusion import _recompute_beyond, _task_rows

    store = open_labels(labeled_copy)
    (fingerprint, members), = store.groups().items()
    for nodes in _node_sets(store, np.random.default_rng(2))[1:]:
        local = np.full(len(store.node_wnids), -1, np.int32)
        local[nodes] = np.arange(len(nodes))
        rows, true = _task_rows(store.sample_group(fingerprint), local, None)
        pred = np.full((len(rows), len(members)), -1, np.int32)      # as if no node of S were stored
        assert _recompute_beyond(store, members, nodes, rows, pred) == pred.size
        assert np.array_equal(confusion_from_predictions(pred, true, len(nodes)),
                              exact_restricted_confusion(store, nodes)[members])
