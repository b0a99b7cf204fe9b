"""Labeling on a Ray cluster against the single-process labeler, on the same sample set, and an
extrapolation to the paper's hub (49 models x 500,000 sample images) on 8 and 64 GPUs.

    python bench/ray_labeling.py [--samples DIR] [--hub FILE] [--models N] [--smoke]

Defaults: the full emoji world that set-up builds (its 13 models and 27,552 sample images, under
the mll-index cache) and the node set of indexes/default. Three runs, each into a fresh copy of the
index without labels, one after another on this machine's 2 cores:
    single  labeling.run.label_models (torch's default threads)
    ray_1   a local Ray cluster of 2 CPUs, tasks of 2 CPUs: one worker at a time, 2 threads
    ray_2   the same cluster, tasks of 1 CPU: two workers side by side, 1 thread each
`ray_overhead_fraction` = (ray_1 seconds - single seconds) / single seconds: what Ray costs over the
same work on the same cores (worker processes importing torch, model loads per worker, shipping
embeddings through the object store, the driver's writes; the cluster is started before the clock,
as a user's cluster is already running). `labels_equal` holds
when the three runs' counts are equal and their embeddings agree to cosine >= 0.999.

`--smoke` runs on 3 models and 600 images and writes results/ray_labeling_smoke.{json,md}.
Writes bench/results/ray_labeling.{json,md} with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_results

REPO = Path(__file__).resolve().parent.parent

# The extrapolation's assumptions (written into the results with the figures).
ASSUMPTIONS = {
    "images": 500_000,
    "hub": "mll49 (the paper's 49 open_clip models; flops_b from open_clip's table, image+text tower, "
           "taken as the cost of one image)",
    "gpu": "A100-class, 312 TFLOP/s dense fp16 peak",
    "gpu_utilisation": 0.30,
    "cpu_cores_per_gpu": 8,
    "decode_images_per_s_per_core": 150,   # a 500x375 JPEG decoded and resized to 224 px, one core
    "load_s_fixed": 5.0,                    # per model per worker: process start, open_clip build
    "load_bytes_per_s": 500e6,              # reading fp32 weights from local disk
    "note": "each (pass, shard) task decodes its shard once for the pass's models, on the GPU's CPU cores beside "
            "the GPU, so a pass takes the longer of its models' compute and its decoding; every worker that "
            "takes a shard of a pass loads its models once; Ray's own overhead is the fraction measured here "
            "on CPUs",
}


def _index_without_labels(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("labels"))
    return dest


def _subset_samples(samples: Path, dest: Path, per_node: int) -> Path:
    """The first `per_node` images of each node folder, linked (not copied) under `dest`."""
    for folder in sorted(p for p in samples.iterdir() if p.is_dir()):
        files = sorted(f for f in folder.iterdir() if f.is_file())[:per_node]
        (dest / folder.name).mkdir(parents=True)
        for f in files:
            os.link(f, dest / folder.name / f.name)
    return dest


def _hub_subset(hub: Path, dest: Path, n: int | None) -> Path:
    data = json.loads(hub.read_text())
    models = data["models"][:n] if n else data["models"]
    for m in models:
        for key in ("checkpoint", "config"):
            if m.get(key):
                m[key] = str((hub.parent / m[key]).resolve())
    dest.write_text(json.dumps({**data, "models": models}))
    return dest


def _labels_equal(a: Path, b: Path, ids: list[str]) -> tuple[bool, float]:
    from mll_index.labels.folders import load_label

    worst = 1.0
    for model_id in ids:
        la, lb = load_label(a, model_id), load_label(b, model_id)
        if not np.array_equal(np.asarray(la.counts), np.asarray(lb.counts)):
            return False, worst
        x = np.asarray(la.image_embeddings, np.float32)
        y = np.asarray(lb.image_embeddings, np.float32)
        cos = (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-12)
        worst = min(worst, float(cos.min()))
    return worst >= 0.999, worst


def extrapolate(overhead: float, gpus: list[int]) -> dict[str, Any]:
    """Hours to label mll49 on `images` sample images with `gpus` GPUs, under ASSUMPTIONS.

    The models run in the passes the labeler makes (`images.encoding.model_passes`): per pass, every shard is
    decoded once (by the GPU's CPU cores, beside the GPU) and encoded by each model of the pass, so a
    pass takes the longer of its models' compute and its decoding.
    """
    from mll_index.images.encoding import model_passes
    from mll_index.models.hub import load_hub

    a = ASSUMPTIONS
    effective = 312e12 * a["gpu_utilisation"]
    decode = a["cpu_cores_per_gpu"] * a["decode_images_per_s_per_core"]
    gpu_s = load_s = 0.0
    per_model = {}
    passes = model_passes(list(load_hub("mll49")))
    for group in passes:
        compute = 0.0
        for m in group:
            rate = effective / (m.flops_b * 1e9)
            per_model[m.id] = round(rate, 1)
            compute += a["images"] / rate
            load_s += a["load_s_fixed"] + (m.params_m or 430.0) * 1e6 * 4 / a["load_bytes_per_s"]
        gpu_s += max(compute, a["images"] / decode)
    hours = {}
    for n in gpus:
        # Work spreads over n GPUs; each pass's models are loaded by every worker, side by side (once in wall time).
        hours[str(n)] = round((gpu_s / n * (1 + overhead) + load_s) / 3600, 2)
    return {"hours": hours, "gpu_hours": round(gpu_s / 3600, 1), "passes": len(passes),
            "load_hours_per_worker": round(load_s / 3600, 2), "images_per_s_per_gpu": per_model}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path, default=None, help="sample folder [the full emoji world's]")
    parser.add_argument("--hub", type=Path, default=None, help="hub file [the full emoji world's]")
    parser.add_argument("--index", type=Path, default=REPO / "indexes" / "default")
    parser.add_argument("--models", type=int, default=None, help="only the first N models of the hub")
    parser.add_argument("--per-node", type=int, default=None, help="only the first N images of each node")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--smoke", action="store_true", help="3 models, ~600 images; writes ray_labeling_smoke")
    parser.add_argument("--extrapolate-only", action="store_true",
                        help="recompute the extrapolation of results/ray_labeling.json from its measured overhead")
    args = parser.parse_args()
    if args.extrapolate_only:
        from common import RESULTS

        fig = json.loads((RESULTS / "ray_labeling.json").read_text())
        ext = extrapolate(max(fig["ray_overhead_fraction"], 0.0), [8, 64])
        fig["extrapolated_hours"] = ext["hours"]
        fig["extrapolation"] = {**ext, "assumptions": ASSUMPTIONS}
        keep = {k: v for k, v in fig.items() if k not in ("command", "date", "machine")}
        write_results("ray_labeling", {**keep, "measured": {"command": fig["command"], "date": fig["date"]}},
                      markdown(keep))
        print(markdown(keep))
        return

    from mll_index.cluster import label_on_ray
    from mll_index.cluster.connect import connect, disconnect
    from mll_index.labeling.run import label_models
    from mll_index.labeling.samples import scan_samples
    from mll_index.models.hub import load_hub
    from mll_index.world.build import default_world_dir

    world = default_world_dir("full")
    samples = args.samples or world / "samples"
    hub_file = args.hub or world / "hub" / "hub.json"
    if not samples.is_dir() or not hub_file.is_file():
        sys.exit(f"no sample folder at {samples} or hub at {hub_file}: run `bash setup.sh` (it builds the emoji world)")
    models = 3 if args.smoke else args.models
    per_node = 10 if args.smoke and args.per_node is None else args.per_node
    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    try:
        if per_node:
            samples = _subset_samples(samples, work / "samples", per_node)
        hub_file = _hub_subset(hub_file, work / "hub.json", models)
        hub = load_hub(hub_file)
        ids = [m.id for m in hub]
        n_images = len(scan_samples(samples))
        seconds: dict[str, float] = {}
        reports: dict[str, Any] = {}
        indexes = {}
        for run in ("single", "ray_1", "ray_2"):
            index = indexes[run] = _index_without_labels(args.index, work / f"index-{run}")
            print(f"{run}: {len(ids)} models x {n_images} images ...", flush=True)
            if run != "single":
                connect("local", num_cpus=2)    # a running cluster, as users have one: its start is not timed
            started = time.perf_counter()
            if run == "single":
                report = label_models(index, hub, samples, batch_size=args.batch_size)
            else:
                report = label_on_ray(index, hub, samples, address="local", batch_size=args.batch_size,
                                      cpus_per_task=2.0 if run == "ray_1" else 1.0)
            seconds[run] = time.perf_counter() - started
            if run != "single":
                disconnect()
            assert sorted(report.labeled) == sorted(ids), report.failed
            reports[run] = {"workers": getattr(report, "workers", {}), "phases": getattr(report, "phases", {}),
                            "shards": getattr(report, "shards", 0)}
            print(f"  {seconds[run]:.1f} s", flush=True)
        equal = [_labels_equal(indexes["single"], indexes[r], ids) for r in ("ray_1", "ray_2")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = n_images * len(ids)
    overhead = (seconds["ray_1"] - seconds["single"]) / seconds["single"]
    ext = extrapolate(max(overhead, 0.0), [8, 64])
    fig = {"models": len(ids), "sample_images": n_images, "batch_size": args.batch_size,
           "seconds": {k: round(v, 2) for k, v in seconds.items()},
           "images_per_s": {k: round(total / v, 1) for k, v in seconds.items()},
           "ray_overhead_fraction": round(overhead, 3),
           "ray_2_speedup_over_ray_1": round(seconds["ray_1"] / seconds["ray_2"], 3),
           "labels_equal": all(e for e, _ in equal), "min_embedding_cosine": round(min(c for _, c in equal), 6),
           "runs": reports, "extrapolated_hours": ext["hours"], "extrapolation": {**ext, "assumptions": ASSUMPTIONS}}
    path = write_results("ray_labeling_smoke" if args.smoke else "ray_labeling", fig, markdown(fig))
    print(markdown(fig))
    print(f"wrote {path}")


def markdown(fig: dict[str, Any]) -> str:
    ips = fig["images_per_s"]
    lines = [f"# Labeling on Ray: {fig['models']} models x {fig['sample_images']} sample images, 2 CPU cores", "",
             "| run | seconds | images/s (model x image) |", "|---|---|---|"]
    for run in ("single", "ray_1", "ray_2"):
        lines.append(f"| {run} | {fig['seconds'][run]:.1f} | {ips[run]:.0f} |")
    lines += ["", (f"- Ray's overhead over the single-process labeler (1 worker of 2 CPUs): "
                   f"**{fig['ray_overhead_fraction']:.1%}**"),
              f"- 2 workers of 1 CPU against 1 of 2: {fig['ray_2_speedup_over_ray_1']:.2f}x",
              (f"- labels equal to the single-process ones: **{fig['labels_equal']}** (counts exactly; embeddings "
               f"to cosine {fig['min_embedding_cosine']})"), "",
              "Extrapolated to mll49 (49 models) x 500,000 images: "
              + ", ".join(f"**{h} h** on {n} GPUs" for n, h in fig["extrapolated_hours"].items())
              + f" ({fig['extrapolation']['gpu_hours']} GPU-hours of encoding; assumptions in the JSON)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
