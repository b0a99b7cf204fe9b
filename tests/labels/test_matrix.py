"""The label matrix: appends, gathers against a dense brute force, subsets, compaction, damage and bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import IndexFormatError, InputError
from mll_index.labels import matrix as LM

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


def log_file(path: Path) -> Path:
    folder = LM.matrix_dir(path)
    return folder / json.loads((folder / "manifest.json").read_text())["log"]


def test_an_unrecorded_shard_is_ignored(grown: tuple[Path, list]) -> None:
    path, blocks = grown
    log = log_file(path)
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-1]))               # as if the last append died before its log line
    _, _, dense = brute(blocks[:-1])
    assert np.array_equal(LM.open_matrix(path).dense(), dense)


def test_a_log_cut_by_more_than_a_crash_is_named(grown: tuple[Path, list]) -> None:
    path, _ = grown
    log = log_file(path)
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-1]))               # one line lost: what a crash before the log line leaves
    assert LM.check_matrix(path) == []
    log.write_bytes(b"".join(lines[:-3]) + lines[-3][:10])  # three lost, the last of them torn: a truncated log
    problems = LM.check_matrix(path)
    assert len(problems) == 1 and problems[0].startswith(f"{log}: 2 shard(s) after its last record"), problems


def test_a_torn_last_log_line_is_ignored_and_cut_off_by_the_next_append(grown: tuple[Path, list]) -> None:
    path, blocks = grown
    log = log_file(path)
    whole = log.read_bytes()
    for torn in (b'{"shard":"shard-000009","nod', b'\x00\x00\x00\n'):   # cut short; zeros ending in a newline
        log.write_bytes(whole + torn)
        nodes, ids, dense = brute(blocks)
        matrix = LM.open_matrix(path)
        assert matrix.node_wnids == nodes and matrix.model_ids == ids and np.array_equal(matrix.dense(), dense)
    block = (WNIDS[:3], ["m-e"], np.full((3, 1, 3), 7))
    LM.append_labels(path, block[0], models(block[1]), block[2])
    assert log.read_bytes().startswith(whole) and log.read_bytes().count(b"\n") == whole.count(b"\n") + 1
    assert np.array_equal(LM.open_matrix(path).dense(), brute(blocks + [block])[2])


def test_a_damaged_log_line_before_the_last_is_an_error_naming_the_log(grown: tuple[Path, list]) -> None:
    path, _ = grown
    log = log_file(path)
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = b"not json\n"
    log.write_bytes(b"".join(lines))
    with pytest.raises(IndexFormatError, match=re.escape(str(log)) + ": line 2"):
        LM.open_matrix(path)


def write_format_1(path: Path) -> None:
    """Rewrite a matrix's manifest as version 1 wrote it: every shard and both axes, no log."""
    folder = LM.matrix_dir(path)
    matrix = LM.open_matrix(path)
    log_file(path).unlink()
    manifest = {"format": "mll-index", "format_version": 1, "kind": "label-matrix", "package_version": "0.4.0",
                "nodes": matrix.node_wnids,
                "models": [{"id": m, "entry": e} for m, e in zip(matrix.model_ids, matrix.entries)],
                "shards": [s.name for s in matrix.shards], "next_shard": len(matrix.shards),
                "updated": "2026-11-01T00:00:00Z", "files": {}}
    (folder / "manifest.json").write_text(json.dumps(manifest, separators=(",", ":")) + "\n")


def test_a_format_1_matrix_loads_grows_and_compacts(grown: tuple[Path, list]) -> None:
    path, blocks = grown
    write_format_1(path)
    nodes, ids, dense = brute(blocks)
    matrix = LM.open_matrix(path)
    assert matrix.node_wnids == nodes and matrix.model_ids == ids and np.array_equal(matrix.dense(), dense)
    block = (WNIDS[38:] + [WNIDS[0]], ["m-e", "m-a"], np.full((3, 2, 3), 9))
    LM.append_labels(path, block[0], models(block[1]), block[2])
    manifest = json.loads((LM.matrix_dir(path) / "manifest.json").read_text())
    assert manifest["format_version"] == LM.FORMAT_VERSION and len(manifest["shards"]) == 4
    assert np.array_equal(LM.open_matrix(path).dense(), brute(blocks + [block])[2])
    LM.compact_matrix(path)
    assert np.array_equal(LM.open_matrix(path).dense(), brute(blocks + [block])[2])


def bytes_written(folder: Path, act) -> tuple[int, list[str]]:  # type: ignore[no-untyped-def]
    """Run `act`; the bytes it wrote under `folder` (new and replaced files whole, appended files' growth)
    and the files it touched."""
    def state() -> dict[str, tuple[int, int, int]]:
        return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
                for p in folder.rglob("*") if p.is_file()}

    before = state()
    act()
    written, touched = 0, []
    for name, (ino, size, mtime) in state().items():
        old = before.get(name)
        if old == (ino, size, mtime):
            continue
        touched.append(name)
        written += size - old[1] if old and old[0] == ino and size > old[1] else size
    return written, sorted(touched)


@pytest.mark.parametrize("how", ["appended one by one", "compacted"])
def test_adding_a_model_writes_the_same_bytes_whatever_the_hub_size(tmp_path: Path, how: str) -> None:
    rng = np.random.default_rng(1)
    new = [("m-new", {"id": "m-new", "imagenet_acc": 0.5})]
    costs = []
    for n_models in (3, 300):
        path = tmp_path / f"hub-{n_models}"
        ids = [f"m-{j:04d}" for j in range(n_models)]
        LM.append_labels(path, WNIDS, models(ids[:2]), random_counts(rng, len(WNIDS), 2))
        for j in range(2, n_models):
            LM.append_labels(path, WNIDS, models(ids[j:j + 1]), random_counts(rng, len(WNIDS), 1))
        if how == "compacted":
            LM.compact_matrix(path)
        folder = LM.matrix_dir(path)
        written, touched = bytes_written(folder, lambda: LM.append_labels(path, WNIDS, new, np.ones((len(WNIDS), 1, 3))))
        assert "manifest.json" not in touched and all(t.startswith(("log-", "shard-")) for t in touched), touched
        costs.append(written)
        assert LM.open_matrix(path).model_ids == ids + ["m-new"]
    assert costs[0] == costs[1] < 2000 + 6 * len(WNIDS)


def test_an_append_to_a_hard_linked_copy_leaves_the_original_alone(grown: tuple[Path, list], tmp_path: Path) -> None:
    path, blocks = grown
    copy = tmp_path / "linked"
    shutil.copytree(path / "labels", copy / "labels", copy_function=os.link)   # as bench/scale.py copies a hub
    before = LM.open_matrix(path).dense()
    LM.append_labels(copy, WNIDS[:2], models(["m-e"]), np.ones((2, 1, 3), int))
    assert np.array_equal(LM.open_matrix(path).dense(), before)
    assert LM.open_matrix(copy).model_ids[-1] == "m-e"


def test_compacting_one_shard_moves_the_log_into_a_fresh_base(tmp_path: Path) -> None:
    counts = random_counts(np.random.default_rng(2), 5, 2)
    LM.append_labels(tmp_path, WNIDS[:5], models(["m-a", "m-b"]), counts)
    assert json.loads((LM.matrix_dir(tmp_path) / "manifest.json").read_text())["models"] == []
    old_log = log_file(tmp_path)
    LM.compact_matrix(tmp_path)
    manifest = json.loads((LM.matrix_dir(tmp_path) / "manifest.json").read_text())
    assert manifest["nodes"] == WNIDS[:5] and [m["id"] for m in manifest["models"]] == ["m-a", "m-b"]
    assert log_file(tmp_path).read_bytes() == b"" and not old_log.exists()
    assert np.array_equal(LM.open_matrix(tmp_path).dense(), counts)


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
    shutil.rmtree(LM.matrix_dir(path) / name)
    with pytest.raises(IndexFormatError, match=name):
        LM.open_matrix(path)
