"""The model hubs' commands: hub list, hub show, hub flops."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
def hub() -> None:
    """Inspect model hubs (built-in ones, or hub files)."""


@hub.command("list")
def hub_list() -> None:
    """List the built-in hubs."""
    from mll_index.models.hub import builtin_hubs, load_hub

    for name in builtin_hubs():
        click.echo(f"{name}\t{len(load_hub(name, validate=False))} models")


@hub.command("show")
@click.argument("source")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True)
def hub_show(source: str, fmt: str) -> None:
    """Check a hub (built-in name or file) and list its models."""
    from mll_index.models.hub import load_hub

    h = load_hub(source)
    for m in h:
        if fmt == "jsonl":
            click.echo(json.dumps(m.describe()))
        else:
            acc = "-" if m.imagenet_acc is None else f"{m.imagenet_acc:.3f}"
            click.echo(f"{m.id:45s} {m.weights:50s} imagenet {acc}")


@hub.command("flops")
@click.argument("hub_file", type=click.Path(path_type=Path))
def hub_flops(hub_file: Path) -> None:
    """Measure the GFLOPs and parameters of the models that lack them and write them into HUB_FILE."""
    from mll_index.models.flops import fill_hub_flops

    for model, cost in fill_hub_flops(hub_file).items():
        gflops = "unknown" if cost.gflops is None else f"{cost.gflops:g}"
        params = "unknown" if cost.params_m is None else f"{cost.params_m:g}"
        click.echo(f"{model}\t{gflops} GFLOPs\t{params} M params")


COMMANDS = [hub]
