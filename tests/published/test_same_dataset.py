"""The same-dataset rule: a task whose class list is one of the table's datasets is ranked by that column."""

from __future__ import annotations

import numpy as np

from mll_index.published.rule import PublishedRule, rank_task, standardise
from mll_index.published.same_dataset import (
    FLOOR, column_scores, dataset_overlap, nearest_dataset, same_dataset_threshold,
)


def _unit(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    v = rng.normal(size=(n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_overlap_needs_both_directions() -> None:
    rng = np.random.default_rng(0)
    bench = _unit(rng, 6)
    class_dataset = np.array([0, 0, 0, 1, 1, 1])
    whole = dataset_overlap(bench[:3] @ bench.T, class_dataset, 2)
    assert whole[0] == 1.0 and whole[1] < 0.9
    # Two of dataset 0's three classes: every task class is in it, but a third of it is missing from the task.
    part = dataset_overlap(bench[:2] @ bench.T, class_dataset, 2)
    assert part[0] < whole[0]
    # Dataset 0's classes and more: the task's extra class has no twin there.
    more = dataset_overlap(np.vstack([bench[:3], bench[3:4]]) @ bench.T, class_dataset, 2)
    assert more[0] < whole[0]
    assert np.isneginf(dataset_overlap(bench[:3] @ bench.T, class_dataset, 3)[2])


def test_ties_go_to_the_task_text_then_to_table_order() -> None:
    overlap = np.array([1.0, 1.0, 0.5])
    visible = np.ones(3, bool)
    assert nearest_dataset(overlap, visible, None, ["a", "b", "c"], FLOOR).name == "a"
    assert nearest_dataset(overlap, visible, np.array([0.1, 0.6, 0.9]), ["a", "b", "c"], FLOOR).name == "b"
    hidden = nearest_dataset(overlap, np.array([False, True, True]), None, ["a", "b", "c"], FLOOR)
    assert hidden.name == "b" and hidden.used
    low = nearest_dataset(np.array([0.5, 0.4, 0.3]), visible, None, ["a", "b", "c"], FLOOR)
    assert low.name == "a" and not low.used
    assert nearest_dataset(overlap, np.zeros(3, bool), None, ["a", "b", "c"], FLOOR) is None


def test_a_task_that_is_a_dataset_is_ranked_by_its_column() -> None:
    # Model 2 is weak in general and on dataset 0, but best on dataset 1; the task is dataset 1.
    acc = np.array([[0.9, 0.3, 0.8], [0.8, 0.4, 0.7], [0.2, 0.9, 0.1], [0.5, 0.5, 0.5]])
    z = standardise(acc)
    similarity = np.array([[0.2, 1.0, 0.3], [0.1, 1.0, 0.2]])
    general = rank_task(z, ["ImageNet 1k", "b", "c"], np.ones(3, bool), similarity, None, PublishedRule(0.0, 0.0))
    assert int(np.argmax(general.scores.mean(axis=1))) == 0 and general.nearest is None
    own = rank_task(z, ["ImageNet 1k", "b", "c"], np.ones(3, bool), similarity, None, PublishedRule(0.0, 0.0),
                    overlap=np.array([0.3, 0.97, 0.2]))
    assert int(np.argmax(own.scores.mean(axis=1))) == 2
    assert own.nearest.name == "b" and own.nearest.used and own.reasons == (None, None)
    below = rank_task(z, ["ImageNet 1k", "b", "c"], np.ones(3, bool), similarity, None, PublishedRule(0.0, 0.0),
                      overlap=np.array([0.3, 0.8, 0.2]))
    np.testing.assert_array_equal(below.scores, general.scores)
    assert below.nearest.name == "b" and not below.nearest.used


def test_a_model_without_a_figure_on_the_column_ranks_last() -> None:
    z = standardise(np.array([[0.1, np.nan], [0.5, 0.4], [0.9, 0.9]]))
    scores = column_scores(z, 1)
    assert int(np.argmin(scores)) == 0 and np.isfinite(scores).all()


def test_threshold_rises_above_a_misleading_twin() -> None:
    rng = np.random.default_rng(1)
    shared = _unit(rng, 4)
    own = _unit(rng, 4)
    # Datasets 0 and 1 have the same class list, dataset 2 another; ImageNet-like strength favours model 0.
    vectors = np.vstack([shared, shared, own])
    class_dataset = np.repeat([0, 1, 2], 4)
    strength = np.array([1.0, 0.0, -1.0])
    agree = np.array([[0.9, 0.9, 0.5], [0.5, 0.5, 0.9], [0.1, 0.1, 0.2]])
    t, why = same_dataset_threshold(agree, ["a", "b", "c"], ["a", "b", "c"], vectors, class_dataset, strength)
    assert t == FLOOR and "none of their columns misled" in why
    # The twins disagree: ranking 0 by 1's column picks model 1, worse on 0 than strength's model 0.
    misled = np.array([[0.9, 0.2, 0.5], [0.5, 0.9, 0.9], [0.1, 0.1, 0.2]])
    t, why = same_dataset_threshold(misled, ["a", "b", "c"], ["a", "b", "c"], vectors, class_dataset, strength)
    assert t > 0.99 - 1e-9 and "a with b" in why
    # One family: never compared.
    t, _ = same_dataset_threshold(misled, ["a", "b", "c"], ["f", "f", "c"], vectors, class_dataset, strength)
    assert t == FLOOR
