"""Selection under a compute budget: the best ensemble whose models fit per-model limits and a total.

Users pay per image at inference: every image runs through every distinct model of the ensemble,
so an ensemble costs the sum of its distinct models' GFLOPs. Given, per class, every candidate
model's selection score and F1 (from the labels), and each model's cost, `choose_within_budget`
returns a set of models S and each class's top k of it (ranked by score, as select ranks them).

A budget never changes an answer it does not bind: when the models of the plain selection (each
class's top k among all models) each meet `max_gflops` / `max_params` and together cost at most
`budget_gflops`, they are the answer, the same models in the same order. Otherwise the answer is
the set that maximises, among the sets within the limits, first

    value(S) = mean over classes c of the best F1 among c's top-k models in S

(an ensemble is about as good as its best member: what the predicted accuracy rests on), then

    rest(S) = mean over classes c of the summed F1 of c's other top-k models in S

(so that, the best members being equal, a class keeps up to k models rather than fewer), and then
costs the fewest GFLOPs. A class may still get fewer than k models when few fit: the caller says so
(`mll_index.selection.answer`). Up to EXACT_MODELS candidates every set is tried; beyond, models are added
greedily by gain in value per GFLOP, then by gain in rest per GFLOP. `pareto_front` lists the sets
that no other beats on both value and GFLOPs (value alone: rest adds cost for no predicted gain).
To bound the work: beyond EXACT_MODELS allowed models, the greedy search keeps to the models in
some class's top k + 2.

Pure functions of arrays: no index, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mll_index.errors import InputError
from mll_index.models.flops import ModelCost

EXACT_MODELS = 13   # 2^13 sets x 13 models x 60 classes: ~0.3 s, in blocks of BLOCK sets
BLOCK = 1024


@dataclass(frozen=True)
class Budget:
    """Limits: GFLOPs and millions of parameters per model, and GFLOPs per image over the ensemble."""

    max_gflops: float | None = None
    max_params: float | None = None
    budget_gflops: float | None = None

    def __post_init__(self) -> None:
        # A NaN passes every comparison and infinity is no JSON number: refuse both, as the CLI does.
        for name, value in (("max_gflops", self.max_gflops), ("max_params", self.max_params),
                            ("budget_gflops", self.budget_gflops)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InputError(f"budget {name} must be a finite number above 0, got {value!r}")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_gflops, self.max_params, self.budget_gflops))

    def describe(self) -> str:
        parts = [f"{name} {value:g}" for name, value in (("--max-gflops", self.max_gflops),
                 ("--max-params", self.max_params), ("--budget-gflops", self.budget_gflops)) if value is not None]
        return ", ".join(parts) or "no budget"


@dataclass(frozen=True)
class Choice:
    """A set of models and what it gives: per class the chosen model ids (best first), the distinct
    models, their total GFLOPs per image, the value (mean over classes of the best chosen model's F1)
    and rest (mean over classes of the summed F1 of the other chosen models)."""

    per_class: tuple[tuple[str, ...], ...]
    models: tuple[str, ...]
    gflops: float
    value: float
    rest: float = 0.0


def allowed_models(ids: Sequence[str], costs: dict[str, ModelCost], budget: Budget) -> list[str]:
    """The models that may be chosen: a known GFLOPs figure, within the per-model limits, and alone within the total.

    Raises:
        InputError: no model has a FLOPs figure (naming those that lack one), or none meets the budget
            (naming the smallest model and its figures).
    """
    known = [m for m in ids if costs.get(m) is not None and costs[m].gflops is not None]
    if not known:
        raise InputError(f"no model has a FLOPs figure ({_names([m for m in ids])} lack one); add flops_b to "
                         "the hub file or measure them with `mll-index hub flops HUB`")
    cap = min(v for v in (budget.max_gflops, budget.budget_gflops, float("inf")) if v is not None)
    out = [m for m in known if costs[m].gflops <= cap  # type: ignore[operator]
           and (budget.max_params is None or (costs[m].params_m is not None and costs[m].params_m <= budget.max_params))]
    if not out:
        smallest = min(known, key=lambda m: (costs[m].gflops, costs[m].params_m or 0.0, m))
        c = costs[smallest]
        params = "unknown" if c.params_m is None else f"{c.params_m:g} M"
        raise InputError(f"no model meets the budget ({budget.describe()}); the smallest is {smallest!r} at "
                         f"{c.gflops:g} GFLOPs and {params} parameters")
    return out


def _names(models: Sequence[str]) -> str:
    return f"{list(models[:10])}{f' and {len(models) - 10} more' if len(models) > 10 else ''}"


def _evaluate_sets(masks: np.ndarray, scores: np.ndarray, f1: np.ndarray,
                   k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For (s, n) bool sets: value (s,), rest (s,) and per class the top-k indices (s, k, C), -1 where fewer models."""
    if len(masks) > BLOCK:
        parts = [_evaluate_sets(masks[i:i + BLOCK], scores, f1, k) for i in range(0, len(masks), BLOCK)]
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]
    s, n = masks.shape
    c = scores.shape[1]
    # A model without a finite score for a class (one select does not rank there) is never its pick.
    member = masks[:, :, None] & np.isfinite(scores)[None, :, :]                # (s, n, C)
    masked = np.where(member, scores[None, :, :], -np.inf)
    kk = min(k, n)
    # A stable order by score (ties: the lower index, as selection breaks them).
    order = np.argsort(-masked, axis=1, kind="stable")[:, :kk, :]               # (s, kk, C)
    taken = np.take_along_axis(member, order, axis=1)
    f1_taken = np.where(taken, f1[order, np.arange(c)[None, None, :]], 0.0)
    best = f1_taken.max(axis=1)                                                  # (s, C)
    # Rounded so that sets with the same members per class compare equal whatever the summing order.
    value = np.round(best.mean(axis=1), 12)
    rest = np.round((f1_taken.sum(axis=1) - best).mean(axis=1), 12)
    return value, rest, np.where(taken, order, -1)


def _candidate_sets(n: int, costs: np.ndarray, scores: np.ndarray, f1: np.ndarray, k: int,
                    total: float) -> np.ndarray:
    """Sets to evaluate: all of them up to EXACT_MODELS models, else the greedy path's prefixes."""
    if n <= EXACT_MODELS:
        codes = np.arange(1, 2 ** n)
        masks = ((codes[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)
        return masks[masks.astype(np.float64) @ costs <= total + 1e-12]
    current = np.zeros(n, bool)
    path = []
    spent = 0.0
    value = rest = 0.0
    while True:
        trial = np.repeat(current[None, :], n, axis=0)
        trial[np.arange(n), np.arange(n)] = True
        fits = ~current & (spent + costs <= total + 1e-12)
        if not fits.any():
            break
        values, rests, _ = _evaluate_sets(trial[fits], scores, f1, k)
        per_gflop = np.maximum(costs[fits], 1e-12)
        # Value first; once no model raises it, the models that fill the classes' top k.
        if (values > value).any() or not path:
            best = int(np.argmax((values - value) / per_gflop))
        elif ((values == value) & (rests > rest)).any():
            best = int(np.argmax(np.where(values == value, (rests - rest) / per_gflop, -np.inf)))
        else:
            break
        j = int(np.flatnonzero(fits)[best])
        current[j] = True
        spent += costs[j]
        value, rest = float(values[best]), float(rests[best])
        path.append(current.copy())
    # Every single model too: a greedy start by gain per GFLOP may pass over the best one alone.
    singles = np.eye(n, dtype=bool)[costs <= total + 1e-12]
    return np.concatenate([np.array(path, bool).reshape(-1, n), singles])


def _candidates(ids: Sequence[str], allowed: Sequence[str], scores: np.ndarray, k: int) -> list[int]:
    """Rows of the models to try: every allowed one up to EXACT_MODELS; beyond, those in some class's
    top k + 2 among the allowed (the greedy search then runs over them)."""
    keep = set(allowed)
    rows = [i for i, m in enumerate(ids) if m in keep]
    if len(rows) <= EXACT_MODELS:
        return rows
    top = np.argsort(-scores[rows], axis=0, kind="stable")[:k + 2]
    return [rows[i] for i in sorted(set(top.ravel().tolist()))]


def _checked(ids: Sequence[str], scores: np.ndarray, f1: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, np.float64)
    f1 = np.asarray(f1, np.float64)
    if scores.shape != f1.shape or scores.shape[0] != len(ids):
        raise InputError(f"scores {scores.shape} and F1 {f1.shape} must both be (len(ids)={len(ids)}, classes)")
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    return scores, f1


def _all_sets(ids: Sequence[str], scores: np.ndarray, f1: np.ndarray, costs: dict[str, ModelCost], k: int,
              budget: Budget) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, used (s, n'), GFLOPs (s,), value (s,), rest (s,), tops (s, k, C)) over the candidate sets."""
    scores, f1 = _checked(ids, scores, f1, k)
    rows = _candidates(ids, allowed_models(ids, costs, budget), scores, k)
    cost = np.array([costs[ids[i]].gflops for i in rows], np.float64)
    total = budget.budget_gflops if budget.budget_gflops is not None else float("inf")
    masks = _candidate_sets(len(rows), cost, scores[rows], f1[rows], k, total)
    values, rests, tops = _evaluate_sets(masks, scores[rows], f1[rows], k)
    # A model no class takes costs without helping: a set's cost is that of the models its classes use.
    used = np.zeros_like(masks)
    for s in range(len(masks)):
        used[s, np.unique(tops[s][tops[s] >= 0])] = True
    return rows, used, used.astype(np.float64) @ cost, values, rests, tops


def _choice(ids: Sequence[str], rows: list[int], top: np.ndarray, used: np.ndarray, gflops: float,
            value: float, rest: float) -> Choice:
    per_class = tuple(tuple(ids[rows[j]] for j in top[:, c] if j >= 0) for c in range(top.shape[1]))
    return Choice(per_class, tuple(ids[rows[j]] for j in np.flatnonzero(used)), round(float(gflops), 6),
                  round(float(value), 6), round(float(rest), 6))


def _plain_choice(ids: Sequence[str], scores: np.ndarray, f1: np.ndarray, costs: dict[str, ModelCost], k: int,
                  budget: Budget) -> Choice | None:
    """The plain selection (each class's top k among all models) when the budget does not bind it, else None."""
    every = np.ones((1, len(ids)), bool)
    values, rests, tops = _evaluate_sets(every, scores, f1, k)
    used = np.zeros(len(ids), bool)
    used[np.unique(tops[0][tops[0] >= 0])] = True
    models = [ids[i] for i in np.flatnonzero(used)]
    if any(costs.get(m) is None or costs[m].gflops is None for m in models):
        return None
    allowed = set(allowed_models(ids, costs, budget))
    gflops = sum(costs[m].gflops for m in models)  # type: ignore[misc]
    total = budget.budget_gflops if budget.budget_gflops is not None else float("inf")
    if not set(models) <= allowed or gflops > total + 1e-12:
        return None
    return _choice(ids, list(range(len(ids))), tops[0], used, gflops, values[0], rests[0])


def choose_within_budget(ids: Sequence[str], scores: np.ndarray, f1: np.ndarray, costs: dict[str, ModelCost],
                         k: int, budget: Budget) -> Choice:
    """The best set of models within the budget, and each class's top-k of it.

    Args:
        ids: n model ids.
        scores: (n, C) the selection's per-class scores (higher is better), which rank models within a class.
        f1: (n, C) the models' F1 per class from the labels (the value: mean over classes of the best chosen).
        costs: model id -> ModelCost; a model without a GFLOPs figure is never chosen.
        k: models per class (a class gets fewer when the set holds fewer).
        budget: the limits.
    Returns:
        the plain selection when the budget does not bind it; else the Choice of highest value, then
        highest rest, then fewest GFLOPs, then the one found first (see the module docstring).
    Raises:
        InputError: see `allowed_models`; mismatched shapes.
    """
    scores, f1 = _checked(ids, scores, f1, k)
    allowed_models(ids, costs, budget)      # the same errors whether or not the budget binds
    plain = _plain_choice(ids, scores, f1, costs, k, budget)
    if plain is not None:
        return plain
    rows, used, gflops, values, rests, tops = _all_sets(ids, scores, f1, costs, k, budget)
    best = int(np.lexsort((gflops, -rests, -values))[0])
    return _choice(ids, rows, tops[best], used[best], gflops[best], values[best], rests[best])


def pareto_front(ids: Sequence[str], scores: np.ndarray, f1: np.ndarray, costs: dict[str, ModelCost], k: int,
                 budget: Budget | None = None) -> list[Choice]:
    """The non-dominated sets by (value up, GFLOPs down), cheapest first; arguments as `choose_within_budget`.

    Raises:
        InputError: no model has a FLOPs figure (naming them), or none meets the budget.
    """
    rows, used, gflops, values, rests, tops = _all_sets(ids, scores, f1, costs, k, budget or Budget())
    front: list[Choice] = []
    best_value = -np.inf
    for s in np.lexsort((-rests, -values, gflops)):
        if values[s] > best_value + 1e-12:
            best_value = values[s]
            front.append(_choice(ids, rows, tops[s], used[s], gflops[s], values[s], rests[s]))
    return front
