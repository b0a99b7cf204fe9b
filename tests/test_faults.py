"""Writers killed with SIGKILL, a full disk and a file-size limit: the previous index stays whole,
failures are one line, and what an interrupted writer left is reported and then cleared."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mll_index.core.artifacts import find_leftovers, writing
from mll_index.errors import IndexWriteError
from mll_index.index.node_index import load_index, load_index_graph
from mll_index.labels.matrix import append_labels, open_matrix
from tests.conftest import REPO, run_cli

sys.path.insert(0, str(REPO / "bench"))
import faults


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file's bytes but the lock's (its holder writes its pid there)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def limited(limit: int) -> Callable[[], None]:
    """A child's set-up: files may not grow past `limit` bytes; a longer write fails with EFBIG
    (the signal that would kill the process instead is ignored), as on a full disk."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def cli_limited(limit: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("MLL_INDEX_HOME", None)
    return subprocess.run([sys.executable, "-m", "mll_index.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300, preexec_fn=limited(limit))


def test_writes_that_find_no_room_are_one_line_naming_the_file(tmp_path: Path) -> None:
    import faiss

    target = tmp_path / "index" / "node_vectors.npy"
    # /dev/full answers every write with ENOSPC, as a full disk does.
    with pytest.raises(IndexWriteError, match=f"^no space left on device while writing {re.escape(str(target))}$"), \
            writing(target), open("/dev/full", "wb") as handle:
        np.save(handle, np.zeros((1000, 8), np.float32))
    with pytest.raises(IndexWriteError, match="^no space left on device while writing"), \
            writing(target), open("/dev/full", "wb") as handle:
        handle.write(faiss.serialize_index(faiss.IndexFlatIP(8)).data)
        handle.flush()
    with pytest.raises(IndexWriteError, match="^file size limit reached while writing"), writing(target):
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    with pytest.raises(FileNotFoundError), writing(target):   # not a lack of room: unchanged
        (tmp_path / "missing" / "file").read_bytes()


def test_add_nodes_past_a_file_size_limit_is_one_line_and_keeps_the_index(index_copy: Path, tmp_path: Path) -> None:
    wnids = faults.fresh_wnids(index_copy, 60, seed=11)
    warm = tmp_path / "warm"
    shutil.copytree(index_copy, warm)
    assert run_cli("add-nodes", "--index", str(warm), *wnids).returncode == 0   # caption vectors cached
    before = snapshot(index_copy)
    # 60 vectors of 384 floats are 92 KB: the new segment's vectors cannot be written.
    result = cli_limited(64 * 1024, "add-nodes", "--index", str(index_copy), *wnids)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert re.fullmatch(r"mll-index: error: file size limit reached while writing " + re.escape(str(index_copy))
                        + r"/node_vectors-\d+\.npy", lines[0]), lines
    assert snapshot(index_copy) == before
    assert load_index(index_copy).size == 197


def test_labels_compact_past_a_file_size_limit_is_one_line_and_keeps_the_matrix(index_copy: Path) -> None:
    nodes = load_index_graph(index_copy).wnids[:3000]
    rng = np.random.default_rng(0)
    for m in range(3):
        append_labels(index_copy, nodes, [(f"model-{m}", {"id": f"model-{m}"})], rng.integers(0, 9, (3000, 1, 3)))
    matrix_dir = index_copy / "labels" / "matrix"
    before, dense = snapshot(matrix_dir), open_matrix(index_copy).dense()
    # The merged counts are 3000 x 3 x 3 uint16, 54 KB: past the limit (each shard was 18 KB).
    result = cli_limited(48 * 1024, "labels", "compact", "--index", str(index_copy))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert re.fullmatch(r"mll-index: error: file size limit reached while writing " + re.escape(str(matrix_dir))
                        + r"/shard-\d+/counts\.npy", lines[0]), lines
    assert snapshot(matrix_dir) == before
    assert (open_matrix(index_copy).dense() == dense).all()
    assert find_leftovers(index_copy) == []


def test_leftovers_are_reported_by_info_and_cleared_by_the_next_writer(index_copy: Path) -> None:
    dead = 2 ** 31 - 7                                   # beyond any pid_max: no such process
    left = [index_copy.parent / f".{index_copy.name}.{dead}-abcd1234.tmp",          # a killed build
            index_copy / f".node_vectors-000001.npy.{dead}-k2j4h5g6.tmp",           # a killed growth
            index_copy / "labels" / "matrix" / ".manifest.json.x7y8z9w0.tmp",       # older names: no pid
            index_copy / "node_vectors-000004.npy"]                                  # listed by no manifest
    left[0].mkdir()
    (left[0] / "node_vectors.npy").write_bytes(b"\0" * 5000)
    left[2].parent.mkdir(parents=True)
    for file in left[1:]:
        file.write_bytes(b"\0" * 1000)
    alive = index_copy.parent / f".{index_copy.name}.{os.getpid()}-abcdefgh.tmp"  # a first build still running
    alive.mkdir()
    info = run_cli("info", "--index", str(index_copy))
    assert info.returncode == 0, info.stderr
    reported = json.loads(info.stdout)["leftovers"]
    assert sorted(reported["paths"]) == sorted(str(p) for p in left + [alive])
    assert reported["bytes"] == 8000
    assert all(p.exists() for p in left)                 # a reader reports, never removes
    grow = run_cli("add-nodes", "--index", str(index_copy), "n02121808")
    assert grow.returncode == 0, grow.stderr
    assert not any(p.exists() for p in left)
    assert alive.is_dir()                                # its writer's pid runs: kept
    assert json.loads(run_cli("info", "--index", str(index_copy), "--verify").stdout)["leftovers"]["paths"] \
        == [str(alive)]


def test_kill_9_at_random_moments_leaves_a_loadable_index_and_no_leftovers(index_copy: Path) -> None:
    result = faults.run_kills(index_copy, n=6, seed=0, window=0.8)
    assert result["errors"] == [], result["errors"]
    assert result["loads_failed"] == 0 and result["verify_failed"] == 0
    assert result["temp_bytes_left"] == 0
    load_index(index_copy, verify=True)
