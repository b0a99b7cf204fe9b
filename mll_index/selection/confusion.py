"""Steps 2-4 of selection: each model's confusion among the task's nodes, per-class F1, smoothing.

`restricted` recomputes, among the sample images of the task's nodes S, which node of S each
model predicts; `counts` reads the label matrix's per-node counts over the whole node set.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mll_index.errors import IndexFormatError, InputError
from mll_index.labels.store import ImageLabels, LabelStore, SampleGroup, refuse_damaged
from mll_index.labels.topk_table import TopkTable, confusion_from_predictions, first_in_set

SelectionMode = Literal["auto", "restricted", "counts"]
MODES: tuple[str, ...] = ("auto", "restricted", "counts")


def node_confusion(store: LabelStore, nodes: np.ndarray, mode: SelectionMode = "restricted",
                   domain: str | None = None, image_weights: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """(n_models, len(nodes), 3) float32 TP, FP, FN of every model on the nodes S (node-axis positions).

    restricted: each sample image of S is assigned the node of S its model scores highest, read
    from the model's stored top nodes (`restricted_confusion`); with a domain, only the images
    tagged with it count (all images where S has none);
    counts: the label matrix's counts over the whole labeled node set (no domain, no weights).
    The counts result is a view of a node-major array: `class_f1` uses it without a copy.

    Args:
        image_weights: sample fingerprint -> (n_images,) float weight of each sample image
            (probe similarity); None: every image counts 1.
    """
    nodes = np.asarray(nodes, np.int64)
    if mode == "counts":
        return store.matrix.gather(nodes).transpose(1, 0, 2)
    if mode != "restricted":
        raise InputError(f"unknown selection mode {mode!r}; modes: {list(MODES)}")
    return restricted_confusion(store, nodes, domain, image_weights)


def _check_restricted(store: LabelStore) -> None:
    refuse_damaged(store, "restricted")
    if not store.has_image_labels:
        lacking = [m for m in store.model_ids if m not in store.folders]
        raise InputError(f"the restricted mode needs image-level labels; {len(lacking)} model(s) have only counts "
                         f"(e.g. {lacking[:3]}); use --mode counts")


def _task_rows(group: SampleGroup, local: np.ndarray, domain: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, true): the sample images of S (of the domain, where S has some), sorted by their node's
    position in S, and that position."""
    rows = np.flatnonzero(local[group.image_nodes] >= 0)
    if domain:
        in_domain = rows[group.domains[rows] == domain.lower()]
        rows = in_domain if len(in_domain) else rows
    true = local[group.image_nodes[rows]]
    order = np.argsort(true, kind="stable")
    return rows[order], true[order]


def restricted_confusion(store: LabelStore, nodes: np.ndarray, domain: str | None = None,
                         image_weights: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """(n_models, len(nodes), 3) float32 restricted TP, FP, FN, read from the stored top nodes.

    A model's prediction among S on an image is the first of its stored top-K nodes that is in S:
    the same node as `exact_restricted_confusion` finds whenever one of S is among them (always when
    S's nodes are all there). Where none is, the pair is recomputed from the stored embeddings as
    the exact mode does, while such pairs involve at most RECOMPUTE_MODELS models and
    RECOMPUTE_PAIRS pairs; beyond, the image counts as missed (a false negative of its node) and
    as no node's false positive (the node of S the model would pick scores below its K-th node,
    and which one was not stored). Models in a sample set's top-K table are read together
    (topk_table.py); the others one by one from their label folders.

    Raises:
        InputError: a damaged label, or a model without image-level labels.
    """
    _check_restricted(store)
    nodes = np.asarray(nodes, np.int64)
    k = len(nodes)
    out = np.zeros((len(store.model_ids), k, 3), np.float32)
    local = np.full(len(store.node_wnids), -1, np.int32)
    local[nodes] = np.arange(k)
    ids = store.model_ids       # a tuple built per access: read once
    for fingerprint, members in store.groups().items():
        group = store.sample_group(fingerprint)
        rows, true = _task_rows(group, local, domain)
        if len(rows) == 0:
            continue
        weights = image_weights[fingerprint][rows] if image_weights and fingerprint in image_weights else None
        table_local = local[group.axis]          # sample-table node -> position in S, -1 outside
        table = store.topk_table(fingerprint)
        columns = table.column(store.digests) if table is not None else {}
        held = [i for i in members if ids[i] in columns]
        if held:
            cols = np.array([columns[ids[i]] for i in held], np.int64)
            pred = _table_predictions(table, rows, cols, table_local)   # type: ignore[arg-type]
            _recompute_beyond(store, held, nodes, rows, pred)
            out[held] = confusion_from_predictions(pred, true, k, weights)
        for i in members:
            if ids[i] in columns:
                continue
            lab = _image_labels(store, i)
            found = table_local[np.asarray(lab.topk_nodes[rows])]    # (n_rows, K)
            has = found >= 0
            pred = found[np.arange(len(rows)), has.argmax(axis=1)]
            pred[~has.any(axis=1)] = -1
            pred = pred[:, None]
            _recompute_beyond(store, [i], nodes, rows, pred)
            out[i] = confusion_from_predictions(pred, true, k, weights)[0]
    return out


# Image-model pairs with no node of S among the stored top nodes are recomputed from the embeddings
# (as exact_restricted_confusion does) while they involve at most this many models and pairs; beyond,
# they stay counted as missed. Few-class tasks have most such pairs; at thousands of models,
# opening every label folder would cost more than the whole table read.
RECOMPUTE_MODELS = 2000
RECOMPUTE_PAIRS = 2_000_000


def _image_labels(store: LabelStore, i: int) -> ImageLabels:
    lab = store.image_labels(i)
    if lab is None:     # has_image_labels said every model has one; a label folder removed since
        raise IndexFormatError(f"{store.index_path}: model {store.model_ids[i]!r} has no image-level label "
                               "folder any more; run `mll-index label` again or use --mode counts")
    return lab


def _recompute_beyond(store: LabelStore, models: list[int], nodes: np.ndarray, rows: np.ndarray,
                      pred: np.ndarray) -> int:
    """Fill pred (len(rows), len(models)) where it is -1 with the exact argmax over S from the stored
    embeddings, within RECOMPUTE_MODELS and RECOMPUTE_PAIRS; returns the pairs recomputed (0 if over)."""
    r_idx, c_idx = np.nonzero(pred < 0)
    touched = np.unique(c_idx)
    if len(r_idx) == 0 or len(touched) > RECOMPUTE_MODELS or len(r_idx) > RECOMPUTE_PAIRS:
        return 0
    for c in touched:
        lab = _image_labels(store, models[c])
        at = r_idx[c_idx == c]
        node_rows = lab.node_rows(nodes)
        has = node_rows >= 0
        logits = np.full((len(at), len(nodes)), -np.inf, np.float32)
        emb = np.asarray(lab.image_embeddings[rows[at]], np.float32)
        logits[:, has] = emb @ lab.node_vectors[node_rows[has]].T
        pred[at, c] = np.argmax(logits, axis=1)
    return len(r_idx)


def _table_predictions(table: TopkTable, rows: np.ndarray, cols: np.ndarray, table_local: np.ndarray) -> np.ndarray:
    """(len(rows), len(cols)) first node of S among each model's top nodes (topk_table.first_in_set)."""
    every = len(cols) == table.nodes.shape[2] and bool(np.array_equal(cols, np.arange(len(cols))))
    depth0 = table.nodes[0]
    # Rows of one depth are contiguous per image: a gather of whole rows, then of columns if needed.
    first = np.asarray(depth0[rows]) if every else np.asarray(depth0[rows])[:, cols]

    def deeper(d: int, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        if len(r) * 20 < first.size:        # a few pairs left: gather them from the memory map
            return np.asarray(table.nodes[d][rows[r], cols[c]])
        # many: read the depth's rows whole (contiguous), then gather in memory
        plane = np.asarray(table.nodes[d][rows])
        plane = plane if every else plane[:, cols]
        return plane[r, c]

    return first_in_set(first, deeper, table.depth, table_local)


def exact_restricted_confusion(store: LabelStore, nodes: np.ndarray, domain: str | None = None) -> np.ndarray:
    """(n_models, len(nodes), 3) float32 restricted TP, FP, FN recomputed from the stored image and node
    embeddings: each image's logits over all of S. The reference `restricted_confusion` is checked and
    measured against (its cost grows with images x |S| x d per model)."""
    _check_restricted(store)
    nodes = np.asarray(nodes, np.int64)
    out = np.zeros((len(nodes), len(store.model_ids), 3), np.float32)
    in_set = np.zeros(len(store.node_wnids), bool)
    in_set[nodes] = True
    local = np.full(len(store.node_wnids), -1, np.int64)
    local[nodes] = np.arange(len(nodes))
    k = len(nodes)
    for i in range(len(store.model_ids)):
        lab = store.image_labels(i)
        if lab is None:
            raise IndexFormatError(f"{store.index_path}: model {store.model_ids[i]!r} has no image-level label "
                                   "folder any more; run `mll-index label` again or use --mode counts")
        rows = lab.images_of(in_set)
        if domain:
            in_domain = rows[lab.domains[rows] == domain.lower()]
            rows = in_domain if len(in_domain) else rows
        if len(rows) == 0:
            continue
        node_rows = lab.node_rows(nodes)
        has = node_rows >= 0
        emb = np.asarray(lab.image_embeddings[rows], np.float32)
        if has.all():
            logits = emb @ lab.node_vectors[node_rows].T
        else:   # a node this model was never labeled on cannot be its prediction
            logits = np.full((len(rows), k), -np.inf, np.float32)
            logits[:, has] = emb @ lab.node_vectors[node_rows[has]].T
        true = local[lab.image_nodes[rows]]
        pred = np.argmax(logits, axis=1)
        hit = pred == true
        tp = np.bincount(true[hit], minlength=k)
        out[:, i, 0] = tp
        out[:, i, 1] = np.bincount(pred[~hit], minlength=k)
        out[:, i, 2] = np.bincount(true, minlength=k) - tp
    return out.transpose(1, 0, 2)


def restricted_work(store: LabelStore, counts: np.ndarray) -> int:
    """Image-model pairs the restricted mode would read on the nodes of `counts` ((n_models, |S|, 3) TP, FP, FN)."""
    return int(counts[:, :, 0].sum() + counts[:, :, 2].sum())


# A pair read from a label folder (one model's gather of K top nodes per image) costs about this
# many pairs read from a top-K table (every model's depth-1 rows at once; bench/scale.py).
FOLDER_PAIR_COST = 4


def restricted_cost(store: LabelStore, counts: np.ndarray) -> int:
    """The restricted mode's work on the nodes of `counts`, in table-pair units: image-model pairs of
    models held by a top-K table count 1, those read from their label folders FOLDER_PAIR_COST."""
    pairs = counts[:, :, 0].sum(axis=1) + counts[:, :, 2].sum(axis=1)       # (n_models,)
    ids = store.model_ids
    held = np.zeros(len(ids), bool)
    for fingerprint, members in store.groups().items():
        table = store.topk_table(fingerprint)
        if table is not None:
            columns = table.column(store.digests)
            held[[i for i in members if ids[i] in columns]] = True
    return int(pairs[held].sum() + FOLDER_PAIR_COST * pairs[~held].sum())


def class_counts(confusion: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n_models, n_classes, 3) float64 TP, FP, FN per class: its nodes' counts weighted by their score.

    Args:
        confusion: (n_models, |S|, 3) TP, FP, FN on the task's nodes S.
        weights: (n_classes, |S|) class-node weights (0 for a node not matched to the class).

    Each class has a handful of nodes, so each class sums only its own nodes' rows: the cost grows
    with n_classes x nodes per class x n_models, not n_classes x |S| x n_models. (A scipy sparse
    product does the same; importing scipy.sparse costs a quarter of a second of every CLI call.)
    """
    n_models, s, _ = confusion.shape
    node_major = np.ascontiguousarray(confusion.transpose(1, 0, 2), dtype=np.float32).reshape(s, n_models * 3)
    weights = np.asarray(weights, np.float32)
    summed = np.zeros((len(weights), n_models * 3), np.float32)
    for c, row in enumerate(weights):
        nodes = np.flatnonzero(row)
        if len(nodes):
            summed[c] = row[nodes] @ node_major[nodes]
    return summed.reshape(len(weights), n_models, 3).transpose(1, 0, 2).astype(np.float64)


def class_f1(confusion: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n_models, n_classes) F1 from node confusion (n_models, |S|, 3) and class-node weights (n_classes, |S|)
    (`class_counts`)."""
    summed = class_counts(confusion, weights)
    tp, fp, fn = summed[..., 0], summed[..., 1], summed[..., 2]
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def smooth_scores(f1: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * F1(model, class) + (1 - alpha) * mean F1(model, the task's other classes)."""
    n_classes = f1.shape[1]
    if n_classes < 2:
        return f1.copy()
    others = (f1.sum(axis=1, keepdims=True) - f1) / (n_classes - 1)
    return alpha * f1 + (1 - alpha) * others
