"""Scoring rules for selection from published results, compared leave one dataset out.

    python bench/published_lodo_variants.py [--index indexes/default]

The published labels must be imported (bench/published_lodo.py does it). For each dataset with
class names, its family's columns are hidden and each rule ranks the 121 models from the other
datasets with the hidden dataset's class names only (their embeddings as imported). Reported per
rule: the chosen model's mean real accuracy, the best of its top 3, and wins and ties against
INB. Writes bench/results/published_lodo_variants.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_results  # noqa: E402

Rule = Callable[[np.ndarray, np.ndarray, set[int]], np.ndarray]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("indexes/default"))
    args = parser.parse_args()
    from scipy.stats import rankdata

    from mll_index.published.store import open_published

    pub = open_published(args.index)
    acc = pub.accuracy.astype(np.float64)                    # (n_models, n_datasets), NaN missing
    family = [d["family"] for d in pub.datasets]
    owner = pub.class_dataset
    sims_all = pub.class_vectors @ pub.class_vectors.T
    inb = int(np.nanargmax([m["imagenet_acc"] if m["imagenet_acc"] is not None else np.nan for m in pub.models]))
    filled = np.nan_to_num(acc, nan=float(np.nanmean(acc)))

    def top_classes(n: int, one_per_family: bool) -> Rule:
        def rule(sims: np.ndarray, owners: np.ndarray, hidden: set[int]) -> np.ndarray:
            out = np.zeros(acc.shape[0])
            for row in sims:
                if one_per_family:
                    best: dict[str, int] = {}
                    for i in np.argsort(-row):
                        best.setdefault(family[owners[i]], int(i))
                        if len(best) >= n:
                            break
                    top = np.array(list(best.values()))
                else:
                    top = np.argsort(-row, kind="stable")[:n]
                w = np.maximum(row[top], 0)
                out += (filled[:, owners[top]] * w).sum(1) / max(w.sum(), 1e-12)
            return out / len(sims)
        return rule

    def dataset_level(t: float, norm: str | None) -> Rule:
        def rule(sims: np.ndarray, owners: np.ndarray, hidden: set[int]) -> np.ndarray:
            ds = sorted(set(owners.tolist()))
            sim_d = np.array([sims[:, owners == d].max(1).mean() for d in ds])
            table = acc[:, ds].copy()
            if norm == "oracle":
                table = table / np.nanmax(table, 0)
            elif norm == "rank":
                table = np.column_stack([rankdata(np.nan_to_num(c, nan=-1)) for c in table.T]) / len(table)
            table = np.nan_to_num(table, nan=float(np.nanmean(table)))
            w = np.exp((sim_d - sim_d.max()) / t)
            for f in {family[d] for d in ds}:                # a family of identical class lists counts once
                idx = [k for k, d in enumerate(ds) if family[d] == f]
                w[idx] /= len(idx)
            return table @ (w / w.sum())
        return rule

    def general_plus_neighbours(beta: float) -> Rule:
        neighbours = top_classes(5, True)

        def rule(sims: np.ndarray, owners: np.ndarray, hidden: set[int]) -> np.ndarray:
            visible = [d for d in range(acc.shape[1]) if d not in hidden]
            z = (acc[:, visible] - np.nanmean(acc[:, visible], 0)) / (np.nanstd(acc[:, visible], 0) + 1e-9)
            s = neighbours(sims, owners, hidden)
            return np.nan_to_num(z, nan=0.0).mean(1) + beta * (s - s.mean()) / (s.std() + 1e-9)
        return rule

    def shortlist(k: int) -> Rule:
        neighbours = top_classes(5, False)

        def rule(sims: np.ndarray, owners: np.ndarray, hidden: set[int]) -> np.ndarray:
            s = neighbours(sims, owners, hidden)
            general = np.nanmean(acc[:, [d for d in range(acc.shape[1]) if d not in hidden]], 1)
            out = np.full(len(s), -np.inf)
            top = np.argsort(-s, kind="stable")[:k]
            out[top] = general[top]
            return out
        return rule

    rules: dict[str, Rule] = {"top-5 classes, similarity-weighted (shipped)": top_classes(5, False),
                              "top-5 classes, one per dataset family": top_classes(5, True)}
    for t in (0.01, 0.03, 0.1):
        for norm in (None, "oracle", "rank"):
            rules[f"dataset similarity, softmax T={t}, accuracy {norm or 'raw'}"] = dataset_level(t, norm)
    for beta in (0.5, 1.0, 2.0):
        rules[f"general strength (z) + {beta} x neighbours (z)"] = general_plus_neighbours(beta)
    for k in (2, 3, 5):
        rules[f"top {k} by neighbours, then the strongest in general"] = shortlist(k)

    scored = [j for j in range(acc.shape[1]) if (owner == j).any()]
    results = {}
    for label, rule in rules.items():
        chosen, top3, wins, ties = [], [], 0, 0
        for j in scored:
            hidden = {k for k in range(acc.shape[1]) if family[k] == family[j]}
            visible = np.array([c not in hidden for c in owner])
            score = rule(sims_all[owner == j][:, visible], owner[visible], hidden)
            truth = acc[:, j]
            score = np.where(np.isnan(truth), -np.inf, score)
            order = np.argsort(-score, kind="stable")
            chosen.append(truth[order[0]])
            top3.append(np.nanmax(truth[order[:3]]))
            wins += int(truth[order[0]] > truth[inb] + 1e-9)
            ties += int(abs(truth[order[0]] - truth[inb]) < 1e-9)
        results[label] = {"chosen_acc": round(float(np.mean(chosen)), 4), "best_of_top3_acc": round(float(np.mean(top3)), 4),
                          "wins_over_inb": wins, "ties_with_inb": ties}
    inb_mean = round(float(np.mean([acc[inb, j] for j in scored])), 4)
    md = ["# Scoring rules for selection from published results (leave one dataset out)\n",
          f"{len(scored)} datasets; INB ({pub.model_ids[inb]}) averages {inb_mean}. Goal: beat INB on average "
          f"and on at least {int(np.ceil(len(scored) / 3))} datasets.\n",
          "| rule | chosen | best of top 3 | wins over INB | ties |", "|---|---|---|---|---|"]
    for label, r in results.items():
        md.append(f"| {label} | {r['chosen_acc']:.3f} | {r['best_of_top3_acc']:.3f} | {r['wins_over_inb']} | {r['ties_with_inb']} |")
    write_results("published_lodo_variants", {"inb_acc": inb_mean, "datasets": len(scored), "rules": results},
                  "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
