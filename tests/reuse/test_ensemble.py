"""Model reuse: inverse-entropy ensemble by hand, and real predictions on a small world task."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import InputError, ModelLoadError
from mll_index.models.hub import load_hub
from mll_index.reuse.ensemble import (
    combine, entropy_weights, predict_probabilities, reuse_models, scan_task_images, write_predictions,
)
from tests.conftest import run_cli


def test_entropy_weights_in_bits() -> None:
    probs = np.array([[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    w = entropy_weights(probs)
    assert w[0] == pytest.approx(1 / 2) and w[1] == pytest.approx(1.0)
    assert w[2] == pytest.approx(1000.0)  # entropy floored at 1e-3 bits


def test_combine_only_lets_a_class_s_models_vote() -> None:
    a = np.array([[0.6, 0.4]])
    b = np.array([[0.1, 0.9]])
    scores = combine({"a": a, "b": b}, {"x": ["a"], "y": ["a", "b"]}, ["x", "y"])
    wa, wb = entropy_weights(a)[0], entropy_weights(b)[0]
    assert scores[0, 0] == pytest.approx(wa * 0.6)
    assert scores[0, 1] == pytest.approx(wa * 0.4 + wb * 0.9)


def test_reuse_on_a_world_task(small_world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hub = load_hub(small_world.hub_path)
    task = small_world.tasks[0]
    ids = list(hub.ids)
    chosen = {name: [ids[i % len(ids)], ids[(i + 1) % len(ids)]] for i, name in enumerate(task.class_names)}
    result = reuse_models(hub, chosen, small_world.task_dir(task.name), task=task.name)
    images = scan_task_images(small_world.task_dir(task.name), task.class_names)
    probs = predict_probabilities(hub, ids, images, task.class_names)
    expected = combine(probs, chosen, task.class_names).argmax(1)
    assert np.array_equal(result.predicted, expected)
    assert result.accuracy == pytest.approx(float((expected == images.labels).mean()))
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"pred.{fmt}"
        write_predictions(result, out, fmt)
        rows = (list(csv.DictReader(out.open())) if fmt == "csv"
                else [json.loads(line) for line in out.read_text().splitlines()])
        assert len(rows) == len(images.paths) and rows[0]["label"] in task.class_names


def test_flat_folder_and_unreadable_images(small_world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hub = load_hub(small_world.hub_path)
    task = small_world.tasks[0]
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, p in enumerate(sorted(small_world.task_dir(task.name).rglob("*.png"))[:6]):
        shutil.copy(p, flat / f"{i}.png")
    (flat / "broken.png").write_bytes(b"not an image")
    chosen = {name: [hub.ids[0]] for name in task.class_names}
    result = reuse_models(hub, chosen, flat)
    assert result.accuracy is None and len(result.predictions) == 6
    assert result.images.unreadable == ["broken.png"]


def test_reuse_errors(small_world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hub = load_hub(small_world.hub_path)
    task = small_world.tasks[0]
    with pytest.raises(InputError, match="unknown model 'nope'"):
        reuse_models(hub, {n: ["nope"] for n in task.class_names}, small_world.task_dir(task.name))
    with pytest.raises(InputError, match="not classes of the task"):
        reuse_models(hub, {"a": [hub.ids[0]], "b": [hub.ids[0]]}, small_world.task_dir(task.name))
    with pytest.raises(InputError, match="no such image folder"):
        reuse_models(hub, {"a": [hub.ids[0]]}, tmp_path / "none")
    with pytest.raises(InputError, match="no images"):
        reuse_models(hub, {"a": [hub.ids[0]]}, tmp_path)


def test_reuse_cli(small_world, world_index: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    task = small_world.tasks[0]
    selection = tmp_path / "sel.json"
    done = run_cli("select", *task.class_names, "--index", str(world_index), "-k", "2", "-o", str(selection))
    assert done.returncode == 0, done.stderr
    out = tmp_path / "pred.csv"
    done = run_cli("reuse", str(small_world.task_dir(task.name)), "--hub", str(small_world.hub_path),
                   "--selection", str(selection), "-o", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert 0.0 <= summary["accuracy"] <= 1.0 and out.is_file()
    direct = run_cli("reuse", str(small_world.task_dir(task.name)), "--hub", str(small_world.hub_path),
                     "--names", ",".join(task.class_names), "--index", str(world_index), "-k", "2")
    assert direct.returncode == 0 and json.loads(direct.stdout)["accuracy"] == summary["accuracy"]
    bad = run_cli("reuse", str(small_world.task_dir(task.name)), "--hub", str(small_world.hub_path),
                  "--selection", str(tmp_path / "missing.json"))
    assert bad.returncode == 1 and "no such file" in bad.stderr and "Traceback" not in bad.stderr


# ---------------------------------------------------------------------------------------
# Models that cannot vote: outputs that are not finite, prompts a tokenizer cannot tell apart


def nan_checkpoint(good: Path, out: Path) -> Path:
    """A copy of a tiny checkpoint with every floating weight set to NaN (a damaged checkpoint)."""
    import torch

    state = torch.load(good, weights_only=True)
    torch.save({k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()}, out)
    return out


@pytest.fixture(scope="module")
def tiny_reuse_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub of a tiny ViT (77 tokens), the same with NaN weights, and one that reads 8 tokens."""
    from tests.tinyclip import make_tiny_checkpoint, write_tiny_arch

    root = tmp_path_factory.mktemp("reuse-hub")
    arch = write_tiny_arch(root / "arch", "tinyreusevit")
    short = write_tiny_arch(root / "arch", "tinyreuseshort")
    config = json.loads(short.read_text())
    config["text_cfg"]["context_length"] = 8
    short.write_text(json.dumps(config))
    make_tiny_checkpoint(arch, root / "good.pt", seed=1)
    nan_checkpoint(root / "good.pt", root / "nan.pt")
    make_tiny_checkpoint(short, root / "short.pt", seed=2)
    models = [{"id": "tiny-good", "arch": arch.stem, "checkpoint": "good.pt", "config": f"arch/{arch.name}"},
              {"id": "tiny-nan", "arch": arch.stem, "checkpoint": "nan.pt", "config": f"arch/{arch.name}"},
              {"id": "tiny-short", "arch": short.stem, "checkpoint": "short.pt", "config": f"arch/{short.name}"}]
    (root / "hub.json").write_text(json.dumps({"name": "tiny-reuse", "models": models}))
    return root / "hub.json"


CLASSES = ["tench", "goldfish", "laptop"]


@pytest.fixture(scope="module")
def class_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tinyclip import make_sample_images

    root = tmp_path_factory.mktemp("reuse-images")
    make_sample_images(root, CLASSES, per_node=3)
    return root


def test_a_nan_model_is_left_out_of_the_vote(tiny_reuse_hub: Path, class_images: Path) -> None:
    hub = load_hub(tiny_reuse_hub)
    chosen = {"tench": ["tiny-nan", "tiny-good"], "goldfish": ["tiny-good"], "laptop": ["tiny-good", "tiny-nan"]}
    result = reuse_models(hub, chosen, class_images)
    assert result.left_out.keys() == {"tiny-nan"} and "not finite" in result.left_out["tiny-nan"]
    assert any("tiny-nan" in w and "left out" in w for w in result.warnings)
    assert result.models == {c: ["tiny-good"] for c in CLASSES}
    alone = reuse_models(hub, {c: ["tiny-good"] for c in CLASSES}, class_images)
    assert np.array_equal(result.predicted, alone.predicted) and np.isfinite(result.scores).all()
    assert result.summary()["left_out"] == result.left_out


def test_a_class_whose_only_model_is_nan_stops_the_run(tiny_reuse_hub: Path, class_images: Path) -> None:
    hub = load_hub(tiny_reuse_hub)
    with pytest.raises(ModelLoadError, match=r"class 'goldfish'.*tiny-nan.*not finite"):
        reuse_models(hub, {"tench": ["tiny-good"], "goldfish": ["tiny-nan"], "laptop": ["tiny-good"]}, class_images)


def test_combine_refuses_probabilities_that_are_not_finite() -> None:
    good, bad = np.array([[0.6, 0.4]]), np.array([[np.nan, np.nan]])
    with pytest.raises(ModelLoadError, match="'b'"):
        combine({"a": good, "b": bad}, {"x": ["a"], "y": ["b"]}, ["x", "y"])


def test_prompts_a_tokenizer_makes_identical_are_refused(tiny_reuse_hub: Path, tmp_path: Path) -> None:
    from tests.tinyclip import make_sample_images

    hub = load_hub(tiny_reuse_hub)
    names = ["striped sea creature seen near the reef at dawn", "striped sea creature seen near the reef at dusk"]
    make_sample_images(tmp_path, names, per_node=2)
    chosen = {n: ["tiny-short"] for n in names}
    with pytest.raises(InputError, match=r"tiny-short.*8 tokens.*identical prompts.*--force") as info:
        reuse_models(hub, chosen, tmp_path)
    assert names[0] in str(info.value) and names[1] in str(info.value) and "\n" not in str(info.value)
    forced = reuse_models(hub, chosen, tmp_path, force=True)
    assert len(forced.warnings) == 1 and "tiny-short" in forced.warnings[0]
    # A 77-token model reads both names whole: nothing to say.
    assert not reuse_models(hub, {n: ["tiny-good"] for n in names}, tmp_path).warnings


def test_a_cut_name_is_named(tiny_reuse_hub: Path) -> None:
    from mll_index.models.hub import load_model
    from mll_index.models.zeroshot import check_prompts

    loaded = load_model(load_hub(tiny_reuse_hub).get("tiny-short"))
    check = check_prompts(loaded, ["cat", "a striped sea creature seen near the reef"])
    assert check.context_length == 8 and check.cut == ("a striped sea creature seen near the reef",)
    assert check.identical == ()
    assert check_prompts(loaded, ["cat", "dog"]).ok


def test_prompts_use_the_lemma_of_a_plural_name() -> None:
    from mll_index.models.zeroshot import lemma_of, prompt_names

    lemmas = {"apples": lemma_of("apple.n.01"), "Red bananas": "banana", "tench": "tench", "geese": "goose",
              "glass": "glass", "boxes": "box"}
    assert prompt_names(["apples", "Red bananas", "tench", "geese", "glass", "boxes", "pears"], lemmas) == \
        ["apple", "Red banana", "tench", "goose", "glass", "box", "pears"]
    # Never two classes on one prompt: "apple" is a class of its own.
    assert prompt_names(["apple", "apples"], {"apple": "apple", "apples": "apple"}) == ["apple", "apples"]
    assert lemma_of("ice_cream.n.01") == "ice cream"


def test_clip_tokens_without_torch_equal_open_clip_s() -> None:
    import open_clip

    from mll_index.models.zeroshot import clip_token_rows

    texts = ["a photo of a golden retriever.", "Café &amp; naïve  CRÈME brûlée", "it's 2024, don't panic!!",
             "🍎 apple", "日本語のテキスト", "striped sea creature seen near the reef at dawn " * 12]
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    for length in (77, 16, 8):
        assert np.array_equal(clip_token_rows(texts, length), np.asarray(tokenizer(texts, context_length=length)))


def test_reuse_cli_refuses_identical_prompts_unless_forced(tiny_reuse_hub: Path, tmp_path: Path) -> None:
    from tests.tinyclip import make_sample_images

    names = ["striped sea creature seen near the reef at dawn", "striped sea creature seen near the reef at dusk"]
    images = tmp_path / "images"
    make_sample_images(images, names, per_node=2)
    selection = tmp_path / "sel.json"
    selection.write_text(json.dumps({"task": "reef", "classes": [
        {"name": n, "models": [{"model": "tiny-short"}], "nodes": []} for n in names]}))
    args = ("reuse", str(images), "--hub", str(tiny_reuse_hub), "--selection", str(selection))
    refused = run_cli(*args)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    # (the progress bar also writes to stderr)
    lines = [line for line in refused.stderr.strip().splitlines() if line.startswith("mll-index:")]
    assert len(lines) == 1 and lines[0].startswith("mll-index: error: ")
    assert "tiny-short" in lines[0] and names[0] in lines[0] and names[1] in lines[0] and "--force" in lines[0]
    forced = run_cli(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert any(line.startswith("mll-index: warning: ") and "identical prompts" in line
               for line in forced.stderr.splitlines())
    assert json.loads(forced.stdout)["warnings"]


# ---------------------------------------------------------------------------------------
# The streamed data path: workers, unreadable images met by a worker, the caller's records left alone


def test_two_workers_predict_what_zero_workers_do(tiny_reuse_hub: Path, class_images: Path, tmp_path: Path) -> None:
    from mll_index.images.decoding import open_image
    from mll_index.reuse.ensemble import predict

    hub = load_hub(tiny_reuse_hub)
    folder = tmp_path / "task"
    shutil.copytree(class_images, folder)
    # An unreadable file in the middle of the stream (second class, between readable images).
    (folder / "goldfish" / "1b.png").write_bytes(b"not an image")
    images = scan_task_images(folder, CLASSES)
    before = (list(images.paths), images.labels.copy(), list(images.unreadable))
    inline = predict(hub, ["tiny-good"], images, CLASSES, batch_size=2, workers=0)
    pooled = predict(hub, ["tiny-good"], images, CLASSES, batch_size=2, workers=2)
    # The caller's record is not modified: each result carries a new one.
    assert (images.paths, images.unreadable) == (before[0], before[2]) and np.array_equal(images.labels, before[1])
    for got in (inline, pooled):
        assert got.images is not images and got.images.unreadable == ["goldfish/1b.png"]
        assert len(got.images.paths) == len(images.paths) - 1 and "goldfish/1b.png" not in got.images.paths
    with pytest.raises(InputError) as info:
        open_image(folder / "goldfish" / "1b.png")
    assert pooled.images.reasons["goldfish/1b.png"] == info.value.reason  # type: ignore[attr-defined]
    assert pooled.images.paths == inline.images.paths
    assert np.array_equal(pooled.images.labels, inline.images.labels)
    np.testing.assert_allclose(pooled.probs["tiny-good"], inline.probs["tiny-good"], atol=1e-6)
    assert pooled.stats[0].images == len(pooled.images.paths) and pooled.stats[0].unreadable == 1


def test_reuse_reports_decode_and_encode_rates(tiny_reuse_hub: Path, class_images: Path) -> None:
    hub = load_hub(tiny_reuse_hub)
    result = reuse_models(hub, {c: ["tiny-good"] for c in CLASSES}, class_images, workers=1)
    rates = result.summary()["rates"]
    assert rates["images"] == len(result.images.paths) and rates["unreadable"] == 0
    assert set(rates["encode_images_per_s"]) == {"tiny-good"} and rates["bound_by"] in ("decode", "encode")
    assert "decode_images_per_s" in rates
