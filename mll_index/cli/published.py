"""The published labels' command: published import (a results table and class-name lists)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mll_index.cli.options import index_option


@click.group()
def published() -> None:
    """Labels from published benchmark results (a results table and class-name lists)."""


@published.command("import")
@index_option
@click.option("--results", type=click.Path(path_type=Path), required=True,
              help="Results CSV: open_clip's (name, pretrained, params (M), FLOPs (B), one column per dataset) or "
                   "LOVM's (one row per model and dataset: dataset, model_fullname or model + pretrained, acc1).")
@click.option("--classnames", "classnames", type=click.Path(path_type=Path), multiple=True, required=True,
              help="Class names: a JSON file {dataset key: [names]} or a folder of <key>.txt (repeatable).")
@click.option("--mapping", type=click.Path(path_type=Path), default=None,
              help="Which class-name key each column uses [default: the shipped published_datasets.json].")
@click.option("--domains", type=click.Path(path_type=Path), default=None,
              help="JSON {dataset: domain} (LOVM's dataset_domains.json), matched against a task's domain.")
@click.option("--descriptions", type=click.Path(path_type=Path), default=None,
              help="JSON {dataset: task description} (LOVM's dataset_tasks.json), matched against a task's description.")
@click.option("--scale", type=click.Choice(["auto", "percent", "fraction"]), default="auto", show_default=True,
              help="The table's figures: percentages, fractions, or auto (percent when any figure is above 1).")
def published_import(index_path: Path | None, results: Path, classnames: tuple[Path, ...], mapping: Path | None,
                     domains: Path | None, descriptions: Path | None, scale: str) -> None:
    """Import published results as coarse labels of the index (replaces earlier published labels)."""
    from mll_index.core.paths import default_index_path
    from mll_index.published.store import import_published

    summary = import_published(index_path or default_index_path(), results, list(classnames), mapping=mapping,
                               domains=domains, descriptions=descriptions, scale=scale)  # type: ignore[arg-type]
    click.echo(f"mll-index: {summary['ranking']}", err=True)
    if not summary["accuracy_model"].get("usable"):
        click.echo(f"mll-index: {summary['accuracy_model']['about']}", err=True)
    click.echo(json.dumps(summary, indent=1))


COMMANDS = [published]
