"""The features a calibrated selection rule reads per (model, class), from the labels alone.

Both `calibrate` (on pseudo-tasks drawn from the sample set, `selection.pseudo_tasks`) and `select`
(on a user's task) compute them with this one function, from the same inputs: each model's
restricted confusion among the task's nodes, the class-node weights, and each model's general
strength over the whole sample set. So a rule fitted on pseudo-tasks reads at selection time
exactly what it was fitted on.

Per (model m, class c), with TP/FP/FN summed over the class's nodes weighted by their match
score (`confusion.class_counts`, as F1 is counted):

    f1            2TP / (2TP + FP + FN)
    recall        TP / (TP + FN)
    precision     TP / (TP + FP), 0 where the model never predicts the class
    f1_other      m's mean F1 on the task's other classes (how strong m is on this task)
    f1_gap        f1 minus the best model's F1 on c (<= 0; 0 for the class's leader)
    f1_z          f1's z-score among the models on c (spread floored at 0.05)
    f1_all        f1 counted on every domain's sample images (= f1 without a domain): more images, less
                  noise, where the task's domain has a few per node
    strength      m's top-1 accuracy over every labeled node's sample images (its general skill)
    strength_z    strength's z-score among the hub's models
    strength_domain  strength on the task's domain's sample images only (= strength without a domain)
    log_classes   ln C
    log_images    ln(1 + the class's weighted sample-image count): how much evidence F1 rests on
    domain_images 1 where only the task's domain's sample images counted, else 0
"""

from __future__ import annotations

import numpy as np

from mll_index.selection.confusion import class_counts

RULE_FEATURES: tuple[str, ...] = ("f1", "recall", "precision", "f1_other", "f1_gap", "f1_z", "f1_all", "strength",
                                  "strength_z", "strength_domain", "log_classes", "log_images", "domain_images")
MIN_SPREAD = 0.05   # the f1_z floor: on a class every model gets right, small F1 gaps are noise


def rule_features(confusion: np.ndarray, weights: np.ndarray, strength: np.ndarray, *,
                  domain_images: bool = False, all_domains: np.ndarray | None = None,
                  strength_domain: np.ndarray | None = None) -> np.ndarray:
    """(n_models, n_classes, len(RULE_FEATURES)) float64 features (see the module docstring).

    Args:
        confusion: (n_models, |S|, 3) TP, FP, FN among the task's nodes S (`confusion.node_confusion`).
        weights: (n_classes, |S|) class-node weights (>= 0).
        strength: (n_models,) each model's top-1 accuracy over the whole sample set, in [0, 1].
        domain_images: whether the confusion counted only the task's domain's sample images.
        all_domains: (n_models, |S|, 3) the confusion on every domain's images (None: `confusion`).
        strength_domain: (n_models,) top-1 accuracy on the task's domain's images (None: `strength`).
    """
    counts = class_counts(confusion, weights)
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    n_models, n_classes = tp.shape

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.divide(a, b, out=np.zeros_like(a), where=b > 0)

    f1 = ratio(2 * tp, 2 * tp + fp + fn)
    if all_domains is None:
        f1_all = f1
    else:
        every = class_counts(all_domains, weights)
        f1_all = ratio(2 * every[..., 0], 2 * every[..., 0] + every[..., 1] + every[..., 2])
    others = (f1.sum(axis=1, keepdims=True) - f1) / max(n_classes - 1, 1) if n_classes > 1 else f1.copy()
    spread = np.maximum(f1.std(axis=0, keepdims=True), MIN_SPREAD)
    strength = np.asarray(strength, np.float64)[:, None]
    s_spread = max(float(strength.std()), MIN_SPREAD)
    images = np.log1p((tp + fn).max(axis=0, keepdims=True))      # a class's true count is the same for every model
    columns = {
        "f1": f1, "recall": ratio(tp, tp + fn), "precision": ratio(tp, tp + fp), "f1_other": others,
        "f1_gap": f1 - f1.max(axis=0, keepdims=True), "f1_z": (f1 - f1.mean(axis=0, keepdims=True)) / spread,
        "f1_all": f1_all, "strength": np.broadcast_to(strength, f1.shape),
        "strength_z": np.broadcast_to((strength - strength.mean()) / s_spread, f1.shape),
        "strength_domain": np.broadcast_to(
            strength if strength_domain is None else np.asarray(strength_domain, np.float64)[:, None], f1.shape),
        "log_classes": np.full(f1.shape, np.log(n_classes)), "log_images": np.broadcast_to(images, f1.shape),
        "domain_images": np.full(f1.shape, float(domain_images)),
    }
    return np.stack([columns[name] for name in RULE_FEATURES], axis=-1)
