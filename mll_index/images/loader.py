"""Image files → decoded, transformed tensors, streamed: the first half of the one image data path.

Labeling, reuse and evaluation all read a set of image files the same way:

- an `ImageSet` names the files (a root, relative paths, an integer label per image or -1);
- `ImageDataset` decodes and transforms one image per item in DataLoader workers, and
  returns the unreadable ones with their reason instead of failing, so that an unreadable
  file is skipped and listed whichever worker meets it;
- `image_loader` wraps it in a DataLoader (`prefetch_factor`, pinned memory on cuda, a
  timeout) whose iteration turns a dead or stuck worker into one `InputError` naming the
  file it was decoding, never a hang.

The second half, models over these batches, is `mll_index.images.encoding`.

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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from mll_index.errors import InputError

if TYPE_CHECKING:
    import PIL.Image

log = logging.getLogger(__name__)

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
