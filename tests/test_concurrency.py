"""Writers of one index at once, and readers while it is written: nothing reported done is lost,
and every read sees one version.

The writers are the real command line in subprocesses (bench/faults.py holds the race machinery,
which bench scripts call on real indexes), the models tiny open_clip ones.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mll_index.core.artifacts import index_lock
from mll_index.index.embed import TextEmbedder
from mll_index.index.node_index import add_nodes, compact_index, load_index
from mll_index.labeling.run import label_models
from mll_index.labels.folders import labeled_models
from mll_index.labels.matrix import open_matrix
from mll_index.models.hub import load_hub
from tests.conftest import GOLDFISH, LAPTOP, PIZZA, REPO, TENCH, TIGER
from tests.tinyclip import make_sample_images, make_tiny_checkpoint, write_tiny_arch

sys.path.insert(0, str(REPO / "bench"))
import faults

SAMPLED = [TENCH, GOLDFISH, LAPTOP, TIGER, PIZZA]


@pytest.fixture(scope="module")
def labeled_template(tmp_path_factory: pytest.TempPathFactory, index_dir: Path) -> tuple[Path, Path, Path]:
    """A copy of the small index with two tiny models labeled (two matrix shards), a third model
    in the hub left to label, and the sample folder: (index, hub file, samples)."""
    root = tmp_path_factory.mktemp("concurrency")
    arch = write_tiny_arch(root / "arch", "tinyconcvit", vision="vit")
    models = []
    for i in range(3):
        make_tiny_checkpoint(arch, root / "weights" / f"m{i}.pt", seed=i)
        models.append({"id": f"tiny-m{i}", "arch": arch.stem, "checkpoint": f"weights/m{i}.pt",
                       "config": f"arch/{arch.name}"})
    (root / "hub.json").write_text(json.dumps({"name": "tiny", "models": models}))
    samples = root / "samples"
    make_sample_images(samples, SAMPLED, per_node=3)
    index = root / "index"
    shutil.copytree(index_dir, index)
    label_models(index, load_hub(root / "hub.json"), samples, models=["tiny-m0", "tiny-m1"], device="cpu")
    assert len(open_matrix(index).shards) == 2
    return index, root / "hub.json", samples


@pytest.fixture()
def labeled(labeled_template: tuple[Path, Path, Path], tmp_path: Path) -> tuple[Path, Path, Path]:
    index, hub, samples = labeled_template
    shutil.copytree(index, tmp_path / "index")
    return tmp_path / "index", hub, samples


def test_two_add_nodes_at_once_keep_both(index_copy: Path) -> None:
    race = faults.race_add_add(index_copy, n=20)
    assert race["exit"] == [0, 0] and race["added"] == [20, 20], race
    assert race["lost"] == 0
    assert load_index(index_copy).size == 197 + 40


def test_add_nodes_and_label_at_once_keep_both(labeled: tuple[Path, Path, Path]) -> None:
    index, hub, samples = labeled
    race = faults.race_add_label(index, hub, samples, "tiny-m2", n=20)
    assert race["exit"] == [0, 0], race
    assert race["lost"] == 0
    assert set(labeled_models(index)) == {"tiny-m0", "tiny-m1", "tiny-m2"}
    assert set(open_matrix(index).model_ids) == {"tiny-m0", "tiny-m1", "tiny-m2"}


def test_add_nodes_and_labels_compact_at_once_keep_both(labeled: tuple[Path, Path, Path]) -> None:
    index, _, _ = labeled
    before = open_matrix(index).dense()
    race = faults.race_add_compact(index, n=20)
    assert race["exit"] == [0, 0], race
    assert race["lost"] == 0
    matrix = open_matrix(index)
    assert len(matrix.shards) == 1
    assert (matrix.dense() == before).all()


def test_a_label_finished_while_the_index_is_rewritten_is_kept(labeled: tuple[Path, Path, Path]) -> None:
    index, hub, samples = labeled
    label = subprocess.Popen([sys.executable, "-m", "mll_index.cli", "label", "--index", str(index), "--hub", str(hub),
                              "--samples", str(samples), "--model", "tiny-m2", "--device", "cpu"],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rewrites = 0
    while label.poll() is None:
        compact_index(index)                            # the whole folder swapped in, as a build does
        rewrites += 1
    out, err = label.communicate()
    assert label.returncode == 0 and "labeled  tiny-m2" in out, err
    assert rewrites > 0
    assert set(labeled_models(index)) == {"tiny-m0", "tiny-m1", "tiny-m2"}
    assert set(open_matrix(index).model_ids) == {"tiny-m0", "tiny-m1", "tiny-m2"}


def test_a_writer_waits_for_the_lock_and_says_so_once(index_copy: Path) -> None:
    with index_lock(index_copy):
        proc = subprocess.Popen([sys.executable, "-m", "mll_index.cli", "add-nodes", "--index", str(index_copy),
                                 "n02121808"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        line = proc.stderr.readline()                   # blocks until the writer reaches the lock
        assert "waiting for another writer of" in line and str(index_copy) in line, line
        assert f"(pid {__import__('os').getpid()})" in line
        assert proc.poll() is None                      # still waiting while the lock is held
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["added"] == 1 and "waiting" not in err
    assert load_index(index_copy).size == 198


def test_readers_see_one_version_while_the_index_grows_and_is_rewritten(index_copy: Path, tmp_path: Path,
                                                                        embedder: TextEmbedder) -> None:
    wnids = faults.fresh_wnids(index_copy, 24, seed=7)
    stop = tmp_path / "stop"
    reader = faults.start_reader(index_copy, stop)
    for r in range(4):
        add_nodes(index_copy, wnids[r * 6:(r + 1) * 6], embedder)
        if r % 2:
            compact_index(index_copy)                   # the whole folder swapped, as a build does
    result = faults.stop_reader(reader, stop)
    assert result["reads"] > 0
    assert result["reads_failed"] == 0, result["errors"]
    assert load_index(index_copy).size == 197 + 24
