"""The labeling run's command: label (on this machine, or on a Ray cluster with --ray)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from mll_index.cli.options import echo_rates, echo_unreadable, existing_index_path, index_option, workers_option


@click.command()
@index_option
@click.option("--hub", "hub_source", required=True, help="Built-in hub name (mll49) or hub file (JSON or CSV).")
@click.option("--samples", type=click.Path(path_type=Path), required=True,
              help="Sample dataset root/<wnid>/*.jpg.")
@click.option("--model", "models", multiple=True, help="Label only these model ids (repeatable).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... [default: cuda if available].")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 65536))
@workers_option
@click.option("--pixel-cache", is_flag=True, help="Keep the decoded images at each model input resolution (uint8, "
              "under labels/.pixels) so a later labeling run skips decoding; its size is printed first, and it is "
              "refused when the disk cannot hold it.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Label on a Ray cluster: auto (RAY_ADDRESS, else the cluster this machine is part of), local (a "
              "cluster of this machine's CPUs, started for this run), HOST:PORT or ray://HOST:PORT. Needs "
              "`pip install 'mll-index[cluster]'` and the sample folder at the same path on every node.")
@click.option("--ray-gpus", type=click.FloatRange(0, 64), default=None,
              help="With --ray: GPUs per task (fractions share a GPU) [default: 1 when the cluster has GPUs, else 0].")
@click.option("--ray-cpus", type=click.FloatRange(0.01, 1024), default=1.0, show_default=True,
              help="With --ray: CPUs per task (also its torch threads).")
@click.option("--shard-images", type=click.IntRange(1, 10_000_000), default=None,
              help="With --ray: sample images per task [default: 16 batches].")
def label(index_path: Path | None, hub_source: str, samples: Path, models: tuple[str, ...], device: str | None,
          batch_size: int, workers: int, pixel_cache: bool, ray_address: str | None, ray_gpus: float | None,
          ray_cpus: float, shard_images: int | None) -> None:
    """Label every hub model not yet labeled on these samples (resumable; only what is new is encoded)."""
    from mll_index.labeling.run import label_models
    from mll_index.models.hub import load_hub

    path = existing_index_path(index_path)
    if ray_address is None and (ray_gpus is not None or shard_images is not None):
        raise click.UsageError("--ray-gpus and --shard-images go with --ray ADDRESS")
    if ray_address is not None:
        if pixel_cache or device:
            raise click.UsageError("--pixel-cache and --device are single-machine options; with --ray each task "
                                   "decodes its shard and runs on the GPU Ray gives it (--ray-gpus)")
        _label_on_ray(path, hub_source, samples, list(models) or None, ray_address, ray_gpus, ray_cpus,
                      shard_images, batch_size, workers)
        return
    report = label_models(path, load_hub(hub_source), samples, models=list(models) or None, device=device,
                          batch_size=batch_size, progress=True, workers=workers, pixel_cache=pixel_cache,
                          notify=lambda line: click.echo(f"mll-index: {line}", err=True))
    _echo_label_report(report, samples, "images/s")
    echo_rates(report.stats)
    if report.failed:
        sys.exit(1)


def _echo_label_report(report: Any, samples: Path, rate: str) -> None:
    """A labeling run's per-model lines (labeled, current, failed), unreadable images and skipped folders."""
    for model_id in report.labeled:
        click.echo(f"labeled  {model_id}  ({report.images_per_s[model_id]:.0f} {rate})")
    for model_id in report.skipped:
        click.echo(f"current  {model_id}")
    for model_id, why in report.failed.items():
        click.echo(f"failed   {model_id}: {why}", err=True)
    if report.unreadable:
        echo_unreadable(report.unreadable, report.unreadable_reasons, samples)
    if report.skipped_folders:
        click.echo(f"skipped folders: {report.skipped_folders[:5]}", err=True)


def _label_on_ray(path: Path, hub_source: str, samples: Path, models: list[str] | None, address: str,
                  gpus: float | None, cpus: float, shard_images: int | None, batch_size: int, workers: int) -> None:
    """`label --ray`: the cluster run, its per-model lines, then where the time went (per worker and phase)."""
    from mll_index.cluster import label_on_ray
    from mll_index.cluster.connect import connect
    from mll_index.models.hub import load_hub

    connect(address)    # before reading the hub (which imports torch): a wrong address is named within seconds
    report = label_on_ray(path, load_hub(hub_source), samples, address=address, models=models, batch_size=batch_size,
                          shard_images=shard_images, gpus_per_task=gpus, cpus_per_task=cpus, decode_workers=workers,
                          progress=True, notify=lambda line: click.echo(f"mll-index: warning: {line}", err=True))
    _echo_label_report(report, samples, "images/s in the model")
    if report.workers:
        p = report.phases
        click.echo(f"mll-index: cluster {report.address}: {report.shards} tasks on {len(report.nodes)} node(s), "
                   f"{report.throughput():.0f} model-images/s overall in {p['wall_s']:.1f} s; summed over tasks: decoding "
                   f"{p['decode_s']:.1f} s, encoding {p['encode_s']:.1f} s, loading models {p['load_s']:.1f} s; "
                   f"writing labels {p['write_s']:.1f} s", err=True)
        for worker, w in sorted(report.workers.items()):
            click.echo(f"mll-index:   worker {worker}: {w['images']} model-images in {w['shards']} task(s), "
                       f"{w['images_per_s']:.0f}/s (decoding {w['decode_s']:.1f} s, encoding "
                       f"{w['encode_s']:.1f} s, loading {w['load_s']:.1f} s)", err=True)
    if report.failed:
        sys.exit(1)


COMMANDS = [label]
