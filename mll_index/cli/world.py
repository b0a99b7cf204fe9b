"""The emoji world's commands: world fetch, build, tasks, show."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mll_index.cli.options import echo_or_write


@click.group()
def world() -> None:
    """The emoji world: a real multi-domain corpus, a trained hub and target tasks, built offline."""


def _world_options(f):  # type: ignore[no-untyped-def]
    f = click.option("--root", type=click.Path(path_type=Path), default=None,
                     help="World directory [default: <cache>/world/<size>].")(f)
    return click.option("--size", type=click.Choice(["full", "small"]), default="full", show_default=True,
                        help="full: the demo's world; small: a few tasks and 3 models, for tests.")(f)


def _accuracy_table(accuracy: dict[str, dict[str, float]]) -> str:
    tasks = list(next(iter(accuracy.values())))
    width = max(len(m) for m in accuracy)
    lines = [f"{'model':<{width}}  " + "  ".join(f"{t[:12]:>12}" for t in tasks)]
    for model, row in accuracy.items():
        lines.append(f"{model:<{width}}  " + "  ".join(f"{row[t]:>12.3f}" for t in tasks))
    best = {t: max(accuracy, key=lambda m: accuracy[m][t]) for t in tasks}
    lines.append(f"{'best':<{width}}  " + "  ".join(f"{best[t][:12]:>12}" for t in tasks))
    return "\n".join(lines)


@world.command("fetch")
def world_fetch() -> None:
    """Fetch the emoji art packages from the npm registry (once; set-up runs this)."""
    from mll_index.world import fetch_world_art

    for package, path in fetch_world_art().items():
        click.echo(f"{package}: {path}")


@world.command("build")
@_world_options
@click.option("--tasks", "task_file", type=click.Path(path_type=Path), default=None,
              help="Task definitions (JSON) [default: the shipped emoji_tasks.json].")
@click.option("--rebuild", is_flag=True, help="Build even if an up-to-date world is there.")
@click.option("--retrain", is_flag=True,
              help="Train every hub model from its spec instead of using the shipped weights, and say whether "
                   "each equals them.")
@click.option("--ship-weights", "ship_to", type=click.Path(path_type=Path), default=None,
              help="Then write the hub's compact weights into this folder (maintainers: mll_index/data/emoji_weights).")
def world_build(size: str, root: Path | None, task_file: Path | None, rebuild: bool, retrain: bool,
                ship_to: Path | None) -> None:
    """Build the emoji world (or load it from the cache) and print its accuracy table."""
    from mll_index.world import build_world
    from mll_index.world.build import ship_world_weights

    built = build_world(size, root, task_file=task_file, progress=True, rebuild=rebuild, retrain=retrain)
    m = built.manifest
    click.echo(f"emoji world at {built.root}: {m['concepts']} concepts, {len(m['domains'])} domains, "
               f"{sum(m['images'].values())} images {m['images']}, {len(m['models'])} models")
    origin = {model: info.get("trained") for model, info in m["models"].items()}
    click.echo(f"hub weights: {origin}")
    compared = {model: info["equals_shipped"] for model, info in m["models"].items() if "equals_shipped" in info}
    if compared:
        click.echo(f"retrained weights equal to the shipped ones: {sum(compared.values())} of {len(compared)} "
                   f"{compared}")
    if ship_to is not None:
        shipped = ship_world_weights(built, ship_to)
        click.echo(f"wrote {len(shipped['models'])} compact checkpoints to {ship_to}")
    click.echo(_accuracy_table(built.accuracy))


@world.command("tasks")
@_world_options
@click.option("--generate", "n", required=True, type=click.IntRange(1, 100000), help="Tasks to draw.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (task names carry it).")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Write the task file here [default: stdout]; `world build --tasks` takes it.")
def world_tasks(size: str, root: Path | None, n: int, seed: int, out: Path | None) -> None:
    """Draw N tasks from a built world's concepts and domains (10-60 classes named by their lemma)."""
    from mll_index.world.generate import generate_world_tasks

    echo_or_write(json.dumps(generate_world_tasks(size, root, n, seed), indent=1, ensure_ascii=False) + "\n", out)


@world.command("show")
@_world_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def world_show(size: str, root: Path | None, fmt: str) -> None:
    """Print a built world's counts, tasks and accuracy table (general benchmark and every task)."""
    from mll_index.world import load_world

    built = load_world(size, root)
    if fmt == "json":
        click.echo(json.dumps({"root": str(built.root), "manifest": built.manifest, "accuracy": built.accuracy,
                               "tasks": {t.name: t.class_names for t in built.tasks}}, indent=1))
        return
    m = built.manifest
    click.echo(f"emoji world at {built.root}: {m['concepts']} concepts, domains {m['domains']}")
    click.echo(f"images per pool: {m['images']}")
    for t in built.tasks:
        click.echo(f"task {t.name}: {len(t.classes)} classes, domains {list(t.domains)}, "
                   f"{m['task_images'][t.name]} images")
    click.echo(_accuracy_table(built.accuracy))


COMMANDS = [world]
