"""The reuse command: predict a task's images with the models a selection chose."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mll_index.cli.options import (
    echo_rates, echo_unreadable, embedding_cache, index_option, selection_options, workers_option,
)
from mll_index.errors import InputError


@click.command()
@click.argument("images", type=click.Path(path_type=Path))
@click.option("--hub", "hub_source", required=True, help="Built-in hub name or hub file.")
@click.option("--selection", "selection_file", type=click.Path(path_type=Path), default=None,
              help="A selection written by `mll-index select` (else the task is selected here).")
@click.option("--names", "names_csv", default=None, help="Class names, comma-separated (to select here).")
@click.option("--task", "task_file", type=click.Path(path_type=Path), default=None, help="A task file (to select here).")
@index_option
@selection_options
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Predictions file [default: print a summary only].")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--device", default=None, help="cpu, cuda, ... [default: cuda if available].")
@click.option("--force", is_flag=True, help="Predict even where a model's tokenizer cuts a class name or makes two "
              "classes' prompts identical (each such model is reported).")
@workers_option
def reuse(images: Path, hub_source: str, selection_file: Path | None, names_csv: str | None, task_file: Path | None,
          index_path: Path | None, k: int, alpha: float, n_nodes: int, mode: str, out: Path | None, fmt: str,
          device: str | None, force: bool, workers: int) -> None:
    """Predict a task's images with the selected models, combined per class by inverse entropy.

    IMAGES is a flat folder of images, or one subfolder per class name (then accuracy is reported).
    """
    from mll_index.core.paths import default_index_path
    from mll_index.models.hub import load_hub
    from mll_index.reuse.ensemble import reuse_models, write_predictions
    from mll_index.selection.answer import read_selection_file, select_for_reuse
    from mll_index.selection.settings import SelectionSettings

    hub = load_hub(hub_source, validate=False)
    if selection_file is not None:
        if names_csv or task_file:
            raise InputError("give --selection or a task (--names / --task), not both")
        chosen = read_selection_file(selection_file)
    else:
        from mll_index.selection.task import make_task, read_task_file

        if names_csv:
            task = make_task([n for n in names_csv.split(",") if n.strip()] if names_csv.strip() else [])
        elif task_file:
            task = read_task_file(task_file)
        else:
            raise InputError("give --selection, --names or --task")
        settings = SelectionSettings(k=k, alpha=alpha, n_nodes=n_nodes, mode=mode)  # type: ignore[arg-type]
        chosen = select_for_reuse(index_path or default_index_path(), task, settings, cache=embedding_cache(),
                                  hub_models=[m.id for m in hub.models])
        for line in chosen.warnings:
            click.echo(line, err=True)
    result = reuse_models(hub, chosen.models, images, task=chosen.task, device=device, progress=True,
                          lemmas=chosen.lemmas, force=force, workers=workers)
    for line in result.warnings:
        click.echo(f"mll-index: warning: {line}", err=True)
    if out:
        write_predictions(result, out, fmt)
    if result.images.unreadable:
        echo_unreadable(result.images.unreadable, result.images.reasons, images)
    echo_rates(result.stats)
    click.echo(json.dumps(result.summary(), indent=1))


COMMANDS = [reuse]
