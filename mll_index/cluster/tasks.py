"""What runs on a Ray cluster's workers. Plain functions: the driver wraps them with `ray.remote`
and the resources each call needs, so this module imports nothing of Ray at import time.

A worker keeps the last model it loaded (`_LOADED`): Ray reuses worker processes, and the driver
submits a model's shards one after another, so a worker that takes several shards of one model
loads it once.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np

from mll_index.hub import HubModel, LoadedModel, load_model

_LOADED: dict[tuple[str, str], LoadedModel] = {}


@dataclass
class ShardResult:
    """One model's embeddings of one shard of the sample images.

    `embeddings` (n_readable, d) float16 unit rows (what labels store); row r is the image at
    `positions[r]` of the shard ((n_readable,) int64); `unreadable` lists (relative path, reason).
    Times are in seconds; `worker` names the node and process ("ip:pid").
    """

    model_id: str
    shard: int
    embeddings: np.ndarray
    positions: np.ndarray
    unreadable: list[tuple[str, str]]
    worker: str
    device: str
    load_s: float = 0.0
    decode_wait_s: float = 0.0
    encode_s: float = 0.0
    seconds: float = 0.0


@dataclass
class NodeTexts:
    """One model's text embeddings of the labeled nodes' prompts ((n, d) float32 unit rows, in the order
    asked), its temperature and its preprocessing key."""

    model_id: str
    embeddings: np.ndarray
    logit_scale: float
    preprocess_key: str
    worker: str
    load_s: float = 0.0
    seconds: float = 0.0


@dataclass
class NodeCheck:
    """What one cluster node sees of the sample folder: the files it cannot read (of those asked) and why."""

    node: str
    missing: list[str] = field(default_factory=list)
    why: str = ""
    version: str = ""


def _worker_name() -> str:
    try:
        import ray

        ip = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001  (outside Ray: the host name does)
        ip = platform.node()
    return f"{ip}:{os.getpid()}"


def _device() -> str:
    """cuda when Ray gave this task a GPU (it sets CUDA_VISIBLE_DEVICES to it), else cpu."""
    import torch

    try:
        import ray

        gpus = ray.get_gpu_ids()
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    except Exception:  # noqa: BLE001  (called outside a Ray task: this machine's defaults)
        gpus, cpus = [], float(torch.get_num_threads())
    # As many threads as the task was given CPUs: two tasks of one CPU on a 2-core node share it fairly.
    torch.set_num_threads(max(1, int(cpus)))
    return "cuda" if gpus and torch.cuda.is_available() else "cpu"


def _loaded(model: HubModel, device: str) -> tuple[LoadedModel, float]:
    """The model on `device`, loaded once per worker process; (model, seconds spent loading)."""
    key = (repr(model.describe()), device)
    if key in _LOADED:
        return _LOADED[key], 0.0
    _LOADED.clear()     # one model per worker: a hub's models do not all fit in one process's memory
    started = time.perf_counter()
    loaded = load_model(model, device)
    _LOADED[key] = loaded
    return loaded, time.perf_counter() - started


def encode_shard(model: HubModel, shard: int, root: str, paths: list[str], batch_size: int = 64,
                 decode_workers: int = 0) -> ShardResult:
    """Encode the images `root/paths[i]` with `model`, through the single-machine data path
    (`pipeline.encode_image_set`: decoded with `open_image`, unreadable images skipped and listed).

    Raises:
        ModelLoadError: the model cannot be loaded on this worker (not retried: it fails alone).
    """
    from mll_index.pipeline import ImageSet, encode_image_set

    started = time.perf_counter()
    device = _device()
    loaded, load_s = _loaded(model, device)
    out = encode_image_set([loaded], ImageSet(root, tuple(paths)), batch_size=batch_size, workers=decode_workers,
                           device=device)
    stats = out.stats
    return ShardResult(model.id, shard, out.embeddings[model.id].astype(np.float16), out.positions,
                       list(out.unreadable), _worker_name(), device, load_s, stats.loader_wait_s,
                       stats.encode_s.get(model.id, 0.0), time.perf_counter() - started)


def encode_node_texts(model: HubModel, prompts: list[str]) -> NodeTexts:
    """The model's unit text embeddings of `prompts`, its temperature and preprocessing key.

    Raises:
        ModelLoadError: the model cannot be loaded on this worker.
    """
    from mll_index.pipeline import temperature
    from mll_index.zeroshot import encode_texts

    started = time.perf_counter()
    device = _device()
    loaded, load_s = _loaded(model, device)
    emb = encode_texts(loaded, prompts, device) if prompts else np.zeros((0, 0), np.float32)
    # The one temperature rule of labeling, reuse and evaluation (as in labels._label_one).
    scale = temperature(loaded) if hasattr(loaded.model, "logit_scale") else 100.0
    return NodeTexts(model.id, emb, float(scale), loaded.preprocess_key, _worker_name(), load_s,
                     time.perf_counter() - started)


def check_samples(root: str, probes: list[tuple[str, int]]) -> NodeCheck:
    """Whether this node sees the sample folder: `root` is a folder and each probe (relative path, size in
    bytes) is a file of that size; also this node's mll-index version."""
    import mll_index

    check = NodeCheck(_worker_name().rsplit(":", 1)[0], version=mll_index.__version__)
    if not os.path.isdir(root):
        check.missing, check.why = [root], "no such folder"
        return check
    for rel, size in probes:
        path = os.path.join(root, rel)
        try:
            seen = os.stat(path).st_size
        except OSError as exc:
            check.missing.append(rel)
            check.why = check.why or (exc.strerror or type(exc).__name__)
            continue
        if seen != size:
            check.missing.append(rel)
            check.why = check.why or f"{seen} bytes where the driver sees {size}"
    return check
