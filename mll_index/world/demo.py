"""The demo: the whole MLL paradigm on the emoji world, from nothing to a table of accuracies.

Builds (or loads) the emoji world, labels its hub into the node index (only what is not
labeled yet), calibrates the index's selection rule where it has none fitted to those labels
(`mll-index calibrate`), then evaluates selection and reuse under the paper's rule and the
calibrated one against the baselines on every target task.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from mll_index.errors import InputError
from mll_index.evaluation.run import Evaluation, evaluate_tasks, world_eval_tasks, write_evaluation
from mll_index.labeling.run import label_models
from mll_index.labels.topk_table import write_topk_tables
from mll_index.models.hub import load_hub
from mll_index.selection.calibrate import calibrate_if_needed
from mll_index.selection.selector import open_selector
from mll_index.world import build_world

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    evaluation: Evaluation
    files: dict[str, Path]
    seconds: dict[str, float]
    world_root: Path
    calibration: str = ""   # what became of the calibrated rule: fitted now, already current, or why not fitted


def run_demo(index_path: Path, out: Path, *, size: str = "full", world_root: Path | None = None,
             device: str | None = None, progress: bool = False) -> DemoResult:
    """World → labels → selection and reuse on every target task → evaluation files in `out`.

    Raises:
        InputError: no node index at `index_path` (set-up builds the default one).
    """
    if not (Path(index_path) / "manifest.json").is_file():
        raise InputError(f"{index_path}: no node index here; build it with "
                         f"`mll-index build --recipe indexes/default.json` (set-up does)")
    seconds = {}
    started = time.perf_counter()
    world = build_world(size, world_root, progress=progress)
    seconds["world"] = round(time.perf_counter() - started, 1)
    hub = load_hub(world.hub_path)
    t = time.perf_counter()
    report = label_models(index_path, hub, world.samples_dir, device=device, batch_size=512, progress=progress)
    if report.failed:
        raise InputError(f"labeling failed for {sorted(report.failed)}: {next(iter(report.failed.values()))}")
    # Every model's top nodes stacked per sample set (as `mll-index labels compact` does): the restricted
    # confusion then reads the 13 models in one gather per task instead of one per model.
    write_topk_tables(index_path)
    seconds["label"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    try:
        report = calibrate_if_needed(index_path, progress=progress)
        calibration = "already current" if report is None else f"fitted on {report['pseudo_tasks']} pseudo-tasks"
    except InputError as exc:       # labels too few to calibrate on (the small world): the paper's rule alone
        calibration = f"not fitted: {exc}"
        log.warning("calibrated rule %s", calibration)
    seconds["calibrate"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    selector = open_selector(index_path, models=list(hub.ids))
    evaluation = evaluate_tasks(selector, hub, world_eval_tasks(world), device=device or "cpu", progress=progress)
    seconds["evaluate"] = round(time.perf_counter() - t, 1)
    files = write_evaluation(evaluation, out)
    seconds["total"] = round(time.perf_counter() - started, 1)
    return DemoResult(evaluation, files, seconds, world.root, calibration)
