"""The one image data path: image files → decoded tensors → image embeddings → zero-shot probabilities.

Labeling, reuse and evaluation all run models of one preprocessing configuration over a
set of image files. This module does it once, streamed:

- an `ImageSet` names the files (a root, relative paths, an integer label per image or -1);
- `ImageDataset` decodes and transforms one image per item in DataLoader workers, and
  returns the unreadable ones with their reason instead of failing, so that an unreadable
  file is skipped and listed whichever worker meets it;
- `image_loader` wraps it in a DataLoader (`prefetch_factor`, pinned memory on cuda, a
  timeout) whose iteration turns a dead or stuck worker into one `InputError` naming the
  file it was decoding, never a hang;
- `encode_image_set` runs every model of a preprocessing configuration on each batch, in
  one pass over the images, writing unit embeddings into (n, d) float32 arrays (or handing
  each batch to a callback); the pixels held are bounded by batch size x (workers x
  prefetch + 1), never by image count, and the models of a pass are the only ones loaded;
- `zero_shot_probabilities` and `hub_probabilities` turn those embeddings into per-class
  probabilities with the temperature rule of `mll_index.models.zeroshot.logit_scale` (the model's
  logit scale, capped at 100), which labeling, reuse and evaluation share.

Every run measures the time spent waiting on the loader (decoding) apart from the time in
the models (encoding), so a caller can say which one bounds it (`EncodeStats`).

torch is imported inside the functions that need it: importing this module does not import it
(the DataLoader subclass is defined on first use, in `_loader_class`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from mll_index.errors import InputError
from mll_index.models.hub import Hub, HubModel, LoadedModel, group_by_preprocess, load_model
from mll_index.models.zeroshot import class_embeddings, logit_scale

if TYPE_CHECKING:
    import PIL.Image

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "fp16", "bf16"]
Decoder = Callable[[Path], "PIL.Image.Image"]
DEFAULT_TIMEOUT_S = 120.0


# ---------------------------------------------------------------------------------------
# Images


@dataclass(frozen=True)
class ImageSet:
    """Image files in a fixed order: `root / paths[i]` has integer label `labels[i]` (-1 where unknown).

    Labels are class positions (reuse, evaluation) or labeled-node positions (labeling); the
    data path only carries them along.
    """

    root: Path
    paths: tuple[str, ...]
    labels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "paths", tuple(self.paths))
        labels = tuple(int(v) for v in self.labels) if len(self.labels) else (-1,) * len(self.paths)
        if len(labels) != len(self.paths):
            raise InputError(f"{self.root}: {len(labels)} labels for {len(self.paths)} images")
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.paths)

    def label_array(self) -> np.ndarray:
        """(n,) int64 labels, -1 where unknown."""
        return np.asarray(self.labels, np.int64).reshape(len(self.paths))

    def subset(self, positions: Sequence[int]) -> ImageSet:
        """The images at `positions` (in that order)."""
        return ImageSet(self.root, tuple(self.paths[i] for i in positions), tuple(self.labels[i] for i in positions))


def image_set_from_samples(samples: Any, node_wnids: Sequence[str] | None = None) -> ImageSet:
    """The ImageSet of a `samples.SampleSet`: label = position of the image's wnid in `node_wnids`
    (default: the sample set's sorted wnids)."""
    nodes = list(node_wnids) if node_wnids is not None else sorted(set(samples.wnids))
    pos = {w: j for j, w in enumerate(nodes)}
    return ImageSet(Path(samples.root), tuple(samples.paths), tuple(pos.get(w, -1) for w in samples.wnids))


def image_set_from_task(task: Any) -> ImageSet:
    """The ImageSet of a `reuse.TaskImages` (root, paths, labels with -1 where unknown)."""
    return ImageSet(Path(task.root), tuple(task.paths), tuple(int(v) for v in np.asarray(task.labels).tolist()))


def default_decode(path: Path) -> PIL.Image.Image:
    """Open an image file as an RGB PIL image with `mll_index.images.decoding.open_image`.

    Raises:
        InputError: the file cannot be decoded (or is refused, e.g. too many pixels).
    """
    from mll_index.images.decoding import open_image  # PIL is imported on first use, not with the package

    return open_image(path)


@lru_cache(maxsize=1)
def _decode_failures() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "this file is not a usable image" (skipped and listed, not raised).

    PIL raises OSError (UnidentifiedImageError included), ValueError, SyntaxError or EOFError on
    broken files and DecompressionBombError on huge ones; our decoder raises UnreadableImageError.
    Any other MLLIndexError (a bad `$MLL_INDEX_MAX_PIXELS`) stops the run rather than marking every
    image unreadable.
    """
    from PIL import Image

    from mll_index.images.decoding import UnreadableImageError

    return (UnreadableImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


class Batch(NamedTuple):
    """One loader batch: `positions` (b,) int64 tensor of ImageSet positions, increasing; `pixels`
    (b, 3, H, W) float32 tensor, or None when every image of the batch was unreadable;
    `unreadable` the (position, reason) of the images dropped from it."""

    positions: Any
    pixels: Any
    unreadable: list[tuple[int, str]]


class _WorkerBoard:
    """What each loader worker is decoding: worker id → (pid, ImageSet position or -1).

    Shared memory without a lock (a worker killed while holding a lock would hang the others);
    each slot has one writer. The main process reads it to name the file a dead worker was on.
    """

    def __init__(self, workers: int) -> None:
        ctx = multiprocessing.get_context()
        self.pids = ctx.RawArray(ctypes.c_long, max(workers, 1))
        self.positions = ctx.RawArray(ctypes.c_long, max(workers, 1))
        for i in range(len(self.positions)):
            self.positions[i] = -1

    def set(self, worker: int, pid: int, position: int) -> None:
        self.pids[worker] = pid
        self.positions[worker] = position

    def busy(self, pids: Sequence[int] | None = None) -> list[int]:
        """Positions being decoded, by the workers with these pids (all workers when None)."""
        return [int(p) for w, p in zip(self.pids, self.positions)
                if p >= 0 and (pids is None or int(w) in pids)]


class ImageDataset:
    """A map-style torch Dataset over an ImageSet: item i is (i, (3, H, W) float32 tensor) or, for an
    unreadable image, (i, None, reason).

    It implements the Dataset protocol (`__len__`, `__getitem__`) without subclassing
    `torch.utils.data.Dataset`, so that importing this module does not import torch; being a
    module-level class, it pickles for workers started with spawn as well as fork.
    """

    def __init__(self, images: ImageSet, preprocess: Callable[[Any], Any], decode: Decoder | None = None,
                 board: _WorkerBoard | None = None) -> None:
        self.images = images
        self.preprocess = preprocess
        self.decode = decode or default_decode
        self.board = board

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        info = None
        if self.board is not None:
            import torch.utils.data

            info = torch.utils.data.get_worker_info()
        if info is not None:
            self.board.set(info.id, os.getpid(), i)
        try:
            try:
                image = self.decode(self.images.root / self.images.paths[i])
            except _decode_failures() as exc:
                # UnreadableImageError's reason leaves out the path: the caller lists it by path.
                return (i, None, _one_line(getattr(exc, "reason", None) or str(exc) or type(exc).__name__))
            # The transform runs outside the guard: an error there is a bug, not a bad file.
            return (i, self.preprocess(image))
        finally:
            if info is not None:
                self.board.set(info.id, os.getpid(), -1)


def image_dataset(images: ImageSet, preprocess: Callable[[Any], Any], decode: Decoder | None = None) -> Any:
    """A `torch.utils.data.Dataset` over `images`: item i is (i, tensor) with the (3, H, W) float32
    output of `preprocess(decode(path))`, or (i, None, reason) when the file cannot be decoded."""
    return ImageDataset(images, preprocess, decode)


def collate_readable(items: Sequence[tuple[Any, ...]]) -> Batch:
    """Stack the readable items of a batch; the unreadable ones go to `Batch.unreadable`."""
    import torch

    good = [item for item in items if item[1] is not None]
    bad = [(int(item[0]), str(item[2])) for item in items if item[1] is None]
    positions = torch.tensor([int(item[0]) for item in good], dtype=torch.int64)
    pixels = torch.stack([torch.as_tensor(item[1], dtype=torch.float32) for item in good]) if good else None
    return Batch(positions, pixels, bad)


_DEAD_WORKER = re.compile(r"DataLoader worker \(pids?(?:\(s\))? ([\d, ]+)\)")


def explain_loader_error(loader: Any, exc: BaseException) -> BaseException:
    """The InputError naming the file(s) a dead or stuck loader worker was decoding, or `exc` itself.

    torch reports a dead worker from `next()` ("worker (pid(s) N) exited unexpectedly") or, through
    its SIGCHLD handler, from wherever the main thread is ("worker (pid N) is killed by signal");
    a stuck one as "DataLoader timed out after T seconds".
    """
    text = str(exc)
    board = getattr(loader, "board", None)
    dead = _DEAD_WORKER.search(text)
    timed_out = "DataLoader timed out after" in text
    if not isinstance(exc, RuntimeError) or not (dead or timed_out) or board is None:
        return exc
    images = loader.dataset.images
    pids = [int(p) for p in dead.group(1).replace(",", " ").split()] if dead else None
    busy = board.busy(pids) or (board.busy() if dead else [])
    files = [str(images.root / images.paths[i]) for i in busy]
    where = ", ".join(files[:3]) if files else f"an image under {images.root}"
    if dead:
        return InputError(f"{where}: decoding it killed the image loader's worker process "
                          f"({_one_line(text, 160)}); remove or re-encode that file")
    return InputError(f"{where}: no image decoded within the loader's {loader.timeout:g} s timeout; "
                      "remove or re-encode that file, or raise the timeout")


def _dead_workers(iterator: Any, wait_s: float = 2.0) -> list[int]:
    """Pids of the loader iterator's worker processes that exited with an error (waiting up to
    `wait_s` for a dying one to be reaped)."""
    workers = list(getattr(iterator, "_workers", []))
    deadline = time.monotonic() + wait_s
    while True:
        dead = [w.pid for w in workers if w.exitcode not in (None, 0)]
        if dead or time.monotonic() > deadline or not workers:
            return dead
        time.sleep(0.05)


@lru_cache(maxsize=1)
def _loader_class() -> type:
    import torch.utils.data

    class ImageLoader(torch.utils.data.DataLoader):
        """A DataLoader whose iteration turns a dead or stuck worker into an InputError naming the file."""

        board: _WorkerBoard | None = None

        def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
            inner = super().__iter__()
            try:
                yield from inner
            except RuntimeError as exc:
                explained = explain_loader_error(self, exc)
                if explained is exc:
                    raise
                raise explained from None
            except (ConnectionError, EOFError) as exc:
                # A worker that dies while the main process fetches its batch's shared memory shows as
                # a broken connection rather than torch's "exited unexpectedly": name it the same way.
                dead = _dead_workers(inner)
                if not dead:
                    raise
                raise explain_loader_error(self, RuntimeError(
                    f"DataLoader worker (pid(s) {', '.join(map(str, dead))}) exited unexpectedly ({exc})")) from None
            finally:
                # Shut the workers down now, not when the iterator is collected: while it lives (a
                # traceback holds it), torch's SIGCHLD handler keeps its dead worker registered and
                # raises "worker exited unexpectedly" at the next child process exit anywhere.
                shutdown = getattr(inner, "_shutdown_workers", None)
                if shutdown is not None:
                    with contextlib.suppress(OSError):    # a dead worker's pipe: nothing left to close
                        shutdown()

    return ImageLoader


def image_loader(images: ImageSet, preprocess: Callable[[Any], Any], *, batch_size: int = 64, workers: int = 0,
                 device: str = "cpu", decode: Decoder | None = None, prefetch_factor: int = 2,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """A DataLoader of `Batch`es over `images`, in order, unreadable images dropped from each batch.

    Args:
        preprocess: PIL image -> (3, H, W) float tensor (`LoadedModel.preprocess`).
        batch_size: images per batch (the last may be smaller; dropped images make it smaller).
        workers: decoding processes; 0 decodes in this process.
        device: pinned host memory is used when it is a cuda device.
        decode: path -> RGB PIL image (`default_decode`); raises on an unusable file.
        prefetch_factor: batches each worker prepares ahead.
        timeout_s: longest wait for one batch from the workers.
    Raises (while iterating):
        InputError: a worker died (a decoder killed its process) or no batch came within
            `timeout_s`; the message names the file(s) it was decoding.
    """
    if batch_size < 1 or workers < 0:
        raise InputError(f"batch size must be >= 1 and workers >= 0, not {batch_size} and {workers}")
    board = _WorkerBoard(workers) if workers > 0 else None
    dataset = ImageDataset(images, preprocess, decode, board)
    loader = _loader_class()(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_readable,
        pin_memory=str(device).startswith("cuda"), persistent_workers=False,
        prefetch_factor=prefetch_factor if workers > 0 else None, timeout=timeout_s if workers > 0 else 0)
    loader.board = board
    return loader


# ---------------------------------------------------------------------------------------
# Encoding


@dataclass
class EncodeStats:
    """Where a pass over the images spent its time.

    `loader_wait_s` is the time the models waited for decoded batches (all of the decoding
    with 0 workers, only what the workers could not hide otherwise); `encode_s` the time in
    each model, transfers included.
    """

    images: int = 0
    unreadable: int = 0
    batches: int = 0
    seconds: float = 0.0
    loader_wait_s: float = 0.0
    encode_s: dict[str, float] = field(default_factory=dict)

    @property
    def decode_images_per_s(self) -> float:
        """Images the loader delivered per second of waiting on it (inf when it never held the models up)."""
        seen = self.images + self.unreadable
        return seen / self.loader_wait_s if self.loader_wait_s > 0 else float("inf")

    @property
    def encode_images_per_s(self) -> dict[str, float]:
        """Per model: images encoded per second in the model."""
        return {m: (self.images / s if s > 0 else float("inf")) for m, s in self.encode_s.items()}

    @property
    def bound_by(self) -> str:
        """"decode" when the run waited longer on the loader than it spent in the models, else "encode"."""
        return "decode" if self.loader_wait_s > sum(self.encode_s.values()) else "encode"

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "unreadable": self.unreadable, "seconds": round(self.seconds, 3),
                "loader_wait_s": round(self.loader_wait_s, 3),
                "encode_s": {m: round(s, 3) for m, s in self.encode_s.items()},
                "decode_images_per_s": round(self.decode_images_per_s, 1),
                "encode_images_per_s": {m: round(v, 1) for m, v in self.encode_images_per_s.items()},
                "bound_by": self.bound_by}


def rates(stats: Sequence[EncodeStats]) -> dict[str, Any]:
    """The decode and encode rates of a run made of several passes, for a JSON summary.

    Returns:
        images and unreadable (image decodes, summed over passes: an image is decoded once per pass,
        and there is a pass per preprocessing configuration and group of up to `models_per_pass`
        models), passes, seconds, loader_wait_s, decode_images_per_s
        (images the loader delivered per second the models waited on it; null when they never
        waited), encode_images_per_s per model, and bound_by ("decode" or "encode").
    """
    images = sum(s.images for s in stats)
    unreadable = sum(s.unreadable for s in stats)
    wait = sum(s.loader_wait_s for s in stats)
    encode: dict[str, float] = {}
    for s in stats:
        for mid, rate in s.encode_images_per_s.items():
            encode[mid] = round(rate, 1) if np.isfinite(rate) else None  # type: ignore[assignment]
    in_models = sum(sum(s.encode_s.values()) for s in stats)
    seen = sum(s.images + s.unreadable for s in stats)
    return {"images": images, "unreadable": unreadable, "passes": len(stats),
            "seconds": round(sum(s.seconds for s in stats), 3),
            "loader_wait_s": round(wait, 3), "decode_images_per_s": round(seen / wait, 1) if wait > 0 else None,
            "encode_images_per_s": encode, "bound_by": "decode" if wait > in_models else "encode"}


def rates_line(stats: Sequence[EncodeStats]) -> str:
    """One line for people: decode rate, the slowest and fastest model's encode rate, and which bounds the run."""
    r = rates(stats)
    decode = "never waited on" if r["decode_images_per_s"] is None else f"{r['decode_images_per_s']:.0f} images/s"
    encode = [v for v in r["encode_images_per_s"].values() if v is not None]
    spread = (f"{min(encode):.0f} images/s" if len(encode) == 1 or min(encode) == max(encode)
              else f"{min(encode):.0f}-{max(encode):.0f} images/s per model") if encode else "no image encoded"
    passes = f" over {r['passes']} passes" if r["passes"] > 1 else ""
    return (f"{r['images']} image decodes{passes} ({r['unreadable']} unreadable) in {r['seconds']:.1f} s: decoding {decode}, "
            f"encoding {spread}; bound by {r['bound_by']}")


@dataclass
class EncodedImages:
    """The result of a pass: per model id, (n, d) float32 unit embeddings (empty when a callback took
    them); row r is the image at `positions[r]` of the ImageSet ((n,) int64, increasing);
    `unreadable` lists (relative path, reason) of the images with no row."""

    embeddings: dict[str, np.ndarray]
    positions: np.ndarray
    unreadable: list[tuple[str, str]]
    stats: EncodeStats


def _autocast(device: str, precision: Precision) -> Any:
    import contextlib

    import torch

    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    if precision == "auto":
        precision = "fp16" if kind == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in ("fp16", "bf16"):
        raise InputError(f"unknown precision {precision!r}; precisions: ['auto', 'fp32', 'fp16', 'bf16']")
    return torch.autocast(device_type=kind, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)


def _one_config(models: Sequence[LoadedModel]) -> None:
    if not models:
        raise InputError("no models to run on the images")
    keys = sorted({m.preprocess_key for m in models})
    if len(keys) > 1:
        raise InputError(f"models {[m.hub_model.id for m in models]} have different preprocessing ({keys}); "
                         "run each group of hub.group_by_preprocess separately")


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not enabled, dynamic_ncols=True)


def encode_image_set(models: Sequence[LoadedModel], images: ImageSet, *, batch_size: int = 64, workers: int = 0,
                     device: str = "cpu", precision: Precision = "auto", decode: Decoder | None = None,
                     on_batch: Callable[[np.ndarray, dict[str, Any]], None] | None = None,
                     out: Mapping[str, np.ndarray] | None = None, progress: bool = False,
                     timeout_s: float = DEFAULT_TIMEOUT_S, desc: str = "encode images",
                     log_unreadable: bool = True) -> EncodedImages:
    """Unit image embeddings of every model on every image, in ONE pass over the images.

    Each batch is decoded once (by `workers` processes) and run through every model, under
    `torch.inference_mode()` and, on cuda, fp16 autocast (`precision`). The embeddings go,
    per batch, to `on_batch(positions, {model id: (b, d) float32 unit tensor on device})` when
    given (nothing is kept), else into `out[model id]` (caller's (len(images), d) float32
    arrays, e.g. memory-mapped) or into arrays allocated here; readable rows are packed at
    the front in image order.

    Args:
        models: loaded models of ONE preprocessing configuration (`LoadedModel.preprocess_key`).
        images: the files; unreadable ones are skipped and listed.
        batch_size, workers, decode, timeout_s: see `image_loader`.
        device: where the models are ("cpu", "cuda", "cuda:1").
        precision: "auto" (fp16 on cuda, fp32 on cpu), "fp32", "fp16" or "bf16".
        progress: a tqdm bar on stderr with images/s and time left.
        log_unreadable: log a warning naming the skipped images (off where the caller reports
            them itself, as probe images do in the selection's warnings).
    Returns:
        EncodedImages: embeddings (n_readable, d) float32 per model id (views into `out` when
        given), positions (n_readable,) int64, unreadable (path, reason), and the timing stats.
    Raises:
        InputError: models of several configurations, a dead or stuck loader worker (names the
            file), or a bad precision.
    """

    _one_config(models)
    ids = [m.hub_model.id for m in models]
    n = len(images)
    loader = image_loader(images, models[0].preprocess, batch_size=batch_size, workers=workers, device=device,
                          decode=decode, timeout_s=timeout_s)
    arrays: dict[str, np.ndarray] = dict(out) if out is not None else {}
    for mid, array in arrays.items():
        if array.ndim != 2 or array.shape[0] != n:
            raise InputError(f"the output array for {mid} is {array.shape}, expected ({n}, d)")
    positions = np.empty(n, np.int64)
    unreadable: list[tuple[str, str]] = []
    stats = EncodeStats(encode_s={mid: 0.0 for mid in ids})
    started = time.perf_counter()
    try:
        kept = _run_models(models, ids, loader, images, device, precision, arrays, positions, unreadable, stats,
                           on_batch, _progress_bar(n, desc, progress))
    except RuntimeError as exc:
        # A worker's death can surface from torch's SIGCHLD handler anywhere in this loop.
        explained = explain_loader_error(loader, exc)
        if explained is exc:
            raise
        raise explained from None
    stats.seconds = time.perf_counter() - started
    if unreadable and log_unreadable:
        log.warning("%s: skipped %d unreadable images: %s", images.root, len(unreadable),
                    [p for p, _ in unreadable[:5]])
    if on_batch is None:
        for mid in ids:
            if mid not in arrays:  # no image decoded: the dimension is the model's
                arrays[mid] = np.empty((0, _embed_dim(models[ids.index(mid)])), np.float32)
    embeddings = {mid: arrays[mid][:kept] for mid in ids} if on_batch is None else {}
    return EncodedImages(embeddings, positions[:kept].copy(), unreadable, stats)


def _run_models(models: Sequence[LoadedModel], ids: list[str], loader: Any, images: ImageSet, device: str,
                precision: Precision, arrays: dict[str, np.ndarray], positions: np.ndarray,
                unreadable: list[tuple[str, str]], stats: EncodeStats,
                on_batch: Callable[[np.ndarray, dict[str, Any]], None] | None, bar: Any) -> int:
    """The loop of `encode_image_set`; returns the number of readable images."""
    import torch

    n = len(images)
    cuda = str(device).startswith("cuda")
    kept = 0
    with torch.inference_mode(), _autocast(device, precision), bar, contextlib.closing(iter(loader)) as batches:
        while True:
            waited = time.perf_counter()
            batch = next(batches, None)
            stats.loader_wait_s += time.perf_counter() - waited
            if batch is None:
                break
            stats.batches += 1
            for pos, reason in batch.unreadable:
                unreadable.append((images.paths[pos], reason))
            stats.unreadable += len(batch.unreadable)
            if batch.pixels is not None:
                b = int(batch.positions.shape[0])
                pixels = batch.pixels.to(device, non_blocking=cuda)
                got: dict[str, Any] = {}
                for model, mid in zip(models, ids):
                    t0 = time.perf_counter()
                    emb = torch.nn.functional.normalize(model.model.encode_image(pixels).float(), dim=-1)
                    if on_batch is None:
                        host = emb.cpu().numpy()  # the copy waits for the device, so the time is the model's
                        if mid not in arrays:
                            arrays[mid] = np.empty((n, host.shape[1]), np.float32)
                        arrays[mid][kept:kept + b] = host
                    elif cuda:
                        torch.cuda.synchronize(device)
                    got[mid] = emb
                    stats.encode_s[mid] += time.perf_counter() - t0
                positions[kept:kept + b] = batch.positions.numpy()
                if on_batch is not None:
                    on_batch(positions[kept:kept + b], got)
                kept += b
                stats.images += b
            bar.update(len(batch.unreadable) + (0 if batch.pixels is None else int(batch.positions.shape[0])))
            total_encode = sum(stats.encode_s.values())
            bar.set_postfix_str(f"decode wait {stats.loader_wait_s:.0f}s, in models {total_encode:.0f}s", refresh=False)
    return kept


def _embed_dim(loaded: LoadedModel) -> int:
    dim = getattr(getattr(loaded.model, "visual", None), "output_dim", None)
    return int(dim) if dim is not None else 0


# ---------------------------------------------------------------------------------------
# Zero-shot probabilities


def temperature(loaded: LoadedModel) -> float:
    """The softmax temperature of a model's zero-shot logits: its learned logit scale, capped at 100.

    The one rule for labeling, reuse and evaluation (`mll_index.models.zeroshot.logit_scale`).
    """
    return logit_scale(loaded)


def probabilities_from_embeddings(image_emb: Any, class_emb: Any, scale: float) -> Any:
    """(n, C) float32 softmax of scale x cosine similarity, rows summing to 1; numpy in, numpy out,
    torch in, torch out (on the tensors' device). Inputs are unit rows: (n, d) images, (C, d) classes."""
    import torch

    if isinstance(image_emb, np.ndarray):
        result = probabilities_from_embeddings(torch.from_numpy(np.asarray(image_emb, np.float32)),
                                               torch.from_numpy(np.asarray(class_emb, np.float32)), scale)
        return result.numpy()
    logits = scale * (image_emb.float() @ torch.as_tensor(class_emb, dtype=torch.float32,
                                                          device=image_emb.device).T)
    return torch.softmax(logits, dim=1)


@dataclass
class Probabilities:
    """Per model id, (n, C) float32 zero-shot probabilities over the class names (rows sum to 1, or
    NaN where the model's outputs are not finite); row r is the image at `positions[r]` ((n,) int64,
    increasing) of the ImageSet; `unreadable` lists (relative path, reason) of the images with no row;
    `stats` per preprocessing pass; per model, the class embeddings and temperature used and the number
    of images whose embedding was not finite."""

    probabilities: dict[str, np.ndarray]
    positions: np.ndarray
    unreadable: list[tuple[str, str]]
    stats: list[EncodeStats] = field(default_factory=list)
    class_embeddings: dict[str, np.ndarray] = field(default_factory=dict)   # (C, d) float32 unit rows per model
    scales: dict[str, float] = field(default_factory=dict)                  # `temperature` per model
    nonfinite_rows: dict[str, int] = field(default_factory=dict)            # images whose embedding is not finite


def zero_shot_probabilities(models: Sequence[LoadedModel], images: ImageSet, class_names: Sequence[str], *,
                            batch_size: int = 64, workers: int = 0, device: str = "cpu",
                            precision: Precision = "auto", decode: Decoder | None = None,
                            prompt_templates: Sequence[str] | None = None, progress: bool = False,
                            timeout_s: float = DEFAULT_TIMEOUT_S) -> Probabilities:
    """Zero-shot class probabilities of models of ONE preprocessing configuration, in one pass.

    A class's text embedding is the normalised mean of its prompts (`zeroshot.class_embeddings`);
    the logits are `temperature(model)` x cosine similarity. Only (n, C) per model is kept.

    Raises:
        InputError: see `encode_image_set`.
    """
    _one_config(models)
    classes = {m.hub_model.id: class_embeddings(m, class_names, device, prompt_templates) for m in models}
    scales = {m.hub_model.id: temperature(m) for m in models}
    n = len(images)
    probs = {mid: np.empty((n, len(class_names)), np.float32) for mid in classes}
    row = [0]
    bad = {mid: 0 for mid in classes}

    def keep(positions: np.ndarray, emb: dict[str, Any]) -> None:
        import torch

        b = len(positions)
        for mid, e in emb.items():
            bad[mid] += int((~torch.isfinite(e).all(dim=1)).sum())
            probs[mid][row[0]:row[0] + b] = probabilities_from_embeddings(e, classes[mid], scales[mid]).cpu().numpy()
        row[0] += b

    encoded = encode_image_set(models, images, batch_size=batch_size, workers=workers, device=device,
                               precision=precision, decode=decode, on_batch=keep, progress=progress,
                               timeout_s=timeout_s, desc=f"predict {models[0].preprocess_key}")
    return Probabilities({mid: p[:row[0]] for mid, p in probs.items()}, encoded.positions, encoded.unreadable,
                         [encoded.stats], classes, scales, bad)


# Models held in memory at once in a pass, by their parameters (hub field params_m): every decode
# of a pass feeds all its models, so fewer, fuller passes decode each image fewer times. 1,000 M
# parameters is 4 GB in float32 (two ViT-L-14, or the emoji world's whole hub of 13 small models).
PASS_PARAMS_M = 1000.0
UNKNOWN_PARAMS_M = 430.0        # a model whose size the hub does not give counts as a ViT-L-14
MODELS_PER_PASS = 16            # and never more than this many at once


def model_passes(models: Sequence[HubModel], models_per_pass: int = MODELS_PER_PASS,
                 params_budget_m: float = PASS_PARAMS_M) -> list[list[HubModel]]:
    """The models split into passes: grouped by preprocessing (`hub.group_by_preprocess`, hub order),
    each group cut into chunks held at once: at most `models_per_pass` models, and at most
    `params_budget_m` million parameters together by their `params_m` (UNKNOWN_PARAMS_M where the
    hub does not say), at least one model per pass."""
    if models_per_pass < 1:
        raise InputError(f"models per pass must be >= 1, not {models_per_pass}")
    groups = group_by_preprocess(Hub(name="selection", models=tuple(models)))
    passes: list[list[HubModel]] = []
    for group in groups.values():
        chunk: list[HubModel] = []
        held = 0.0
        for model in group:
            size = model.params_m if model.params_m is not None else UNKNOWN_PARAMS_M
            if chunk and (len(chunk) >= models_per_pass or held + size > params_budget_m):
                passes.append(chunk)
                chunk, held = [], 0.0
            chunk.append(model)
            held += size
        if chunk:
            passes.append(chunk)
    return passes


def hub_probabilities(hub: Hub, model_ids: Sequence[str], images: ImageSet, class_names: Sequence[str], *,
                      batch_size: int = 64, workers: int = 0, device: str = "cpu", precision: Precision = "auto",
                      models_per_pass: int = MODELS_PER_PASS, decode: Decoder | None = None, progress: bool = False,
                      timeout_s: float = DEFAULT_TIMEOUT_S,
                      before_pass: Callable[[Sequence[LoadedModel]], None] | None = None) -> Probabilities:
    """Zero-shot probabilities of hub models on images: one pass over the images per preprocessing
    configuration (per `models_per_pass` models of it), models loaded with `hub.load_model`.

    `before_pass` sees each pass's loaded models before any image is decoded (reuse checks their
    prompts there, so that a refusal costs no pass).

    Returns:
        Probabilities over the images readable in every pass (a file that failed once is dropped
        from all models, so rows line up across models).
    Raises:
        InputError: an unknown model id, a dead or stuck loader worker. ModelLoadError: a model
            that cannot be loaded.
    """
    chosen = [hub.get(m) for m in dict.fromkeys(model_ids)]
    results: list[Probabilities] = []
    for group in model_passes(chosen, models_per_pass):
        loaded = [load_model(m, device) for m in group]
        if before_pass is not None:
            before_pass(loaded)
        results.append(zero_shot_probabilities(loaded, images, class_names, batch_size=batch_size, workers=workers,
                                               device=device, precision=precision, decode=decode, progress=progress,
                                               timeout_s=timeout_s))
        del loaded
    return merge_probabilities(results)


def merge_probabilities(results: Sequence[Probabilities]) -> Probabilities:
    """The passes of one image set as one result, over the images readable in every pass (rows line up
    across models); an image unreadable in any pass is listed once, with its reason."""
    common = results[0].positions
    for r in results[1:]:
        common = np.intersect1d(common, r.positions)
    merged = Probabilities({}, common, [], [s for r in results for s in r.stats])
    unreadable: dict[str, str] = {}
    for r in results:
        rows = np.searchsorted(r.positions, common)
        merged.probabilities.update({mid: p[rows] for mid, p in r.probabilities.items()})
        merged.class_embeddings.update(r.class_embeddings)
        merged.scales.update(r.scales)
        merged.nonfinite_rows.update(r.nonfinite_rows)
        for path, reason in r.unreadable:
            unreadable.setdefault(path, reason)
    merged.unreadable = sorted(unreadable.items())
    return merged
