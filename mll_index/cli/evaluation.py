"""The evaluation's commands: evaluate (MLL against the baselines) and demo (the whole paradigm, end to end)."""

from __future__ import annotations

from pathlib import Path

import click

from mll_index.cli.options import echo_rates, embedding_cache, index_option, workers_option


@click.command()
@index_option
@click.option("--hub", "hub_source", default=None, help="Hub file [default: the emoji world's].")
@click.option("--tasks-dir", type=click.Path(path_type=Path), default=None,
              help="Folder of tasks, each an ImageFolder by class name [default: the emoji world's tasks].")
@click.option("--world-size", type=click.Choice(["full", "small"]), default="full", show_default=True)
@click.option("--world-root", type=click.Path(path_type=Path), default=None)
@click.option("--alpha", default=0.7, show_default=True, type=click.FloatRange(0, 1))
@click.option("--mode", type=click.Choice(["restricted", "counts"]), default="restricted", show_default=True,
              help="Selection mode scored (the emoji world's hub has image-level labels).")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("evaluation"), show_default=True,
              help="Folder for evaluation.{md,csv,json,png}.")
@workers_option
def evaluate(index_path: Path | None, hub_source: str | None, tasks_dir: Path | None, world_size: str,
             world_root: Path | None, alpha: float, mode: str, out: Path, workers: int) -> None:
    """MLL against INB, random, text-proxy and oracle baselines on tasks with ground truth."""
    from mll_index.core.paths import default_index_path
    from mll_index.evaluation.run import evaluate_tasks, folder_eval_tasks, world_eval_tasks, write_evaluation
    from mll_index.models.hub import load_hub
    from mll_index.selection.selector import open_selector
    from mll_index.world import load_world

    world_obj = None
    if tasks_dir is None or hub_source is None:
        world_obj = load_world(world_size, world_root)
    hub = load_hub(hub_source, validate=False) if hub_source else load_hub(world_obj.hub_path)
    tasks = folder_eval_tasks(tasks_dir) if tasks_dir is not None else world_eval_tasks(world_obj)
    from mll_index.labels.folders import labeled_models
    from mll_index.labels.matrix import has_matrix

    path = index_path or default_index_path()
    # An index with published labels only is evaluated on those (naming models would ask for image labels).
    image_labels = path.is_dir() and (bool(labeled_models(path)) or has_matrix(path))
    selector = open_selector(path, models=list(hub.ids) if image_labels else None, cache=embedding_cache())
    result = evaluate_tasks(selector, hub, tasks, alpha=alpha, mode=mode, progress=True, workers=workers)
    echo_rates(result.stats)
    files = write_evaluation(result, out)
    from mll_index.evaluation.cost import plot_accuracy_gflops
    from mll_index.models.flops import model_costs

    files["gflops_png"] = out / "evaluation_gflops.png"
    plot_accuracy_gflops(result.mean, result.chosen, model_costs(list(hub)), files["gflops_png"])
    click.echo(result.table())
    click.echo(f"written: {', '.join(str(p) for p in files.values())}")


@click.command()
@index_option
@click.option("--size", type=click.Choice(["full", "small"]), default="full", show_default=True,
              help="The emoji world to run on.")
@click.option("--world-root", type=click.Path(path_type=Path), default=None)
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("demo-results"), show_default=True)
@click.option("--device", default=None, help="cpu, cuda, ... [default: cuda if available].")
def demo(index_path: Path | None, size: str, world_root: Path | None, out: Path, device: str | None) -> None:
    """The whole paradigm on the emoji world: build, label, select, reuse, compare with the baselines."""
    from mll_index.core.paths import default_index_path
    from mll_index.world.demo import run_demo

    result = run_demo(index_path or default_index_path(), out, size=size, world_root=world_root, device=device,
                      progress=True)
    click.echo(result.evaluation.table())
    click.echo(f"calibrated rule: {result.calibration}")
    click.echo(f"seconds: {result.seconds}")
    click.echo(f"written: {', '.join(str(p) for p in result.files.values())}")


COMMANDS = [evaluate, demo]
