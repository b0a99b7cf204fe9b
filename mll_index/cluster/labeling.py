"""The driver of labeling on a Ray cluster.

The work is split into (model x shard of the sample images) tasks, so that every worker stays
busy whatever the ratio of models to images: 3 big models on 8 GPUs keep all 8 busy. Each task
asks Ray for `gpus_per_task` GPUs (default: one when the cluster has GPUs) and `cpus_per_task`
CPUs; Ray places the tasks, retries those whose worker dies (`max_retries`), and carries the
shards' embeddings back through its object store. Each model's node prompts are one more task.

Only the driver writes to the index, through `mll_index.labels.finish_label` (the same writer
as the single-machine labeler), one model at a time as soon as all of its shards are back: a
folder per model written atomically, then its counts appended to the label matrix, each under
the index's writer lock. So the index keeps its single-writer rule, a driver killed at any
moment loses only the models still in flight, and a rerun labels only the models that are not
done (`labels.plan_labels`, the one rule of resuming).

Workers read the sample images from the same path as the driver: the sample folder must be on
storage that every node mounts at that path (NFS, a cluster filesystem, or the one disk of a
single-machine cluster). Before any model is labeled, every node is asked whether it sees it.

The driver keeps a model's embeddings in memory until its last shard is back: about
images x dimension x 2 bytes per model in flight (1 GB for 500,000 images at d=1024).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.cluster.connect import connect, import_ray
from mll_index.cluster.tasks import (
    NodeCheck,
    NodeTexts,
    ShardResult,
    check_samples,
    encode_node_texts,
    encode_shard,
)
from mll_index.errors import InputError, MLLIndexError
from mll_index.hub import Hub, HubModel
from mll_index.labels import (
    LabelReport,
    SampleTable,
    append_to_matrix,
    finish_label,
    node_prompts,
    plan_labels,
    read_sample_table,
    reusable_embeddings,
    sample_table,
    sync_matrix,
    write_sample_table,
)
from mll_index.layout import sample_table_path

log = logging.getLogger(__name__)

SHARD_BATCHES = 16      # a shard is this many batches: long enough that a model's load is amortised
MAX_RETRIES = 3         # Ray's retries of a task whose worker died (not of a task that raised)
PROBES = 16             # sample files each node is asked about before labeling


@dataclass
class RayLabelReport(LabelReport):
    """A labeling run on a cluster: the single-machine report, plus where the time went.

    `workers`: per worker ("ip:pid"), the shards and images it encoded and its seconds in decoding
    (waiting on the loader), encoding and loading models, and its images/s over its task time.
    `phases`: seconds summed over all tasks for decode, encode and model loads; the driver's seconds
    writing labels; and the wall-clock seconds of the run. `nodes`: the cluster's nodes (ip) that were
    checked; `shards`: tasks submitted.
    """

    address: str = ""
    nodes: list[str] = field(default_factory=list)
    shards: int = 0
    gpus_per_task: float = 0.0
    cpus_per_task: float = 1.0
    workers: dict[str, dict[str, float]] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)

    def throughput(self) -> float:
        """Images encoded per wall-clock second over the whole run (all models)."""
        wall = self.phases.get("wall_s", 0.0)
        return sum(w["images"] for w in self.workers.values()) / wall if wall > 0 else 0.0


@dataclass
class _ModelWork:
    """The driver's state of one model in flight."""

    model: HubModel
    need: list[int]                              # sample positions to encode, increasing
    held: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]
    prompt_wnids: list[str]
    pending: int = 0
    texts: NodeTexts | None = None
    shards: dict[int, ShardResult] = field(default_factory=dict)
    failed: str | None = None


def _probes(full: SampleTable) -> list[tuple[str, int]]:
    """Up to PROBES sample files spread over the set, with their sizes as the driver sees them."""
    n = len(full.paths)
    picks = sorted({int(i) for i in np.linspace(0, n - 1, min(PROBES, n))}) if n else []
    return [(full.paths[i], int(full.stamps[i].split(":", 1)[0])) for i in picks]


def check_nodes(ray: Any, root: str, full: SampleTable, notify: Callable[[str], None]) -> list[str]:
    """Ask every live node whether it sees the sample folder at `root`; returns their addresses.

    Raises:
        InputError: a node that does not see it (one line naming the path and the node), or a node
            where mll-index cannot be imported.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import mll_index

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    remote = ray.remote(check_samples)
    probes = _probes(full)
    refs = {remote.options(num_cpus=0, max_retries=1, scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(root, probes): n.get("NodeManagerAddress", n["NodeID"][:12]) for n in nodes}
    seen: list[str] = []
    for ref, where in refs.items():
        try:
            check: NodeCheck = ray.get(ref, timeout=120)
        except Exception as exc:  # noqa: BLE001  (any failure of the check is the node's, named below)
            raise InputError(f"node {where} of the Ray cluster cannot run mll-index's tasks: {_one_line(exc)} (install "
                             "the same mll-index on every node)") from None
        if check.missing:
            raise InputError(f"sample path {root} is not visible on node {where}: {check.why} "
                             f"({check.missing[0]}); every node must see the sample folder at the same path "
                             "(a shared filesystem)")
        if check.version != mll_index.__version__:
            notify(f"node {where} runs mll-index {check.version}, this driver {mll_index.__version__}; "
                   "labels may differ from a single-machine run")
        seen.append(where)
    return seen


def _one_line(exc: BaseException) -> str:
    """The cause of a task's failure in one line: the worker's own exception where Ray wraps one."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip()
    if isinstance(exc, MLLIndexError):
        return text.splitlines()[0] if text else type(exc).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1].strip() if lines else ''}"[:400]


def _failure(exc: BaseException, work: _ModelWork, what: str) -> str:
    ray = import_ray()
    if isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                        ray.exceptions.OutOfMemoryError)):
        return (f"model {work.model.id!r}: the worker died while encoding {what}, {MAX_RETRIES + 1} times "
                f"({type(exc).__name__}; out of memory, or a node lost?)")
    return _one_line(exc)


def label_on_ray(index_path: Path, hub: Hub, samples_root: Path, *, address: str | None = "auto",
                 models: Sequence[str] | None = None, batch_size: int = 64, shard_images: int | None = None,
                 gpus_per_task: float | None = None, cpus_per_task: float = 1.0, decode_workers: int = 0,
                 num_cpus: int | None = None, max_retries: int = MAX_RETRIES, progress: bool = False,
                 notify: Callable[[str], None] | None = None) -> RayLabelReport:
    """Label every model of `hub` (or the `models` named) that the index lacks, on a Ray cluster.

    The same labels come out as from `labels.label_models` (counts equal, embeddings to float rounding),
    and the same models are skipped: those whose label is current.

    Args:
        address: "auto" (RAY_ADDRESS, else the cluster this machine belongs to), "local" (a cluster started
            in this process with `num_cpus` CPUs), "HOST:PORT" or "ray://HOST:PORT" (see `connect.connect`).
        shard_images: images per task (default 16 batches); a multiple of `batch_size` keeps the batches
            those of a single-machine run.
        gpus_per_task: GPUs each task asks for (fractions share a GPU); default 1 when the cluster has
            GPUs, else 0. cpus_per_task: CPUs each task asks for (and the torch threads it runs).
        decode_workers: DataLoader worker processes per task (0: decoded in the task's own process).
        max_retries: how often Ray runs again a task whose worker died.
        notify: receives lines for people (warnings); default: the log.
    Returns:
        RayLabelReport: labeled, skipped and failed models (a model that cannot be loaded fails alone),
        unreadable images, per-worker throughput and the time in each phase.
    Raises:
        InputError: Ray missing, a cluster that cannot be reached (within 30 s), a sample folder that a
            node does not see, a bad sample folder or option.
    """
    notify = notify or (lambda line: log.warning("%s", line))
    if batch_size < 1 or (shard_images is not None and shard_images < 1):
        raise InputError("--batch-size and --shard-images must be at least 1")
    if cpus_per_task <= 0 or (gpus_per_task is not None and gpus_per_task < 0):
        raise InputError("--ray-cpus must be above 0 and --ray-gpus at least 0")
    shard_images = shard_images or SHARD_BATCHES * batch_size
    started = time.perf_counter()
    where = connect(address, num_cpus=num_cpus)    # first: a wrong address is named within seconds
    ray = import_ray()
    plan = plan_labels(index_path, hub, samples_root, models)
    report = RayLabelReport(**vars(plan.report), address=where.text, cpus_per_task=cpus_per_task)
    full = plan.full
    samples = plan.samples
    if full is None:
        sync_matrix(index_path)
        report.phases = {"wall_s": round(time.perf_counter() - started, 3)}
        return report
    root = str(Path(samples.root).resolve())
    report.nodes = check_nodes(ray, root, full, notify)
    if gpus_per_task is None:
        gpus_per_task = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    report.gpus_per_task = gpus_per_task
    options = {"num_cpus": cpus_per_task, "num_gpus": gpus_per_task, "max_retries": max_retries,
               "retry_exceptions": False}
    shard_task = ray.remote(encode_shard).options(**options)
    text_task = ray.remote(encode_node_texts).options(**options)

    run = _Run(ray, index_path, full, samples, report, shard_images, _progress(0, progress))
    for model in plan.todo:
        run.submit(model, plan.index, shard_task, text_task, root, batch_size, decode_workers)
    run.gather()
    sync_matrix(index_path)  # a model skipped above may have missed the matrix (a crash between the two writes)
    report.unreadable = sorted(run.unreadable)
    report.unreadable_reasons = run.unreadable
    _account(report, run.work, run.write_s, time.perf_counter() - started)
    return report


class _Run:
    """The driver's state during a run: the tasks in flight, each model's shards, what was unreadable."""

    def __init__(self, ray: Any, index_path: Path, full: SampleTable, samples: Any, report: RayLabelReport,
                 shard_images: int, bar: Any) -> None:
        self.ray, self.index_path, self.full, self.samples = ray, index_path, full, samples
        self.report, self.shard_images, self.bar = report, shard_images, bar
        self.keys = full.image_keys()
        self.refs: dict[Any, tuple[str, int]] = {}     # ref -> (model id, shard; -1 for the node prompts)
        self.work: dict[str, _ModelWork] = {}
        self.unreadable: dict[str, str] = {}
        self.write_s = 0.0
        self.models_done = 0

    def submit(self, model: HubModel, index: Any, shard_task: Any, text_task: Any, root: str, batch_size: int,
               decode_workers: int) -> None:
        """Submit a model's node-prompt task and one task per shard of the images its label lacks."""
        held = reusable_embeddings(self.index_path, model)
        need = [i for i, key in enumerate(self.keys) if key not in held[0]]
        wnids = [w for w in self.full.node_wnids if w not in held[1]]
        item = self.work[model.id] = _ModelWork(model, need, held, wnids)
        self.refs[text_task.remote(model, node_prompts(index, wnids))] = (model.id, -1)
        for s, lo in enumerate(range(0, len(need), self.shard_images)):
            paths = [self.samples.paths[i] for i in need[lo:lo + self.shard_images]]
            self.refs[shard_task.remote(model, s, root, paths, batch_size, decode_workers)] = (model.id, s)
        item.pending = 1 + -(-len(need) // self.shard_images)
        self.report.shards = len(self.refs)
        if self.bar is not None:
            self.bar.total += len(need)

    def gather(self) -> None:
        """Take every task's result as it comes back, writing each model when its last one is in."""
        remaining = list(self.refs)
        while remaining:
            # Whatever is back within half a second, up to 256 at once: one wait per result would make the
            # driver's loop quadratic in the tasks (tens of thousands on a large hub).
            ready, remaining = self.ray.wait(remaining, num_returns=min(len(remaining), 256), timeout=0.5)
            for ref in ready:
                self.take(ref)
        if self.bar is not None:
            self.bar.close()

    def take(self, ref: Any) -> None:
        """One finished task: keep its result, or fail its model (cancelling the model's other tasks)."""
        model_id, shard = self.refs.pop(ref)
        item = self.work[model_id]
        item.pending -= 1
        if item.failed is not None:
            return
        try:
            result = self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001  (the model fails alone; the others go on)
            what = "its node prompts" if shard < 0 else f"shard {shard} of the sample images"
            item.failed = self.report.failed[model_id] = _failure(exc, item, what)
            log.info("%s", item.failed)
            for other, (mid, _) in list(self.refs.items()):
                if mid == model_id:
                    self.ray.cancel(other)
            return
        if shard < 0:
            item.texts = result
        else:
            item.shards[shard] = result
            self.unreadable.update(result.unreadable)
            if self.bar is not None:
                self.bar.update(len(result.positions) + len(result.unreadable))
        if item.pending == 0:
            self.finish(item)

    def finish(self, item: _ModelWork) -> None:
        """All of a model's tasks are back: write its label, keep only the timings."""
        started = time.perf_counter()
        _write_model(self.index_path, self.report, item, self.full, self.samples, self.shard_images, self.unreadable)
        self.write_s += time.perf_counter() - started
        self.models_done += 1
        item.shards = {s: replace(r, embeddings=r.embeddings[:0]) for s, r in item.shards.items()}
        item.held = ({}, {})
        if item.texts is not None:
            item.texts = replace(item.texts, embeddings=item.texts.embeddings[:0])
        if self.bar is not None:
            self.bar.set_postfix_str(f"models {self.models_done}/{len(self.work)}")


def _table(index_path: Path, full: SampleTable, samples: Any, unreadable: dict[str, str]) -> SampleTable:
    """The sample table of this run: the one on disk when an earlier model (or run) wrote it, else every
    sample image but the unreadable ones seen so far (as the single-machine labeler does)."""
    path = sample_table_path(index_path, samples.fingerprint)
    if path.is_file():
        return read_sample_table(index_path, samples.fingerprint)
    kept = [i for i, rel in enumerate(samples.paths) if rel not in unreadable]
    table = sample_table(samples, kept, stamps=full.stamps)
    write_sample_table(index_path, samples.fingerprint, table)
    return table


def _write_model(index_path: Path, report: RayLabelReport, item: _ModelWork, full: SampleTable, samples: Any,
                 shard_images: int, unreadable: dict[str, str]) -> None:
    """All of a model's shards are back: assemble and write its label, then append it to the matrix."""
    model = item.model
    assert item.texts is not None     # the node prompts are one of the model's tasks, all of which are back
    table = _table(index_path, full, samples, unreadable)
    positions = [np.asarray(item.need, np.int64)[s * shard_images + r.positions]
                 for s, r in sorted(item.shards.items())]
    fresh = (np.concatenate([r.embeddings for _, r in sorted(item.shards.items())])
             if item.shards else np.zeros((0, 0), np.float16))
    row_of = {int(p): r for r, p in enumerate(np.concatenate(positions) if positions else [])}
    position_of = {rel: i for i, rel in enumerate(samples.paths)}
    keys = table.image_keys()
    rows = [row_of.get(position_of[rel], -1) for rel in table.paths]
    fresh_nodes = dict(zip(item.prompt_wnids, item.texts.embeddings))
    try:
        encoded = finish_label(index_path, model, table, samples.fingerprint, keys, rows, fresh, item.held,
                               fresh_nodes, item.texts.logit_scale, item.texts.preprocess_key)
        append_to_matrix(index_path, model.id)
    except MLLIndexError as exc:
        report.failed[model.id] = str(exc)
        log.info("%s", exc)
        return
    report.labeled.append(model.id)
    encode_s = sum(r.encode_s for r in item.shards.values())
    report.images_per_s[model.id] = round(encoded / encode_s, 1) if encode_s > 0 and encoded else 0.0


def _account(report: RayLabelReport, work: dict[str, _ModelWork], write_s: float, wall_s: float) -> None:
    """Per-worker throughput and the phases' seconds, from every shard that came back."""
    workers: dict[str, dict[str, float]] = {}
    decode = encode = load = 0.0
    for item in work.values():
        for r in item.shards.values():
            w = workers.setdefault(r.worker, {"shards": 0, "images": 0, "seconds": 0.0, "decode_s": 0.0,
                                              "encode_s": 0.0, "load_s": 0.0})
            w["shards"] += 1
            w["images"] += len(r.positions)
            w["seconds"] += r.seconds
            w["decode_s"] += r.decode_wait_s
            w["encode_s"] += r.encode_s
            w["load_s"] += r.load_s
            decode, encode, load = decode + r.decode_wait_s, encode + r.encode_s, load + r.load_s
        if item.texts is not None:
            load += item.texts.load_s
    for w in workers.values():
        w["images_per_s"] = round(w["images"] / w["seconds"], 1) if w["seconds"] > 0 else 0.0
        for k in ("seconds", "decode_s", "encode_s", "load_s"):
            w[k] = round(w[k], 3)
    report.workers = workers
    report.phases = {"decode_s": round(decode, 3), "encode_s": round(encode, 3), "load_s": round(load, 3),
                     "write_s": round(write_s, 3), "wall_s": round(wall_s, 3)}


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="label on ray", unit="img", dynamic_ncols=True)
