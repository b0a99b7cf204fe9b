"""`select --explain`'s image-based part: per class, the rule that scored its models and each top model's evidence."""

from __future__ import annotations

from typing import Any

import numpy as np

from mll_index.selection.labeled_nodes import top_stable


def image_explain(image: dict[str, Any], c: int, alpha: float, k: int, n_classes: int) -> dict[str, Any]:
    """`--explain`'s image-based part for class c: the rule and, per top model, its F1, counts, score
    (and, under the calibrated rule, the features the score was predicted from)."""
    out: dict[str, Any] = {}
    f1, confusion, w = image["f1"], image["confusion"], image["weights"]
    summed = np.einsum("s,msk->mk", w[c], confusion)
    if image["rule"] is not None:
        out["rule"] = (f"score = the F1 the calibrated rule predicts from the features below (fitted on "
                       f"{image['rule'].report.get('pseudo_tasks', '?')} pseudo-tasks of this index's labels); the "
                       "class's models are then chosen jointly with the other classes' for the vote, on the task's "
                       "sample images (selection/vote_search.py)")
    else:
        out["rule"] = (f"score = {alpha} * F1 + {round(1 - alpha, 4)} * mean F1 on the other classes; F1 "
                          f"from TP/FP/FN of the matched nodes ({image['mode']} confusion), weighted by "
                          "node score")
    out["models"] = {image["ids"][i]: {
        "f1": round(float(f1[i, c]), 4),
        "mean_f1_other_classes": round(float((f1[i].sum() - f1[i, c]) / max(1, n_classes - 1)), 4),
        "weighted_tp_fp_fn": [round(float(v), 2) for v in summed[i]],
        "score": round(float(image["scores"][i, c]), 4),
        **({"features": named_features(image["features"][i, c])} if image["features"] is not None else {})}
        for i in top_stable(image["scores"][:, c], max(k, 3))}
    return out


def named_features(values: np.ndarray) -> dict[str, float]:
    """One (model, class)'s calibrated-rule features by name (rule_features.RULE_FEATURES), to 4 places."""
    from mll_index.selection.rule_features import RULE_FEATURES

    return {name: round(float(v), 4) for name, v in zip(RULE_FEATURES, values)}
