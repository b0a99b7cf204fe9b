"""Selection under a compute budget: the best set within the limits (against brute force), the Pareto list, bad budgets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mll_index.errors import InputError
from mll_index.models.flops import ModelCost
from mll_index.selection.budget import EXACT_MODELS, Budget, choose_within_budget, pareto_front


def _case(n: int, c: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, ModelCost]]:
    rng = np.random.default_rng(seed)
    ids = [f"m{i}" for i in range(n)]
    f1 = rng.random((n, c))
    scores = f1 + rng.normal(0, 0.05, (n, c))       # scores rank; F1 is what the value averages
    costs = {m: ModelCost(m, float(rng.integers(1, 6)), float(rng.integers(1, 100))) for m in ids}
    return ids, scores, f1, costs


def _plain(scores: np.ndarray, k: int) -> list[list[int]]:
    """Each class's top k among all models, as select ranks them (ties to the lower row)."""
    return [sorted(range(len(scores)), key=lambda i: (-scores[i, c], i))[:k] for c in range(scores.shape[1])]


def _brute_force(ids, scores, f1, costs, k, budget):  # type: ignore[no-untyped-def]
    """Every set within the limits: (value, rest, GFLOPs of the models its classes use)."""
    best = []
    for r in range(1, len(ids) + 1):
        for subset in itertools.combinations(range(len(ids)), r):
            if any(budget.max_gflops is not None and costs[ids[i]].gflops > budget.max_gflops for i in subset):
                continue
            if any(budget.max_params is not None and costs[ids[i]].params_m > budget.max_params for i in subset):
                continue
            if budget.budget_gflops is not None and sum(costs[ids[i]].gflops for i in subset) > budget.budget_gflops:
                continue
            per_class, rest, used = [], [], set()
            for c in range(scores.shape[1]):
                top = sorted(subset, key=lambda i: (-scores[i, c], i))[:k]
                used |= set(top)
                per_class.append(max(f1[i, c] for i in top))
                rest.append(sum(f1[i, c] for i in top) - per_class[-1])
            best.append((float(np.mean(per_class)), float(np.mean(rest)), sum(costs[ids[i]].gflops for i in used)))
    return best


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("budget", [Budget(budget_gflops=6), Budget(max_gflops=3, budget_gflops=8),
                                    Budget(max_params=60), Budget(max_gflops=4)])
def test_the_choice_is_the_best_set_within_the_budget(k: int, budget: Budget) -> None:
    ids, scores, f1, costs = _case(7, 5, seed=k)
    choice = choose_within_budget(ids, scores, f1, costs, k, budget)
    sets = _brute_force(ids, scores, f1, costs, k, budget)
    plain = _plain(scores, k)
    plain_models = {i for top in plain for i in top}
    if all(budget.max_gflops is None or costs[ids[i]].gflops <= budget.max_gflops for i in plain_models) and \
            all(budget.max_params is None or costs[ids[i]].params_m <= budget.max_params for i in plain_models) and \
            (budget.budget_gflops is None or sum(costs[ids[i]].gflops for i in plain_models) <= budget.budget_gflops):
        assert choice.per_class == tuple(tuple(ids[i] for i in top) for top in plain)   # the budget does not bind
    else:
        # The best value, then the best rest, then the cheapest.
        value, rest, gflops = max(sets, key=lambda s: (round(s[0], 9), round(s[1], 9), -s[2]))
        assert (choice.value, choice.rest, choice.gflops) == pytest.approx((value, rest, gflops), abs=1e-6)
    assert choice.gflops == pytest.approx(sum(costs[m].gflops for m in choice.models))
    if budget.budget_gflops is not None:
        assert choice.gflops <= budget.budget_gflops
    for m in choice.models:
        assert budget.max_gflops is None or costs[m].gflops <= budget.max_gflops
        assert budget.max_params is None or costs[m].params_m <= budget.max_params
    assert all(1 <= len(models) <= k and set(models) <= set(choice.models) for models in choice.per_class)
    assert set(choice.models) == {m for models in choice.per_class for m in models}


def test_pareto_front_is_the_non_dominated_sets() -> None:
    ids, scores, f1, costs = _case(6, 4, seed=9)
    front = pareto_front(ids, scores, f1, costs, 1)
    points = _brute_force(ids, scores, f1, costs, 1, Budget())
    assert [p.gflops for p in front] == sorted(p.gflops for p in front)
    assert all(a.value < b.value for a, b in zip(front, front[1:]))
    for p in front:   # nothing is at least as good for less
        assert not any(v >= p.value - 1e-9 and g < p.gflops - 1e-9 for v, _, g in points)
    assert front[-1].value == pytest.approx(max(v for v, _, _ in points), abs=1e-6)
    # Each point is what a budget of its cost chooses, where the budget binds the plain selection.
    plain_gflops = sum(costs[ids[i]].gflops for i in {i for top in _plain(scores, 1) for i in top})
    for p in front:
        if p.gflops < plain_gflops:
            assert choose_within_budget(ids, scores, f1, costs, 1, Budget(budget_gflops=p.gflops)).value == \
                pytest.approx(p.value, abs=1e-6)


@pytest.mark.parametrize("n", [7, EXACT_MODELS + 10])
@pytest.mark.parametrize("budget", [Budget(max_params=1000), Budget(max_gflops=1000), Budget(budget_gflops=1000),
                                    Budget(max_gflops=5, max_params=100, budget_gflops=1000)])
def test_a_budget_every_model_meets_gives_the_plain_selection(n: int, budget: Budget) -> None:
    ids, scores, f1, costs = _case(n, 6, seed=3)
    scores = f1 + np.random.default_rng(5).normal(0, 0.3, f1.shape)   # scores far from F1: other sets value more
    choice = choose_within_budget(ids, scores, f1, costs, 3, budget)
    assert choice.per_class == tuple(tuple(ids[i] for i in top) for top in _plain(scores, 3))
    best = max(v for v, _, _ in _brute_force(ids, scores, f1, costs, 3, budget)) if n <= 8 else None
    assert best is None or best > choice.value + 1e-3    # the case is one where F1 alone would choose otherwise


@pytest.mark.parametrize("n", [7, EXACT_MODELS + 10])
def test_a_binding_budget_with_room_keeps_k_models_per_class(n: int) -> None:
    ids, scores, f1, _ = _case(n, 6, seed=3)
    f1[0] += 1      # m0 is the best on every class: the best F1 alone would keep it alone
    scores = f1.copy()
    costs = {m: ModelCost(m, 1.0, 10.0) for m in ids}
    assert len({i for top in _plain(scores, 3) for i in top}) > 3    # so that 3 GFLOPs binds
    choice = choose_within_budget(ids, scores, f1, costs, 3, Budget(budget_gflops=3))
    assert choice.gflops == 3 and "m0" in choice.models
    assert all(len(models) == 3 and models[0] == "m0" for models in choice.per_class)


def test_a_large_hub_stays_within_the_budget() -> None:
    ids, scores, f1, costs = _case(EXACT_MODELS + 30, 12, seed=4)
    choice = choose_within_budget(ids, scores, f1, costs, 3, Budget(budget_gflops=7))
    assert 0 < choice.gflops <= 7 and choice.value > 0
    alone = max(f1[ids.index(m)].mean() for m in ids if costs[m].gflops <= 7)
    assert choice.value >= alone - 1e-9    # never worse than the best model alone


def test_models_without_a_figure_are_never_chosen() -> None:
    ids, scores, f1, costs = _case(5, 3, seed=2)
    costs["m0"] = ModelCost("m0", None, None)
    scores[0] += 10     # the best everywhere, but of unknown cost
    choice = choose_within_budget(ids, scores, f1, costs, 1, Budget(budget_gflops=100))
    assert "m0" not in choice.models


def test_bad_budgets_are_one_line_naming_the_smallest_model() -> None:
    ids, scores, f1, costs = _case(4, 3, seed=1)
    smallest = min(ids, key=lambda m: costs[m].gflops)
    with pytest.raises(InputError, match=f"no model meets the budget.*smallest is '{smallest}'") as exc:
        choose_within_budget(ids, scores, f1, costs, 1, Budget(budget_gflops=0.5))
    assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match="--max-params 0.1"):
        choose_within_budget(ids, scores, f1, costs, 1, Budget(max_params=0.1))
    unknown = {m: ModelCost(m, None, None) for m in ids}
    with pytest.raises(InputError, match=r"no model has a FLOPs figure \(\['m0', 'm1', 'm2', 'm3'\] lack one\)"):
        pareto_front(ids, scores, f1, unknown, 1)


@pytest.mark.parametrize("limits", [{"budget_gflops": float("inf")}, {"max_params": float("nan")},
                                    {"max_gflops": float("nan")}, {"budget_gflops": 0.0}, {"max_params": -1.0}])
def test_a_budget_refuses_limits_that_are_not_finite_and_positive(limits: dict[str, float]) -> None:
    # NaN passes every comparison (so every model would "meet" it) and infinity is no JSON number.
    with pytest.raises(InputError, match=f"budget {next(iter(limits))} must be a finite number above 0"):
        Budget(**limits)
