"""The streamed image data path (mll_index/images/loader.py and encoding.py): memory, bytes written, decode and encode rates.

    python bench/data_path.py [--images 20000] [--workers 2] [--smoke]

Generates N JPEG images of 256 to 512 px once (cached in <cache>/bench/jpegs-N, written
through a temporary folder and a rename) and two hub models with 224-px preprocessing (a
small custom open_clip ViT with random weights), then measures through the pipeline API:

- reuse: zero-shot probabilities of both models over N/4 and N images, each run in a fresh
  subprocess; its peak RSS (the main process; the loader workers' peak is listed apart);
- labeling: both models' image embeddings over N images with no pixel cache, in a fresh
  subprocess: peak RSS and the bytes it wrote (/proc/self/io);
- decode images/s of the loader alone with 0, 1 and 2 workers;
- encode images/s of each model (time in the model, from the labeling run).

`--smoke` runs it on 300 images in seconds and writes results/data_path_smoke.{json,md};
a full run writes results/data_path.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from common import write_results  # noqa: E402

from mll_index.core.paths import cache_dir  # noqa: E402

CLASSES = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead", "electric ray", "stingray",
           "cock", "hen", "ostrich"]
ARCH = "benchpipevit224"
BARS = {"reuse_peak_rss_gb": 2.5, "reuse_growth": 0.15, "label_peak_rss_gb": 2.5, "two_worker_speedup": 1.7}


# ---------------------------------------------------------------------------------------
# Inputs, made once


def _write_jpeg(job: tuple[int, str]) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    i, folder = job
    rng = np.random.default_rng(i)
    w, h = (int(v) for v in rng.integers(256, 513, 2))
    # A two-colour gradient with mild noise and a few shapes: photo-like JPEG sizes and decode costs.
    a, b = rng.integers(0, 256, (2, 3))
    t = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    row = (a * (1 - t) + b * t).astype(np.int16)
    pixels = row + rng.integers(-8, 9, (h, w, 3), dtype=np.int16)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        r = int(rng.integers(20, min(w, h) // 3))
        draw.ellipse((x, y, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    image.save(Path(folder) / f"{i // 1000:03d}" / f"{i:05d}.jpg", quality=90)


def jpeg_folder(n: int, processes: int = 2) -> Path:
    """<cache>/bench/jpegs-n holding n JPEGs `ddd/ddddd.jpg`, generated once (temporary folder + rename)."""
    final = cache_dir() / "bench" / f"jpegs-{n}"
    if final.is_dir():
        return final
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for d in range((n + 999) // 1000):
        (tmp / f"{d:03d}").mkdir(parents=True)
    started = time.perf_counter()
    with get_context("fork").Pool(processes) as pool:
        for _ in pool.imap_unordered(_write_jpeg, [(i, str(tmp)) for i in range(n)], chunksize=64):
            pass
    os.replace(tmp, final)
    print(f"generated {n} JPEGs in {time.perf_counter() - started:.0f} s: {final}", file=sys.stderr)
    return final


def bench_hub(root: Path) -> Path:
    """A hub file of two models of one small 224-px ViT config (patch 32), random weights (seeds 0, 1)."""
    import open_clip
    import torch
    from tinyclip import tiny_model_config

    hub = root / "hub.json"
    if hub.is_file():
        return hub
    root.mkdir(parents=True, exist_ok=True)
    config = tiny_model_config(embed_dim=64, image_size=224, vision="vit", width=64, layers=2)
    config["vision_cfg"]["patch_size"] = 32
    (root / f"{ARCH}.json").write_text(json.dumps(config, indent=1))
    if open_clip.get_model_config(ARCH) is None:
        open_clip.add_model_config(root / f"{ARCH}.json")
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        torch.save(open_clip.create_model(ARCH, pretrained=None).state_dict(), root / f"seed{seed}.pt")
        models.append({"id": f"bench-vit224-s{seed}", "arch": ARCH, "checkpoint": f"seed{seed}.pt",
                       "config": f"{ARCH}.json"})
    tmp = hub.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"name": "bench-data-path", "models": models}))
    os.replace(tmp, hub)
    return hub


def image_set(folder: Path, n: int) -> Any:
    from mll_index.images.loader import ImageSet

    return ImageSet(folder, tuple(f"{i // 1000:03d}/{i:05d}.jpg" for i in range(n)))


# ---------------------------------------------------------------------------------------
# One measured run, in a fresh process


def _written_bytes() -> int:
    try:
        with open("/proc/self/io") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("write_bytes"))
    except (OSError, StopIteration):
        return -1


def child(kind: str, folder: Path, hub_file: Path, n: int, workers: int, batch_size: int) -> dict[str, Any]:
    """Run one reuse- or labeling-style pass and report its peak memory, bytes written and timing."""
    from mll_index.images.encoding import encode_image_set, zero_shot_probabilities
    from mll_index.models.hub import load_hub, load_model

    written = _written_bytes()
    hub = load_hub(hub_file)
    loaded = [load_model(m) for m in hub]
    images = image_set(folder, n)
    started = time.perf_counter()
    if kind == "reuse":
        result = zero_shot_probabilities(loaded, images, CLASSES, batch_size=batch_size, workers=workers)
        stats, shape = result.stats[0], list(next(iter(result.probabilities.values())).shape)
    else:
        result = encode_image_set(loaded, images, batch_size=batch_size, workers=workers)
        stats, shape = result.stats, list(next(iter(result.embeddings.values())).shape)
    seconds = time.perf_counter() - started
    return {"kind": kind, "images": n, "workers": workers, "seconds": round(seconds, 2), "output_shape": shape,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "worker_peak_rss_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
            "bytes_written": _written_bytes() - written if written >= 0 else None, "stats": stats.to_dict()}


def run_child(kind: str, folder: Path, hub_file: Path, n: int, workers: int, batch_size: int,
              threads: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, "--folder", str(folder), "--hub", str(hub_file),
           "--images", str(n), "--workers", str(workers), "--batch-size", str(batch_size),
           "--torch-threads", str(threads)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=HERE.parent)
    if done.returncode != 0:
        raise SystemExit(f"{kind} run on {n} images failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{kind} {n} images: {result['seconds']} s, peak RSS {result['peak_rss_gb']:.2f} GB", file=sys.stderr)
    return result


def decode_rate(folder: Path, hub_file: Path, n: int, workers: int, batch_size: int) -> float:
    """Images/s of the loader alone (decode + the 224-px transform), no model."""
    from mll_index.images.loader import image_loader
    from mll_index.models.hub import load_hub, load_model

    preprocess = load_model(load_hub(hub_file).models[0]).preprocess
    started = time.perf_counter()
    count = 0
    for batch in image_loader(image_set(folder, n), preprocess, batch_size=batch_size, workers=workers):
        count += int(batch.positions.shape[0]) + len(batch.unreadable)
    rate = count / (time.perf_counter() - started)
    print(f"decode with {workers} workers: {rate:.0f} images/s", file=sys.stderr)
    return rate


# ---------------------------------------------------------------------------------------


def markdown(fig: dict[str, Any], bars: dict[str, dict[str, Any]], n: int) -> str:
    lines = [f"# The streamed image data path ({n} JPEGs of 256-512 px, two 224-px models)\n",
             "| figure | value |", "|---|---|"]
    for count, gb in fig["reuse_peak_rss_gb"].items():
        lines.append(f"| reuse peak RSS, {count} images | {gb:.2f} GB |")
    lines.append(f"| labeling peak RSS, {n} images (no pixel cache) | {fig['label_peak_rss_gb']:.2f} GB |")
    lines.append(f"| labeling bytes written | {fig['label_bytes_written']} |")
    for w, rate in fig["decode_images_per_s"].items():
        lines.append(f"| decode, {w} workers | {rate:.0f} images/s |")
    lines.append(f"| load average (1, 5, 15 min) while decoding, {os.cpu_count()} CPUs | "
                 f"{', '.join(str(v) for v in fig['decode_load_average'])} |")
    for m, rate in fig["encode_images_per_s"].items():
        lines.append(f"| encode, {m} | {rate:.0f} images/s |")
    lines += ["", "| bar | value | limit | met |", "|---|---|---|---|"]
    for name, bar in bars.items():
        lines.append(f"| {name} | {bar['value']} | {bar['limit']} | {'yes' if bar['ok'] else 'NO'} |")
    note = ("Peak RSS is the main process's (`ru_maxrss`); each loader worker's peak is in the JSON "
            "(`*_worker_peak_rss_gb`). Rates are on this machine's cores, shared with whatever else ran.")
    lines += ["", note, ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000, help="Images of the largest run (N).")
    parser.add_argument("--workers", type=int, default=2, help="Loader workers of the reuse and labeling runs.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads of the main process (on a few shared cores more threads spin "
                             "against the loader workers and slow both).")
    parser.add_argument("--decode-images", type=int, default=2000, help="Images per decode-rate measurement.")
    parser.add_argument("--smoke", action="store_true", help="300 images, seconds; writes data_path_smoke.")
    parser.add_argument("--child", choices=["reuse", "label"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--hub", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.torch_threads)
    if args.child:
        print(json.dumps(child(args.child, args.folder, args.hub, args.images, args.workers, args.batch_size)))
        return
    n = 300 if args.smoke else args.images
    decode_n = min(n, args.decode_images)
    folder = jpeg_folder(n)
    hub_file = bench_hub(cache_dir() / "bench" / "data-path-hub")
    counts = sorted({max(1, n // 4), n})
    reuse = {c: run_child("reuse", folder, hub_file, c, args.workers, args.batch_size,
                            args.torch_threads) for c in counts}
    label = run_child("label", folder, hub_file, n, args.workers, args.batch_size, args.torch_threads)
    load_before = os.getloadavg()
    decode = {w: decode_rate(folder, hub_file, decode_n, w, args.batch_size) for w in (0, 1, 2)}
    # The worker speed-up needs idle cores: the load average says whether other work had them.
    load = [round(max(a, b), 2) for a, b in zip(load_before, os.getloadavg())]
    fig: dict[str, Any] = {
        "images": n, "workers": args.workers, "batch_size": args.batch_size, "decode_images": decode_n,
        "torch_threads": args.torch_threads,
        "reuse_peak_rss_gb": {str(c): round(r["peak_rss_gb"], 3) for c, r in reuse.items()},
        "reuse_worker_peak_rss_gb": {str(c): round(r["worker_peak_rss_gb"], 3) for c, r in reuse.items()},
        "label_peak_rss_gb": round(label["peak_rss_gb"], 3),
        "label_worker_peak_rss_gb": round(label["worker_peak_rss_gb"], 3),
        "label_bytes_written": label["bytes_written"],
        "decode_images_per_s": {str(w): round(r, 1) for w, r in decode.items()},
        "decode_load_average": load,
        "encode_images_per_s": label["stats"]["encode_images_per_s"],
        "cache_bytes_per_image": None,
        "runs": {"reuse": {str(c): r for c, r in reuse.items()}, "label": label},
    }
    small, large = fig["reuse_peak_rss_gb"][str(counts[0])], fig["reuse_peak_rss_gb"][str(counts[-1])]
    growth = large / small - 1
    speedup = decode[2] / decode[1]
    bars = {
        "reuse_peak_rss_gb": {"value": large, "limit": f"<= {BARS['reuse_peak_rss_gb']}",
                              "ok": large <= BARS["reuse_peak_rss_gb"]},
        f"reuse RSS growth {counts[0]} -> {counts[-1]} images": {
            "value": round(growth, 3), "limit": f"<= {BARS['reuse_growth']}", "ok": growth <= BARS["reuse_growth"]},
        "label_peak_rss_gb": {"value": fig["label_peak_rss_gb"], "limit": f"<= {BARS['label_peak_rss_gb']}",
                              "ok": fig["label_peak_rss_gb"] <= BARS["label_peak_rss_gb"]},
        "decode speed-up, 2 workers / 1": {"value": round(speedup, 2), "limit": f">= {BARS['two_worker_speedup']}",
                                           "ok": speedup >= BARS["two_worker_speedup"]},
    }
    fig["bars"] = bars
    name = "data_path_smoke" if args.smoke else "data_path"
    path = write_results(name, fig, markdown(fig, bars, n))
    print(markdown(fig, bars, n))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
