"""The index as the service holds it: opened, warmed, and replaced whole when the files change.

A request takes `StateHolder.current` once and uses that `IndexState` to the end, so a swap
never changes the index under a request in flight: old states are dropped when no request
holds them any more (their memory-mapped files stay readable after a writer unlinks them).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mll_index import __version__
from mll_index.errors import IndexFormatError, MLLIndexError
from mll_index.index.embed import EmbedderRecord, EmbeddingCache, LazyEmbedder
from mll_index.selection.selector import Selector, open_selector, select_models
from mll_index.selection.task import make_task
from mll_index.service.version import index_version

log = logging.getLogger(__name__)

# A first selection at start-up (and before each swap) loads what the first request would
# otherwise pay for: the text model, the FAISS index, the label folders' memory maps.
WARM_CLASSES = ("dog", "cat")
RETRY_S = 5.0  # the watcher's wait before opening again a version that failed to open
PRELOAD_IMAGE_LABELS = 256  # models whose image-level labels are opened ahead (memory maps: cheap)


@dataclass(frozen=True)
class IndexState:
    """One version of the index, opened for selection.

    version: `index_version` of the files it was opened from; opened_at: Unix seconds.
    """

    path: Path
    version: str
    selector: Selector
    opened_at: float

    def summary(self) -> dict[str, Any]:
        """What `GET /v1/index` answers: node count, embedder, format versions, label counts, version."""
        from mll_index.labels.matrix import matrix_counts

        manifest = self.selector.index.manifest
        store = self.selector.store
        published = self.selector.published
        return {
            "path": self.path.name,  # the folder's name: the server's own folders are no client's business
            "index_version": self.version,
            "nodes": self.selector.index.size,
            "embedder": manifest.get("embedder"),
            "search": manifest.get("search", "flat"),
            "format_versions": {"index": manifest.get("format_version"),
                                "label_matrix": _matrix_format(self.path) if store is not None else None,
                                "published": 1 if published is not None else None},
            "package_version": __version__,
            "index_package_version": manifest.get("package_version"),
            "labels": {"models": len(self.models()), "image_labeled": len(store.folders) if store else 0,
                       "label_matrix": matrix_counts(self.path) or None,
                       "published_models": len(published.models) if published is not None else 0},
            "opened_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.opened_at)),
        }

    def models(self) -> list[dict[str, Any]]:
        """The labeled models, sorted by id: each with the labels it has and its hub entry.

        labels ⊆ ["counts", "image", "published"]: counts in the label matrix, an image-level
        label folder (the restricted mode), published benchmark results.
        """
        out: dict[str, dict[str, Any]] = {}
        store = self.selector.store
        if store is not None:
            for model_id, entry in store.entries.items():
                kinds = ["counts"] + (["image"] if model_id in store.folders else [])
                out[model_id] = {"id": model_id, "labels": kinds, "hub": _public_entry(entry)}
        if self.selector.published is not None:
            for entry in self.selector.published.models:
                record = out.setdefault(entry["id"], {"id": entry["id"], "labels": [], "hub": _public_entry(entry)})
                record["labels"].append("published")
        return [out[m] for m in sorted(out)]


PATH_KEYS = ("checkpoint", "config")  # hub entry fields holding files on the server


def _public_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A hub entry as /v1/models shows it: a checkpoint's or config's file name, not where it lies."""
    return {key: (Path(str(value)).name if key in PATH_KEYS and value else value) for key, value in entry.items()}


def _matrix_format(path: Path) -> int | None:
    from mll_index.core.artifacts import read_json
    from mll_index.labels.matrix import has_matrix, matrix_dir

    return int(read_json(matrix_dir(path) / "manifest.json")["format_version"]) if has_matrix(path) else None


def open_state(path: Path, *, cache: EmbeddingCache | None = None, embedder: LazyEmbedder | None = None,
               version: str | None = None) -> IndexState:
    """Open the index at `path` for selection and warm it (text model loaded, one selection done).

    Args:
        embedder: a loaded text model to reuse when the index's embedder record is the same.
        version: the `index_version` read before opening (read here when not given).
    Raises:
        MLLIndexError (InputError, IndexFormatError, ModelLoadError...): a missing, unlabeled or damaged index.
    """
    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise IndexFormatError(f"{path}: no index here (no manifest.json); build one with "
                               f"`mll-index build --index {path}`")
    version = version or index_version(path)
    from mll_index.index.node_index import read_index_manifest

    record = EmbedderRecord.from_dict(read_index_manifest(path)["embedder"])
    if embedder is None or embedder.record != record:
        embedder = LazyEmbedder(record)
    embedder.load()
    selector = open_selector(path, embedder, cache=cache)
    store = selector.store
    if store is not None and len(store.model_ids) <= PRELOAD_IMAGE_LABELS:
        for i in range(len(store.model_ids)):
            store.image_labels(i)
    select_models(selector, make_task(list(WARM_CLASSES), "warm-up"))
    return IndexState(path, version, selector, time.time())


@dataclass
class StateHolder:
    """The service's current IndexState, and the watcher that replaces it when the index changes.

    `check()` compares `index_version` with the current state's; on a change it opens and warms
    the new version and swaps it in, unless the files changed again meanwhile (a writer still
    at work) or opening failed (a half-written state): then the old state stays and the next
    check tries again. `start()` runs `check(settle=True)` every `poll_s` seconds in a daemon
    thread, so a new version is served within about two polls of its last write.
    """

    path: Path
    cache: EmbeddingCache | None = None
    poll_s: float = 1.0
    _state: IndexState | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _seen: str | None = field(default=None, repr=False)
    _failed_at: float = field(default=0.0, repr=False)
    last_error: str | None = None     # why the latest new version could not be opened
    failed_version: str | None = None
    reloads: int = 0
    failures: int = 0

    def open(self) -> IndexState:
        """Open the first state (at start-up). Raises MLLIndexError when the index cannot be served."""
        self._state = open_state(self.path, cache=self.cache)
        return self._state

    @property
    def current(self) -> IndexState:
        """The state to answer with (take it once per request)."""
        if self._state is None:
            raise RuntimeError("StateHolder.open() was not called")
        return self._state

    @property
    def ready(self) -> bool:
        return self._state is not None

    def check(self, settle: bool = False) -> bool:
        """Swap in a new version of the index if there is one that opens; True if swapped.

        settle: open a new version only once two checks in a row have seen it (the watcher's way:
        a writer at work, such as labeling a hub, changes the files many times a minute).
        """
        with self._lock:  # one opener at a time (the poller, or a request that hit a vanished file)
            current = self.current
            seen = index_version(self.path)
            previous, self._seen = self._seen, seen
            if seen == current.version or (settle and seen != previous):
                return False
            if settle and seen == self.failed_version and time.monotonic() - self._failed_at < RETRY_S:
                return False  # the same broken version: retried every few seconds, not every poll
            try:
                new = open_state(self.path, cache=self.cache, embedder=_embedder_of(current), version=seen)
            except (MLLIndexError, OSError, ValueError) as exc:
                self._failed(seen, f"{type(exc).__name__}: {exc}")
                return False
            after = index_version(self.path)
            if after != seen:
                # A writer was at work while we read: what we opened may mix two versions.
                self._failed(seen, "the index changed while it was being opened; will retry")
                return False
            self._state = new
            self.reloads += 1
            self.last_error, self.failed_version = None, None
            log.info("%s: now serving index version %s (was %s)", self.path, new.version, current.version)
            return True

    def _failed(self, version: str, why: str) -> None:
        if version != self.failed_version:
            log.warning("%s: index version %s not served yet: %s", self.path, version, why)
        self.failures += 1
        self._failed_at = time.monotonic()
        self.last_error, self.failed_version = why, version

    def start(self) -> None:
        """Poll for new versions in a daemon thread until stop()."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mll-index-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check(settle=True)
            except Exception:  # noqa: BLE001 - the watcher must outlive any one failure; it is logged
                log.exception("%s: checking for a new index version failed", self.path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)  # SIGTERM stops the service within 5 s
            self._thread = None


def _embedder_of(state: IndexState) -> LazyEmbedder | None:
    embedder = state.selector.embedder
    return embedder if isinstance(embedder, LazyEmbedder) else None
