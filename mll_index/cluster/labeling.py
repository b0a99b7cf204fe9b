"""The driver of labeling on a Ray cluster.

The work is split into (pass x shard of the sample images) tasks, so that every worker stays
busy whatever the ratio of models to images: 3 big models on 8 GPUs keep all 8 busy. A pass is
what the single-machine labeler runs together (`images.encoding.model_passes`: models of one
preprocessing configuration, within a parameter budget), so each image is decoded once per
pass, not once per model; a pass's first shard also encodes its models' node prompts. Each task
asks Ray for `gpus_per_task` GPUs (default: one when the cluster has GPUs) and `cpus_per_task`
CPUs; Ray places the tasks, retries those whose worker dies (`max_retries`), and carries the
shards' embeddings back through its object store.

Only the driver writes to the index, through `mll_index.labeling.run.finish_label` (the same writer
as the single-machine labeler), one model at a time as soon as all of its shards are back: a
folder per model written atomically, then its counts appended to the label matrix, each under
the index's writer lock. So the index keeps its single-writer rule, a driver killed at any
moment loses only the models still in flight, and a rerun labels only the models that are not
done (`labeling.run.plan_labels`, the one rule of resuming).

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
from mll_index.cluster.tasks import NodeCheck, NodeTexts, ShardResult, check_samples, encode_shard
from mll_index.core.layout import sample_table_path
from mll_index.errors import InputError, MLLIndexError
from mll_index.images.encoding import MODELS_PER_PASS, model_passes
from mll_index.labeling.run import (
    LabelReport, finish_label, node_prompts, plan_labels, reusable_embeddings, sample_table,
)
from mll_index.labels.folders import SampleTable, read_sample_table, write_sample_table
from mll_index.labels.sync import append_to_matrix, sync_matrix
from mll_index.models.hub import Hub, HubModel

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
    held: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]   # what its stored label already holds
    prompt_wnids: list[str]                                     # the labeled nodes it lacks text embeddings of
    texts: NodeTexts | None = None
    failed: str | None = None


@dataclass
class _PassWork:
    """The driver's state of one pass (models of one preprocessing configuration, as the single-machine
    labeler groups them): the sample positions some model of it lacks, and its shards as they come back."""

    models: list[HubModel]
    need: list[int]
    pending: int = 0
    shards: dict[int, ShardResult] = field(default_factory=dict)


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


def _failure(exc: BaseException, model_id: str, what: str, retries: int) -> str:
    ray = import_ray()
    if isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                        ray.exceptions.OutOfMemoryError)):
        return (f"model {model_id!r}: the worker died while encoding {what}, {retries + 1} times "
                f"({type(exc).__name__}; out of memory, or a node lost?)")
    return f"model {model_id!r}: {_one_line(exc)}"


def label_on_ray(index_path: Path, hub: Hub, samples_root: Path, *, address: str | None = "auto",
                 models: Sequence[str] | None = None, batch_size: int = 64, shard_images: int | None = None,
                 gpus_per_task: float | None = None, cpus_per_task: float = 1.0, decode_workers: int = 0,
                 num_cpus: int | None = None, max_retries: int = MAX_RETRIES,
                 models_per_pass: int = MODELS_PER_PASS, progress: bool = False,
                 notify: Callable[[str], None] | None = None) -> RayLabelReport:
    """Label every model of `hub` (or the `models` named) that the index lacks, on a Ray cluster.

    The same labels come out as from `labeling.run.label_models` (counts equal, embeddings to float rounding),
    and the same models are skipped: those whose label is current.

    Args:
        address: "auto" (RAY_ADDRESS, else the cluster this machine belongs to), "local" (a cluster started
            in this process with `num_cpus` CPUs), "HOST:PORT" or "ray://HOST:PORT" (see `connect.connect`).
        shard_images: images per task (default 16 batches); a multiple of `batch_size` keeps the batches
            those of a single-machine run.
        gpus_per_task: GPUs each task asks for (fractions share a GPU); default 1 when the cluster has
            GPUs, else 0. cpus_per_task: CPUs each task asks for (and the torch threads it runs).
        decode_workers: DataLoader worker processes per task (0: decoded in the task's own process).
        models_per_pass: models encoded together on each shard (one preprocessing configuration, within
            `images.encoding.model_passes`' parameter budget): an image is decoded once per pass, not per model.
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

    run = _Run(ray, index_path, full, samples, report, shard_images, max_retries, _progress(0, progress))
    for group in model_passes(plan.todo, models_per_pass):
        run.submit(group, plan.index, shard_task, root, batch_size, decode_workers)
    run.gather()
    sync_matrix(index_path)  # a model skipped above may have missed the matrix (a crash between the two writes)
    report.unreadable = sorted(run.unreadable)
    report.unreadable_reasons = run.unreadable
    _account(report, run.passes, run.write_s, time.perf_counter() - started)
    return report


class _Run:
    """The driver's state during a run: the tasks in flight, each pass's shards, each model's texts."""

    def __init__(self, ray: Any, index_path: Path, full: SampleTable, samples: Any, report: RayLabelReport,
                 shard_images: int, retries: int, bar: Any) -> None:
        self.ray, self.index_path, self.full, self.samples = ray, index_path, full, samples
        self.report, self.shard_images, self.retries, self.bar = report, shard_images, retries, bar
        self.keys = full.image_keys()
        self.refs: dict[Any, tuple[int, int]] = {}     # ref -> (pass, shard)
        self.passes: list[_PassWork] = []
        self.work: dict[str, _ModelWork] = {}
        self.unreadable: dict[str, str] = {}
        self.write_s = 0.0
        self.models_done = 0

    def submit(self, models: list[HubModel], index: Any, shard_task: Any, root: str, batch_size: int,
               decode_workers: int) -> None:
        """Submit one task per shard of the images some model of the pass lacks; the first also encodes the
        node prompts each model lacks."""
        prompts = {}
        for model in models:
            held = reusable_embeddings(self.index_path, model)
            wnids = [w for w in self.full.node_wnids if w not in held[1]]
            self.work[model.id] = _ModelWork(model, held, wnids)
            prompts[model.id] = node_prompts(index, wnids)
        # An image no model of the pass has encoded (new, replaced, or unreadable so far) is decoded once for all.
        need = [i for i, key in enumerate(self.keys) if any(key not in self.work[m.id].held[0] for m in models)]
        p = len(self.passes)
        item = _PassWork(models, need)
        self.passes.append(item)
        for s, lo in enumerate(range(0, max(len(need), 1), self.shard_images)):
            paths = [self.samples.paths[i] for i in need[lo:lo + self.shard_images]]
            ref = shard_task.remote(models, s, root, paths, batch_size, decode_workers, prompts if s == 0 else None)
            self.refs[ref] = (p, s)
            item.pending += 1
        self.report.shards = len(self.refs)
        if self.bar is not None:
            self.bar.total += len(need) * len(models)
            self.bar.refresh()

    def gather(self) -> None:
        """Take every task's result as it comes back, writing a pass's models when its last shard is in."""
        remaining = list(self.refs)
        while remaining:
            # Whatever is back within half a second, up to 256 at once: one wait per result would make the
            # driver's loop quadratic in the tasks (tens of thousands on a large hub).
            ready, remaining = self.ray.wait(remaining, num_returns=min(len(remaining), 256), timeout=0.5)
            for ref in ready:
                self.take(ref)
        if self.bar is not None:
            self.bar.close()

    def fail(self, model_id: str, why: str) -> None:
        item = self.work[model_id]
        if item.failed is None:
            item.failed = self.report.failed[model_id] = why
            log.info("%s", why)

    def take(self, ref: Any) -> None:
        """One finished task: keep its result, or fail the pass's models (cancelling its other tasks)."""
        p, shard = self.refs.pop(ref)
        item = self.passes[p]
        item.pending -= 1
        try:
            result: ShardResult = self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001  (this pass's models fail; the others go on)
            for model in item.models:
                self.fail(model.id, _failure(exc, model.id, f"shard {shard} of the sample images", self.retries))
            for other, (q, _) in list(self.refs.items()):
                if q == p:
                    self.ray.cancel(other)
            return
        item.shards[shard] = result
        for model_id, why in result.failed.items():
            self.fail(model_id, why)
        for model_id, texts in result.texts.items():
            self.work[model_id].texts = texts
        self.unreadable.update(result.unreadable)
        if self.bar is not None:
            self.bar.update((len(result.positions) + len(result.unreadable)) * len(item.models))
        if item.pending == 0:
            self.finish(item)

    def finish(self, item: _PassWork) -> None:
        """All of a pass's shards are back: write each of its models' labels, then keep only the timings."""
        started = time.perf_counter()
        need = np.asarray(item.need, np.int64)
        for model in item.models:
            work = self.work[model.id]
            if work.failed is not None:
                continue
            if work.texts is None:
                self.fail(model.id, f"model {model.id!r}: its node prompts were not encoded")
                continue
            shards = sorted(item.shards.items())
            positions = [need[s * self.shard_images + r.positions] for s, r in shards if model.id in r.embeddings]
            fresh = [r.embeddings[model.id] for _, r in shards if model.id in r.embeddings]
            row_of = {int(q): r for r, q in enumerate(np.concatenate(positions))} if positions else {}
            try:
                _write_model(self.index_path, self.report, work, self.full, self.samples, self.unreadable,
                             np.concatenate(fresh) if fresh else np.zeros((0, 0), np.float16), row_of,
                             sum(r.encode_s.get(model.id, 0.0) for _, r in shards))
            except MLLIndexError as exc:
                self.fail(model.id, str(exc))
                continue
            self.models_done += 1
            work.held, work.texts = ({}, {}), None
        self.write_s += time.perf_counter() - started
        item.shards = {s: replace(r, embeddings={}) for s, r in item.shards.items()}
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
                 unreadable: dict[str, str], fresh: np.ndarray, row_of: dict[int, int], encode_s: float) -> None:
    """A model's shards are all back: assemble and write its label, then append it to the matrix.

    Raises:
        MLLIndexError: the label could not be written (an image without an embedding, values not finite).
    """
    model = item.model
    assert item.texts is not None     # checked by the caller
    table = _table(index_path, full, samples, unreadable)
    position_of = {rel: i for i, rel in enumerate(samples.paths)}
    rows = [row_of.get(position_of[rel], -1) for rel in table.paths]
    fresh_nodes = dict(zip(item.prompt_wnids, item.texts.embeddings))
    encoded = finish_label(index_path, model, table, samples.fingerprint, table.image_keys(), rows, fresh,
                           item.held, fresh_nodes, item.texts.logit_scale, item.texts.preprocess_key)
    append_to_matrix(index_path, model.id)
    report.labeled.append(model.id)
    report.images_per_s[model.id] = round(encoded / encode_s, 1) if encode_s > 0 and encoded else 0.0


def _account(report: RayLabelReport, passes: list[_PassWork], write_s: float, wall_s: float) -> None:
    """Per-worker throughput and the phases' seconds, from every shard that came back. A worker's images
    count each (model, image) encoding."""
    workers: dict[str, dict[str, float]] = {}
    decode = encode = load = 0.0
    for item in passes:
        for r in item.shards.values():
            w = workers.setdefault(r.worker, {"shards": 0, "images": 0, "seconds": 0.0, "decode_s": 0.0,
                                              "encode_s": 0.0, "load_s": 0.0})
            w["shards"] += 1
            w["images"] += len(r.positions) * len(r.encode_s)
            w["seconds"] += r.seconds
            w["decode_s"] += r.decode_wait_s
            w["encode_s"] += sum(r.encode_s.values())
            w["load_s"] += r.load_s
            decode, encode, load = decode + r.decode_wait_s, encode + sum(r.encode_s.values()), load + r.load_s
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

    return tqdm(total=total, desc="label on ray", unit=" model-img", dynamic_ncols=True)
