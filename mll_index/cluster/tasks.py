"""What runs on a Ray cluster's workers. Plain functions: the driver wraps them with `ray.remote`
and the resources each call needs, so this module imports nothing of Ray at import time.

A worker keeps the models of the last pass it ran (`_LOADED`): Ray reuses worker processes, and
the driver submits a pass's shards one after another, so a worker that takes several shards of
one pass loads its models once.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np

from mll_index.models.hub import HubModel, LoadedModel, load_model

_LOADED: dict[tuple[str, str], LoadedModel] = {}


@dataclass
class ShardResult:
    """The embeddings of one shard of the sample images by each model of one pass.

    `embeddings[model id]` (n_readable, d) float16 unit rows (what labels store); row r is the image at
    `positions[r]` of the shard ((n_readable,) int64); `unreadable` lists (relative path, reason);
    `failed[model id]` says why a model of the pass could not be loaded here (it has no embeddings).
    Times are in seconds (`encode_s` per model); `worker` names the node and process ("ip:pid").
    """

    shard: int
    embeddings: dict[str, np.ndarray]
    positions: np.ndarray
    unreadable: list[tuple[str, str]]
    worker: str
    device: str
    failed: dict[str, str] = field(default_factory=dict)
    load_s: float = 0.0
    decode_wait_s: float = 0.0
    encode_s: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    texts: dict[str, NodeTexts] = field(default_factory=dict)


@dataclass
class NodeTexts:
    """One model's text embeddings of the labeled nodes' prompts ((n, d) float32 unit rows, in the order
    asked), its temperature and its preprocessing key."""

    model_id: str
    embeddings: np.ndarray
    logit_scale: float
    preprocess_key: str


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


def _loaded(models: list[HubModel], device: str) -> tuple[list[LoadedModel], dict[str, str], float]:
    """The models of a pass on `device`, loaded once per worker process; (loaded, model id -> why it could
    not be loaded, seconds spent loading). Only the last pass's models stay: a hub does not fit in one process."""
    from mll_index.errors import MLLIndexError

    keys = [(repr(m.describe()), device) for m in models]
    for key in [k for k in _LOADED if k not in keys]:
        del _LOADED[key]
    started = time.perf_counter()
    loaded, failed = [], {}
    for model, key in zip(models, keys):
        if key not in _LOADED:
            try:
                _LOADED[key] = load_model(model, device)
            except MLLIndexError as exc:    # this model fails alone; the pass goes on without it
                failed[model.id] = str(exc)
                continue
        loaded.append(_LOADED[key])
    return loaded, failed, time.perf_counter() - started


def encode_shard(models: list[HubModel], shard: int, root: str, paths: list[str], batch_size: int = 64,
                 decode_workers: int = 0, prompts: dict[str, list[str]] | None = None) -> ShardResult:
    """Encode the images `root/paths[i]` with every model of a pass (one preprocessing configuration),
    decoding each image once, through the single-machine data path (`images.encoding.encode_image_set`:
    `open_image`, unreadable images skipped and listed); and, for the models in `prompts` (the driver
    gives them to a pass's first shard), their node prompts. A model that cannot be loaded here is
    reported in `failed`; the others are encoded.
    """
    from mll_index.images.encoding import encode_image_set
    from mll_index.images.loader import ImageSet

    started = time.perf_counter()
    device = _device()
    loaded, failed, load_s = _loaded(models, device)
    result = ShardResult(shard, {}, np.zeros(0, np.int64), [], _worker_name(), device, failed, load_s)
    if loaded and paths:
        out = encode_image_set(loaded, ImageSet(root, tuple(paths)), batch_size=batch_size, workers=decode_workers,
                               device=device)
        result.embeddings = {mid: emb.astype(np.float16) for mid, emb in out.embeddings.items()}
        result.positions, result.unreadable = out.positions, list(out.unreadable)
        result.decode_wait_s, result.encode_s = out.stats.loader_wait_s, dict(out.stats.encode_s)
    for one in loaded:
        mid = one.hub_model.id
        if prompts is not None and mid in prompts:
            result.texts[mid] = _node_texts(one, prompts[mid], device)
    result.seconds = time.perf_counter() - started
    return result


def _node_texts(loaded: LoadedModel, prompts: list[str], device: str) -> NodeTexts:
    """A model's unit text embeddings of `prompts`, its temperature and preprocessing key."""
    from mll_index.images.encoding import temperature
    from mll_index.models.zeroshot import encode_texts

    emb = encode_texts(loaded, prompts, device) if prompts else np.zeros((0, 0), np.float32)
    # The one temperature rule of labeling, reuse and evaluation (as in labels._label_one).
    scale = temperature(loaded) if hasattr(loaded.model, "logit_scale") else 100.0
    return NodeTexts(loaded.hub_model.id, emb, float(scale), loaded.preprocess_key)


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
