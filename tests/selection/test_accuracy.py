"""Predicted accuracy: F1 read back from selection scores, the shipped calibration, intervals."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import IndexFormatError
from mll_index.selection.accuracy import (
    FEATURES, Rule, chosen_f1, class_features, extrapolation, f1_matrix, load_calibration, predict_features,
    predict_selection, selection_matrix,
)
from mll_index.selection.confusion import smooth_scores
from mll_index.selection.selector import open_selector, select_models
from mll_index.selection.task import make_task


@pytest.mark.parametrize("alpha, classes", [(0.7, 2), (0.7, 30), (1.0, 5), (0.0, 5), (0.3, 4)])
def test_f1_is_read_back_from_the_smoothed_scores(alpha: float, classes: int) -> None:
    f1 = np.random.default_rng(classes).random((6, classes))
    scores = smooth_scores(f1, alpha)
    got = f1_matrix([f"m{i}" for i in range(6)], np.round(scores, 4), np.round(scores.mean(axis=1), 4), alpha)
    assert np.abs(got - f1).max() < 5e-3     # the scores' 4-decimal rounding, amplified at most ~3x


def test_where_the_scores_hardly_depend_on_f1_they_stand_in_for_it() -> None:
    scores = np.array([[0.4, 0.6], [0.2, 0.9]])
    assert np.array_equal(f1_matrix(["a", "b"], scores, scores.mean(axis=1), 0.5), scores)


def test_the_shipped_calibration_loads_and_says_how_it_was_made() -> None:
    cal = load_calibration()
    assert cal.version >= 1 and cal.about.get("summary") and cal.about.get("calibration_seed") is not None
    assert cal.task.q_low <= 0 <= cal.task.q_high and cal.cls.q_low <= 0 <= cal.cls.q_high


def test_the_shipped_rules_are_the_cross_validations_choice() -> None:
    cal = load_calibration()
    for level, rule in (("task", cal.task), ("class", cal.cls)):
        table = cal.about["cross_validation"][level]
        best = min(table.values(), key=lambda v: v["mae"])["mae"]
        assert table[f"{rule.link}: {'+'.join(rule.coef)}"]["mae"] == best


def test_a_damaged_calibration_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "cal.json"
    bad.write_text(json.dumps({"format": "mll-index-accuracy-calibration", "task": {"intercept": 0}}))
    with pytest.raises(IndexFormatError, match=str(bad)):
        load_calibration(bad)
    rule = {"intercept": 0, "coef": {"moon_phase": 1}, "q_low": 0, "q_high": 0}
    bad.write_text(json.dumps({"format": "mll-index-accuracy-calibration", "task": rule, "class": rule}))
    with pytest.raises(IndexFormatError, match="unknown feature.*moon_phase"):
        load_calibration(bad)
    rule = {"intercept": 0, "coef": {"f1_best": 1}, "q_low": 0, "q_high": 0, "link": "probit"}
    bad.write_text(json.dumps({"format": "mll-index-accuracy-calibration", "task": rule, "class": rule}))
    with pytest.raises(IndexFormatError, match=r"unknown link 'probit'; links: \['identity', 'logit'\]"):
        load_calibration(bad)
    bad.write_text("[]")
    with pytest.raises(IndexFormatError, match="not an accuracy calibration file"):
        load_calibration(bad)


def test_intervals_hold_their_estimate_within_zero_and_one() -> None:
    rule = Rule(0.1, {"f1_best": 1.0}, -0.15, 0.1)
    for x in (0.0, 0.5, 0.95, 1.0):
        got = rule.apply({"f1_best": x})
        assert 0.0 <= got.low <= got.estimate <= got.high <= 1.0
    assert chosen_f1(np.array([[0.2, 0.9], [0.5, 0.1]]), ["a", "b"], [["a", "b"], ["b"]]).tolist() == [0.5, 0.1]
    weak, strong = ({"f1_best": x, "f1_task": x, "match_score": 0.8, "domain_images": 1.0, "log_classes": 2.0,
                     "relatedness": 0.7, "relatedness_sq": 0.49} for x in (0.2, 0.8))
    task, classes = predict_features([weak, strong], load_calibration())
    assert len(classes) == 2 and classes[0].estimate <= classes[1].estimate and 0 < task.estimate < 1


def test_a_logit_rule_stays_inside_zero_and_one_and_narrows_towards_the_ends() -> None:
    rule = Rule(-2.0, {"f1_best": 4.0}, -0.3, 0.3, "logit")
    got = [rule.apply({"f1_best": x}) for x in (-5.0, 0.0, 0.5, 1.0, 5.0)]
    assert all(0.0 < g.low < g.estimate < g.high < 1.0 for g in got)
    assert [g.estimate for g in got] == sorted(g.estimate for g in got)
    assert got[2].estimate == pytest.approx(0.5)
    widths = [g.high - g.low for g in got]
    assert widths[2] > widths[1] > widths[0] and widths[2] > widths[3] > widths[4]


def test_a_selection_predicts_its_ensemble(world_index: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    selector = open_selector(world_index, embedder)
    n = len(selector.store.model_ids)
    task = make_task(["tiger", "lion", "banana"], "t")
    full = select_models(selector, task, k=n, ranking_size=None)
    ids, scores, task_scores = selection_matrix(full)
    assert scores.shape == (n, 3) and not np.isnan(scores).any()
    best = predict_selection(full, [[c.models[0].model] for c in full.classes], full.alpha,
                             selector.index.graph.ancestors)
    assert best is not None and 0 <= best[0].low <= best[0].estimate <= best[0].high <= 1
    f1 = f1_matrix(ids, scores, task_scores, full.alpha)
    features = class_features(full, f1, ids, task_scores, [[c.models[0].model] for c in full.classes],
                              selector.index.graph.ancestors)
    assert all(set(f) == set(FEATURES) and f["relatedness_sq"] == f["relatedness"] ** 2 for f in features)
    cut = select_models(selector, task, k=1, ranking_size=1)    # a cut ranking holds no F1 for every model
    assert selection_matrix(cut) is None or n == 1


def test_relatedness_is_high_for_neighbours_and_low_for_strangers(taxonomy) -> None:  # type: ignore[no-untyped-def]
    from mll_index.selection.accuracy import relatedness

    tiger, lion, laptop, pizza = "n02129604", "n02129165", "n03642806", "n07873807"
    cats = relatedness([tiger, lion], taxonomy.ancestors)
    apart = relatedness([tiger, laptop, pizza], taxonomy.ancestors)
    assert min(cats) > max(apart) and all(0 <= v <= 1 for v in cats + apart)
    assert relatedness([tiger, None], taxonomy.ancestors) == [0.0, 0.0]


def test_a_task_outside_the_calibration_range_is_named_an_extrapolation() -> None:
    calibration = load_calibration()
    ranges = calibration.about["task_feature_range"]
    inside = {f: 0.5 for f in FEATURES} | {f: float(np.mean(ranges[f])) for f in ranges}
    assert extrapolation([inside] * 3, calibration) == []
    two = inside | {"log_classes": float(np.log(2))}
    assert extrapolation([two, two], calibration) == [f"2 classes (calibrated on {round(np.exp(ranges['log_classes'][0]))} "
                                                      f"to {round(np.exp(ranges['log_classes'][1]))})"]
    strangers = inside | {"relatedness": 0.0, "relatedness_sq": 0.0}
    assert [m.split(" ")[0] for m in extrapolation([strangers], calibration)] == ["relatedness"]
    assert extrapolation([two], replace(calibration, about={})) == []   # no recorded range: nothing to say
