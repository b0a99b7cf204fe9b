"""Pseudo-tasks drawn from the index's own sample set: supervision for the selection rule at no user cost.

A pseudo-task is a set of labeled nodes (its classes) and, for half of them, a domain (the tag
of sample file names, `labels.store.image_domain`), as a task with a domain word. Every node's
sample images are split once, per (node, domain) cell and seeded, into a *feature half* and an
*evaluation half*. On a pseudo-task:
- the rule's features are the labels' confusion among its nodes counted on the feature half
  (`rule_features`, the same function `select` calls);
- the truth is each model's F1 among its nodes on the evaluation half, and an ensemble's accuracy
  there (`ensemble_accuracy`: the entropy-weighted vote `reuse` runs, over the models' stored
  top-K logits restricted to the task's nodes).
Both come from the stored top-K nodes and logits per sample image: no model runs.

Classes are drawn as real tasks are confusable: `siblings` (nodes under one hypernym one or two
steps up), `cousins` (three or four steps up), `random` (any labeled nodes), a third each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mll_index.errors import InputError
from mll_index.index.graph import Graph
from mll_index.labels.store import LabelStore
from mll_index.models.zeroshot import entropy_weights
from mll_index.selection.confusion import class_f1, node_confusion

STRUCTURES = ("siblings", "cousins", "random")
MIN_IMAGES_PER_NODE = 4       # two per half: a half with one image gives F1 in {0, 1} only
MIN_NODES = 8                 # splittable nodes an index needs for pseudo-tasks of 2 to 100 classes
MIN_MODELS = 2
MAX_CLASSES = 100


@dataclass(frozen=True)
class PseudoTask:
    """Classes = labeled nodes (node-axis positions, ascending); domain: the sample tag both halves keep."""

    nodes: np.ndarray
    domain: str | None
    structure: str


@dataclass(frozen=True)
class Halves:
    """Per sample fingerprint, (n_images,) float32 weights: 1 in the half, 0 outside."""

    feature: dict[str, np.ndarray]
    evaluation: dict[str, np.ndarray]


def split_halves(store: LabelStore, seed: int) -> Halves:
    """Split every sample set's images into halves per (node, domain) cell, seeded (odd cells give the
    feature half the extra image)."""
    rng = np.random.default_rng(seed)
    feature, evaluation = {}, {}
    for fingerprint in store.groups():
        group = store.sample_group(fingerprint)
        names, domain = np.unique(group.domains, return_inverse=True)
        _, cell = np.unique(group.image_nodes.astype(np.int64) * len(names) + domain.reshape(-1), return_inverse=True)
        cell = np.asarray(cell).reshape(-1)
        order = rng.permutation(len(cell))
        order = order[np.argsort(cell[order], kind="stable")]          # shuffled within each cell
        starts = np.searchsorted(cell[order], np.arange(cell.max() + 1 if len(cell) else 0))
        rank = np.arange(len(order)) - starts[cell[order]]
        size = np.bincount(cell)[cell[order]]
        in_feature = np.zeros(len(cell), bool)
        in_feature[order] = rank < (size + 1) // 2
        feature[fingerprint] = in_feature.astype(np.float32)
        evaluation[fingerprint] = (~in_feature).astype(np.float32)
    return Halves(feature, evaluation)


def splittable_nodes(store: LabelStore) -> np.ndarray:
    """Node-axis positions with at least MIN_IMAGES_PER_NODE sample images in some sample set."""
    counts = np.zeros(len(store.node_wnids), np.int64)
    for fingerprint in store.groups():
        counts = np.maximum(counts, np.bincount(store.sample_group(fingerprint).image_nodes,
                                                minlength=len(counts)))
    return np.flatnonzero(counts >= MIN_IMAGES_PER_NODE)


def check_calibratable(store: LabelStore) -> np.ndarray:
    """The splittable nodes, after checking that the labels can give pseudo-tasks.

    Raises:
        InputError: one line: fewer than MIN_MODELS models, labels without image-level data
            (published labels or counts only), or fewer than MIN_NODES nodes with
            MIN_IMAGES_PER_NODE sample images.
    """
    if len(store.model_ids) < MIN_MODELS:
        raise InputError(f"{store.index_path}: calibration needs at least {MIN_MODELS} labeled models, the index has "
                         f"{len(store.model_ids)}; label more with `mll-index label`")
    if not store.has_image_labels:
        lacking = [m for m in store.model_ids if m not in store.folders]
        raise InputError(f"{store.index_path}: calibration reads image-level labels (each sample image's top nodes); "
                         f"{len(lacking)} model(s) have only counts (e.g. {lacking[:3]}); label them with "
                         "`mll-index label`, or select with --rule mll")
    nodes = splittable_nodes(store)
    if len(nodes) < MIN_NODES:
        raise InputError(f"{store.index_path}: calibration needs at least {MIN_NODES} labeled nodes with "
                         f"{MIN_IMAGES_PER_NODE} or more sample images each (two per half); the index has "
                         f"{len(nodes)}")
    return nodes


def _ancestors_up(graph: Graph, wnid: str, steps: int) -> str:
    path = graph.hypernym_path(wnid)
    return path[max(0, len(path) - 1 - steps)]


def draw_pseudo_tasks(store: LabelStore, graph: Graph, n_tasks: int, seed: int, *, min_classes: int = 2,
                      max_classes: int = MAX_CLASSES, domain_share: float = 0.5) -> list[PseudoTask]:
    """`n_tasks` seeded pseudo-tasks over the splittable nodes (see the module docstring).

    Sizes are log-uniform in [min_classes, min(max_classes, splittable nodes)]; a structure that
    offers too few nodes under its hypernym climbs further up until it has enough.
    """
    nodes = check_calibratable(store)
    rng = np.random.default_rng(seed)
    wnids = [store.node_wnids[j] for j in nodes]
    paths = [graph.hypernym_path(w) if w in graph.row_of else [w] for w in wnids]
    under: dict[str, list[int]] = {}
    for i, path in enumerate(paths):
        for w in path:
            under.setdefault(w, []).append(i)
    domains = sorted({d for fp in store.groups() for d in store.sample_group(fp).domain_set if d})
    high = min(max_classes, len(nodes))
    low = min(min_classes, high)
    out = []
    for t in range(n_tasks):
        size = int(round(np.exp(rng.uniform(np.log(low), np.log(high + 0.499)))))
        size = int(np.clip(size, low, high))
        structure = STRUCTURES[t % len(STRUCTURES)]
        if structure == "random":
            picked = rng.choice(len(nodes), size, replace=False)
        else:
            seed_node = int(rng.integers(len(nodes)))
            steps = int(rng.integers(1, 3)) if structure == "siblings" else int(rng.integers(3, 5))
            path = paths[seed_node]
            at = max(0, len(path) - 1 - steps)
            while at > 0 and len(under[path[at]]) < size:
                at -= 1
            pool = np.array(under[path[at]])
            picked = rng.choice(pool, min(size, len(pool)), replace=False)
            if len(picked) < size:       # the root holds every node with a path: only unrooted nodes are left
                rest = np.setdiff1d(np.arange(len(nodes)), picked)
                picked = np.concatenate([picked, rng.choice(rest, size - len(picked), replace=False)])
        domain = str(rng.choice(domains)) if domains and rng.random() < domain_share else None
        out.append(PseudoTask(np.sort(nodes[picked]), domain, structure))
    return out


def model_strength(store: LabelStore, weights: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """(n_models,) each model's top-1 accuracy over its sample set's images (weighted; None: all count 1).

    Read from the stored top-K table where one holds the model, else from its label folder's first column.
    """
    ids = store.model_ids
    out = np.zeros(len(ids))
    for fingerprint, members in store.groups().items():
        group = store.sample_group(fingerprint)
        true = group.table.image_nodes
        w = np.ones(len(true)) if weights is None else np.asarray(weights[fingerprint], np.float64)
        table = store.topk_table(fingerprint)
        columns = table.column(store.digests) if table is not None else {}
        for i in members:
            top1 = (np.asarray(table.nodes[0][:, columns[ids[i]]]) if ids[i] in columns  # type: ignore[union-attr]
                    else np.asarray(store.image_labels(i).topk_nodes[:, 0]))             # type: ignore[union-attr]
            out[i] = float(((top1 == true) * w).sum() / max(w.sum(), 1e-9))
    return out


def half_confusion(store: LabelStore, task: PseudoTask, half: dict[str, np.ndarray]) -> np.ndarray:
    """(n_models, C, 3) restricted TP, FP, FN among the task's nodes on one half's images."""
    return node_confusion(store, task.nodes, "restricted", task.domain, half)


def eval_f1(store: LabelStore, task: PseudoTask, halves: Halves) -> np.ndarray:
    """(n_models, C) each model's F1 per class on the evaluation half (the per-class truth)."""
    return class_f1(half_confusion(store, task, halves.evaluation), np.eye(len(task.nodes)))


def _eval_rows(store: LabelStore, fingerprint: str, task: PseudoTask, halves: Halves) -> tuple[np.ndarray, np.ndarray]:
    """(rows, true): the evaluation-half images of the task's nodes (of its domain, where it has any)."""
    group = store.sample_group(fingerprint)
    local = np.full(len(store.node_wnids), -1, np.int64)
    local[task.nodes] = np.arange(len(task.nodes))
    keep = (local[group.image_nodes] >= 0) & (halves.evaluation[fingerprint] > 0)
    if task.domain:
        in_domain = keep & (group.domains == task.domain)
        keep = in_domain if in_domain.any() else keep
    rows = np.flatnonzero(keep)
    return rows, local[group.image_nodes[rows]]


def restricted_probabilities(store: LabelStore, model: int, task: PseudoTask, rows: np.ndarray) -> np.ndarray:
    """(len(rows), C) model's softmax over the task's nodes on these images, from its stored top-K logits.

    A node of the task outside an image's top K scored below the K-th logit and is left out (its
    probability 0); an image with none of the task's nodes among its top K gets uniform probabilities.
    """
    return restricted_probabilities_of(store, [model], task, rows)[0]


def restricted_probabilities_of(store: LabelStore, models: Sequence[int], task: PseudoTask,
                                rows: np.ndarray) -> np.ndarray:
    """(len(models), len(rows), C) `restricted_probabilities` of several models labeled on one sample
    set, the task's node map built once for them all."""
    group = store.sample_group(store.folders[store.model_ids[models[0]]])
    local = np.full(len(store.node_wnids), -1, np.int64)
    local[task.nodes] = np.arange(len(task.nodes))
    table_local = local[group.axis]
    c = len(task.nodes)
    out = np.full((len(models), len(rows), c), -np.inf)
    for i, model in enumerate(models):
        lab = store.image_labels(model)
        if store.folders[store.model_ids[model]] != group.fingerprint:
            raise ValueError("restricted_probabilities_of: the models were labeled on different sample sets")
        nodes = table_local[np.asarray(lab.topk_nodes[rows])]                 # type: ignore[union-attr]
        logits = np.asarray(lab.topk_logits[rows], np.float64)                # type: ignore[union-attr]
        r, k = np.nonzero(nodes >= 0)
        # the top-K are best first: the first occurrence of a node is its logit; later ones cannot repeat it
        out[i, r, nodes[r, k]] = logits[r, k]
    none = ~np.isfinite(out).any(axis=2)
    out[none] = 0.0
    out -= out.max(axis=2, keepdims=True)
    p = np.exp(out)
    return p / p.sum(axis=2, keepdims=True)


def ensemble_accuracy(store: LabelStore, task: PseudoTask, halves: Halves,
                      chosen: Sequence[Sequence[int]], probs: dict[int, np.ndarray] | None = None) -> float:
    """Accuracy on the evaluation half of the vote `reuse` runs (`reuse.ensemble.combine`'s rule: per
    class, its chosen models' 1/entropy x probability), the models' probabilities over the task's
    nodes from their stored top-K logits. `chosen[c]`: model positions for class c; `probs`: a cache
    of restricted probabilities by model, filled as needed."""
    fingerprint = store.folders[store.model_ids[chosen[0][0]]]
    rows, true = _eval_rows(store, fingerprint, task, halves)
    if len(rows) == 0:
        return float("nan")
    probs = {} if probs is None else probs
    scores = np.zeros((len(rows), len(task.nodes)))
    for m in sorted({m for ms in chosen for m in ms}):
        if m not in probs:
            probs[m] = restricted_probabilities(store, m, task, rows)
        p = probs[m]
        weighted = entropy_weights(p)[:, None] * p
        for c, ms in enumerate(chosen):
            if m in ms:
                scores[:, c] += weighted[:, c]
    return float((scores.argmax(axis=1) == true).mean())
