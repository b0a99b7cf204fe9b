"""The streamed image data path, with tiny real open_clip models on generated images."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import InputError
from mll_index.images.encoding import encode_image_set, hub_probabilities, model_passes, zero_shot_probabilities
from mll_index.images.loader import ImageSet, default_decode, image_loader, image_set_from_samples, image_set_from_task
from mll_index.models.hub import load_hub, load_model
from tests.tinyclip import make_sample_images, make_tiny_checkpoint, write_tiny_arch

WNIDS = ["n01440764", "n01443537", "n03642806", "n02129604"]
CLASSES = ["tench", "goldfish", "laptop", "tiger"]


@pytest.fixture(scope="module")
def tiny_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny ViTs at 32 px (one preprocessing) and one at 48 px."""
    root = tmp_path_factory.mktemp("pipeline-hub")
    vit = write_tiny_arch(root / "arch", "tinypipevit", vision="vit")
    big = write_tiny_arch(root / "arch", "tinypipevit48", vision="vit", image_size=48)
    models = []
    for i, (cfg, name) in enumerate([(vit, "a"), (vit, "b"), (big, "c")]):
        make_tiny_checkpoint(cfg, root / "weights" / f"{name}.pt", seed=i)
        models.append({"id": f"pipe-{name}", "arch": cfg.stem, "checkpoint": f"weights/{name}.pt",
                       "config": f"arch/{cfg.name}"})
    (root / "hub.json").write_text(json.dumps({"name": "pipe", "models": models}))
    return root / "hub.json"


@pytest.fixture(scope="module")
def loaded(tiny_hub: Path) -> list:  # type: ignore[type-arg]
    hub = load_hub(tiny_hub)
    return [load_model(hub.get("pipe-a")), load_model(hub.get("pipe-b"))]


@pytest.fixture(scope="module")
def samples_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline-samples")
    make_sample_images(root, WNIDS, per_node=5, size=40)
    return root


def flat_set(root: Path) -> ImageSet:
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    return ImageSet(root, tuple(paths))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_streamed_embeddings_equal_decoding_one_file_at_a_time(loaded, samples_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mll_index.images.decoding import open_image
    from mll_index.labeling.samples import scan_samples
    from mll_index.models.zeroshot import encode_pixels
    from mll_index.reuse.ensemble import scan_task_images

    samples = scan_samples(samples_root)
    images = image_set_from_samples(samples)
    got = encode_image_set(loaded, images, batch_size=7)
    assert got.positions.tolist() == list(range(len(images)))
    pixels = np.stack([loaded[0].preprocess(open_image(samples.root / rel)).numpy() for rel in samples.paths])
    for model in loaded:
        assert got.embeddings[model.hub_model.id].dtype == np.float32
        assert cosine(got.embeddings[model.hub_model.id], encode_pixels(model, pixels)).min() >= 0.999
    flat = tmp_path / "task"
    for wnid, name in zip(WNIDS, CLASSES):
        shutil.copytree(samples_root / wnid, flat / name)
    task = scan_task_images(flat, CLASSES)
    task_set = image_set_from_task(task)
    assert task_set.labels == tuple(task.labels.tolist())
    streamed = encode_image_set(loaded, task_set, batch_size=6)
    assert streamed.positions.tolist() == list(range(len(task.paths)))


def test_probabilities_equal_reuse(tiny_hub: Path, samples_root: Path, tmp_path: Path) -> None:
    from mll_index.reuse.ensemble import predict_probabilities, scan_task_images

    flat = tmp_path / "task"
    for wnid, name in zip(WNIDS, CLASSES):
        shutil.copytree(samples_root / wnid, flat / name)
    hub = load_hub(tiny_hub)
    ids = list(hub.ids)
    assert [[m.id for m in p] for p in model_passes([hub.get(m) for m in ids], 1)] == [["pipe-a"], ["pipe-b"],
                                                                                       ["pipe-c"]]
    old = predict_probabilities(hub, ids, scan_task_images(flat, CLASSES), CLASSES)
    new = hub_probabilities(hub, ids, image_set_from_task(scan_task_images(flat, CLASSES)), CLASSES, batch_size=8)
    assert len(new.stats) == 2  # one pass per preprocessing configuration
    for mid in ids:
        assert new.probabilities[mid].shape == old[mid].shape
        np.testing.assert_allclose(new.probabilities[mid].sum(1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(new.probabilities[mid], old[mid], atol=1e-4)


def test_zero_and_two_workers_agree_in_order_and_callback_sees_every_batch(loaded, samples_root: Path) -> None:  # type: ignore[no-untyped-def]
    images = flat_set(samples_root)
    inline = encode_image_set(loaded, images, batch_size=4, workers=0)
    workers = encode_image_set(loaded, images, batch_size=4, workers=2)
    assert workers.positions.tolist() == inline.positions.tolist() == list(range(len(images)))
    for mid in inline.embeddings:
        np.testing.assert_allclose(workers.embeddings[mid], inline.embeddings[mid], atol=1e-6)
    seen: list[int] = []
    out = {m.hub_model.id: np.zeros((len(images), 32), np.float32) for m in loaded}
    written = encode_image_set(loaded, images, batch_size=6, out=out,
                               on_batch=None)
    assert np.shares_memory(written.embeddings["pipe-a"], out["pipe-a"])
    streamed = encode_image_set(loaded, images, batch_size=6,
                                on_batch=lambda pos, emb: seen.extend(pos.tolist()))
    assert seen == list(range(len(images))) and streamed.embeddings == {}
    assert streamed.stats.images == len(images) and set(streamed.stats.encode_s) == {"pipe-a", "pipe-b"}


def test_unreadable_image_in_the_middle_is_skipped_and_listed_by_a_worker(loaded, samples_root: Path,  # type: ignore[no-untyped-def]
                                                                        tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    shutil.copytree(samples_root, root)
    (root / WNIDS[1] / "2b-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    images = flat_set(root)
    broken = images.paths.index(f"{WNIDS[1]}/2b-broken.png")
    assert 0 < broken < len(images) - 1
    got = encode_image_set(loaded, images, batch_size=4, workers=2)
    assert [p for p, _ in got.unreadable] == [images.paths[broken]]
    assert got.unreadable[0][1]  # the decoder's reason
    assert got.positions.tolist() == [i for i in range(len(images)) if i != broken]
    clean = encode_image_set(loaded, images.subset(got.positions.tolist()), batch_size=5)
    np.testing.assert_allclose(got.embeddings["pipe-a"], clean.embeddings["pipe-a"], atol=1e-6)
    assert got.stats.unreadable == 1 and got.stats.images == len(images) - 1


def _poisoned_decode(path: Path):  # type: ignore[no-untyped-def]
    """A decoder that kills its process on one file, as a crashing codec would."""
    if path.name == "poison.png":
        os._exit(1)
    return default_decode(path)


def test_a_worker_killed_by_a_file_is_an_error_naming_it(loaded, samples_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "imgs"
    shutil.copytree(samples_root, root)
    shutil.copy(next(root.rglob("*.png")), root / WNIDS[2] / "poison.png")
    started = time.monotonic()
    with pytest.raises(InputError, match=r"poison\.png: decoding it killed the image loader's worker"):
        encode_image_set(loaded, flat_set(root), batch_size=2, workers=2, decode=_poisoned_decode, timeout_s=30)
    assert time.monotonic() - started < 30
    # The dead worker is forgotten with its loader: a later child process's exit (a SIGCHLD) must not
    # raise "worker exited unexpectedly" from torch's handler wherever the program then is.
    for _ in range(3):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        time.sleep(0.2)


def _slow_decode(path: Path):  # type: ignore[no-untyped-def]
    if path.name == "stuck.png":
        time.sleep(8)
    return default_decode(path)


def test_a_stuck_worker_times_out_naming_the_file(loaded, samples_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "imgs"
    root.mkdir()
    first = next(samples_root.rglob("*.png"))
    shutil.copy(first, root / "0.png")
    shutil.copy(first, root / "stuck.png")
    loader = image_loader(flat_set(root), loaded[0].preprocess, batch_size=1, workers=1, decode=_slow_decode,
                          timeout_s=1)
    with pytest.raises(InputError, match=r"stuck\.png: no image decoded within the loader's 1 s timeout"):
        list(loader)


def test_errors_name_what_is_wrong(tiny_hub: Path, loaded, samples_root: Path) -> None:  # type: ignore[no-untyped-def]
    hub = load_hub(tiny_hub)
    other = load_model(hub.get("pipe-c"))
    images = flat_set(samples_root)
    with pytest.raises(InputError, match="different preprocessing"):
        encode_image_set([loaded[0], other], images)
    with pytest.raises(InputError, match="unknown precision 'fp8'"):
        encode_image_set(loaded, images, precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="2 labels for 3 images"):
        ImageSet(samples_root, ("a", "b", "c"), (0, 1))
    probs = zero_shot_probabilities(loaded, images.subset([0, 1]), CLASSES)
    assert probs.probabilities["pipe-a"].shape == (2, 4)


@pytest.mark.slow
def test_gpu_check_smoke_runs_on_the_cpu(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "gpu_check.json"
    figures = gpu_check.main(["--smoke", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["device"] == "cpu" and written["images"] == 16
    for runs in figures["models"].values():
        assert runs["labeling"]["images"] == runs["reuse"]["images"] == 16
        assert runs["labeling"]["bound_by"] in ("decode", "encode")
