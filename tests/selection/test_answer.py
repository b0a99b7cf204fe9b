"""Select's last step: each class's top k (within a budget), predicted accuracy, the Pareto list; and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mll_index.errors import InputError
from mll_index.selection.answer import (
    ChosenModels, answer_tasks, complete_selection, internal_k, read_selection_file, select_for_reuse, selection_costs,
)
from mll_index.selection.budget import Budget
from mll_index.selection.selector import open_selector, select_models
from mll_index.selection.settings import SelectionSettings
from mll_index.selection.task import make_task
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def selector(world_index: Path, embedder):  # type: ignore[no-untyped-def]
    return open_selector(world_index, embedder)


def test_without_a_budget_the_answer_is_the_plain_selection(selector) -> None:  # type: ignore[no-untyped-def]
    task = make_task(["tiger", "lion", "banana"], "t")
    plain = select_models(selector, task, k=2, ranking_size=2).to_dict()
    full = select_models(selector, task, k=internal_k(selector, 2, Budget(), False), ranking_size=None)
    got = complete_selection(selector, task, full, k=2, ranking_size=2)
    predicted = got.pop("predicted_accuracy")
    about = got.pop("predicted_accuracy_about")
    classes = [c.pop("predicted_accuracy") for c in got["classes"]]
    assert got == plain
    assert 0 <= predicted["low"] <= predicted["estimate"] <= predicted["high"] <= 1 and len(classes) == 3
    # Three classes: fewer than the calibration's tasks had, and the answer says so.
    assert "an extrapolation" in about and "3 classes (calibrated on 10 to 60)" in about


def test_a_budget_keeps_the_ensemble_within_it(selector) -> None:  # type: ignore[no-untyped-def]
    task = make_task(["tiger", "lion", "banana"], "t")
    costs = selection_costs(selector)
    smallest = min(c.gflops for c in costs.values())
    budget = Budget(budget_gflops=smallest * 1.5)      # room for one model only
    full = select_models(selector, task, k=internal_k(selector, 3, budget, True), ranking_size=None)
    got = complete_selection(selector, task, full, k=3, ranking_size=None, budget=budget, costs=costs, pareto=True)
    assert len(got["budget"]["models"]) == 1 and got["budget"]["gflops"] <= budget.budget_gflops
    assert all([m["model"] for m in c["models"]] == got["budget"]["models"] for c in got["classes"])
    # One model where 3 were asked for: the answer says so, naming the budget and the classes.
    short = [w for w in got["warnings"] if "fewer than the 3 models asked for" in w]
    assert len(short) == 1 and f"--budget-gflops {budget.budget_gflops:g}" in short[0] and "'banana' 1" in short[0]
    front = got["pareto"]
    assert front and [p["gflops"] for p in front] == sorted(p["gflops"] for p in front)
    with pytest.raises(InputError, match="no model meets the budget.*the smallest is"):
        complete_selection(selector, task, full, k=3, ranking_size=None, budget=Budget(max_gflops=smallest / 10),
                           costs=costs)


@pytest.mark.parametrize("budget", [Budget(max_params=1e6), Budget(max_gflops=1e6), Budget(budget_gflops=1e6)])
def test_a_budget_every_model_meets_changes_nothing(selector, budget: Budget) -> None:  # type: ignore[no-untyped-def]
    task = make_task(["tiger", "lion", "banana"], "t")
    full = select_models(selector, task, k=internal_k(selector, 3, budget, False), ranking_size=None)
    plain = complete_selection(selector, task, full, k=3, ranking_size=None)
    got = complete_selection(selector, task, full, k=3, ranking_size=None, budget=budget,
                             costs=selection_costs(selector))
    assert [c["models"] for c in got["classes"]] == [c["models"] for c in plain["classes"]]
    assert all(len(c["models"]) == min(3, len(selector.store.model_ids)) for c in got["classes"])
    assert got["warnings"] == plain["warnings"]


def test_select_cli_budget_and_prediction(world_index: Path) -> None:
    done = run_cli("select", "tiger", "lion", "--index", str(world_index))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert set(answer["predicted_accuracy"]) == {"estimate", "low", "high"}
    assert all("predicted_accuracy" in c for c in answer["classes"]) and len(answer["classes"][0]["models"]) == 1
    done = run_cli("select", "tiger", "lion", "--index", str(world_index), "-k", "2", "--budget-gflops", "1",
                   "--max-params", "1000", "--pareto")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["budget"]["gflops"] <= 1 and answer["pareto"]
    bad = run_cli("select", "tiger", "lion", "--index", str(world_index), "--max-gflops", "1e-9")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "no model meets the budget (--max-gflops 1e-09); the smallest is" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flag,value", [("--max-params", "nan"), ("--max-gflops", "NaN"), ("--budget-gflops", "inf"),
                                        ("--budget-gflops", "1e400")])
def test_select_cli_refuses_budgets_that_are_not_finite(world_index: Path, flag: str, value: str) -> None:
    done = run_cli("select", "tiger", "--index", str(world_index), flag, value)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and f"'{flag}'" in done.stderr and "not a finite number" in done.stderr


# ---------------------------------------------------------------------------------------
# What reuse predicts with: a selection file read back, or a selection made for it


def test_a_selection_file_reads_back_as_reuse_chose_it_here(selector, world_index: Path,  # type: ignore[no-untyped-def]
                                                            tmp_path: Path) -> None:
    task = make_task(["tiger", "lion", "banana"], "cats")
    settings = SelectionSettings(k=2)
    answer = answer_tasks(selector, [task], settings)[0]
    path = tmp_path / "sel.json"
    path.write_text(json.dumps(answer, indent=1))
    read = read_selection_file(path)
    assert read.task == "cats" and read.warnings == ()
    assert read.models == {c["name"]: [m["model"] for m in c["models"]] for c in answer["classes"]}
    assert read.lemmas and all("_" not in lemma and "." not in lemma for lemma in read.lemmas.values())
    here = select_for_reuse(world_index, task, settings)
    assert isinstance(here, ChosenModels)
    assert (here.models, here.lemmas, here.task) == (read.models, read.lemmas, read.task)
    assert all(line.startswith("mll-index: warning: ") for line in here.warnings)


def test_a_selection_file_without_task_or_nodes(tmp_path: Path) -> None:
    path = tmp_path / "sel.json"
    path.write_text(json.dumps({"classes": [{"name": "cat", "models": [{"model": "m1"}, {"model": "m2"}]},
                                            {"name": "ice cream", "models": [{"model": "m2"}],
                                             "nodes": [{"synset": "ice_cream.n.01"}]}]}))
    assert read_selection_file(path) == ChosenModels({"cat": ["m1", "m2"], "ice cream": ["m2"]},
                                                     {"ice cream": "ice cream"}, "task")


@pytest.mark.parametrize("data", [{"task": "t"}, {"classes": [{"models": []}]}, {"classes": [{"name": "a"}]},
                                  [1, 2], {"classes": [{"name": "a", "models": ["m1"]}]}])
def test_a_file_that_is_not_a_selection_is_refused_naming_it(tmp_path: Path, data: object) -> None:
    path = tmp_path / "not-a-selection.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"not-a-selection\.json: not a selection written by `mll-index select` \("):
        read_selection_file(path)


def test_a_missing_selection_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing.json"):
        read_selection_file(tmp_path / "missing.json")
