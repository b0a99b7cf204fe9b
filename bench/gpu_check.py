"""Labeling and reuse throughput of the streamed data path on a GPU, with peak GPU and host memory.

    python bench/gpu_check.py [--images 4096] [--batch-size 256] [--workers N] [--out PATH]
    python bench/gpu_check.py --smoke          # on the CPU, a tiny model, 16 images: seconds

ViT-B-32 and ViT-L-14 with random weights (`open_clip.create_model(name, pretrained=None)`,
224 px, the OpenAI preprocessing) run through `mll_index.images.loader` under fp16 autocast on
generated JPEGs of 256 to 512 px (cached in <cache>/bench/jpegs-N):

- labeling: `encode_image_set` (unit image embeddings, (n, d) float32 on the host);
- reuse: `zero_shot_probabilities` over 100 class names.

Each run reports images/s, whether decoding or the model bounded it (time waiting on the
loader vs time in the model), and the peak GPU memory (`torch.cuda.max_memory_allocated`);
the host's peak RSS covers the whole script. Meant to finish in under 5 minutes on one GPU.
Writes bench/results/gpu_check.json (gpu_check_smoke.json with --smoke) or --out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from common import machine, write_results  # noqa: E402
from data_path import image_set, jpeg_folder  # noqa: E402

MODELS = ("ViT-B-32", "ViT-L-14")
SMOKE_ARCH = "gpucheck-tiny"
CLASSES = [f"class number {i}" for i in range(100)]


def random_model(arch: str, device: str) -> Any:
    """A LoadedModel of an open_clip architecture with random weights (nothing downloaded)."""
    import open_clip

    from mll_index.models.hub import HubModel, LoadedModel, format_preprocess_key

    net, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None, device=device)
    net.eval()
    return LoadedModel(hub_model=HubModel(id=f"{arch}-random", arch=arch), model=net, preprocess=preprocess,
                       tokenizer=open_clip.get_tokenizer(arch),
                       preprocess_key=format_preprocess_key(net.visual.preprocess_cfg))


def _register_smoke_arch(folder: Path) -> str:
    import open_clip
    from tinyclip import tiny_model_config

    if open_clip.get_model_config(SMOKE_ARCH) is None:
        path = folder / f"{SMOKE_ARCH}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(tiny_model_config(image_size=32)))
        open_clip.add_model_config(path)
    return SMOKE_ARCH


def measure(loaded: Any, images: Any, kind: str, *, batch_size: int, workers: int, device: str,
            precision: str, classes: list[str]) -> dict[str, Any]:
    """One labeling- or reuse-style pass: images/s, the timing split, peak GPU memory."""
    import torch

    from mll_index.images.encoding import encode_image_set, zero_shot_probabilities

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    if kind == "labeling":
        stats = encode_image_set([loaded], images, batch_size=batch_size, workers=workers, device=device,
                                 precision=precision).stats  # type: ignore[arg-type]
    else:
        stats = zero_shot_probabilities([loaded], images, classes, batch_size=batch_size, workers=workers,
                                        device=device, precision=precision).stats[0]  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    out = {"images": stats.images, "seconds": round(seconds, 2), "images_per_s": round(stats.images / seconds, 1),
           **{k: v for k, v in stats.to_dict().items() if k in ("loader_wait_s", "bound_by")},
           "encode_images_per_s": round(next(iter(stats.encode_images_per_s.values())), 1)}
    if cuda:
        out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    print(f"{loaded.hub_model.id} {kind}: {out}", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None, help="Loader workers (default: CPUs - 1, at most 12).")
    parser.add_argument("--smoke", action="store_true", help="CPU, a tiny model, 16 images.")
    parser.add_argument("--out", type=Path, help="Write the JSON here instead of bench/results/.")
    args = parser.parse_args(argv)
    import torch

    if args.smoke:
        device, precision, n, batch_size, workers = "cpu", "fp32", 16, 8, 1
        archs: tuple[str, ...] = (_register_smoke_arch(jpeg_folder(n, processes=1).parent / "gpu-check-arch"),)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: no CUDA device here; run it on a GPU machine, or with --smoke on the CPU")
        device, precision, n, batch_size, archs = "cuda", "fp16", args.images, args.batch_size, MODELS
        workers = args.workers if args.workers is not None else max(1, min(12, (os.cpu_count() or 2) - 1))
    classes = CLASSES[:5] if args.smoke else CLASSES
    # One torch thread for the smoke run: on a few busy cores more threads spin against each other.
    threads = torch.get_num_threads()
    if args.smoke:
        torch.set_num_threads(1)
    try:
        return _run(args, device, precision, n, batch_size, workers, archs, classes)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, device: str, precision: str, n: int, batch_size: int, workers: int,
         archs: tuple[str, ...], classes: list[str]) -> dict[str, Any]:
    import torch

    started = time.perf_counter()
    images = image_set(jpeg_folder(n, processes=1 if args.smoke else max(1, os.cpu_count() or 1)), n)
    figures: dict[str, Any] = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                               "precision": precision, "images": n, "batch_size": batch_size, "workers": workers,
                               "models": {}}
    for arch in archs:
        loaded = random_model(arch, device)
        figures["models"][arch] = {kind: measure(loaded, images, kind, batch_size=batch_size, workers=workers,
                                                 device=device, precision=precision, classes=classes)
                                   for kind in ("labeling", "reuse")}
        del loaded
        if device == "cuda":
            torch.cuda.empty_cache()
    figures["host_peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    lines = [f"# GPU check ({figures['device']}, {precision}, {n} images, batch {batch_size}, {workers} workers)\n",
             "| model | run | images/s | encode images/s | bound by | peak GPU GB |", "|---|---|---|---|---|---|"]
    for arch, runs in figures["models"].items():
        for kind, r in runs.items():
            lines.append(f"| {arch} | {kind} | {r['images_per_s']} | {r['encode_images_per_s']} | {r['bound_by']} | "
                         f"{r.get('peak_gpu_gb', '-')} |")
    lines.append(f"\nHost peak RSS {figures['host_peak_rss_gb']} GB; {figures['seconds']} s in all.\n")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(json.dumps({"machine": machine(), **figures}, indent=1) + "\n")
        os.replace(tmp, args.out)
    else:
        write_results("gpu_check_smoke" if args.smoke else "gpu_check", figures, "\n".join(lines))
    print("\n".join(lines))
    return figures


if __name__ == "__main__":
    main()
