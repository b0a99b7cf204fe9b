"""Evaluating selection on tasks with ground truth: MLL against the baselines, with its settings swept.

Every hub model predicts once on every task's images (the oracles need that anyway); MLL's
ensembles for any k, alpha and selection mode are then combined from those predictions, so
a sweep costs selection time only. Results: a table per task and method (Markdown + CSV),
the sweep, and a plot (accuracy per task and method; accuracy against k).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.core.artifacts import atomic_file, write_json
from mll_index.errors import InputError
from mll_index.evaluation.baselines import (
    accuracy_of, inb_model, oracle_per_class, oracle_single, random_accuracy, split_half_ceiling, text_proxy_score,
)
from mll_index.images.encoding import (
    EncodeStats, Probabilities, merge_probabilities, model_passes, rates, zero_shot_probabilities,
)
from mll_index.images.loader import image_set_from_task
from mll_index.index.captions import Concept, WordNetExpander
from mll_index.models.hub import Hub, load_model
from mll_index.reuse.ensemble import TaskImages, combine, readable_images, scan_task_images
from mll_index.selection.selector import PreparedTasks, Selection, Selector, prepare_tasks, select_prepared
from mll_index.selection.settings import SelectionSettings
from mll_index.selection.task import make_task

log = logging.getLogger(__name__)

METHODS = ("mll_k1", "mll_k3", "inb", "random", "text_proxy", "oracle_single", "split_half_ceiling",
           "oracle_per_class")
# MLL without the tasks' domain words, to show what the domain word adds.
EXTRA = ("mll_k1_no_domain", "mll_k3_no_domain")
COLUMNS = METHODS + EXTRA
# The calibrated rule (`mll-index calibrate`) beside the paper's, where the index has one.
CALIBRATED = ("calibrated_k1", "calibrated_k3", "calibrated_k1_no_domain", "calibrated_k3_no_domain")
KS = (1, 2, 3, 5)
ALPHAS = (0.0, 0.3, 0.5, 0.7, 0.9, 1.0)
_Key = tuple[str, float, int]   # (mode, alpha, k): one point of the sweep


@dataclass(frozen=True)
class EvalTask:
    """A task with ground truth: class names, an ImageFolder by class name, and the domain word a user
    would give (None for mixed images)."""

    name: str
    class_names: tuple[str, ...]
    folder: Path
    domain: str | None = None


@dataclass
class Evaluation:
    """Accuracy per task and method, the sweep over k / alpha / mode, and what was chosen."""

    tasks: dict[str, dict[str, float]]
    mean: dict[str, float]
    sweep: list[dict[str, Any]]
    chosen: dict[str, dict[str, Any]]
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    rates: dict[str, Any] = field(default_factory=dict)       # `images.encoding.rates` of predicting every model
    stats: list[EncodeStats] = field(default_factory=list)    # per pass over a task's images
    columns: tuple[str, ...] = COLUMNS                         # the methods in `tasks` and `mean`, in table order

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "mean": self.mean, "sweep": self.sweep, "chosen": self.chosen,
                "seconds": self.seconds, "settings": self.settings, "rates": self.rates,
                "columns": list(self.columns)}

    def table(self) -> str:
        """A Markdown table: one row per task, one column per method, and the mean."""
        cols = self.columns
        head = "| task | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n"
        rows = [f"| {t} | " + " | ".join(f"{r[m]:.3f}" for m in cols) + " |" for t, r in self.tasks.items()]
        rows.append("| **mean** | " + " | ".join(f"**{self.mean[m]:.3f}**" for m in cols) + " |")
        return head + "\n".join(rows) + "\n"


def _all_probabilities(hub: Hub, tasks: Sequence[EvalTask], images: dict[str, TaskImages], device: str,
                       progress: bool, workers: int = 0, batch_size: int = 256
                       ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, float]], dict[str, TaskImages],
                                  list[EncodeStats]]:
    """Every model's probabilities on every task (task → model → (n, C)), its text-proxy score, each task's
    readable images (new records) and the timing of every pass.

    Per pass of models (`model_passes`: one preprocessing configuration), each task's images stream once through
    `mll_index.images.encoding.zero_shot_probabilities`, every model of the pass run on each batch.
    """
    expander = WordNetExpander()
    captions = {t.name: expander.expand([Concept(name=n) for n in t.class_names]) for t in tasks}
    image_sets = {t.name: image_set_from_task(images[t.name]) for t in tasks}
    passes: dict[str, list[Probabilities]] = {t.name: [] for t in tasks}
    proxy: dict[str, dict[str, float]] = {t.name: {} for t in tasks}
    for group in model_passes(list(hub)):
        loaded = [load_model(model, device) for model in group]
        for t in tasks:
            got = zero_shot_probabilities(loaded, image_sets[t.name], t.class_names, batch_size=batch_size,
                                          workers=workers, device=device, progress=progress)
            passes[t.name].append(got)
            for model in loaded:
                mid = model.hub_model.id
                proxy[t.name][mid] = text_proxy_score(model, captions[t.name], got.class_embeddings[mid], device)
        del loaded
    probs: dict[str, dict[str, np.ndarray]] = {}
    readable: dict[str, TaskImages] = {}
    stats: list[EncodeStats] = []
    for t in tasks:
        merged = merge_probabilities(passes[t.name])
        probs[t.name] = merged.probabilities
        readable[t.name] = readable_images(images[t.name], merged.positions, merged.unreadable)
        stats += merged.stats
    return probs, proxy, readable, stats


def evaluate_tasks(selector: Selector, hub: Hub, tasks: Sequence[EvalTask], *, alpha: float = 0.7,
                   mode: str = "restricted", n_nodes: int = 5, ks: Sequence[int] = KS,
                   alphas: Sequence[float] = ALPHAS, device: str = "cpu", progress: bool = False,
                   workers: int = 0, batch_size: int = 256) -> Evaluation:
    """MLL (k = 1 and 3 at the given alpha and mode) and the baselines on every task, plus the sweep.

    An index with published labels only is evaluated on them: its models are the published ones,
    and the selection modes (which only change how image-based labels are read) are not swept.

    Every task's images stream through `mll_index.images.loader` (`workers` decoding processes, `batch_size`
    images per batch); the decode and encode rates are in `Evaluation.rates`.

    Raises:
        InputError: a task without labeled images, or a labeled model missing from the hub.
    """
    if not tasks:
        raise InputError("no tasks to evaluate")
    labeled, modes = _labeled_models(selector, hub, mode)
    images = _labeled_images(tasks)
    started = time.perf_counter()
    probs, proxy, images, stats = _all_probabilities(hub, tasks, images, device, progress, workers, batch_size)
    t_predict = time.perf_counter() - started
    # The paper's rule for MLL and its sweep (paper fidelity); the calibrated rule beside it where the index has one.
    base = SelectionSettings(alpha=alpha, n_nodes=n_nodes, mode=mode, rule="mll")  # type: ignore[arg-type]
    prepared = prepare_tasks(selector, [make_task(t.class_names, t.name, domain=t.domain) for t in tasks], base)
    started = time.perf_counter()
    grid = [base.with_(mode=m, alpha=a, k=k) for m in modes for a in alphas for k in ks]
    grid += [base.with_(k=k) for k in set((1, 3)) - set(ks)]
    sweep, results, selections = _sweep(selector, prepared, grid, tasks, probs, images, labeled)
    extra = {f"mll_k{k}_no_domain": select_prepared(selector, prepared, base.with_(k=k, use_domain=False))
             for k in (1, 3)}
    columns = COLUMNS
    if mode == "restricted" and selector.calibrated_rule("auto") is not None:
        columns += CALIBRATED
        for name in CALIBRATED:
            k, use_domain = int(name[len("calibrated_k")]), not name.endswith("_no_domain")
            extra[name] = select_prepared(selector, prepared, base.with_(k=k, use_domain=use_domain, rule="calibrated"))
    t_select = time.perf_counter() - started
    table, chosen = _methods_table(hub, tasks, probs, proxy, images, labeled, results, selections, (mode, alpha),
                                   extra)
    mean = {m: round(float(np.mean([r[m] for r in table.values()])), 4) for m in columns}
    return Evaluation(table, mean, sweep, chosen,
                      {"predict_all_models": round(t_predict, 2), "selection_sweep": round(t_select, 2)},
                      {"alpha": alpha, "mode": mode, "n_nodes": n_nodes, "ks": list(ks), "alphas": list(alphas),
                       "rule": "mll (the paper's; calibrated_* columns: the index's calibrated rule)"},
                      rates(stats), stats, columns)


def _labeled_models(selector: Selector, hub: Hub, mode: str) -> tuple[list[str], tuple[str, ...]]:
    """The models to evaluate (every labeled one) and the selection modes to sweep.

    The oracles need every labeled model's predictions, so each must be in the hub.

    Raises:
        InputError: an index without labels, or a labeled model missing from the hub.
    """
    if selector.store is not None:
        labeled, modes = list(selector.store.model_ids), ("restricted", "counts")
    elif selector.published is not None:
        labeled, modes = [m["id"] for m in selector.published.models], (mode,)
    else:
        raise InputError(f"{selector.index.path}: the index holds no labels; run `mll-index label`")
    missing = [m for m in labeled if m not in hub.ids]
    if missing:
        raise InputError(f"labeled model(s) {missing[:10]} are not in hub {hub.name!r} (its models: "
                         f"{list(hub.ids)[:10]}); evaluate predicts with every labeled model")
    return labeled, modes


def _labeled_images(tasks: Sequence[EvalTask]) -> dict[str, TaskImages]:
    """Each task's images with their ground truth, checked before any model is loaded.

    Raises:
        InputError: a task folder that is not an ImageFolder by class name.
    """
    images = {t.name: scan_task_images(t.folder, t.class_names) for t in tasks}
    for t in tasks:
        if not images[t.name].labeled:
            raise InputError(f"task {t.name!r}: {t.folder} is not an ImageFolder by class name (no ground truth)")
    return images



def _sweep(selector: Selector, prepared: PreparedTasks, grid: Sequence[SelectionSettings], tasks: Sequence[EvalTask],
           probs: dict[str, dict[str, np.ndarray]], images: dict[str, TaskImages], labeled: Sequence[str]
           ) -> tuple[list[dict[str, Any]], dict[_Key, list[float]], dict[_Key, list[Selection]]]:
    """MLL at every point of `grid`, combined from the predictions made once (selection time only).

    Returns:
        The sweep's rows (mode, alpha, k, mean and per-task accuracy, rounded), and per (mode, alpha, k)
        the accuracy on each task and the selection for each task, in `tasks` order.
    """
    sweep: list[dict[str, Any]] = []
    results: dict[_Key, list[float]] = {}
    selections: dict[_Key, list[Selection]] = {}
    for settings in grid:
        m, a, k = settings.mode, settings.alpha, settings.k
        if (m, a, k) in results:
            continue
        chosen = select_prepared(selector, prepared, settings)
        accs = []
        for t, sel in zip(tasks, chosen):
            labels = images[t.name].labels
            scores = combine({mid: probs[t.name][mid] for mid in labeled}, sel.models_for(), t.class_names)
            accs.append(float((scores.argmax(axis=1) == labels).mean()))
        results[(m, a, k)] = accs
        selections[(m, a, k)] = chosen
        sweep.append({"mode": m, "alpha": a, "k": k, "mean": round(float(np.mean(accs)), 4),
                      "tasks": {t.name: round(v, 4) for t, v in zip(tasks, accs)}})
    return sweep, results, selections


def _methods_table(hub: Hub, tasks: Sequence[EvalTask], probs: dict[str, dict[str, np.ndarray]],
                   proxy: dict[str, dict[str, float]], images: dict[str, TaskImages], labeled: Sequence[str],
                   results: dict[_Key, list[float]], selections: dict[_Key, list[Selection]],
                   evaluated: tuple[str, float], extra: dict[str, list[Selection]]
                   ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
    """Every task's accuracy per method (rounded), and what MLL and the baselines chose.

    MLL's figures are the sweep's at `evaluated` (mode, alpha); `extra[column]` holds the selections of
    the other MLL columns (without the domain word; the calibrated rule's).
    """
    mode, alpha = evaluated
    table: dict[str, dict[str, float]] = {}
    chosen: dict[str, dict[str, Any]] = {}
    inb = inb_model(hub, labeled)
    for i, t in enumerate(tasks):
        labels = images[t.name].labels
        p = {m: probs[t.name][m] for m in labeled}
        best_single, best_acc = oracle_single(p, labels)
        proxy_best = max(sorted(labeled), key=lambda m: proxy[t.name][m])
        table[t.name] = {
            "mll_k1": results[(mode, alpha, 1)][i], "mll_k3": results[(mode, alpha, 3)][i],
            "inb": accuracy_of(p[inb], labels), "random": random_accuracy(p, labels),
            "text_proxy": accuracy_of(p[proxy_best], labels), "oracle_single": best_acc,
            "split_half_ceiling": split_half_ceiling(p, labels),
            "oracle_per_class": oracle_per_class(p, labels, len(t.class_names))}
        for column, chosen_sel in extra.items():
            scores = combine(p, chosen_sel[i].models_for(), t.class_names)
            table[t.name][column] = float((scores.argmax(axis=1) == labels).mean())
        table[t.name] = {k: round(v, 4) for k, v in table[t.name].items()}
        chosen[t.name] = {"domain": t.domain, "mll_k1": selections[(mode, alpha, 1)][i].models_for(), "inb": inb,
                          "text_proxy": proxy_best, "oracle_single": best_single,
                          "images": int(len(labels))}
    return table, chosen


def write_evaluation(result: Evaluation, folder: Path) -> dict[str, Path]:
    """Write evaluation.json, evaluation.md, evaluation.csv and evaluation.png into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {k: folder / f"evaluation.{k}" for k in ("json", "md", "csv", "png")}
    write_json(paths["json"], result.to_dict())
    md = ["# Selection on the tasks\n", result.table(), "\n## Sweep (mean accuracy over tasks)\n",
          "| mode | alpha | k=" + " | k=".join(str(k) for k in result.settings["ks"]) + " |",
          "|---|---|" + "---|" * len(result.settings["ks"])]
    for mode in ("restricted", "counts"):
        for a in result.settings["alphas"]:
            cells = [next((s["mean"] for s in result.sweep if s["mode"] == mode and s["alpha"] == a and s["k"] == k),
                          float("nan")) for k in result.settings["ks"]]
            md.append(f"| {mode} | {a} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    with atomic_file(paths["md"]) as handle:
        handle.write("\n".join(md) + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["task", *result.columns])
    for t, row in result.tasks.items():
        writer.writerow([t, *[row[m] for m in result.columns]])
    writer.writerow(["mean", *[result.mean[m] for m in result.columns]])
    with atomic_file(paths["csv"]) as handle:
        handle.write(buf.getvalue())
    _plot(result, paths["png"])
    return paths


def _plot(result: Evaluation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(result.tasks)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(16, 5), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(METHODS)
    x = np.arange(len(tasks))
    for i, m in enumerate(METHODS):
        ax1.bar(x + i * width, [result.tasks[t][m] for t in tasks], width, label=m)
    ax1.set_xticks(x + 0.4 - width / 2, tasks, rotation=45, ha="right", fontsize=8)
    ax1.set_ylabel("accuracy")
    ax1.set_title("accuracy per task and method")
    ax1.legend(fontsize=7, ncol=4)
    for mode in ("restricted", "counts"):
        ks = result.settings["ks"]
        ys = [next((s["mean"] for s in result.sweep if s["mode"] == mode and s["alpha"] == result.settings["alpha"]
                    and s["k"] == k), np.nan) for k in ks]
        ax2.plot(ks, ys, marker="o", label=f"MLL {mode}")
    for m in ("inb", "oracle_single"):
        ax2.axhline(result.mean[m], linestyle="--", linewidth=1, label=m, color="grey" if m == "inb" else "black")
    ax2.set_xlabel("k (models per class)")
    ax2.set_title(f"mean accuracy against k (alpha {result.settings['alpha']})")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    with atomic_file(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


def world_eval_tasks(world: Any) -> list[EvalTask]:
    """The emoji world's target tasks as EvalTasks; a task of one domain states it, as a user would."""
    return [EvalTask(t.name, tuple(t.class_names), world.task_dir(t.name), t.domains[0] if len(t.domains) == 1 else None)
            for t in world.tasks]



def folder_eval_tasks(root: Path) -> list[EvalTask]:
    """The tasks of a folder: each subfolder is a task named by it, an ImageFolder by class name
    (`<root>/<task>/<class name>/*.png`), its classes the sorted names of its subfolders.

    Raises:
        InputError: `root` is not a folder.
    """
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    return [EvalTask(d.name, tuple(sorted(p.name for p in d.iterdir() if p.is_dir())), d)
            for d in sorted(root.iterdir()) if d.is_dir()]
