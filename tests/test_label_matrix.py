"""The label matrix: appends, gathers against a dense brute force, subsets, compaction, damage and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mll_index import label_matrix as LM
from mll_index.errors import IndexFormatError, InputError

WNIDS = [f"n{10000000 + i:08d}" for i in range(40)]


def models(ids: list[str]) -> list[tuple[str, dict]]:
    return [(m, {"id": m, "imagenet_acc": 0.5}) for m in ids]


def random_counts(rng: np.random.Generator, r: int, c: int, high: int = 20) -> np.ndarray:
    return rng.integers(0, high, (r, c, 3)).astype(np.int64)


def brute(blocks: list[tuple[list[str], list[str], np.ndarray]]) -> tuple[list[str], list[str], np.ndarray]:
    """The expected dense matrix: axes in first-seen order, later blocks overwriting earlier ones."""
    nodes: list[str] = []
    ids: list[str] = []
    for wn, ms, _ in blocks:
        nodes += [w for w in wn if w not in nodes]
        ids += [m for m in ms if m not in ids]
    dense = np.zeros((len(nodes), len(ids), 3), np.float32)
    for wn, ms, counts in blocks:
        for i, w in enumerate(wn):
            for j, m in enumerate(ms):
                dense[nodes.index(w), ids.index(m)] = counts[i, j]
    return nodes, ids, dense


@pytest.fixture()
def grown(tmp_path: Path) -> tuple[Path, list]:
    """An index folder whose matrix grew by a hub, a new model, new nodes, and a relabeled model."""
    rng = np.random.default_rng(0)
    blocks = [
        (WNIDS[:30], ["m-a", "m-b", "m-c"], random_counts(rng, 30, 3)),
        (WNIDS[5:30][::-1], ["m-d"], random_counts(rng, 25, 1)),               # one model, nodes in any order
        (WNIDS[30:], ["m-c", "m-a", "m-d"], random_counts(rng, 10, 3)),        # new nodes, models out of order
        (WNIDS[:12], ["m-b"], random_counts(rng, 12, 1)),                      # m-b relabeled: the later wins
    ]
    for wn, ms, counts in blocks:
        LM.append_labels(tmp_path, wn, models(ms), counts)
    return tmp_path, blocks


def test_gather_equals_the_dense_brute_force(grown: tuple[Path, list]) -> None:
    path, blocks = grown
    nodes, ids, dense = brute(blocks)
    matrix = LM.open_matrix(path)
    assert matrix.node_wnids == nodes and matrix.model_ids == ids and len(matrix.shards) == 4
    assert np.array_equal(matrix.dense(), dense)
    pick = np.array([39, 3, 3, 17, 0])                  # any order, repeats allowed
    assert np.array_equal(matrix.gather(pick), dense[pick])


def test_subset_reads_only_the_named_models_in_their_order(grown: tuple[Path, list]) -> None:
    path, blocks = grown
    _, ids, dense = brute(blocks)
    sub = LM.open_matrix(path).subset(["m-d", "m-a"])
    assert sub.model_ids == ["m-d", "m-a"]
    assert np.array_equal(sub.dense(), dense[:, [ids.index("m-d"), ids.index("m-a")]])
    with pytest.raises(InputError, match="m-zz"):
        LM.open_matrix(path).subset(["m-zz"])


def test_compaction_keeps_every_label_and_removes_stale_folders(grown: tuple[Path, list]) -> None:
    path, blocks = grown
    before = LM.open_matrix(path).dense()
    stale = LM.matrix_dir(path) / "shard-999999"        # a crash left an unlisted shard behind
    stale.mkdir()
    report = LM.compact_matrix(path)
    assert report["shards_before"] == 4 and report["shards_after"] == 1 and report["folders_removed"] == 5
    after = LM.open_matrix(path)
    assert len(after.shards) == 1 and np.array_equal(after.dense(), before)
    assert not stale.exists()
    LM.append_labels(path, WNIDS[:2], models(["m-e"]), np.ones((2, 1, 3), int))   # it still grows
    assert LM.open_matrix(path).model_ids[-1] == "m-e"


def test_an_unlisted_shard_is_ignored(grown: tuple[Path, list]) -> None:
    path, blocks = grown
    manifest = json.loads((LM.matrix_dir(path) / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][:-1]        # as if the last append died before its manifest
    (LM.matrix_dir(path) / "manifest.json").write_text(json.dumps(manifest))
    _, _, dense = brute(blocks[:-1])
    assert np.array_equal(LM.open_matrix(path).dense(), dense)


def test_large_counts_widen_to_uint32(tmp_path: Path) -> None:
    LM.append_labels(tmp_path, WNIDS[:2], models(["m"]), np.array([[[70000, 1, 2]], [[3, 4, 5]]]))
    matrix = LM.open_matrix(tmp_path)
    assert matrix.shards[0].counts.dtype == np.uint32 and matrix.dense()[0, 0, 0] == 70000
    assert LM.matrix_counts(tmp_path)["bytes_per_label"] == 12


@pytest.mark.parametrize("counts, wnids, ids, message", [
    (np.ones((2, 1, 2)), WNIDS[:2], ["m"], "shape"),
    (-np.ones((2, 1, 3)), WNIDS[:2], ["m"], "non-negative"),
    (np.ones((2, 1, 3)), [WNIDS[0], WNIDS[0]], ["m"], "distinct"),
    (np.ones((1, 2, 3)), WNIDS[:1], ["m", "m"], "distinct"),
])
def test_bad_blocks_are_refused_and_write_nothing(tmp_path: Path, counts: np.ndarray, wnids: list[str],
                                                  ids: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        LM.append_labels(tmp_path, wnids, models(ids), counts)
    assert not LM.has_matrix(tmp_path)


def test_truncated_counts_are_an_error_naming_the_file(grown: tuple[Path, list]) -> None:
    path, _ = grown
    shard = LM.matrix_dir(path) / LM.open_matrix(path).shards[0].name
    data = (shard / "counts.npy").read_bytes()
    (shard / "counts.npy").write_bytes(data[:-6])
    with pytest.raises(IndexFormatError, match="counts.npy"):
        LM.open_matrix(path)


def test_a_missing_shard_is_an_error_naming_it(grown: tuple[Path, list]) -> None:
    path, _ = grown
    name = LM.open_matrix(path).shards[1].name
    import shutil

    shutil.rmtree(LM.matrix_dir(path) / name)
    with pytest.raises(IndexFormatError, match=name):
        LM.open_matrix(path)
