"""`calibrate` (selection/calibrate.py) and the calibrated rule `select` applies, on fake labels in a real index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import IndexFormatError, InputError
from mll_index.selection.calibrate import calibrate_rule
from mll_index.selection.calibrated_rule import check_rule, has_rule, read_rule
from mll_index.selection.selector import open_selector, select_models
from mll_index.selection.task import make_task
from mll_index.selection.vote_search import search_votes
from tests.conftest import run_cli
from tests.fakelabels import fake_label

WNIDS = ["n02084071", "n02085620", "n02099601", "n02106662", "n02110958", "n01440764", "n01443537", "n03642806",
         "n02129604", "n07873807", "n02012849", "n02013706"]


def _labeled(index: Path, models: int = 3, per_node: int = 4) -> Path:
    for m in range(models):
        fake_label(index, f"model-{m}", WNIDS, per_node=per_node, seed=m)
    return index


def test_calibrate_stores_a_rule_select_applies(index_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    index = _labeled(index_copy)
    report = calibrate_rule(index, tasks=20, seed=1)
    assert has_rule(index) and report["pseudo_tasks"] == 20 and report["held_out_tasks"] == 4
    assert 2 <= report["classes"]["min"] <= report["classes"]["max"] <= len(WNIDS)
    assert 0.0 <= report["held_out"]["mae"] <= 1.0
    rule = read_rule(index)
    assert rule.models == ("model-0", "model-1", "model-2") and check_rule(index, checksums=True) == []
    sel = open_selector(index, embedder)
    task = make_task(["tench", "goldfish", "laptop"], "t")
    calibrated = select_models(sel, task, k=2, mode="restricted", explain=True)
    assert calibrated.rule == "calibrated"
    assert all(len(c.models) == 2 and len({m.model for m in c.models}) == 2 for c in calibrated.classes)
    assert "features" in next(iter(calibrated.classes[0].explain["models"].values()))
    assert select_models(sel, task, k=2, mode="restricted", rule="mll").rule == "mll"
    with pytest.raises(InputError, match="restricted"):
        select_models(sel, task, mode="counts", rule="calibrated")
    assert select_models(sel, task, mode="counts").rule == "mll"      # auto: the paper's rule, said so


def test_a_model_added_makes_the_rule_stale_until_calibrated_again(index_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    index = _labeled(index_copy)
    calibrate_rule(index, tasks=10)
    fake_label(index, "model-new", WNIDS, per_node=4, seed=9)
    task = make_task(["tench", "laptop"], "t")
    with pytest.raises(InputError, match=r"model-new.*mll-index calibrate"):
        select_models(open_selector(index, embedder), task, mode="restricted")
    assert select_models(open_selector(index, embedder), task, rule="mll").rule == "mll"
    calibrate_rule(index, tasks=10)
    assert select_models(open_selector(index, embedder), task, mode="restricted").rule == "calibrated"


def test_a_damaged_rule_is_named_and_refused(index_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    index = _labeled(index_copy)
    calibrate_rule(index, tasks=10)
    rule_file = index / "selection_rule" / "rule.json"
    rule_file.write_text(rule_file.read_text()[:-20])
    assert any("rule.json" in line and "mll-index calibrate" in line for line in check_rule(index, checksums=True))
    with pytest.raises(IndexFormatError, match="mll-index calibrate"):
        select_models(open_selector(index, embedder), make_task(["tench", "laptop"], "t"), mode="restricted")


def test_a_rule_whose_manifest_is_gone_is_named_and_refused_not_skipped(index_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    index = _labeled(index_copy)
    calibrate_rule(index, tasks=10)
    (index / "selection_rule" / "manifest.json").unlink()
    assert any("manifest.json: missing" in line for line in check_rule(index))
    with pytest.raises(IndexFormatError, match="manifest.json: missing.*mll-index calibrate"):
        select_models(open_selector(index, embedder), make_task(["tench", "laptop"], "t"), mode="restricted")
    # The paper's rule, asked for, still answers.
    select_models(open_selector(index, embedder), make_task(["tench", "laptop"], "t"), mode="restricted", rule="mll")


@pytest.mark.parametrize("models, per_node, minimum", [(1, 4, "at least 2 labeled models"),
                                                       (3, 2, "4 or more sample images")])
def test_labels_that_cannot_give_pseudo_tasks(index_copy: Path, models: int, per_node: int, minimum: str) -> None:
    index = _labeled(index_copy, models, per_node)
    with pytest.raises(InputError, match=minimum):
        calibrate_rule(index, tasks=10)
    assert not has_rule(index)


def test_rule_calibrated_without_a_rule_says_how_to_make_one(index_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    index = _labeled(index_copy)
    with pytest.raises(InputError, match="mll-index calibrate"):
        select_models(open_selector(index, embedder), make_task(["tench", "laptop"], "t"), rule="calibrated")


def test_search_votes_gives_each_class_the_model_that_wins_it() -> None:
    # Model 0 is sure and right on class 0 but says class 0 for class 1's images too; model 1 is right on both,
    # less surely. Alone, model 1 scores best; class 0's own vote gains nothing from model 0.
    true = np.array([0, 0, 1, 1])
    m0 = np.array([[0.95, 0.05], [0.95, 0.05], [0.9, 0.1], [0.9, 0.1]])
    m1 = np.array([[0.6, 0.4], [0.6, 0.4], [0.4, 0.6], [0.4, 0.6]])
    votes = search_votes(np.stack([m0, m1]), true, k=1)
    assert votes == [[1], [1]]
    assert [len(v) for v in search_votes(np.stack([m0, m1]), true, k=2)] == [2, 2]


def test_calibrate_command(index_copy: Path) -> None:
    index = _labeled(index_copy)
    done = run_cli("calibrate", "--index", str(index), "--tasks", "10")
    assert done.returncode == 0, done.stderr
    assert "calibrated the selection rule" in done.stdout and has_rule(index)
    bad = run_cli("calibrate", "--index", str(index / "missing"), "--tasks", "10")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
