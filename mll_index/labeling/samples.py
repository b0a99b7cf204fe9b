"""Sample images in the ImageFolder layout, and the optional pixel cache of them.

A sample set is `root/<wnid>/*.{jpg,png,...}` (`mll_index.images.decoding.IMAGE_SUFFIXES`): the images
of each graph node in a folder named by its wnid, decoded by `mll_index.images.decoding.open_image`.
Labeling streams them through `mll_index.images.loader` (one pass per preprocessing configuration).
On request (`label --pixel-cache`) they are also kept decoded at a model's input resolution,
uint8, in one `.npy` per preprocessing configuration (`mll_index.models.hub.preprocess_key`) and sample
set, so that labeling more models later skips decoding; that file is n x H x W x 3 bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.core.artifacts import read_json, write_json
from mll_index.errors import IndexFormatError, InputError
from mll_index.images.decoding import UnreadableImageError, image_files

log = logging.getLogger(__name__)

WNID_RE = re.compile(r"^n\d{8}$")
PIXELS_FORMAT = "mll-index-pixels"
# 2: images decoded by mll_index.images.decoding (bit depth, transparency on white, EXIF orientation),
# and the reason each unreadable image was skipped. 3: uint8 (n, H, W, 3) before the tensor steps,
# row i = sample i.
PIXELS_FORMAT_VERSION = 3


@dataclass(frozen=True)
class SampleSet:
    """The images of a sample folder, in a fixed order.

    `paths` are POSIX paths relative to `root`, sorted; `wnids[i]` is the node of
    `paths[i]`. `fingerprint` hashes every path with its size and modification time, so
    it changes when any image is added, removed or rewritten.
    """

    root: Path
    paths: tuple[str, ...]
    wnids: tuple[str, ...]
    skipped_folders: tuple[str, ...]
    fingerprint: str

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def node_wnids(self) -> tuple[str, ...]:
        """The distinct wnids that have images, sorted."""
        return tuple(sorted(set(self.wnids)))


def _fingerprint(root: Path, paths: list[str]) -> str:
    digest = hashlib.sha256()
    for rel in paths:
        stat = (root / rel).stat()
        digest.update(f"{rel}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def scan_samples(root: Path, valid_wnids: set[str] | None = None) -> SampleSet:
    """List the images of an ImageFolder sample set `root/<wnid>/*.jpg`.

    Sub-folders not named by a wnid (n + 8 digits), not in `valid_wnids` (when given) or
    holding no image are skipped, logged and listed in `skipped_folders`.

    Raises:
        InputError: `root` is not a folder, or no sub-folder holds images of a valid wnid.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: sample folder does not exist")
    skipped: dict[str, list[str]] = {"not named by a wnid": [], "not in the graph": [], "without images": []}
    paths: list[str] = []
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        if not WNID_RE.match(child.name):
            skipped["not named by a wnid"].append(child.name)
        elif valid_wnids is not None and child.name not in valid_wnids:
            skipped["not in the graph"].append(child.name)
        else:
            images = image_files(child)
            if not images:
                skipped["without images"].append(child.name)
            paths.extend(p.relative_to(root).as_posix() for p in images)
    for reason, names in skipped.items():
        if names:
            log.warning("%s: skipped %d folders %s: %s", root, len(names), reason, names[:5])
    if not paths:
        detail = "; ".join(f"{len(n)} {reason}" for reason, n in skipped.items() if n) or "no sub-folders"
        raise InputError(f"{root}: no images in a folder named by a valid wnid (root/<wnid>/*.jpg, "
                         f"like n01440764/0.jpg); {detail}")
    paths.sort()
    return SampleSet(
        root=root,
        paths=tuple(paths),
        wnids=tuple(p.split("/", 1)[0] for p in paths),
        skipped_folders=tuple(sorted(name for names in skipped.values() for name in names)),
        fingerprint=_fingerprint(root, paths),
    )


def _cache_paths(cache_dir: Path, key: str, fingerprint: str) -> tuple[Path, Path]:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", key) + "-" + fingerprint[:16]
    return cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"


def image_stage(preprocess: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The PIL steps of an open_clip eval transform (resize, crop), before it becomes a tensor.

    Their output is a uint8 image at the model's input resolution, from which the rest of the
    transform gives exactly what it gives from the original file (resizing or cropping an image
    already at the target size leaves it as it is), so it can be cached losslessly.

    Raises:
        InputError: the transform is not a torchvision Compose with a ToTensor step.
    """
    steps = list(getattr(preprocess, "transforms", None) or [])
    cut = next((i for i, t in enumerate(steps) if type(t).__name__ in ("ToTensor", "PILToTensor", "MaybeToTensor")), None)
    if cut is None:
        raise InputError(f"the transform {type(preprocess).__name__} has no ToTensor step to cache the images "
                         "before; label without --pixel-cache")
    from torchvision.transforms import Compose

    return Compose(steps[:cut])


class _ToArray:
    """PIL image → (H, W, 3) uint8 array after the transform's PIL steps (a class, so workers can pickle it)."""

    def __init__(self, stage: Callable[[Any], Any]) -> None:
        self.stage = stage

    def __call__(self, image: Any) -> np.ndarray:
        return np.array(self.stage(image).convert("RGB"), np.uint8)  # a writable copy, as torch wants


def pixel_cache_shape(samples: SampleSet, preprocess: Callable[[Any], Any]) -> tuple[int, int, int, int]:
    """(n, H, W, 3) of the pixel cache of `samples` for this transform (H, W: the model's input size)."""
    from PIL import Image

    height, width, _ = _ToArray(image_stage(preprocess))(Image.new("RGB", (64, 64))).shape
    return len(samples), int(height), int(width), 3


@dataclass(frozen=True)
class PixelCache:
    """Sample images decoded and resized to a model's input, uint8, memory-mapped.

    Row i of the (n, H, W, 3) array `path` is `samples.paths[i]`; the rows of the unreadable images
    (relative path → why, in `reasons`) are zeros and never read.
    """

    path: Path
    root: Path
    paths: tuple[str, ...]
    reasons: dict[str, str]

    def decoder(self) -> CachedDecoder:
        """A `images.loader.Decoder` that reads images from the cache instead of their files."""
        return CachedDecoder(self.path, self.root, {p: i for i, p in enumerate(self.paths)}, self.reasons)


class CachedDecoder:
    """path → RGB PIL image from a pixel cache; an image unreadable when the cache was written raises
    `UnreadableImageError` with the same reason. Opens the array lazily, once per process (loader workers)."""

    def __init__(self, npy: Path, root: Path, rows: dict[str, int], reasons: dict[str, str]) -> None:
        self.npy, self.root, self.rows, self.reasons = Path(npy), Path(root), rows, reasons
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def __call__(self, path: Path) -> Any:
        from PIL import Image

        rel = Path(path).relative_to(self.root).as_posix()
        if rel in self.reasons:
            raise UnreadableImageError(path, self.reasons[rel])
        if self._array is None:
            self._array = np.load(self.npy, mmap_mode="r")
        return Image.fromarray(np.asarray(self._array[self.rows[rel]]), "RGB")


def open_pixel_cache(samples: SampleSet, key: str, cache_dir: Path) -> PixelCache | None:
    """The pixel cache for (key, sample fingerprint) in `cache_dir`, or None when absent, stale or damaged."""
    npy, meta_path = _cache_paths(Path(cache_dir), key, samples.fingerprint)
    if not meta_path.is_file() or not npy.is_file():
        return None
    try:
        meta = read_json(meta_path)
        if (meta.get("format") != PIXELS_FORMAT or meta.get("format_version") != PIXELS_FORMAT_VERSION
                or meta.get("key") != key or meta.get("fingerprint") != samples.fingerprint
                or meta.get("n_samples") != len(samples)):
            raise IndexFormatError(f"{meta_path}: written for other samples or another version")
        reasons = {str(k): str(v) for k, v in meta["unreadable_reasons"].items()}
        pixels = np.load(npy, mmap_mode="r")
    except (IndexFormatError, KeyError, TypeError, ValueError, AttributeError, OSError) as exc:
        log.warning("writing the pixel cache again: %s", exc)
        return None
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[0] != len(samples) \
            or list(pixels.shape) != meta.get("shape"):
        log.warning("writing the pixel cache again: %s holds %s %s, %s expects %s uint8", npy, pixels.shape,
                    pixels.dtype, meta_path.name, meta.get("shape"))
        return None
    return PixelCache(npy, samples.root, samples.paths, reasons)


def _existing_parent(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def write_pixel_cache(samples: SampleSet, preprocess: Callable[[Any], Any], key: str, cache_dir: Path, *,
                      batch_size: int = 64, workers: int = 0, progress: bool = False,
                      notify: Callable[[str], None] | None = None) -> PixelCache:
    """Decode every sample image (`mll_index.images.decoding.open_image`, through `images.loader.image_loader`) and keep it
    at the model's input resolution as uint8 in `cache_dir/<key>-<fingerprint>.npy` (+ `.json`: key,
    fingerprint, unreadable images with their reasons), or reuse that file when it is current.

    The size (n x H x W x 3 bytes) is reported through `notify` before anything is written.

    Raises:
        InputError: the disk holding `cache_dir` has less free space than the cache needs (nothing is
            written), or the transform cannot be split (see `image_stage`).
    """
    cached = open_pixel_cache(samples, key, cache_dir)
    if cached is not None:
        log.info("pixel cache for %s read from %s", key, cache_dir)
        return cached
    from mll_index.images.loader import ImageSet, image_loader

    shape = pixel_cache_shape(samples, preprocess)
    size = int(np.prod(shape))
    npy, meta_path = _cache_paths(Path(cache_dir), key, samples.fingerprint)
    free = shutil.disk_usage(_existing_parent(Path(cache_dir))).free
    if size > free:
        raise InputError(f"{cache_dir}: the pixel cache of {len(samples)} images at {shape[1]}x{shape[2]} needs "
                         f"{size / 1e9:.2f} GB and the disk has {free / 1e9:.2f} GB free; free space or label "
                         "without --pixel-cache")
    (notify or log.info)(f"writing a pixel cache of {size / 1e9:.2f} GB ({len(samples)} images at "
                         f"{shape[1]}x{shape[2]}, uint8) to {npy}")
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tmp = npy.parent / f".{npy.name}.{os.getpid()}.tmp"
    reasons: dict[str, str] = {}
    loader = image_loader(ImageSet(samples.root, samples.paths), _ToArray(image_stage(preprocess)),
                          batch_size=batch_size, workers=workers)
    from tqdm.auto import tqdm

    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        with tqdm(total=len(samples), unit="img", desc=f"pixel cache ({key})", disable=not progress) as bar:
            for batch in loader:
                for pos, reason in batch.unreadable:
                    reasons[samples.paths[pos]] = reason
                if batch.pixels is not None:
                    # Exact: the loader carries the uint8 values as float32.
                    out[batch.positions.numpy()] = batch.pixels.numpy().astype(np.uint8)
                bar.update(len(batch.unreadable) + (0 if batch.pixels is None else len(batch.positions)))
        out.flush()
        del out
        os.replace(tmp, npy)
        write_json(meta_path, {
            "format": PIXELS_FORMAT, "format_version": PIXELS_FORMAT_VERSION, "key": key,
            "fingerprint": samples.fingerprint, "root": str(samples.root), "n_samples": len(samples),
            "shape": list(shape), "dtype": "uint8", "unreadable": sorted(reasons), "unreadable_reasons": reasons})
    finally:
        tmp.unlink(missing_ok=True)
    return PixelCache(npy, samples.root, samples.paths, reasons)
