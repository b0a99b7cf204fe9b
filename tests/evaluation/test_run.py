"""Evaluation against the baselines, and the demo, on the small world."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mll_index.evaluation.baselines import (
    inb_model, oracle_per_class, oracle_single, random_accuracy, split_half_ceiling, split_halves,
)
from mll_index.evaluation.run import COLUMNS, evaluate_tasks, world_eval_tasks, write_evaluation
from mll_index.models.hub import load_hub
from mll_index.selection.selector import open_selector
from tests.conftest import run_cli


def test_oracles_by_hand() -> None:
    labels = np.array([0, 0, 1, 1])
    a = np.eye(2)[[0, 0, 0, 0]]      # always class 0: recall 1, 0
    b = np.eye(2)[[1, 1, 1, 1]]      # always class 1: recall 0, 1
    probs = {"a": a, "b": b}
    assert oracle_single(probs, labels) == ("a", 0.5)
    assert oracle_per_class(probs, labels, 2) == pytest.approx(1.0)
    assert random_accuracy(probs, labels) == pytest.approx(0.5)


def test_split_half_ceiling_gives_each_class_its_own_model() -> None:
    labels = np.repeat([0, 1], 4)
    # a is sure and right on class 0's images, unsure and wrong on class 1's; b the other way round.
    a = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 4)
    b = np.array([[0.4, 0.6]] * 4 + [[0.1, 0.9]] * 4)
    assert oracle_single({"a": a, "b": b}, labels)[1] == pytest.approx(0.5)
    assert split_half_ceiling({"a": a, "b": b}, labels) == pytest.approx(1.0)
    # With one model there is nothing to choose: the ceiling is that model's accuracy.
    assert split_half_ceiling({"a": a}, labels) == pytest.approx(0.5)
    # Scored on the half it did not see: a model right on only one image of each class gets no credit
    # for the images it was chosen on.
    first = split_halves(labels)
    assert first.sum() == 4 and all(first[labels == c].sum() == 2 for c in (0, 1))


def test_evaluation_on_the_small_world(small_world, world_index: Path, embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hub = load_hub(small_world.hub_path)
    result = evaluate_tasks(open_selector(world_index, embedder), hub, world_eval_tasks(small_world),
                            ks=(1, 2, 3), alphas=(0.5, 0.7))
    assert set(result.tasks) == {t.name for t in small_world.tasks}
    for name, row in result.tasks.items():
        assert set(row) == set(COLUMNS) and all(0 <= v <= 1 for v in row.values())
        assert row["oracle_single"] >= max(row["inb"], row["random"], row["text_proxy"]) - 1e-9
        assert row["oracle_per_class"] >= row["oracle_single"] - 1e-9
        assert 0 <= row["split_half_ceiling"] <= 1
        # The world's own accuracy table agrees with what evaluation measured.
        assert row["inb"] == pytest.approx(small_world.accuracy[inb_model(hub)][name], abs=1e-3)
    assert len(result.sweep) == 2 * 2 * 3
    # Every model ran over every task's images through the pipeline: the rates say which side bounds it.
    passes = len(result.stats) // len(result.tasks)     # per task, one per preprocessing configuration
    assert passes >= 1 and len(result.stats) == passes * len(result.tasks)
    assert result.rates["images"] == passes * sum(c["images"] for c in result.chosen.values())
    assert set(result.rates["encode_images_per_s"]) == set(hub.ids) and result.rates["bound_by"] in ("decode", "encode")
    files = write_evaluation(result, tmp_path / "ev")
    assert json.loads(files["json"].read_text())["rates"] == result.rates
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| **mean** |" in files["md"].read_text()


def test_demo_cli(small_world, world_index: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index = tmp_path / "index"
    shutil.copytree(world_index, index)
    shutil.rmtree(index / "labels")
    done = run_cli("demo", "--size", "small", "--world-root", str(small_world.root), "--index", str(index),
                   "-o", str(tmp_path / "demo"), timeout=600)
    assert done.returncode == 0, done.stderr
    assert "| **mean** |" in done.stdout and (tmp_path / "demo" / "evaluation.png").is_file()
    # The demo calibrated the index's rule after labeling and shows it beside the paper's rule; run again
    # on the same labels it keeps the rule it has.
    assert "calibrated rule: fitted on" in done.stdout and "| calibrated_k1 |" in done.stdout
    again = run_cli("demo", "--size", "small", "--world-root", str(small_world.root), "--index", str(index),
                    "-o", str(tmp_path / "demo"), timeout=600)
    assert again.returncode == 0 and "calibrated rule: already current" in again.stdout, again.stderr
    missing = run_cli("demo", "--size", "small", "--index", str(tmp_path / "no-index"))
    assert missing.returncode == 1 and "no node index" in missing.stderr


def test_evaluation_with_published_labels_only(small_world, world_index: Path, embedder,  # type: ignore[no-untyped-def]
                                               tmp_path: Path) -> None:
    import json

    from mll_index.published.store import import_published

    index = tmp_path / "index"
    shutil.copytree(world_index, index)
    shutil.rmtree(index / "labels")
    hub = load_hub(small_world.hub_path)
    task = world_eval_tasks(small_world)[0]
    results = tmp_path / "results.csv"
    results.write_text("name,pretrained,Emoji\n" + "".join(f"{m},,{0.5 + 0.1 * i}\n" for i, m in enumerate(hub.ids)))
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"emoji": list(task.class_names)}))
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"datasets": {"Emoji": {"classnames": "emoji"}}}))
    import_published(index, results, [names], mapping=mapping, embedder=embedder)
    selector = open_selector(index, embedder)
    assert selector.store is None and selector.published is not None
    result = evaluate_tasks(selector, hub, [task], ks=(1,), alphas=(0.7,))
    assert set(result.tasks) == {task.name} and all(0 <= v <= 1 for v in result.tasks[task.name].values())
    assert {s["mode"] for s in result.sweep} == {"restricted"} and len(result.sweep) == 2   # k = 1 and 3
    assert set(result.chosen[task.name]["mll_k1"]) == set(task.class_names)


def test_folder_eval_tasks_reads_one_task_per_subfolder(tmp_path: Path) -> None:
    from mll_index.errors import InputError
    from mll_index.evaluation.run import folder_eval_tasks

    for task, classes in {"zoo": ["tiger", "lion"], "fruit": ["pear", "apple", "fig"]}.items():
        for name in classes:
            (tmp_path / "tasks" / task / name).mkdir(parents=True)
    (tmp_path / "tasks" / "notes.txt").write_text("not a task")
    tasks = folder_eval_tasks(tmp_path / "tasks")
    assert [(t.name, t.class_names, t.folder, t.domain) for t in tasks] == [
        ("fruit", ("apple", "fig", "pear"), tmp_path / "tasks" / "fruit", None),
        ("zoo", ("lion", "tiger"), tmp_path / "tasks" / "zoo", None)]
    with pytest.raises(InputError, match=r"^\S*nowhere: no such folder$"):
        folder_eval_tasks(tmp_path / "nowhere")
