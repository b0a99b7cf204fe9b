"""The reuse command: predict a task's images with the models a selection chose."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mll_index.cli.options import (
    echo_rates,
    echo_unreadable,
    embedding_cache,
    index_option,
    read_task,
    selection_options,
    workers_option,
)
from mll_index.errors import InputError


def _warn_weak(selection, prompts: bool = True) -> None:  # type: ignore[no-untyped-def]
    from mll_index.selection.answer import answer_warning_lines

    # (reuse checks the prompts itself, with each model's own tokenizer: prompts=False there)
    for line in answer_warning_lines(selection.to_dict(), prompts):
        click.echo(line, err=True)


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
    from mll_index.models.hub import load_hub
    from mll_index.reuse.ensemble import reuse_models, write_predictions

    hub = load_hub(hub_source, validate=False)
    if selection_file is not None:
        if names_csv or task_file:
            raise InputError("give --selection or a task (--names / --task), not both")
        models, lemmas, name = _read_selection(selection_file)
    else:
        models, lemmas, name = _select_here(names_csv, task_file, index_path, k, alpha, n_nodes, mode)
    result = reuse_models(hub, models, images, task=name, device=device, progress=True, lemmas=lemmas, force=force,
                          workers=workers)
    for line in result.warnings:
        click.echo(f"mll-index: warning: {line}", err=True)
    if out:
        write_predictions(result, out, fmt)
    if result.images.unreadable:
        echo_unreadable(result.images.unreadable, result.images.reasons, images)
    echo_rates(result.stats)
    click.echo(json.dumps(result.summary(), indent=1))


def _read_selection(selection_file: Path) -> tuple[dict[str, list[str]], dict[str, str], str]:
    """(models per class, lemma per class, task name) of a selection `mll-index select` wrote."""
    from mll_index.core.userfiles import read_user_json
    from mll_index.models.zeroshot import lemma_of

    data = read_user_json(selection_file, "selection file")
    try:
        models = {c["name"]: [m["model"] for m in c["models"]] for c in data["classes"]}
        lemmas = {c["name"]: lemma_of(c["nodes"][0]["synset"]) for c in data["classes"] if c.get("nodes")}
        name = data.get("task", "task")
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{selection_file}: not a selection written by `mll-index select` ({exc})") from None
    return models, lemmas, name


def _select_here(names_csv: str | None, task_file: Path | None, index_path: Path | None, k: int, alpha: float,
                 n_nodes: int, mode: str) -> tuple[dict[str, list[str]], dict[str, str], str]:
    """(models per class, lemma per class, task name) of the task (--names or --task) selected on the index."""
    from mll_index.core.paths import default_index_path
    from mll_index.models.zeroshot import lemma_of
    from mll_index.selection.selector import open_selector, select_models
    from mll_index.selection.settings import SelectionSettings
    from mll_index.selection.task import make_task

    if names_csv:
        task = make_task([n for n in names_csv.split(",") if n.strip()] if names_csv.strip() else [])
    elif task_file:
        task = read_task((), None, task_file)
    else:
        raise InputError("give --selection, --names or --task")
    settings = SelectionSettings(k=k, alpha=alpha, n_nodes=n_nodes, mode=mode)  # type: ignore[arg-type]
    selection = select_models(open_selector(index_path or default_index_path(), cache=embedding_cache()), task,
                              settings)
    _warn_weak(selection, prompts=False)
    models, name = selection.models_for(), task.name
    lemmas = {c.name: lemma_of(c.nodes[0].synset) for c in selection.classes if c.nodes}
    return models, lemmas, name


COMMANDS = [reuse]
