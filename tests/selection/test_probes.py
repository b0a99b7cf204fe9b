"""Probe images: a few unlabeled images of the task weight the sample images like them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mll_index.errors import InputError
from mll_index.labels.store import open_labels
from mll_index.selection.probes import encode_probes, node_softmax, probe_files, probe_weights
from mll_index.selection.selector import open_selector, select_models
from mll_index.selection.task import make_task, task_from_json
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def probe_copies(small_world, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:  # type: ignore[no-untyped-def]
    """Copies of six noto sample images of six nodes (the first made grayscale and of another size),
    one file that is no image; and the copied images' paths in the sample set (node/file)."""
    out = tmp_path_factory.mktemp("probes")
    nodes = sorted(p for p in Path(small_world.samples_dir).iterdir() if p.is_dir())
    picked = [next(iter(sorted(n.glob("noto-*.png")))) for n in nodes if any(n.glob("noto-*.png"))][:6]
    for i, path in enumerate(picked):
        shutil.copy(path, out / f"probe-{i}.png")
    with Image.open(out / "probe-0.png") as image:
        image.convert("L").resize((50, 70)).save(out / "probe-0.png")
    (out / "broken.png").write_bytes(b"not an image at all")
    return out, [f"{p.parent.name}/{p.name}" for p in picked]


@pytest.fixture(scope="module")
def probe_dir(probe_copies: tuple[Path, list[str]]) -> Path:
    return probe_copies[0]


def test_probe_files_bad_input_and_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match=r"^probe images: .*missing does not exist: give a folder"):
        probe_files([tmp_path / "missing"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=rf"^probe images: missing does not exist \(relative to the current folder "
                       rf"{tmp_path}\)"):
        probe_files(["missing"])
    with pytest.raises(InputError, match=r"^probe images: no image file in .*empty \(no subfolder\)"):
        probe_files([tmp_path / "empty"] if (tmp_path / "empty").mkdir() is None else [])
    for i in range(5):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    assert [p.name for p in probe_files([tmp_path], limit=2)] == ["0.png", "4.png"]
    assert len(probe_files([tmp_path])) == 5


def test_probe_files_read_one_level_of_class_subfolders(tmp_path: Path) -> None:
    """A task's images laid out as <task>/<class>/*.png are found; deeper and hidden folders are not
    read, and the evenly spaced choice spans the classes."""
    task = tmp_path / "task"
    for cls in ("cat", "dog", "eel"):
        (task / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8)).save(task / cls / f"{i}.png")
    Image.new("RGB", (8, 8)).save(task / "top.png")
    (task / "dog" / "deeper").mkdir()
    Image.new("RGB", (8, 8)).save(task / "dog" / "deeper" / "x.png")
    (task / ".hidden").mkdir()
    Image.new("RGB", (8, 8)).save(task / ".hidden" / "y.png")
    found = probe_files([task], limit=100)
    assert [str(p.relative_to(task)) for p in found] == [f"{c}/{i}.png" for c in ("cat", "dog", "eel")
                                                          for i in range(4)] + ["top.png"]
    chosen = [str(p.relative_to(task)) for p in probe_files([task], limit=3)]
    assert chosen == ["cat/0.png", "dog/2.png", "top.png"] == [str(p.relative_to(task)) for p in
                                                               probe_files([task], limit=3)]
    (tmp_path / "nothing" / "a").mkdir(parents=True)
    (tmp_path / "nothing" / "b").mkdir()
    (tmp_path / "nothing" / "a" / "deep").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "nothing" / "a" / "deep" / "z.png")
    with pytest.raises(InputError, match=r"^probe images: no image file in .*nothing and its 2 subfolders \(") as err:
        probe_files([tmp_path / "nothing"])
    assert "\n" not in str(err.value)


def test_node_softmax_keeps_each_node_s_count() -> None:
    score = np.array([0.9, 0.1, 0.5, 0.5, 0.2])
    nodes = np.array([3, 3, 7, 7, 9])
    w = node_softmax(score, nodes, 0.02)
    assert np.allclose([w[:2].sum(), w[2:4].sum(), w[4]], [2, 2, 1]) and w[0] > 1.99 and np.allclose(w[2], w[3])


def test_probe_weights_by_hand(world_index: Path, probe_dir: Path) -> None:
    store = open_labels(world_index)
    probes = encode_probes(store, [probe_dir])
    assert len(probes.paths) == 6 and [Path(p).name for p, _ in probes.skipped] == ["broken.png"]
    assert probes.summary()["images_encoded"] == 6 * len(probes.embeddings) == 6
    (model, encoded), = probes.embeddings.items()
    assert encoded.shape[0] == 6 and np.allclose(np.linalg.norm(encoded, axis=1), 1, atol=1e-3)
    # The weights are the per-node softmax of each image's unit offset from its node's centre against
    # the mean of the probes' unit offsets from their nearest node's centre, recomputed here by hand.
    fingerprint = next(iter(store.groups()))
    group = store.sample_group(fingerprint)
    emb = np.asarray(store.image_labels(store.model_ids.index(model)).image_embeddings, np.float64)
    nodes = group.image_nodes
    distinct = np.unique(nodes)
    centres = np.array([emb[nodes == n].mean(axis=0) for n in distinct])
    offset = emb - centres[np.searchsorted(distinct, nodes)]
    offset /= np.linalg.norm(offset, axis=1, keepdims=True)
    nearest = np.argmax(encoded @ (centres / np.linalg.norm(centres, axis=1, keepdims=True)).T, axis=1)
    probe_offset = encoded - centres[nearest]
    probe_offset /= np.linalg.norm(probe_offset, axis=1, keepdims=True)
    w = probe_weights(store, probes)[fingerprint]
    np.testing.assert_allclose(w, node_softmax(offset @ probe_offset.mean(axis=0), nodes, 0.1), rtol=1e-3, atol=1e-4)
    # "residual": the probes' mean offset from the whole sample set's centre, as one unit direction.
    shift = encoded.mean(axis=0) - emb.mean(axis=0)
    residual = probe_weights(store, probes, aggregate="residual")[fingerprint]
    np.testing.assert_allclose(residual, node_softmax(offset @ shift / np.linalg.norm(shift), nodes, 0.1),
                               rtol=1e-3, atol=1e-4)
    _, inverse, count = np.unique(nodes, return_inverse=True, return_counts=True)
    assert np.allclose(np.bincount(inverse, weights=w), count, rtol=1e-4)
    other = probe_weights(store, probes, aggregate="max")[fingerprint]
    assert other.shape == w.shape and np.allclose(np.bincount(inverse, weights=other), count, rtol=1e-4)


def test_probes_that_disagree_weigh_less_sharply(world_index: Path, probe_dir: Path) -> None:
    """Probes whose styles cancel (each probe and its mirror image about its node's centre) leave every
    image its weight of 1, where the same probes alone sharpen: a task of several domains is not
    forced into one."""
    from mll_index.selection.probes import ProbeSet

    store = open_labels(world_index)
    probes = encode_probes(store, [probe_dir])
    (model, encoded), = probes.embeddings.items()
    fingerprint = next(iter(store.groups()))
    group = store.sample_group(fingerprint)
    emb = np.asarray(store.image_labels(store.model_ids.index(model)).image_embeddings, np.float64)
    distinct = np.unique(group.image_nodes)
    centres = np.array([emb[group.image_nodes == n].mean(axis=0) for n in distinct])
    unit_centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    nearest = np.argmax(encoded @ unit_centres.T, axis=1)
    # A small step away from the centre, mirrored: the same nearest node, the opposite style.
    mirrored = (centres[nearest] - 0.01 * (encoded - centres[nearest])).astype(np.float32)
    assert (np.argmax(mirrored @ unit_centres.T, axis=1) == nearest).all()
    both = ProbeSet(probes.paths * 2, (), {model: np.concatenate([encoded, mirrored])}, 0.0)
    sharp = probe_weights(store, probes)[fingerprint]
    flat = probe_weights(store, both)[fingerprint]
    assert np.std(sharp) > 0.1 and np.allclose(flat, 1, atol=1e-3)


def test_no_readable_probe_image_is_one_line(world_index: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(InputError, match=r"^probe images: none of the 1 files in .* could be read \(.*bad.jpg") as err:
        encode_probes(open_labels(world_index), [tmp_path])
    assert "\n" not in str(err.value)


def test_selection_with_probe_images(world_index: Path, probe_dir: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    selector = open_selector(world_index, embedder)
    task = make_task(["tiger", "lion", "banana"], probe_images=[probe_dir])
    assert task_from_json({"classes": ["tiger", "lion", "banana"], "probe_images": str(probe_dir)}) == task
    chosen = select_models(selector, task, k=2, mode="restricted")
    assert chosen.probe is not None and chosen.probe["images"] == 6 and chosen.to_dict()["probe"]["skipped"]
    assert select_models(selector, task, probe=0).probe is None and "probe" not in select_models(
        selector, make_task(["tiger", "lion"])).to_dict()
    counts = select_models(selector, task, mode="counts")
    assert counts.probe is not None and counts.probe["images"] == 0
    assert any("probe images need the restricted mode" in w for w in counts.warnings)
    with pytest.raises(InputError, match="'probe_images' must be"):
        task_from_json({"classes": ["a", "b"], "probe_images": [3]})


def test_select_cli_with_images(world_index: Path, probe_dir: Path, tmp_path: Path) -> None:
    done = run_cli("select", "tiger", "lion", "--index", str(world_index), "--images", str(probe_dir), "--probe", "3")
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout)["probe"]
    assert probe["images"] + len(probe["skipped"]) == 3 and probe["images"] >= 2    # broken.png may be drawn
    (tmp_path / "empty").mkdir()
    done = run_cli("select", "tiger", "lion", "--index", str(world_index), "--images", str(tmp_path / "empty"))
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert "no image file" in done.stderr and "Traceback" not in done.stderr


def test_select_cli_warns_once_for_skipped_and_ignored_probes(world_index: Path, probe_dir: Path) -> None:
    """An unreadable probe file is one `mll-index: warning:` line (no raw logging line, however the
    libraries loaded log), and probes in the counts mode are ignored with a warning, in the answer too."""
    done = run_cli("select", "tiger", "lion", "--index", str(world_index), "--images", str(probe_dir),
                   "--mode", "restricted")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    skipped = [line for line in lines if "broken.png" in line]
    assert len(skipped) == 1 and skipped[0].startswith("mll-index: warning: task 'task': probe images: skipped 1 "
                                                       "unreadable file (")
    assert "WARNING" not in done.stderr and "/:" not in done.stderr
    assert any("broken.png" in w for w in json.loads(done.stdout)["warnings"])
    done = run_cli("select", "tiger", "lion", "--index", str(world_index), "--images", str(probe_dir), "--mode", "counts")
    assert done.returncode == 0, done.stderr
    ignored = [line for line in done.stderr.splitlines() if "probe images need the restricted mode" in line]
    assert len(ignored) == 1 and ignored[0].startswith("mll-index: warning: ")
    answer = json.loads(done.stdout)
    assert answer["probe"]["images"] == 0 and any("restricted mode" in w for w in answer["warnings"])


def test_task_files_read_relative_probe_images_from_their_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 world_index: Path, probe_dir: Path,
                                                                 embedder) -> None:  # type: ignore[no-untyped-def]
    from mll_index.selection.selector import select_batch
    from mll_index.selection.task import read_batch_file, read_task_file

    folder = tmp_path / "tasks"
    (folder / "probes").mkdir(parents=True)
    (folder / "empty").mkdir()
    shutil.copy(probe_dir / "probe-1.png", folder / "probes" / "a.png")
    (folder / "t.json").write_text('{"classes": ["tiger", "lion"], "probe_images": ["probes", "%s"]}' % probe_dir)
    monkeypatch.chdir(tmp_path)  # elsewhere than the task file
    task = read_task_file(Path("tasks/t.json"))
    assert task.probe_images == (str(folder / "probes"), str(probe_dir)) and task.where == "tasks/t.json"
    assert Path(task.probe_images[0]).is_dir()
    (folder / "b.jsonl").write_text('{"name": "a", "classes": ["tiger", "lion"], "probe_images": "probes"}\n\n'
                                    '{"name": "b", "classes": ["cow", "pig"], "probe_images": "empty"}\n')
    tasks = read_batch_file(Path("tasks/b.jsonl"))
    assert [t.probe_images for t in tasks] == [(str(folder / "probes"),), (str(folder / "empty"),)]
    assert [t.where for t in tasks] == ["tasks/b.jsonl:1", "tasks/b.jsonl:3"]
    selector = open_selector(world_index, embedder)
    with pytest.raises(InputError, match=r"^tasks/b\.jsonl:3: probe images: no image file in .*tasks/empty") as err:
        select_batch(selector, tasks, mode="restricted")
    assert "\n" not in str(err.value)
    (folder / "gone.json").write_text('{"classes": ["tiger", "lion"], "probe_images": "nowhere"}')
    with pytest.raises(InputError, match=rf"^tasks/gone\.json: probe images: {folder}/nowhere does not exist"):
        select_batch(selector, [read_task_file(Path("tasks/gone.json"))], mode="restricted")
    # Given directly (the service's task JSON, --images): paths as given, no file to lead the message.
    assert task_from_json({"classes": ["tiger", "lion"], "probe_images": "probes"}).probe_images == ("probes",)


def test_service_task_json_takes_probe_images() -> None:
    from mll_index.service.errors import RequestError
    from mll_index.service.tasks import parse_task

    assert parse_task({"classes": ["cow", "pig"], "probe_images": "/data/probes"}, "task", 100).probe_images == (
        "/data/probes",)
    for wrong in ({"a": 1}, 5, ["/data", 5]):
        with pytest.raises(RequestError, match="'probe_images' must be") as err:
            parse_task({"classes": ["cow", "pig"], "probe_images": wrong}, "task", 100)
        assert err.value.field == "task.probe_images"
