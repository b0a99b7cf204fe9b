"""Sample images in the ImageFolder layout, decoded once per preprocessing configuration.

A sample set is `root/<wnid>/*.{jpg,png,...}` (`mll_index.images.IMAGE_SUFFIXES`): the images
of each graph node in a folder named by its wnid, decoded by `mll_index.images.open_image`. Labeling runs every hub model on these images; models that
share a preprocessing configuration (`mll_index.hub.preprocess_key`) take the same input
tensors, so the images are decoded and transformed once per configuration and cached on
disk as a float16 `.npy` array, memory-mapped when read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.artifacts import read_json, write_json
from mll_index.errors import IndexFormatError, InputError
from mll_index.images import UnreadableImageError, image_files, open_image

log = logging.getLogger(__name__)

WNID_RE = re.compile(r"^n\d{8}$")
PIXELS_FORMAT = "mll-index-pixels"
# 2: images decoded by mll_index.images (bit depth, transparency on white, EXIF orientation),
# and the reason each unreadable image was skipped.
PIXELS_FORMAT_VERSION = 2


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


@dataclass(frozen=True, eq=False)
class PreprocessedImages:
    """The sample images after a model's eval transform.

    `pixels` is (n, 3, H, W) float16, memory-mapped; row i is the image at
    `samples.paths[indices[i]]`. `indices` is (n,) int64, increasing. `unreadable` lists
    the relative paths that could not be decoded (or were refused as too large) and have no
    row; `reasons` maps each of them to why, in one line.
    """

    key: str
    pixels: np.ndarray
    indices: np.ndarray
    unreadable: tuple[str, ...]
    reasons: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


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


def _load_cached(samples: SampleSet, key: str, cache_dir: Path) -> PreprocessedImages | None:
    """The cached array for (key, fingerprint), or None when it is absent or does not match."""
    npy, meta_path = _cache_paths(cache_dir, key, samples.fingerprint)
    if not meta_path.is_file() or not npy.is_file():
        return None
    try:
        meta = read_json(meta_path)
        if (meta.get("format") != PIXELS_FORMAT or meta.get("format_version") != PIXELS_FORMAT_VERSION
                or meta.get("key") != key or meta.get("fingerprint") != samples.fingerprint
                or meta.get("n_samples") != len(samples)):
            raise IndexFormatError(f"{meta_path}: written for other samples or another version")
        unreadable = tuple(meta["unreadable"])
        reasons = {str(k): str(v) for k, v in meta["unreadable_reasons"].items()}
        pixels = np.load(npy, mmap_mode="r")
    except (IndexFormatError, KeyError, TypeError, ValueError, AttributeError, OSError) as exc:
        log.warning("rebuilding the preprocessed images: %s", exc)
        return None
    skip = set(unreadable)
    indices = np.array([i for i, p in enumerate(samples.paths) if p not in skip], dtype=np.int64)
    if pixels.dtype != np.float16 or pixels.ndim != 4 or pixels.shape[0] != len(indices) \
            or list(pixels.shape) != meta.get("shape"):
        log.warning("rebuilding the preprocessed images: %s holds %s %s, %s expects (%d, ...) float16",
                    npy, pixels.shape, pixels.dtype, meta_path.name, len(indices))
        return None
    return PreprocessedImages(key=key, pixels=pixels, indices=indices, unreadable=unreadable, reasons=reasons)


def _output_shape(preprocess: Callable[[Any], Any]) -> tuple[int, int, int]:
    """(3, H, W) of the transform's output, from a blank image (so it is known even if no image decodes)."""
    from PIL import Image

    out = preprocess(Image.new("RGB", (64, 64)))
    shape = tuple(getattr(out, "shape", ()))
    if len(shape) != 3 or shape[0] != 3:
        raise InputError(f"the preprocess transform must map a PIL image to a (3, H, W) tensor, it gave {shape}")
    return shape  # type: ignore[return-value]


def _new_npy(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)


def preprocess_images(samples: SampleSet, preprocess: Callable[[Any], Any], key: str,
                      cache_dir: Path | None = None, batch_size: int = 64, workers: int = 0,
                      progress: bool = False) -> PreprocessedImages:
    """Decode every sample image (`mll_index.images.open_image`) and apply an open_clip eval transform, once.

    The result is written to `cache_dir` as `<key>-<fingerprint>.npy` (float16) and `.json`
    (key, fingerprint, unreadable images with their reasons), each atomically; a later call with the same key
    and an unchanged sample set reads it back memory-mapped without decoding anything.
    Without `cache_dir` the array lives in a temporary file that is deleted once mapped.

    Args:
        samples: from `scan_samples`.
        preprocess: PIL image -> (3, H, W) float tensor (`LoadedModel.preprocess`).
        key: names the transform (`mll_index.hub.preprocess_key`); equal keys must mean
            equal transforms, since the cache is looked up by key.
        batch_size: images decoded between writes to the array.
        workers: decoding threads (PIL releases the GIL while decoding and resizing); 0 decodes inline.
        progress: show a tqdm progress bar.
    Returns:
        pixels (n, 3, H, W) float16 memory-mapped, with the positions in `samples.paths`
        of the n readable images and the relative paths of the unreadable ones, with why.
    Raises:
        InputError: `$MLL_INDEX_MAX_PIXELS` is invalid (a damaged or too large image is not
            an error: it is listed in `unreadable`).
    """
    if cache_dir is not None:
        cached = _load_cached(samples, key, Path(cache_dir))
        if cached is not None:
            log.info("preprocessed images for %s read from %s", key, cache_dir)
            return cached
    from tqdm.auto import tqdm

    channels, height, width = _output_shape(preprocess)
    work_dir = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="mll-index-pixels."))
    work_dir.mkdir(parents=True, exist_ok=True)
    npy, meta_path = _cache_paths(work_dir, key, samples.fingerprint)
    tmp = work_dir / f".{npy.name}.{os.getpid()}.tmp"
    n = len(samples)
    kept: list[int] = []
    unreadable: list[str] = []
    reasons: dict[str, str] = {}

    def prepare(index: int) -> Any:
        """The (3, H, W) tensor of image `index`, or the reason it is unreadable (a str)."""
        try:
            image = open_image(samples.root / samples.paths[index])
        except UnreadableImageError as exc:
            return exc.reason
        return preprocess(image)

    try:
        out = _new_npy(tmp, (n, channels, height, width))
        pool = ThreadPoolExecutor(max_workers=workers) if workers > 0 else None
        try:
            with tqdm(total=n, unit="img", desc=f"decoding images ({key})", disable=not progress) as bar:
                for start in range(0, n, batch_size):
                    batch = range(start, min(start + batch_size, n))
                    tensors = pool.map(prepare, batch) if pool else map(prepare, batch)
                    for index, tensor in zip(batch, tensors):
                        if isinstance(tensor, str):
                            unreadable.append(samples.paths[index])
                            reasons[samples.paths[index]] = tensor
                        else:
                            out[len(kept)] = tensor.numpy().astype(np.float16)
                            kept.append(index)
                    bar.update(len(batch))
        finally:
            if pool:
                pool.shutdown()
        out.flush()
        del out
        if len(kept) < n:
            # Unreadable images leave unused rows at the end: copy the kept ones to a shorter array.
            full = np.load(tmp, mmap_mode="r")
            short_tmp = work_dir / f".{npy.name}.{os.getpid()}.short.tmp"
            short = _new_npy(short_tmp, (len(kept), channels, height, width))
            for start in range(0, len(kept), 1024):
                stop = min(start + 1024, len(kept))
                short[start:stop] = full[start:stop]
            short.flush()
            del short, full
            os.replace(short_tmp, tmp)
        os.replace(tmp, npy)
        write_json(meta_path, {
            "format": PIXELS_FORMAT, "format_version": PIXELS_FORMAT_VERSION, "key": key,
            "fingerprint": samples.fingerprint, "root": str(samples.root), "n_samples": n,
            "shape": [len(kept), channels, height, width], "dtype": "float16", "unreadable": unreadable,
            "unreadable_reasons": reasons,
        })
        pixels = np.load(npy, mmap_mode="r")
    finally:
        for leftover in work_dir.glob(f".{npy.name}.{os.getpid()}.*tmp"):
            leftover.unlink(missing_ok=True)
        if cache_dir is None:
            # The mapping keeps the data readable after the file is unlinked.
            shutil.rmtree(work_dir, ignore_errors=True)
    if unreadable:
        log.warning("%s: skipped %d unreadable images: %s", samples.root, len(unreadable),
                    [f"{p} ({reasons[p]})" for p in unreadable[:5]])
    return PreprocessedImages(key=key, pixels=pixels, indices=np.asarray(kept, dtype=np.int64),
                              unreadable=tuple(unreadable), reasons=reasons)


def iter_batches(pre: PreprocessedImages, batch_size: int = 64) -> Iterator[Any]:
    """Yield the pixels as torch float32 tensors of shape (b, 3, H, W), b <= batch_size, in row order."""
    import torch

    for start in range(0, len(pre), batch_size):
        yield torch.from_numpy(np.asarray(pre.pixels[start:start + batch_size], dtype=np.float32))
