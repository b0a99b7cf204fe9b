"""Model labeling with tiny real open_clip models on generated sample images."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mll_index.core.layout import PIXEL_CACHE, labels_dir
from mll_index.errors import IndexFormatError, InputError
from mll_index.index.node_index import load_index
from mll_index.labeling.run import label_models, node_prompts
from mll_index.labeling.samples import scan_samples
from mll_index.labels.folders import labeled_models, load_label, read_sample_table
from mll_index.models.hub import load_hub, load_model
from tests.conftest import CRANE_BIRD, CRANE_MACHINE, GOLDFISH, LAPTOP, PIZZA, TENCH, TIGER
from tests.tinyclip import make_sample_images, make_tiny_checkpoint, write_tiny_arch

FIRST = [TENCH, GOLDFISH, LAPTOP, TIGER, PIZZA]
LATER = [CRANE_BIRD, CRANE_MACHINE]


@pytest.fixture(scope="module")
def tiny_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub file of four tiny models: two ViTs and a ResNet at 32 px, one ViT at 48 px."""
    root = tmp_path_factory.mktemp("hub")
    vit = write_tiny_arch(root / "arch", "tinylabvit", vision="vit")
    rn = write_tiny_arch(root / "arch", "tinylabrn", vision="resnet")
    big = write_tiny_arch(root / "arch", "tinylabvit48", vision="vit", image_size=48)
    models = []
    for i, (cfg, name) in enumerate([(vit, "vit-a"), (vit, "vit-b"), (rn, "rn"), (big, "vit48")]):
        make_tiny_checkpoint(cfg, root / "weights" / f"{name}.pt", seed=i)
        models.append({"id": f"tiny-{name}", "arch": cfg.stem, "checkpoint": f"weights/{name}.pt",
                       "config": f"arch/{cfg.name}", "imagenet_acc": 0.1 * (i + 1)})
    (root / "hub.json").write_text(json.dumps({"name": "tiny", "models": models}))
    return root / "hub.json"


@pytest.fixture()
def setup(tmp_path: Path, index_dir: Path, tiny_hub: Path) -> tuple[Path, Path, Path]:
    index = tmp_path / "index"
    shutil.copytree(index_dir, index)
    samples = tmp_path / "samples"
    make_sample_images(samples, FIRST, per_node=4, corrupt=True, non_wnid_folder="not-a-wnid")
    return index, samples, tiny_hub


def direct_counts(index: Path, hub_file: Path, model_id: str, samples_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The model's confusion over the labeled nodes, computed straight from open_clip."""
    import torch

    from mll_index.images.decoding import UnreadableImageError, open_image

    idx = load_index(index)
    loaded = load_model(load_hub(hub_file).get(model_id))
    samples = scan_samples(samples_root)
    pixels, wnids = [], []
    for rel, wnid in zip(samples.paths, samples.wnids):
        try:
            pixels.append(loaded.preprocess(open_image(samples.root / rel)))
        except UnreadableImageError:
            continue
        wnids.append(wnid)
    nodes = sorted(set(wnids))
    with torch.no_grad():
        img = torch.nn.functional.normalize(loaded.model.encode_image(torch.stack(pixels)), dim=-1)
        txt = torch.nn.functional.normalize(loaded.model.encode_text(loaded.tokenizer(node_prompts(idx, nodes))), dim=-1)
    pred = (img @ txt.T).argmax(1).numpy()
    true = np.array([nodes.index(w) for w in wnids])
    out = np.zeros((len(nodes), 4), np.int64)
    for t, p in zip(true, pred):
        out[t, 0] += 1
        out[t, 1] += t == p
        out[p, 2] += t != p
        out[t, 3] += t != p
    return out, pred


def test_label_counts_match_direct_computation(setup: tuple[Path, Path, Path]) -> None:
    index, samples, hub_file = setup
    report = label_models(index, load_hub(hub_file), samples, models=["tiny-vit-a", "tiny-rn"])
    assert sorted(report.labeled) == ["tiny-rn", "tiny-vit-a"]
    assert report.unreadable == [f"{TENCH}/corrupt.jpg"] and report.skipped_folders
    for model_id in ("tiny-vit-a", "tiny-rn"):
        label = load_label(index, model_id, verify=True)
        expected, pred = direct_counts(index, hub_file, model_id, samples)
        np.testing.assert_array_equal(np.asarray(label.counts), expected)
        # Top-1 of the stored top-K is the model's prediction; the true logit is among the logits.
        np.testing.assert_array_equal(np.asarray(label.topk_nodes[:, 0]), pred)
        assert label.topk_nodes.shape == (20, 5)
        assert np.all(np.diff(np.asarray(label.topk_logits, np.float32), axis=1) <= 1e-3)
        assert label.manifest["counts"]["images"] == 20 and label.manifest["counts"]["nodes"] == 5


def test_rerun_skips_and_growth_by_model(setup: tuple[Path, Path, Path]) -> None:
    index, samples, hub_file = setup
    hub = load_hub(hub_file)
    label_models(index, hub, samples, models=["tiny-vit-a"])
    before = (labels_dir(index) / "tiny-vit-a" / "image_embeddings.npy").stat().st_mtime_ns
    report = label_models(index, hub, samples)
    assert report.skipped == ["tiny-vit-a"]
    assert sorted(report.labeled) == ["tiny-rn", "tiny-vit-b", "tiny-vit48"]
    # Growing the hub never rewrites the label of a model that did not change.
    assert (labels_dir(index) / "tiny-vit-a" / "image_embeddings.npy").stat().st_mtime_ns == before
    assert set(labeled_models(index)) == {m.id for m in hub}


def test_growth_by_nodes_encodes_only_new_images(setup: tuple[Path, Path, Path]) -> None:
    index, samples, hub_file = setup
    hub = load_hub(hub_file)
    label_models(index, hub, samples, models=["tiny-vit-a"])
    old = load_label(index, "tiny-vit-a")
    old_embeddings = {p: np.array(e) for p, e in zip(read_sample_table(index, old.manifest["samples"]).paths,
                                                     old.image_embeddings)}
    extra = tmp = samples.parent / "extra"
    make_sample_images(tmp, FIRST + LATER, per_node=3, seed=7)
    for wnid in LATER:
        shutil.copytree(extra / wnid, samples / wnid)
    report = label_models(index, hub, samples, models=["tiny-vit-a"])
    assert report.labeled == ["tiny-vit-a"]
    new = load_label(index, "tiny-vit-a")
    assert new.manifest["counts"] == {"images": 26, "nodes": 7, "encoded_images": 6, "encoded_nodes": 2}
    table = read_sample_table(index, new.manifest["samples"])
    for path, emb in zip(table.paths, new.image_embeddings):
        if path in old_embeddings:
            np.testing.assert_array_equal(np.asarray(emb), old_embeddings[path])
    expected, _ = direct_counts(index, hub_file, "tiny-vit-a", samples)
    np.testing.assert_array_equal(np.asarray(new.counts), expected)


def test_replaced_image_is_encoded_again(setup: tuple[Path, Path, Path]) -> None:
    index, samples, hub_file = setup
    hub = load_hub(hub_file)
    label_models(index, hub, samples, models=["tiny-vit-a"])
    target = samples / LAPTOP / "0.png"
    shutil.copy(samples / PIZZA / "0.png", target)
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    label_models(index, hub, samples, models=["tiny-vit-a"])
    assert load_label(index, "tiny-vit-a").manifest["counts"]["encoded_images"] == 1


def test_unloadable_model_is_reported_and_others_go_on(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    index, samples, hub_file = setup
    data = json.loads(hub_file.read_text())
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    data["models"].append({"id": "tiny-broken", "arch": "tinylabvit", "checkpoint": str(broken),
                           "config": str(hub_file.parent / "arch" / "tinylabvit.json")})
    (hub_file.parent / "hub2.json").write_text(json.dumps(data))
    report = label_models(index, load_hub(hub_file.parent / "hub2.json"), samples,
                          models=["tiny-broken", "tiny-vit-a"])
    assert report.labeled == ["tiny-vit-a"]
    assert "tiny-broken" in report.failed["tiny-broken"]


def test_no_valid_sample_folder_is_an_error(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    index, _, hub_file = setup
    empty = tmp_path / "empty"
    (empty / "cats").mkdir(parents=True)
    with pytest.raises(InputError, match="empty"):
        label_models(index, load_hub(hub_file), empty)


def _label_subprocess(index: Path, samples: Path, hub_file: Path, fsize: int | None = None) -> subprocess.Popen:
    code = (
        "import sys, resource, signal\n"
        "from pathlib import Path\n"
        "from mll_index.models.hub import load_hub\n"
        "from mll_index.labeling.run import label_models\n"
        f"limit = {fsize!r}\n"
        "if limit:\n"
        "    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
        f"label_models(Path({str(index)!r}), load_hub({str(hub_file)!r}), Path({str(samples)!r}), batch_size=4)\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_loses_at_most_the_model_in_progress(setup: tuple[Path, Path, Path]) -> None:
    index, samples, hub_file = setup
    make_sample_images(samples, FIRST, per_node=40, seed=3)
    proc = _label_subprocess(index, samples, hub_file)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not labeled_models(index):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = labeled_models(index)
    load_index(index)  # still loadable
    for model_id in done:
        load_label(index, model_id, verify=True)  # every finished label is whole
    report = label_models(index, load_hub(hub_file), samples)
    assert sorted(report.skipped) == sorted(done)
    assert sorted(report.labeled + report.skipped) == sorted(m.id for m in load_hub(hub_file))


def test_full_disk_keeps_every_label(setup: tuple[Path, Path, Path]) -> None:
    index, samples, hub_file = setup
    label_models(index, load_hub(hub_file), samples, models=["tiny-vit-a"])
    before = {p.name: p.read_bytes() for p in (labels_dir(index) / "tiny-vit-a").iterdir()}
    make_sample_images(samples, FIRST, per_node=30, seed=5)
    # Files may not grow past 4 KiB: the first larger write fails as on a full disk.
    proc = _label_subprocess(index, samples, hub_file, fsize=4096)
    _, err = proc.communicate(timeout=120)
    # Without a pixel cache the first large write is the sample table, through artifacts.writing.
    assert proc.returncode != 0 and ("File too large" in err or "No space" in err or "Errno 27" in err
                                     or "file size limit reached" in err)
    after = {p.name: p.read_bytes() for p in (labels_dir(index) / "tiny-vit-a").iterdir()}
    assert after == before
    assert labeled_models(index) == {"tiny-vit-a": load_label(index, "tiny-vit-a").manifest["samples"]}
    assert not [p for p in labels_dir(index).iterdir() if p.name.startswith(".tiny")]


def test_damaged_label_names_the_file(setup: tuple[Path, Path, Path]) -> None:
    index, samples, hub_file = setup
    label_models(index, load_hub(hub_file), samples, models=["tiny-vit-a"])
    counts = labels_dir(index) / "tiny-vit-a" / "counts.npy"
    counts.write_bytes(counts.read_bytes()[:-8])
    with pytest.raises(IndexFormatError, match="counts.npy"):
        load_label(index, "tiny-vit-a")
    # The damaged label is labeled again from scratch.
    report = label_models(index, load_hub(hub_file), samples, models=["tiny-vit-a"])
    assert report.labeled == ["tiny-vit-a"]
    load_label(index, "tiny-vit-a", verify=True)


def test_cli_label_and_bad_hub(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from tests.conftest import run_cli

    index, samples, hub_file = setup
    done = run_cli("label", "--index", str(index), "--hub", str(hub_file), "--samples", str(samples),
                   "--model", "tiny-vit-a")
    assert done.returncode == 0, done.stderr
    assert "labeled  tiny-vit-a" in done.stdout and "not-a-wnid" in done.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"models": [{"id": "x", "arch": "NoSuchArch", "pretrained": "openai"}]}))
    failed = run_cli("label", "--index", str(index), "--hub", str(bad), "--samples", str(samples))
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert str(bad) in failed.stderr and "NoSuchArch" in failed.stderr
    again = run_cli("label", "--index", str(index), "--hub", str(hub_file), "--samples", str(samples),
                    "--model", "tiny-vit-a")
    assert again.returncode == 0 and "current  tiny-vit-a" in again.stdout


def test_a_model_with_nan_outputs_gets_no_label(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    import torch

    index, samples, hub_file = setup
    state = torch.load(hub_file.parent / "weights" / "vit-a.pt", weights_only=True)
    torch.save({k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()},
               tmp_path / "nan.pt")
    data = json.loads(hub_file.read_text())
    data["models"].append({"id": "tiny-nan", "arch": "tinylabvit", "checkpoint": str(tmp_path / "nan.pt"),
                           "config": str(hub_file.parent / "arch" / "tinylabvit.json")})
    (hub_file.parent / "hub-nan.json").write_text(json.dumps(data))
    report = label_models(index, load_hub(hub_file.parent / "hub-nan.json"), samples, models=["tiny-nan", "tiny-vit-a"])
    assert report.labeled == ["tiny-vit-a"]
    assert "tiny-nan" in report.failed["tiny-nan"] and "not finite" in report.failed["tiny-nan"]
    assert "\n" not in report.failed["tiny-nan"]
    assert set(labeled_models(index)) == {"tiny-vit-a"}
    assert np.isfinite(np.asarray(load_label(index, "tiny-vit-a").image_embeddings, np.float32)).all()


# ---------------------------------------------------------------------------------------
# The streamed data path: nothing kept per image but the label, the opt-in pixel cache, the temperature


def _label_tree(index: Path) -> list[str]:
    return sorted(p.relative_to(labels_dir(index)).as_posix() for p in labels_dir(index).rglob("*"))


def test_labeling_without_a_pixel_cache_writes_only_the_labels(setup: tuple[Path, Path, Path]) -> None:
    index, samples, hub_file = setup
    images_before = sorted(p.relative_to(samples).as_posix() for p in samples.rglob("*"))
    report = label_models(index, load_hub(hub_file), samples, models=["tiny-vit-a", "tiny-vit-b"], workers=2,
                          batch_size=3)
    assert sorted(report.labeled) == ["tiny-vit-a", "tiny-vit-b"]
    assert len(report.stats) == 1 and report.stats[0].images == 20 and report.stats[0].unreadable == 1
    # One pass for both models, which share a preprocessing configuration.
    assert set(report.stats[0].encode_s) == {"tiny-vit-a", "tiny-vit-b"}
    tops = {p.split("/")[0] for p in _label_tree(index)}
    assert tops == {"tiny-vit-a", "tiny-vit-b", "matrix", next(p.name for p in labels_dir(index).glob("samples-*"))}
    assert not (labels_dir(index) / PIXEL_CACHE).exists()
    assert sorted(p.relative_to(samples).as_posix() for p in samples.rglob("*")) == images_before
    assert report.unreadable == [f"{TENCH}/corrupt.jpg"] and "cannot decode" in report.unreadable_reasons[
        f"{TENCH}/corrupt.jpg"]


def test_pixel_cache_gives_the_same_labels_and_is_read_next_time(setup: tuple[Path, Path, Path],
                                                                 tmp_path: Path) -> None:
    index, samples, hub_file = setup
    plain = tmp_path / "plain"
    shutil.copytree(index, plain)
    hub = load_hub(hub_file)
    label_models(plain, hub, samples, models=["tiny-vit-a"])
    lines: list[str] = []
    report = label_models(index, hub, samples, models=["tiny-vit-a"], pixel_cache=True, notify=lines.append)
    assert report.unreadable == [f"{TENCH}/corrupt.jpg"]
    cached = sorted((labels_dir(index) / PIXEL_CACHE).glob("*.npy"))
    assert len(cached) == 1 and np.load(cached[0], mmap_mode="r").dtype == np.uint8
    assert np.load(cached[0], mmap_mode="r").shape == (21, 32, 32, 3)
    assert len(lines) == 1 and "21 images at 32x32" in lines[0] and str(cached[0]) in lines[0]
    a, b = load_label(plain, "tiny-vit-a"), load_label(index, "tiny-vit-a")
    np.testing.assert_array_equal(np.asarray(a.counts), np.asarray(b.counts))
    np.testing.assert_array_equal(np.asarray(a.image_embeddings), np.asarray(b.image_embeddings))
    # Another model of the same preprocessing reads the cache: nothing more is written or announced.
    lines.clear()
    label_models(index, hub, samples, models=["tiny-vit-b"], pixel_cache=True, notify=lines.append)
    assert not lines and sorted((labels_dir(index) / PIXEL_CACHE).glob("*.npy")) == cached


def test_pixel_cache_is_refused_when_the_disk_is_too_small(setup: tuple[Path, Path, Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # A file system of a few kilobytes cannot be made here; the free space it reports can.
    index, samples, hub_file = setup
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1024, 1024))
    with pytest.raises(InputError, match=r"pixel cache of 21 images at 32x32 needs .* GB free; .*--pixel-cache") as info:
        label_models(index, load_hub(hub_file), samples, models=["tiny-vit-a"], pixel_cache=True)
    assert "\n" not in str(info.value)
    assert not (labels_dir(index) / PIXEL_CACHE).exists() and not labeled_models(index)


def test_labeling_caps_the_temperature_at_100(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    import math

    import torch

    index, samples, hub_file = setup
    state = torch.load(hub_file.parent / "weights" / "vit-a.pt", weights_only=True)
    state["logit_scale"] = torch.tensor(math.log(1000.0))   # learned scale 1000, above CLIP's cap
    torch.save(state, tmp_path / "hot.pt")
    data = json.loads(hub_file.read_text())
    data["models"].append({"id": "tiny-hot", "arch": "tinylabvit", "checkpoint": str(tmp_path / "hot.pt"),
                           "config": str(hub_file.parent / "arch" / "tinylabvit.json")})
    (hub_file.parent / "hub-hot.json").write_text(json.dumps(data))
    label_models(index, load_hub(hub_file.parent / "hub-hot.json"), samples, models=["tiny-hot", "tiny-vit-a"])
    hot, plain = load_label(index, "tiny-hot"), load_label(index, "tiny-vit-a")
    assert hot.manifest["logit_scale"] == 100.0
    # Same weights but the scale: the same embeddings and ranking, logits at the capped scale.
    np.testing.assert_array_equal(np.asarray(hot.topk_nodes), np.asarray(plain.topk_nodes))
    cos = np.asarray(hot.topk_logits[:, 0], np.float32) / 100.0
    assert np.all(np.abs(cos) <= 1.0 + 1e-2)
    np.testing.assert_allclose(np.asarray(hot.topk_logits, np.float32),
                               np.asarray(plain.topk_logits, np.float32) * 100.0 / plain.manifest["logit_scale"],
                               rtol=1e-2, atol=0.1)
