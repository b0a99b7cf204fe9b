"""Accuracy against compute: each method's GFLOPs per image from evaluate's recorded choices, and the plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from mll_index.evaluation.cost import method_gflops, plot_accuracy_gflops
from mll_index.models.flops import ModelCost


def _chosen() -> dict:
    return {"t1": {"mll_k1": {"cat": ["a"], "dog": ["b"]}, "inb": "b", "text_proxy": "a", "oracle_single": "a"},
            "t2": {"mll_k1": {"cat": ["a"], "dog": ["a"]}, "inb": "b", "text_proxy": "a", "oracle_single": "b"}}


def test_an_ensemble_costs_the_sum_of_its_distinct_models() -> None:
    costs = {"a": ModelCost("a", 1.0, 1.0), "b": ModelCost("b", 4.0, 2.0)}
    got = method_gflops(_chosen(), costs)
    assert got == pytest.approx({"mll_k1": (5.0 + 1.0) / 2, "inb": 4.0, "text_proxy": 1.0, "oracle_single": 2.5})
    costs["b"] = ModelCost("b", None, None)     # a method using a model of unknown cost is left out
    assert set(method_gflops(_chosen(), costs)) == {"text_proxy"}


def test_the_plot_is_written(tmp_path: Path) -> None:
    costs = {"a": ModelCost("a", 1.0, 1.0), "b": ModelCost("b", 4.0, 2.0)}
    mean = {"mll_k1": 0.6, "inb": 0.5, "text_proxy": 0.4, "oracle_single": 0.65}
    path = tmp_path / "evaluation_gflops.png"
    plot_accuracy_gflops(mean, _chosen(), costs, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_cli_plots_accuracy_against_gflops(small_world, world_index: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import run_cli

    done = run_cli("evaluate", "--index", str(world_index), "--world-size", "small", "--world-root",
                   str(small_world.root), "-o", str(tmp_path / "eval"), timeout=600)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "eval" / "evaluation_gflops.png").read_bytes()[:4] == b"\x89PNG"
