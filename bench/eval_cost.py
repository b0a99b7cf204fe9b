"""The cost that selection avoids: evaluating every model of a hub on a target task.

Three figures: (1) the real code path (`predict_probabilities`) timed for every model of
the emoji world's hub on its biggest task; (2) the CPU throughput of one real CLIP
architecture (random weights: the cost is the architecture's, not the weights'); (3) that
throughput extrapolated to evaluating all 49 models of the mll49 hub table on 50,000
images (the size of ImageNet val).
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

DEFAULT_HUB_CSV = Path(__file__).resolve().parents[2] / "shared/data/hubs/mll49.csv"
FLOPS_COLUMN = "FLOPs (B)"


def _hub_table(hub_csv: Path) -> list[dict[str, str]]:
    """The rows of the hub table (columns name, pretrained, params (M), FLOPs (B), ImageNet)."""
    with open(hub_csv, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def measure_world_eval(world_size: str = "full", task: str | None = None) -> dict:
    """Time zero-shot prediction of every hub model of the emoji world on one task.

    The task is `task`, or else the one with the most images. Timed: the whole real code
    path, `predict_probabilities` (loading each model, decoding images once per
    preprocessing, encoding images and class prompts). Raises the MLLIndexError of
    `load_world` when the world is not built.
    """
    from mll_index.models.hub import load_hub
    from mll_index.reuse.ensemble import predict_probabilities, scan_task_images
    from mll_index.world.build import load_world

    world = load_world(world_size)
    hub = load_hub(world.hub_path)
    specs = {spec.name: spec for spec in world.tasks}
    if task is None:
        sizes = {name: len(scan_task_images(world.task_dir(name), spec.class_names).paths)
                 for name, spec in specs.items()}
        task = max(sizes, key=sizes.__getitem__)
    class_names = specs[task].class_names
    images = scan_task_images(world.task_dir(task), class_names)
    start = time.perf_counter()
    probs = predict_probabilities(hub, list(hub.ids), images, class_names, device="cpu")
    seconds = time.perf_counter() - start
    # n counts the readable images (predict_probabilities drops unreadable ones).
    n_images = len(images.paths)
    return {"task": task, "n_images": n_images, "n_classes": len(class_names), "n_models": len(probs),
            "seconds": round(seconds, 3), "images_per_s": round(n_images * len(probs) / seconds, 1)}


def measure_arch_throughput(arch: str = "ViT-B-32", batch: int = 16, batches: int = 3) -> dict:
    """Images per second of `arch`'s image tower on CPU, and the GFLOP/s that implies.

    Random weights (open_clip's `pretrained=None`; nothing is downloaded) on random
    (batch, 3, H, W) pixels, after one warm-up batch. gflops_per_s = images_per_s x the
    arch's "FLOPs (B)" figure from the mll49 hub table, taken as given: that figure is
    open_clip's profile of the whole model (image and text tower) per sample, so it is a
    nominal rate, used only consistently with the same table in `extrapolate_hub_eval`.
    """
    import open_clip
    import torch

    flops = {row["name"]: float(row[FLOPS_COLUMN]) for row in _hub_table(DEFAULT_HUB_CSV)}
    model = open_clip.create_model(arch, pretrained=None)
    model.eval()
    size = model.visual.image_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    pixels = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.encode_image(pixels)  # warm-up: first-call allocation and kernel selection
        start = time.perf_counter()
        for _ in range(batches):
            model.encode_image(pixels)
        seconds = time.perf_counter() - start
    images_per_s = batch * batches / seconds
    return {"arch": arch, "image_size": [height, width], "batch": batch, "batches": batches,
            "threads": torch.get_num_threads(), "seconds": round(seconds, 3),
            "images_per_s": round(images_per_s, 2), "table_gflops_per_image": flops.get(arch),
            "gflops_per_s": round(images_per_s * flops[arch], 1) if arch in flops else None}


def extrapolate_hub_eval(hub_csv: Path | None, gflops_per_s: float, n_images: int = 50_000) -> dict:
    """CPU time to evaluate every model of the hub table on n_images, at a measured GFLOP/s.

    hub_csv: the table (None: shared/data/hubs/mll49.csv). total_gflops = sum over models of
    "FLOPs (B)" x n_images; cpu_seconds = total / gflops_per_s.
    """
    if gflops_per_s <= 0:
        raise ValueError(f"gflops_per_s must be positive, not {gflops_per_s}")
    hub_csv = DEFAULT_HUB_CSV if hub_csv is None else Path(hub_csv)
    rows = _hub_table(hub_csv)
    total = sum(float(row[FLOPS_COLUMN]) for row in rows) * n_images
    seconds = total / gflops_per_s
    return {"hub_csv": str(hub_csv), "n_models": len(rows), "n_images": n_images, "total_gflops": round(total, 1),
            "cpu_seconds": round(seconds, 1), "cpu_hours": round(seconds / 3600, 2),
            "assumption": ("every model runs at the GFLOP/s measured for one architecture on this machine, "
                           "counting the table's FLOPs (B) figure (open_clip's per-sample profile of the whole "
                           "model, image and text tower) once per image; class-prompt encoding, image "
                           "decoding and model loading are not counted")}


if __name__ == "__main__":
    world = measure_world_eval()
    arch = measure_arch_throughput()
    hub = extrapolate_hub_eval(DEFAULT_HUB_CSV, arch["gflops_per_s"])
    print(json.dumps({"world_eval": world, "arch_throughput": arch, "hub_extrapolation": hub}, indent=1))
