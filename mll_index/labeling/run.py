"""The labeling run: every hub model evaluated once on the sample images of the index's labeled nodes.

`plan_labels` decides which models lack a current label (the one resume rule of every labeler);
`label_models` streams the sample images through `mll_index.images.encoding.encode_image_set`, per
preprocessing configuration one pass, and `finish_label` writes each model's label folder through
`mll_index.labels.folders.write_label`. The folder format itself is `mll_index.labels.folders`'.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mll_index.core.artifacts import MANIFEST
from mll_index.core.layout import PIXEL_CACHE, labels_dir
from mll_index.errors import MLLIndexError, ModelLoadError
from mll_index.images.encoding import MODELS_PER_PASS, EncodeStats, encode_image_set, model_passes, temperature
from mll_index.images.loader import ImageSet
from mll_index.index.captions import node_concept, templates
from mll_index.index.node_index import NodeIndex, load_index
from mll_index.labeling.samples import SampleSet, scan_samples, write_pixel_cache
from mll_index.labels.folders import (
    SampleTable, label_folder, labeled_models, load_label, read_sample_table, write_label, write_sample_table,
)
from mll_index.labels.sync import append_to_matrix, sync_matrix
from mll_index.models.hub import Hub, HubModel, LoadedModel, load_model
from mll_index.models.zeroshot import all_finite, encode_texts

log = logging.getLogger(__name__)


def sample_table(samples: SampleSet, kept: Sequence[int] | None = None,
                 stamps: Sequence[str] | None = None) -> SampleTable:
    """The table of `samples`, only the `kept` positions if given (images that decoded).

    `stamps` ("size:mtime_ns" of every sample image, as a full table holds them) saves statting the files again.
    """
    positions = range(len(samples.paths)) if kept is None else [int(i) for i in kept]
    paths = tuple(samples.paths[i] for i in positions)
    wnids = tuple(samples.wnids[i] for i in positions)
    if stamps is not None:
        stamps = tuple(stamps[i] for i in positions)
    else:
        stats = [os.stat(Path(samples.root) / p) for p in paths]
        stamps = tuple(f"{st.st_size}:{st.st_mtime_ns}" for st in stats)
    return SampleTable(str(samples.root), paths, wnids, tuple(sorted(set(wnids))), stamps)


def node_prompts(index: NodeIndex, node_wnids: Sequence[str]) -> list[str]:
    """The text prompt of each labeled node (template `label_prompt`: lemma and gloss)."""
    t = templates()["label_prompt"]
    out = []
    for w in node_wnids:
        c = node_concept(index.graph, index.graph.row(w))
        out.append(t.format(lemma=c.name, gloss=c.gloss))
    return out


def reusable_embeddings(index_path: Path, model: HubModel) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The image and node embeddings an existing label of `model` holds, by image path and wnid."""
    if not (label_folder(index_path, model.id) / MANIFEST).is_file():
        return {}, {}
    try:
        old = load_label(index_path, model.id)
        same = old.manifest["model"] == model.describe() and old.manifest["prompt"] == templates()["label_prompt"]
        if not same:
            return {}, {}
        table = read_sample_table(index_path, old.manifest["samples"])
    except MLLIndexError as exc:
        log.warning("labeling %s from scratch: %s", model.id, exc)
        return {}, {}
    return dict(zip(table.image_keys(), old.image_embeddings)), dict(zip(table.node_wnids, old.node_embeddings))


def _label_sound(index_path: Path, model_id: str) -> bool:
    """Whether a stored label opens (sizes match its manifest); a damaged one is labeled again."""
    try:
        load_label(index_path, model_id)
        return True
    except MLLIndexError as exc:
        log.warning("labeling %s again: %s", model_id, exc)
        return False


@dataclass
class LabelReport:
    """What a labeling run did."""

    labeled: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    images_per_s: dict[str, float] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    unreadable_reasons: dict[str, str] = field(default_factory=dict)  # path in `unreadable` → why
    skipped_folders: list[str] = field(default_factory=list)
    stats: list[EncodeStats] = field(default_factory=list)  # per pass over the images: decode vs encode time


@dataclass
class LabelPlan:
    """What a labeling run must do: the models to label (`todo`) and those already current (`report.skipped`).

    `full` is the table of every sample image (None when there is nothing to do); `report` is the run's
    report, started here with the skipped models and folders.
    """

    index: NodeIndex
    samples: SampleSet
    todo: list[HubModel]
    report: LabelReport
    full: SampleTable | None


def plan_labels(index_path: Path, hub: Hub, samples_root: Path, models: Sequence[str] | None = None) -> LabelPlan:
    """Which models of `hub` (or of `models`) lack a sound, current label on the samples at `samples_root`.

    The one rule of resuming for every labeler (this process's and the cluster's): a model whose label
    folder holds this sample set's fingerprint and opens is skipped; every other one is labeled.

    Raises:
        InputError: a bad sample folder, or a model id the hub does not hold.
    """
    index = load_index(index_path)
    chosen = [hub.get(m) for m in models] if models else list(hub)
    valid = {index.graph.wnids[r] for r in index.graph.nodes}
    samples = scan_samples(Path(samples_root), valid)
    report = LabelReport(skipped_folders=list(samples.skipped_folders))
    done = labeled_models(index_path)
    todo: list[HubModel] = []
    for model in chosen:
        if done.get(model.id) == samples.fingerprint and _label_sound(index_path, model.id):
            report.skipped.append(model.id)
        else:
            todo.append(model)
    return LabelPlan(index, samples, todo, report, sample_table(samples) if todo else None)


def label_models(index_path: Path, hub: Hub, samples_root: Path, *, models: Sequence[str] | None = None,
                 device: str | None = None, batch_size: int = 64, progress: bool = False,
                 workers: int = 0, pixel_cache: bool = False, cache_dir: Path | None = None,
                 models_per_pass: int = MODELS_PER_PASS, notify: Callable[[str], None] | None = None) -> LabelReport:
    """Label every model of `hub` (or the `models` named) that the index does not hold for these samples.

    The sample images stream through `mll_index.images.encoding.encode_image_set`: per preprocessing
    configuration (per `models_per_pass` of its models) one pass over the images that some model of
    the pass has not encoded yet, decoded by `workers` processes, every model of the pass run on each
    batch. A model whose label is current (same sample images) is skipped; one labeled on fewer images
    or nodes encodes only what is new (its stored embeddings are kept). Models that cannot be loaded,
    or whose outputs are not finite, are reported in `failed`; the others go on. Logits are scaled by
    `images.encoding.temperature` (the learned logit scale, capped at 100).

    Args:
        pixel_cache: also keep the decoded images at the model's input resolution, uint8, in `cache_dir`
            (default labels/.pixels), so that a later run decodes nothing; its size goes to `notify`
            before it is written. Without it nothing but the labels is written.
        notify: receives one line for people (the pixel cache's size); default: the log.
    Raises:
        InputError: a bad sample folder; with `pixel_cache`, a disk too small for the cache.
    """
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    plan = plan_labels(index_path, hub, samples_root, models)
    index, samples, report, full = plan.index, plan.samples, plan.report, plan.full
    cache_dir = cache_dir or labels_dir(index_path) / PIXEL_CACHE
    todo = plan.todo
    for group in model_passes(todo, models_per_pass):
        loaded: list[LoadedModel] = []
        for model in group:
            try:
                loaded.append(load_model(model, device))
            except MLLIndexError as exc:
                report.failed[model.id] = str(exc)
                log.info("%s", exc)
        if not loaded:
            continue
        _label_pass(index_path, index, loaded, samples, full, report, device=device, batch_size=batch_size,
                    workers=workers, progress=progress, cache_dir=cache_dir if pixel_cache else None, notify=notify)
        del loaded
    sync_matrix(index_path)  # a model skipped above may have missed the matrix (a crash between the two writes)
    return report


def _label_pass(index_path: Path, index: NodeIndex, loaded: list[LoadedModel], samples: SampleSet, full: SampleTable,
                report: LabelReport, *, device: str, batch_size: int, workers: int, progress: bool,
                cache_dir: Path | None, notify: Callable[[str], None] | None) -> None:
    """One pass over the sample images some model of `loaded` (one preprocessing configuration) lacks,
    then each model's label written; fills `report`."""
    keys = full.image_keys()
    held = {m.hub_model.id: reusable_embeddings(index_path, m.hub_model) for m in loaded}
    # An image no model of the pass has encoded (new, replaced, or unreadable so far) is decoded once for all.
    need = [i for i, key in enumerate(keys) if any(key not in old for old, _ in held.values())]
    key = loaded[0].preprocess_key
    decode = None
    if cache_dir is not None and need:
        decode = write_pixel_cache(samples, loaded[0].preprocess, key, cache_dir, batch_size=batch_size,
                                   workers=workers, progress=progress, notify=notify).decoder()
    encoded = encode_image_set(loaded, ImageSet(samples.root, samples.paths).subset(need), batch_size=batch_size,
                               workers=workers, device=device, decode=decode, progress=progress,
                               desc=f"label {key}") if need else None
    unreadable = dict(encoded.unreadable) if encoded else {}
    if encoded:
        report.stats.append(encoded.stats)
    report.unreadable = sorted(set(report.unreadable) | set(unreadable))
    report.unreadable_reasons.update(unreadable)
    kept = [i for i, rel in enumerate(samples.paths) if rel not in unreadable]
    table = sample_table(samples, kept, stamps=full.stamps)
    write_sample_table(index_path, samples.fingerprint, table)
    # Sample position → row of the pass's embeddings.
    row_of = {need[int(p)]: r for r, p in enumerate(encoded.positions)} if encoded else {}
    for model in loaded:
        mid = model.hub_model.id
        fresh = encoded.embeddings[mid] if encoded else np.zeros((0, 0), np.float32)
        try:
            encoded_images = _label_one(index_path, index, model, table, samples.fingerprint, device,
                                        [keys[i] for i in kept], [row_of.get(i, -1) for i in kept], fresh, held[mid])
        except ModelLoadError as exc:   # outputs that are not finite: this model only
            report.failed[mid] = str(exc)
            log.info("%s", exc)     # the report carries it (the CLI prints its failures)
            continue
        report.labeled.append(mid)
        rate = encoded.stats.encode_images_per_s.get(mid, 0.0) if encoded and encoded_images else 0.0
        report.images_per_s[mid] = rate if np.isfinite(rate) else 0.0
        append_to_matrix(index_path, mid)


def _label_one(index_path: Path, index: NodeIndex, loaded: LoadedModel, table: SampleTable, fingerprint: str,
               device: str, keys: Sequence[str], rows: Sequence[int], fresh: np.ndarray,
               held: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]) -> int:
    """Encode one model's node prompts it lacks, then `finish_label`; returns how many images it had to encode."""
    new_nodes = [w for w in table.node_wnids if w not in held[1]]
    fresh_nodes = dict(zip(new_nodes, encode_texts(loaded, node_prompts(index, new_nodes), device)))
    # The one temperature rule of labeling, reuse and evaluation: the learned scale, capped at 100.
    logit_scale = temperature(loaded) if hasattr(loaded.model, "logit_scale") else 100.0
    return finish_label(index_path, loaded.hub_model, table, fingerprint, keys, rows, fresh, held, fresh_nodes,
                        logit_scale, loaded.preprocess_key)


def finish_label(index_path: Path, model: HubModel, table: SampleTable, fingerprint: str, keys: Sequence[str],
                 rows: Sequence[int], fresh: np.ndarray, held: tuple[dict[str, np.ndarray], dict[str, np.ndarray]],
                 fresh_nodes: dict[str, np.ndarray], logit_scale: float, preprocess_key: str) -> int:
    """Assemble a model's embeddings, score them and write its label folder atomically; returns how many
    images it had to encode. The one writer of labels for every labeler (this process's and the cluster's).

    Args:
        table: the sample table (already written); image i has key `keys[i]` (`SampleTable.image_keys`).
        rows: per image of `table`, its row in `fresh` ((m, d) unit rows from this run), or -1 when `held`
            has it.
        held: (image key → embedding, wnid → node embedding) the model's stored label already holds
            (`reusable_embeddings`).
        fresh_nodes: wnid → (d,) unit text embedding of every labeled node `held` lacks.
        logit_scale: the model's temperature (`images.encoding.temperature`).
    Raises:
        ModelLoadError: an image or node without an embedding, or embeddings or a scale that are not finite.
    """
    old_images, old_nodes = held
    missing = [w for w in table.node_wnids if w not in old_nodes and w not in fresh_nodes]
    if missing:
        raise ModelLoadError(f"model {model.id!r}: no text embedding of the labeled node {missing[0]}")
    node_emb = np.stack([old_nodes[w] if w in old_nodes else fresh_nodes[w] for w in table.node_wnids])
    image_emb = np.empty((len(table.paths), node_emb.shape[1]), np.float16)
    encoded_images = 0
    for i, (key, row) in enumerate(zip(keys, rows)):
        if key in old_images:
            image_emb[i] = old_images[key]
        elif row >= 0:
            image_emb[i] = fresh[row]
            encoded_images += 1
        else:
            raise ModelLoadError(f"model {model.id!r}: the sample image {table.paths[i]} was not encoded (unreadable "
                                 "when this model's images were decoded); label it again")
    # Checked before anything is written: a label of NaN embeddings would give the model counts
    # (every image "predicting" one node) that selection trusts like any other.
    bad = [what for what, values in (("image embeddings", image_emb), ("node text embeddings", node_emb),
                                     ("logit scale", logit_scale)) if not all_finite(values)]
    if bad:
        raise ModelLoadError(f"model {model.id!r} ({model.weights}): its {' and '.join(bad)} are not finite (NaN or "
                             "infinite); its label is refused (a damaged checkpoint, or an fp16 overflow: try --device cpu)")
    write_label(index_path, model.describe(), table, fingerprint, image_emb, node_emb, logit_scale,
                preprocess=preprocess_key,
                encoded={"encoded_images": encoded_images, "encoded_nodes": len(fresh_nodes)})
    return encoded_images
