"""Accuracy against compute for an evaluation: what each method's choice costs per image.

A method's cost on a task is the GFLOPs per image of the models it runs there (an ensemble: the sum
over its distinct models); the plot puts each method at its mean cost and mean accuracy over the
tasks, with every hub model alone beside them where the evaluation knows its accuracy (the oracle
single model's candidates are not all recorded, so single models are shown by cost only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mll_index.core.artifacts import atomic_file
from mll_index.models.flops import ModelCost

# Methods whose chosen models the evaluation records (evaluate.Evaluation.chosen), and how to read them.
SINGLE = ("inb", "text_proxy", "oracle_single")


def method_gflops(chosen: dict[str, dict[str, Any]], costs: dict[str, ModelCost]) -> dict[str, float]:
    """Mean GFLOPs per image over tasks, per method with recorded choices; a method with a model of
    unknown cost is left out.

    Args:
        chosen: task -> evaluate's record ({"mll_k1": class -> model ids, "inb": id, ...}).
        costs: model id -> ModelCost.
    """
    per_method: dict[str, list[float]] = {}
    for record in chosen.values():
        picks = {"mll_k1": sorted({m for ms in record.get("mll_k1", {}).values() for m in ms})}
        picks |= {m: [record[m]] for m in SINGLE if record.get(m)}
        for method, models in picks.items():
            figures = [costs[m].gflops if m in costs else None for m in models]
            if models and all(f is not None for f in figures):
                per_method.setdefault(method, []).append(float(sum(figures)))  # type: ignore[arg-type]
    return {m: float(np.mean(v)) for m, v in per_method.items() if len(v) == len(chosen)}


def plot_accuracy_gflops(mean: dict[str, float], chosen: dict[str, dict[str, Any]], costs: dict[str, ModelCost],
                         path: Path) -> dict[str, float]:
    """Write a PNG of mean accuracy against mean GFLOPs per image for each method; returns the GFLOPs.

    Args:
        mean: method -> mean accuracy over tasks (evaluate.Evaluation.mean).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gflops = method_gflops(chosen, costs)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for method, cost in sorted(gflops.items()):
        ax.scatter(cost, mean[method], s=40)
        ax.annotate(method, (cost, mean[method]), textcoords="offset points", xytext=(5, 3), fontsize=8)
    for model, cost in sorted(costs.items()):
        if cost.gflops is not None:
            ax.axvline(cost.gflops, color="grey", linewidth=0.5, alpha=0.4)
    ax.set_xlabel("GFLOPs per image (sum over the ensemble's models; grey: each hub model)")
    ax.set_ylabel("mean accuracy over tasks")
    ax.set_title("accuracy against compute")
    fig.tight_layout()
    with atomic_file(Path(path), "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return gflops
