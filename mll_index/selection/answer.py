"""The answer to a task: the one builder every front end prints, with its budget and predicted accuracy.

`answer_tasks` is the one function that turns (selector, tasks, settings, budget) into the answer JSON
that `select`, `select --batch`, the service and `select --server` print.

`select` ranks every model for every class; this step, after the ranking, keeps each class's top k
(within a budget when one is given: `mll_index.selection.budget`), and adds the predicted accuracy of the
ensemble it keeps (`mll_index.selection.accuracy`) and, on request, the Pareto list of (predicted accuracy,
GFLOPs) choices. Model costs come from the labels' copies of the hub entries, measured once where
they lack a figure (`mll_index.models.flops`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mll_index.core.userfiles import number_in_range
from mll_index.errors import InputError
from mll_index.models.flops import ModelCost, entry_model, model_costs
from mll_index.selection.accuracy import (
    Calibration, class_features, extrapolation, f1_matrix, load_calibration, predict_features, selection_matrix,
)
from mll_index.selection.budget import Budget, Choice, choose_within_budget, pareto_front
from mll_index.selection.settings import SelectionSettings, settings_from

if TYPE_CHECKING:
    from mll_index.index.embed import EmbeddingCache
    from mll_index.selection.selector import Selector
    from mll_index.selection.task import Task

log = logging.getLogger(__name__)


def selection_costs(selector: Any) -> dict[str, ModelCost]:
    """Each ranked model's cost: a labeled model's from its hub entry as the labels keep it (measured where
    it lacks one); a published model's from the table's params and FLOPs (never measured: its weights are
    not here), unknown where the table has none (such a model is left out of a budget, with a warning)."""
    out: dict[str, ModelCost] = {}
    if selector.published is not None:
        for m in selector.published.models:
            out[m["id"]] = ModelCost(m["id"], number_in_range("flops_b", m.get("flops_b")),
                                     number_in_range("params_m", m.get("params_m")))
    if selector.store is not None:
        entries = selector.store.entries
        out.update(model_costs([entry_model({**entries[m], "id": m}) for m in selector.store.model_ids]))
    return out


def internal_k(selector: Any, k: int, budget: Budget, pareto: bool) -> int:
    """The k to select with before `complete_selection`: every model when a budget or Pareto list must
    choose among them, else k."""
    if budget.active or pareto:
        n = len(selector.store.model_ids) if selector.store is not None else 0
        n += len(selector.published.models) if selector.published is not None else 0
        return max(k, n)
    return k


def answer_tasks(selector: Selector, tasks: Sequence[Task], settings: SelectionSettings | None = None, *,
                 budget: Budget | None = None, pareto: bool = False,
                 calibration: Calibration | None = None) -> list[dict[str, Any]]:
    """The answer to each task: the one JSON object that `mll-index select` prints, one line of
    `select --batch`, `/v1/select` and `/v1/select/batch` return (plus "index_version") and
    `select --server` prints. Every front end calls this; none assembles an answer of its own.

    Every model is ranked (`selector.select_batch` with `ranking_size=None`, every distinct class
    name embedded once for all tasks), then each task's answer is cut to `settings.k` per class
    within the budget (`complete_selection`), with its predicted accuracy. An index-wide problem
    (a label folder that cannot be used) is one line in every answer's "warnings".

    Args:
        settings: what the user asked for (default SelectionSettings()); `ranking_size` None lists every model.
        budget: limits on the chosen models' cost (default: none); pareto: also list the Pareto choices.
    Returns:
        One dict per task, in order: `Selection.to_dict()`'s fields plus "predicted_accuracy",
        "predicted_accuracy_about" and, when asked, "budget" / "pareto".
    Raises:
        InputError: a task or setting selection refuses, or a budget no model meets.
    """
    from mll_index.selection.selector import select_batch

    chosen = settings or SelectionSettings()
    budget = budget or Budget()
    calibration = calibration or load_calibration()   # read once for the whole batch, not per task
    ranked = chosen.with_(k=internal_k(selector, chosen.k, budget, pareto), ranking_size=None)
    full = select_batch(selector, list(tasks), ranked)
    costs = selection_costs(selector) if budget.active or pareto else None
    index_lines = damaged_label_warnings(selector)
    answers = []
    for task, selection in zip(tasks, full):
        out = complete_selection(selector, task, selection, k=chosen.k, ranking_size=chosen.ranking_size,
                                 budget=budget, costs=costs, pareto=pareto, calibration=calibration)
        if index_lines:
            out["warnings"] = [*out.get("warnings", []), *index_lines]
        answers.append(out)
    return answers


def answer_task(selector: Selector, task: Task, settings: SelectionSettings | None = None,
                **changes: Any) -> dict[str, Any]:
    """`answer_tasks` for one task, with `settings` / keyword `changes` as for `select_models`
    (e.g. `answer_task(sel, task, k=3)`); a budget or Pareto list goes through `answer_tasks`."""
    return answer_tasks(selector, [task], settings_from(settings, changes))[0]


@dataclass(frozen=True)
class ChosenModels:
    """What `mll-index reuse` predicts with: the models per class of a selection, each class's lemma
    (the name of its best node's synset, where it has a node) and the task's name.

    `warnings` are the stderr lines of a selection made for the purpose (`select_for_reuse`), in the
    form `answer_warning_lines` gives; none for a selection read from its file.
    """

    models: dict[str, list[str]]
    lemmas: dict[str, str]
    task: str
    warnings: tuple[str, ...] = field(default=())


def read_selection_file(path: Path) -> ChosenModels:
    """The models, lemmas and task name of a selection JSON that `mll-index select` wrote (`answer_tasks`).

    Args:
        path: the selection file (read as `userfiles.read_user_json` reads).
    Returns:
        A ChosenModels with no warnings; the task name is "task" where the file has none.
    Raises:
        InputError: naming the file: unreadable or not JSON, or not a selection (no "classes", a class
            without "name" or "models", ...).
    """
    from mll_index.core.userfiles import read_user_json

    return _chosen_models(read_user_json(path, "selection file"), path)


def _chosen_models(data: Any, where: Any) -> ChosenModels:
    """The models per class, lemmas and task name of an answer's JSON (`Selection.to_dict()`'s shape).

    Raises:
        InputError: naming `where`: not a selection (no "classes", a class without "name" or "models", ...).
    """
    from mll_index.models.zeroshot import lemma_of

    try:
        models = {c["name"]: [m["model"] for m in c["models"]] for c in data["classes"]}
        lemmas = {c["name"]: lemma_of(c["nodes"][0]["synset"]) for c in data["classes"] if c.get("nodes")}
        name = data.get("task", "task")
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{where}: not a selection written by `mll-index select` ({exc})") from None
    return ChosenModels(models, lemmas, name)


def select_for_reuse(index_path: Path, task: Task, settings: SelectionSettings | None = None, *,
                     cache: EmbeddingCache | None = None, hub_models: Collection[str] | None = None) -> ChosenModels:
    """Select for `task` on the index at `index_path` and keep what `mll-index reuse` predicts with.

    The warnings are those of each class with a weak match (`answer_warning_lines` with
    `prompts=False`: reuse checks the prompts itself, with each model's own tokenizer).

    Args:
        index_path: the node index to select on; task: a checked task (`make_task`, `read_task_file`).
        settings: k, alpha, nodes, mode and labels (default SelectionSettings()).
        cache: the caption-vector cache the selector embeds through (None: none).
        hub_models: the ids of the hub reuse runs (None: any model). Each class keeps its k best
            models among them, so published labels that rank models outside the hub still give the
            hub's best (reuse can only run the hub's models).
    Returns:
        A ChosenModels: models per class, each matched class's lemma, the task's name, the warning lines.
    Raises:
        InputError: an index that cannot be opened, a task or setting the selection refuses, or no
            model of the hub among those the labels rank.
    """
    from mll_index.selection.selector import open_selector, select_models

    settings = settings or SelectionSettings()
    wide = settings if hub_models is None else settings.with_(k=1 << 20)
    selection = select_models(open_selector(index_path, cache=cache), task, wide)
    data = selection.to_dict()
    if hub_models is not None:
        keep = set(hub_models)
        for c in data["classes"]:
            c["models"] = [m for m in c["models"] if m["model"] in keep][:settings.k]
        if not any(c["models"] for c in data["classes"]):
            raise InputError(f"none of the {len(selection.ranking)} models the {selection.labels} labels rank is in "
                             "the hub given to reuse; label the hub's models, or pass a hub that holds them")
    return replace(_chosen_models(data, task.name), task=task.name,
                   warnings=tuple(answer_warning_lines(data, prompts=False)))


def damaged_label_warnings(selector: Selector) -> list[str]:
    """One line per label folder the selector could not use. Only the counts mode answers with a damaged
    label (the others refuse), so the line says what it did: counts from the label matrix, or left out."""
    store = selector.store
    if store is None:
        return []
    return [f"the label folder of {model_id!r} cannot be used ({why}); "
            + ("its counts come from the label matrix" if model_id in store.model_ids else "left out")
            for model_id, why in store.damaged.items()]


def answer_warning_lines(answer: dict[str, Any], prompts: bool = True) -> list[str]:
    """The lines `mll-index select` prints on stderr for an answer, read from its JSON alone (so the
    local command and `select --server` print the same): its "warnings" (with `prompts`; `reuse`
    checks the prompts itself, with each model's own tokenizer) and each class with a weak match."""
    lines = [f"mll-index: warning: {line}" for line in answer.get("warnings", [])] if prompts else []
    for c in answer.get("classes", []):
        if c.get("low_confidence"):
            best = c["nodes"][0] if c.get("nodes") else None
            via = best.get("via", "direct") if best else "direct"
            lent = f", lent by {via.split(':', 1)[1]}" if via != "direct" and ":" in via else ""
            # Warnings belong to the label source in use: published labels rest on benchmark classes, not nodes.
            if c.get("benchmark") and (answer.get("labels") == "published" or not best):
                near = c["benchmark"][0]
                why = (answer.get("published") or {}).get("fallback_classes", {}).get(c["name"], "a weak match")
                lines.append(f"mll-index: warning: task {answer.get('task')!r}: class {c['name']!r} matches no "
                             f"benchmark class well (nearest {near['name']!r} of {near['dataset']}, {near['similarity']}): "
                             f"{why}; its models rest on general strength or a weak match")
                continue
            lines.append(f"mll-index: warning: task {answer.get('task')!r}: class {c['name']!r} matches no labeled "
                         f"node well (best {best['synset'] if best else 'none'}, score {best['score'] if best else 'n/a'}"
                         f"{lent}); its models rest on a weak match")
    return lines


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
    from mll_index.selection.answer_warnings import PROMPT_WARNING_TAIL, probe_warnings, selection_warnings

    budget = budget or Budget()
    calibration = calibration or load_calibration()
    got = selection_matrix(full)
    if got is None:
        f1 = None
    elif full.rule == "calibrated":     # the calibrated rule's scores are predicted F1 themselves
        f1 = np.clip(np.nan_to_num(got[1], nan=0.0), 0.0, 1.0)
    else:
        f1 = f1_matrix(*got[:2], got[2], full.alpha)
    choice: Choice | None = None
    front: list[Choice] = []
    if budget.active or pareto:
        ids, value = _budget_values(full, got, f1)
        costs = costs if costs is not None else selection_costs(selector)
        lacking = [m for m in ids if costs.get(m) is None or costs[m].gflops is None]
        if lacking:
            log.warning("model(s) %s have no FLOPs figure and cannot be measured: left out of the budget", lacking[:10])
        # Ranked by each class's order in `full` (select's own, ties included) rather than by the
        # rounded scores, so that a budget that does not bind gives select's answer exactly.
        order = _class_order(full, ids)
        if budget.active:
            choice = choose_within_budget(ids, order, value, costs, k, budget)
        if pareto:
            front = pareto_front(ids, order, value, costs, k)
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
                      ranking=tuple(ranking), warnings=warnings)
    out = trimmed.to_dict()
    _add_predicted_accuracy(out, selector, full, classes, got, f1, calibration)
    if choice is not None and costs is not None:
        out["budget"] = {"limits": {"max_gflops": budget.max_gflops, "max_params": budget.max_params,
                                    "budget_gflops": budget.budget_gflops},
                         "models": list(choice.models), "gflops": choice.gflops,
                         "params_m": round(sum(costs[m].params_m or 0.0 for m in choice.models), 3)}
    if pareto:
        out["pareto"] = []
        for p in front:
            if got is None:
                predicted = published_set_accuracy(full.model_accuracy, p.per_class)[0]
            else:
                features = class_features(full, f1, got[0], got[2], [list(models) for models in p.per_class],
                                          selector.index.graph.ancestors)
                predicted = predict_features(features, calibration)[0].to_dict()
            out["pareto"].append({"gflops": p.gflops, "models": list(p.models), "predicted_accuracy": predicted})
    return out


def _budget_values(full: Any, got: Any, f1: np.ndarray | None) -> tuple[list[str], np.ndarray]:
    """The models a budget chooses among and the (n, C) value it maximises: image-based labels' F1, or under
    published labels each model's predicted accuracy on the task (a table gives one figure per dataset, so
    the same for every class).

    Raises:
        InputError: neither is there (published labels without a usable accuracy model, or a cut ranking).
    """
    if got is not None and f1 is not None:
        return got[0], f1
    published = selection_matrix(full, "published")
    if published is None or full.model_accuracy is None:
        raise InputError("budgets and --pareto need image-based labels, or published labels with predicted "
                         f"accuracy ({full.model_accuracy_about or 'none here'}), with every model ranked")
    ids = published[0]
    value = np.array([[(full.model_accuracy.get(m) or {}).get("estimate", 0.0)] for m in ids])
    return ids, np.repeat(value, len(full.classes), axis=1)


def _add_predicted_accuracy(out: dict[str, Any], selector: Any, full: Any, classes: Sequence[Any], got: Any,
                            f1: np.ndarray | None, calibration: Calibration) -> None:
    """Set `out`'s "predicted_accuracy" (task and per class) and "predicted_accuracy_about": the
    calibration's estimate for the models kept, or None with the reason where the ranking is not
    image-based F1 (`got`, `f1`: `selection_matrix(full)` and its F1; None then).

    Under the calibrated rule the same calibration is applied to the chosen models' F1 on the sample
    images (ModelScore.f1), not to the rule's predicted F1: the rule's own accuracy model, fitted on
    pseudo-tasks' sample images, missed real tasks' accuracy by 0.31 (bench/calibrated_rule.py,
    `pseudo_task_accuracy_model`), since its shrunken predictions and the sample images both differ
    from what a task's own images give."""
    if f1 is not None and full.rule == "calibrated":
        f1, task_scores = sample_f1(full, got[0])
    else:
        task_scores = got[2] if got is not None else None
    if f1 is not None:
        features = class_features(full, f1, got[0], task_scores, [[m.model for m in cls.models] for cls in classes],
                                  selector.index.graph.ancestors)
        task_pred, class_pred = predict_features(features, calibration)
        out["predicted_accuracy"] = task_pred.to_dict()
        for entry, pred in zip(out["classes"], class_pred):
            entry["predicted_accuracy"] = pred.to_dict()
        out["predicted_accuracy_about"] = (f"calibration v{calibration.version}: "
                                           f"{calibration.about.get('summary', 'see data/accuracy_calibration.json')}")
        if full.rule == "calibrated":
            out["predicted_accuracy_about"] += ("; applied to the sample-image F1 of the models the calibrated rule "
                                                "chose")
        outside = extrapolation(features, calibration)
        if outside:
            out["predicted_accuracy_about"] += ("; this task lies outside the calibration's range, so the estimate "
                                                "is an extrapolation and its interval was not measured: "
                                                + ", ".join(outside))
    elif full.model_accuracy is not None:
        task_pred, class_pred = published_set_accuracy(full.model_accuracy, [[m.model for m in c.models]
                                                                            for c in classes])
        out["predicted_accuracy"] = task_pred
        for entry, pred in zip(out["classes"], class_pred):
            entry["predicted_accuracy"] = pred
        out["predicted_accuracy_about"] = (f"{full.model_accuracy_about}; a class's figure is that of its best chosen "
                                           "model on the whole task (a results table gives one figure per dataset), "
                                           "the task's the mean over its classes")
        if full.model_accuracy_weak:
            out["predicted_accuracy_low_confidence"] = True
    elif full.labels == "published":
        out["predicted_accuracy"] = None
        for entry in out["classes"]:
            entry["predicted_accuracy"] = None
        out["predicted_accuracy_about"] = full.model_accuracy_about or "not predicted"
    else:
        # The calibration maps F1 on sample images to accuracy; a merged rank is another scale, so no
        # prediction is made rather than a wrong one.
        out["predicted_accuracy"] = None
        for entry in out["classes"]:
            entry["predicted_accuracy"] = None
        hint = "; select with --labels image for one" if selector.store is not None else ""
        out["predicted_accuracy_about"] = (f"not predicted: the calibration (v{calibration.version}) maps image-based "
                                           f"labels' F1 to accuracy, and these models were ranked by {full.labels} "
                                           f"labels{hint}")


def published_set_accuracy(accuracy: dict[str, dict[str, float]],
                           per_class: Sequence[Sequence[str]]) -> tuple[dict[str, float] | None, list[Any]]:
    """Published labels' predicted accuracy of chosen models: per class, the `{estimate, low, high}` of its
    chosen model with the highest estimate (None where no chosen model has one); for the task, the mean of
    each over the classes that have one (None when none has)."""
    classes: list[Any] = []
    for models in per_class:
        known = [accuracy[m] for m in models if accuracy.get(m) is not None]
        classes.append(dict(max(known, key=lambda p: p["estimate"])) if known else None)
    have = [c for c in classes if c is not None]
    task = {key: round(float(np.mean([c[key] for c in have])), 4) for key in ("estimate", "low", "high")} \
        if have else None
    return task, classes


def sample_f1(full: Any, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Under the calibrated rule: the (n, C) sample-image F1 of each class's listed models (NaN for the
    others) and the (n,) models' mean F1 over the classes, read from the selection's ModelScore.f1."""
    pos = {m: i for i, m in enumerate(ids)}
    f1 = np.full((len(ids), len(full.classes)), np.nan)
    for c, cls in enumerate(full.classes):
        for m in cls.models:
            f1[pos[m.model], c] = m.f1 if m.f1 is not None else np.nan
    task = np.array([m.f1 if m.f1 is not None else np.nan for m in full.ranking])
    return f1, task


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
