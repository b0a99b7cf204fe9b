"""Steps 2-4 of selection: each model's confusion among the task's nodes, per-class F1, smoothing.

`restricted` recomputes, among the sample images of the task's nodes S, which node of S each
model predicts; `counts` reads the label matrix's per-node counts over the whole node set.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mll_index.errors import IndexFormatError, InputError
from mll_index.label_store import LabelStore, refuse_damaged

SelectionMode = Literal["auto", "restricted", "counts"]
MODES: tuple[str, ...] = ("auto", "restricted", "counts")


def node_confusion(store: LabelStore, nodes: np.ndarray, mode: SelectionMode = "restricted",
                   domain: str | None = None) -> np.ndarray:
    """(n_models, len(nodes), 3) float32 TP, FP, FN of every model on the nodes S (node-axis positions).

    restricted: each sample image of S is assigned the node of S its model scores highest;
    with a domain, only the images tagged with it count (all images where S has none);
    counts: the label matrix's counts over the whole labeled node set (no domain).
    The result is a view of a node-major array: `class_f1` uses it without a copy.
    """
    nodes = np.asarray(nodes, np.int64)
    if mode == "counts":
        return store.matrix.gather(nodes).transpose(1, 0, 2)
    if mode != "restricted":
        raise InputError(f"unknown selection mode {mode!r}; modes: {list(MODES)}")
    refuse_damaged(store, mode)
    if not store.has_image_labels:
        lacking = [m for m in store.model_ids if m not in store.folders]
        raise InputError(f"the restricted mode needs image-level labels; {len(lacking)} model(s) have only counts "
                         f"(e.g. {lacking[:3]}); use --mode counts")
    out = np.zeros((len(nodes), len(store.model_ids), 3), np.float32)
    in_set = np.zeros(len(store.node_wnids), bool)
    in_set[nodes] = True
    local = np.full(len(store.node_wnids), -1, np.int64)
    local[nodes] = np.arange(len(nodes))
    k = len(nodes)
    for i in range(len(store.model_ids)):
        lab = store.image_labels(i)
        if lab is None:     # has_image_labels said every model has one; a label folder removed since
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
    """Image-model scorings the restricted mode would do on the nodes of `counts` ((n_models, |S|, 3) TP, FP, FN)."""
    return int(counts[:, :, 0].sum() + counts[:, :, 2].sum())


def class_f1(confusion: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n_models, n_classes) F1 from node confusion (n_models, |S|, 3) and class-node weights (n_classes, |S|).

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
    summed = summed.reshape(len(weights), n_models, 3)
    tp, fp, fn = (summed[..., j].T.astype(np.float64) for j in range(3))   # (n_models, n_classes)
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def smooth_scores(f1: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * F1(model, class) + (1 - alpha) * mean F1(model, the task's other classes)."""
    n_classes = f1.shape[1]
    if n_classes < 2:
        return f1.copy()
    others = (f1.sum(axis=1, keepdims=True) - f1) / (n_classes - 1)
    return alpha * f1 + (1 - alpha) * others
