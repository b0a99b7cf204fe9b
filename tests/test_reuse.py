"""Model reuse: inverse-entropy ensemble by hand, and real predictions on a small world task."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import InputError
from mll_index.hub import load_hub
from mll_index.reuse import (combine, entropy_weights, predict_probabilities, reuse_models, scan_task_images,
                             write_predictions)
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
