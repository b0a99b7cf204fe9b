"""The published ranking rule on small tables built here: standardising, neighbours, fallback, calibration."""

from __future__ import annotations

import numpy as np
import pytest

from mll_index.published.rule import (
    NEIGHBOUR_WEIGHTS, QUALIFY_LEVEL, PublishedRule, calibrate_rule, dataset_similarity, hidden_mask, neighbour_weights,
    rank_task, sign_test_p, standardise, strength_of, text_similarity,
)


def _unit(rows: list[list[float]]) -> np.ndarray:
    v = np.asarray(rows, np.float64)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_standardise_keeps_missing_figures_and_flat_columns() -> None:
    acc = np.array([[0.2, 0.5, np.nan], [0.4, 0.5, 0.9], [0.6, 0.5, 0.7]])
    z = standardise(acc)
    assert z[:, 0] == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-4)
    assert (z[:, 1] == 0).all()                                  # no spread: no evidence either way
    assert np.isnan(z[0, 2]) and z[1, 2] == pytest.approx(1.0) and z[2, 2] == pytest.approx(-1.0)


def test_neighbour_weights_are_a_softmax_over_the_visible_datasets() -> None:
    similarity = np.array([[0.9, 0.8, 0.2]])
    visible = np.array([True, True, False])
    combined, w = neighbour_weights(similarity, None, visible, 0.0)
    assert w.sum() == pytest.approx(1.0) and w[0, 2] == 0 and np.isneginf(combined[0, 2])
    assert w[0, 0] / w[0, 1] == pytest.approx(np.exp(0.1 / 0.02))
    # The domain and description pull a dataset up: equal class similarity, the text decides.
    _, w = neighbour_weights(np.array([[0.5, 0.5, 0.5]]), np.array([0.9, 0.1, 0.1]), np.ones(3, bool), 1.0)
    assert w[0, 0] > 0.99


def test_dataset_similarity_takes_each_datasets_closest_class() -> None:
    sims = np.array([[0.1, 0.7, 0.3, 0.2]])
    assert dataset_similarity(sims, np.array([0, 0, 1, 1]), 3)[0, :2] == pytest.approx([0.7, 0.3])
    assert np.isneginf(dataset_similarity(sims, np.array([0, 0, 1, 1]), 3)[0, 2])
    assert text_similarity([None, None], [None, None]) is None
    t = text_similarity([np.array([1.0, 0.0]), None], [_unit([[1, 0], [0, 1]]), None])
    assert t == pytest.approx([1.0, 0.0])


# Three models; dataset "near" ranks C first, "far" and ImageNet rank A first.
DATASETS = ["ImageNet 1k", "near", "far"]
ACC = np.array([[0.80, 0.30, 0.90],    # A: strongest in general
                [0.70, 0.50, 0.50],
                [0.60, 0.90, 0.40]])   # C: best on "near"
MODELS = ["A", "B", "C"]


def test_a_clear_neighbour_moves_the_choice_off_general_strength() -> None:
    z = standardise(ACC)
    visible = np.ones(3, bool)
    strength, source = strength_of(z, DATASETS, visible)
    assert source == "ImageNet 1k" and int(np.argmax(strength)) == 0
    similarity = np.array([[0.2, 0.9, 0.3]])               # one class, much like "near"
    ranking = rank_task(z, DATASETS, visible, similarity, None, PublishedRule(1.0, 0.0), MODELS)
    assert int(np.argmax(ranking.scores[:, 0])) == 2 and ranking.reasons == (None,) and not ranking.fallback
    assert ranking.weights[1] > 0.99


def test_a_class_like_no_dataset_falls_back_to_general_strength_and_says_why() -> None:
    z = standardise(ACC)
    similarity = np.array([[0.2, 0.9, 0.3], [0.1, 0.3, 0.2]])   # the second class resembles nothing
    ranking = rank_task(z, DATASETS, np.ones(3, bool), similarity, None, PublishedRule(1.0, 0.0), MODELS)
    assert ranking.reasons[0] is None and "best similarity 0.30 < 0.45" in ranking.reasons[1]
    assert ranking.scores[:, 1] == pytest.approx(z[:, 0]) and not ranking.fallback
    every = rank_task(z, DATASETS, np.ones(3, bool), similarity[1:], None, PublishedRule(1.0, 0.0), MODELS)
    assert every.fallback


def test_neighbours_that_contradict_the_weighted_mean_fall_back() -> None:
    # Four equally similar neighbours: C wins big on one, loses narrowly to A on three, so C leads
    # the weighted mean while A beats it on 3/4 of the weight.
    datasets = ["ImageNet 1k", "n1", "n2", "n3", "n4"]
    acc = np.array([[0.9, 0.10, 0.52, 0.52, 0.52],
                    [0.5, 0.50, 0.10, 0.10, 0.10],
                    [0.3, 0.99, 0.50, 0.50, 0.50]])
    z = standardise(acc)
    ranking = rank_task(z, datasets, np.ones(5, bool), np.array([[0.0, 0.9, 0.9, 0.9, 0.9]]), None,
                        PublishedRule(1.0, 0.0), ["A", "B", "C"])
    assert ranking.fallback and "neighbours contradict the rule: C" in ranking.reasons[0]
    assert int(np.argmax(ranking.scores[:, 0])) == 0


def test_hidden_datasets_and_their_families_are_out_of_reach() -> None:
    mask = hidden_mask(["a", "a2", "b"], ["fa", "fa", "b"], ["a"])
    assert mask.tolist() == [False, False, True]


def _paired_table(rng: np.random.Generator, agree: bool, n_pairs: int = 4, n_models: int = 8):  # type: ignore[no-untyped-def]
    """Pairs of datasets with the same classes: in each pair the second ranks the models like the
    first (agree) or in reverse (not agree); an ImageNet column ranks them by index."""
    datasets, families, columns, vectors, owners = ["ImageNet 1k"], ["ImageNet 1k"], [np.linspace(0.9, 0.5, n_models)], [], []
    d = 16
    for p in range(n_pairs):
        base = rng.permutation(np.linspace(0.2, 0.8, n_models))
        direction = rng.normal(size=d)
        for half in range(2):
            datasets.append(f"p{p}-{half}")
            families.append(f"p{p}-{half}")
            columns.append(base if (agree or half == 0) else base[::-1].copy())
            for _ in range(3):
                vectors.append(direction + 0.05 * rng.normal(size=d))
                owners.append(len(datasets) - 1)
    imagenet = rng.normal(size=d)
    for _ in range(3):
        vectors.append(imagenet + 0.05 * rng.normal(size=d))
        owners.append(0)
    acc = np.stack(columns, axis=1)
    v = np.asarray(vectors)
    return acc, datasets, families, v / np.linalg.norm(v, axis=1, keepdims=True), np.asarray(owners)


def test_calibration_trusts_neighbours_only_where_they_predict() -> None:
    rng = np.random.default_rng(0)
    acc, datasets, families, vectors, owners = _paired_table(rng, agree=True)
    rule = calibrate_rule(acc, datasets, families, vectors, owners)
    assert rule.neighbour_weight > 0 and "leave-one-dataset-out over 8 datasets" in rule.chosen_by
    # Misleading neighbours: each target ranks the models as ImageNet does, its look-alike in reverse.
    acc, datasets, families, vectors, owners = _paired_table(rng, agree=False)
    targets = [d for d in datasets if d.endswith("-0")]
    for t in targets:
        acc[:, datasets.index(t)] = acc[:, 0] - 0.1
        acc[:, datasets.index(t[:-1] + "1")] = acc[::-1, 0] - 0.1
    rule = calibrate_rule(acc, datasets, families, vectors, owners, targets=targets)
    assert rule.neighbour_weight == 0.0 and "chosen: 0 won, 0 lost" in rule.chosen_by


def test_sign_test_asks_for_more_than_a_majority() -> None:
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(2, 2) == pytest.approx(11 / 16)
    assert sign_test_p(3, 1) == pytest.approx(5 / 16) and sign_test_p(3, 1) > QUALIFY_LEVEL   # a majority, by chance
    assert sign_test_p(4, 1) == pytest.approx(6 / 32) and sign_test_p(4, 1) <= QUALIFY_LEVEL
    assert sign_test_p(3, 0) == pytest.approx(1 / 8) and sign_test_p(3, 0) <= QUALIFY_LEVEL


def test_calibration_wants_more_wins_than_chance_gives() -> None:
    # Four targets: on three the look-alike ranks the models as the target does (the neighbours
    # win), on one it misleads while ImageNet is right (they lose). 3 won, 1 lost is a
    # majority that a coin gives 5 times in 16: general strength stays. Four winning targets qualify.
    rng = np.random.default_rng(2)
    acc, datasets, families, vectors, owners = _paired_table(rng, agree=True, n_pairs=5)
    targets = [d for d in datasets if d.endswith("-0")]
    for t in targets:
        j = datasets.index(t)
        while int(np.argmax(acc[:, j])) == 0:              # ImageNet's first model must not be the best
            acc[:, j] = acc[:, datasets.index(t[:-1] + "1")] = rng.permutation(acc[:, j])
    bad = targets[0]   # the target ranks the models as ImageNet; its look-alike puts the second far ahead
    acc[:, datasets.index(bad)] = acc[:, 0] - 0.1
    acc[:, datasets.index(bad[:-1] + "1")] = np.where(np.arange(len(acc)) == 1, 0.9, 0.3)
    rule = calibrate_rule(acc, datasets, families, vectors, owners, targets=targets[:4])
    assert rule.neighbour_weight == 0.0
    rule = calibrate_rule(acc, datasets, families, vectors, owners, targets=targets[1:])
    assert rule.neighbour_weight > 0 and "chosen: 4 won, 0 lost" in rule.chosen_by


def test_calibration_never_reads_the_hidden_column() -> None:
    rng = np.random.default_rng(1)
    acc, datasets, families, vectors, owners = _paired_table(rng, agree=True)
    rule = calibrate_rule(acc, datasets, families, vectors, owners, hidden=["p0-0"])
    changed = acc.copy()
    changed[:, datasets.index("p0-0")] = rng.uniform(0, 1, len(acc))
    assert calibrate_rule(changed, datasets, families, vectors, owners, hidden=["p0-0"]) == rule


def test_a_table_too_small_to_choose_keeps_the_defaults() -> None:
    acc = np.array([[0.9, 0.2], [0.3, 0.8]])
    vectors = _unit([[1, 0], [0, 1]])
    rule = calibrate_rule(acc, ["a", "b"], ["a", "b"], vectors, np.array([0, 1]))
    assert (rule.neighbour_weight, rule.text_weight) == (PublishedRule().neighbour_weight, PublishedRule().text_weight)
    assert rule.chosen_by.startswith("default") and 0.0 in NEIGHBOUR_WEIGHTS
    assert PublishedRule.from_dict(rule.to_dict()) == rule and PublishedRule.from_dict(None) == PublishedRule()
