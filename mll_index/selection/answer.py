"""What a selection will cost and score: a compute budget applied to it, and its predicted accuracy.

`select` ranks every model for every class; this step, after the ranking, keeps each class's top k
(within a budget when one is given: `mll_index.selection.budget`), and adds the predicted accuracy of the
ensemble it keeps (`mll_index.selection.accuracy`) and, on request, the Pareto list of (predicted accuracy,
GFLOPs) choices. Model costs come from the labels' copies of the hub entries, measured once where
they lack a figure (`mll_index.models.flops`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from mll_index.selection.budget import Budget, Choice, choose_within_budget, pareto_front
from mll_index.errors import InputError
from mll_index.models.flops import ModelCost, entry_model, model_costs
from mll_index.selection.accuracy import (
    Calibration, class_features, extrapolation, f1_matrix, load_calibration, predict_features, selection_matrix,
)

log = logging.getLogger(__name__)


def selection_costs(selector: Any) -> dict[str, ModelCost]:
    """Each labeled model's cost, from its hub entry as the labels keep it (measured where it lacks one).

    Raises:
        InputError: the index has only published labels.
    """
    if selector.store is None:
        raise InputError(f"{selector.index.path}: budgets need image-based labels (this index has published ones "
                         "only)")
    entries = selector.store.entries
    return model_costs([entry_model({**entries[m], "id": m}) for m in selector.store.model_ids])


def internal_k(selector: Any, k: int, budget: Budget, pareto: bool) -> int:
    """The k to select with before `complete_selection`: every model when a budget or Pareto list must
    choose among them, else k."""
    if (budget.active or pareto) and selector.store is not None:
        return max(k, len(selector.store.model_ids))
    return k


def select_answer(selector: Any, task: Any, settings: Any = None, **changes: Any) -> dict[str, Any]:
    """The JSON `mll-index select` prints for one task without a budget: every model ranked
    (`select.select_models` with `ranking_size=None`), then cut to k with the predicted accuracy
    (`complete_selection`). `settings` / `changes` as for `select_models`."""
    from mll_index.selection.selector import select_models
    from mll_index.selection.settings import settings_from

    chosen = settings_from(settings, changes)
    full = select_models(selector, task, chosen.with_(ranking_size=None))
    return complete_selection(selector, task, full, k=chosen.k, ranking_size=chosen.ranking_size)


def complete_selection(selector: Any, task: Any, full: Any, *, k: int, ranking_size: int | None,
                       budget: Budget | None = None, costs: dict[str, ModelCost] | None = None,
                       pareto: bool = False, calibration: Calibration | None = None) -> dict[str, Any]:
    """The selection's JSON with each class's top k (within the budget), `predicted_accuracy` for the
    task and per class, and `budget` / `pareto` when asked.

    Args:
        full: the Selection of `task` made with `ranking_size=None` and `k=internal_k(...)`.
        k, ranking_size: what the user asked for (ranking_size None: every model).
        costs: per model (see `selection_costs`); needed with a budget or `pareto`.
    Raises:
        InputError: a budget no model meets, or no model with a FLOPs figure (see `mll_index.selection.budget`).
    """
    from mll_index.selection.selector import PROMPT_WARNING_TAIL, ModelScore, probe_warnings, selection_warnings

    budget = budget or Budget()
    calibration = calibration or load_calibration()
    got = selection_matrix(full)
    f1 = f1_matrix(*got[:2], got[2], full.alpha) if got is not None else None
    choice: Choice | None = None
    front: list[Choice] = []
    if budget.active or pareto:
        if got is None:
            raise InputError("budgets and --pareto need image-based labels with every model ranked")
        ids = got[0]
        costs = costs if costs is not None else selection_costs(selector)
        lacking = [m for m in ids if costs.get(m) is None or costs[m].gflops is None]
        if lacking:
            log.warning("model(s) %s have no FLOPs figure and cannot be measured: left out of the budget", lacking[:10])
        # Ranked by each class's order in `full` (select's own, ties included) rather than by the
        # rounded scores, so that a budget that does not bind gives select's answer exactly.
        order = _class_order(full, ids)
        if budget.active:
            choice = choose_within_budget(ids, order, f1, costs, k, budget)
        if pareto:
            front = pareto_front(ids, order, f1, costs, k)
    classes = []
    for c, cls in enumerate(full.classes):
        wanted = choice.per_class[c] if choice is not None else tuple(m.model for m in cls.models[:k])
        by_id = {m.model: m for m in cls.models}
        classes.append(replace(cls, models=tuple(by_id[m] for m in wanted)))
    ranking = full.ranking if ranking_size is None else full.ranking[:ranking_size]
    # select's lines about the label sources stay; the prompt and probe lines are made again for the
    # models kept.
    redone = probe_warnings(task, full.probe)
    warnings = tuple(w for w in full.warnings if not w.endswith(PROMPT_WARNING_TAIL) and w not in redone) + \
        selection_warnings(selector, task, classes, full.probe)
    if choice is not None:
        warnings += budget_warnings(task.name, [cls.name for cls in full.classes], choice, k,
                                    [len(cls.models) for cls in full.classes], budget)
    trimmed = replace(full, k=min(k, len(full.ranking)) if full.ranking else full.k, classes=tuple(classes),
                      ranking=tuple(ModelScore(m.model, m.score) for m in ranking), warnings=warnings)
    out = trimmed.to_dict()
    if f1 is not None:
        features = class_features(full, f1, got[0], got[2], [[m.model for m in cls.models] for cls in classes],
                                  selector.index.graph.ancestors)
        task_pred, class_pred = predict_features(features, calibration)
        out["predicted_accuracy"] = task_pred.to_dict()
        for entry, pred in zip(out["classes"], class_pred):
            entry["predicted_accuracy"] = pred.to_dict()
        out["predicted_accuracy_about"] = (f"calibration v{calibration.version}: "
                                           f"{calibration.about.get('summary', 'see data/accuracy_calibration.json')}")
        outside = extrapolation(features, calibration)
        if outside:
            out["predicted_accuracy_about"] += ("; this task lies outside the calibration's range, so the estimate "
                                                "is an extrapolation and its interval was not measured: "
                                                + ", ".join(outside))
    else:
        # The calibration maps F1 on sample images to accuracy; a published z-score or a merged rank is
        # another scale, so no prediction is made rather than a wrong one.
        out["predicted_accuracy"] = None
        for entry in out["classes"]:
            entry["predicted_accuracy"] = None
        hint = "; select with --labels image for one" if selector.store is not None else ""
        out["predicted_accuracy_about"] = (f"not predicted: the calibration (v{calibration.version}) maps image-based "
                                           f"labels' F1 to accuracy, and these models were ranked by {full.labels} "
                                           f"labels{hint}")
    if choice is not None and costs is not None:
        out["budget"] = {"limits": {"max_gflops": budget.max_gflops, "max_params": budget.max_params,
                                    "budget_gflops": budget.budget_gflops},
                         "models": list(choice.models), "gflops": choice.gflops,
                         "params_m": round(sum(costs[m].params_m or 0.0 for m in choice.models), 3)}
    if pareto:
        out["pareto"] = []
        for p in front:
            features = class_features(full, f1, got[0], got[2], [list(models) for models in p.per_class],
                                      selector.index.graph.ancestors)
            out["pareto"].append({"gflops": p.gflops, "models": list(p.models),
                                  "predicted_accuracy": predict_features(features, calibration)[0].to_dict()})
    return out


def _class_order(full: Any, ids: list[str]) -> np.ndarray:
    """(n, C) per class minus each model's position in `full`'s list for the class (higher: ranked
    first); -inf for a model the class does not list."""
    pos = {m: i for i, m in enumerate(ids)}
    order = np.full((len(ids), len(full.classes)), -np.inf)
    for c, cls in enumerate(full.classes):
        for place, m in enumerate(cls.models):
            order[pos[m.model], c] = -place
    return order


def budget_warnings(task_name: str, class_names: list[str], choice: Choice, k: int, available: list[int],
                    budget: Budget) -> tuple[str, ...]:
    """One line when the budget leaves some class fewer than k models (fewer than it has without the
    budget: `available[c]` models ranked for class c), naming the budget and the classes; else none."""
    short = [(name, len(got)) for name, got, have in zip(class_names, choice.per_class, available)
             if len(got) < min(k, have)]
    if not short:
        return ()
    listed = ", ".join(f"{name!r} {n}" for name, n in short[:10])
    more = f" and {len(short) - 10} more" if len(short) > 10 else ""
    line = (f"task {task_name!r}: within the budget ({budget.describe()}) {len(short)} of {len(class_names)} "
            f"class(es) get fewer than the {k} models asked for ({listed}{more}); raise the budget for more")
    return (line,)
