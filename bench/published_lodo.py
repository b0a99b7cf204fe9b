"""Selection from published results, leave one dataset out, scored on real numbers.

    python bench/published_lodo.py [--index indexes/default] [--nodes 5]

Imports ../shared/data/openclip_results.csv (121 models x 38 datasets) with the class names of
../shared/data/clip_benchmark_classnames.json and ../shared/data/target_tasks/ into the index
(if not there yet). For each dataset with class names: hide its column (ImageNet and its
variants v2, Sketch, A, R, O are hidden together), select from the other datasets' labels
with its class names only, and score the chosen model by its real accuracy on the hidden
dataset. Writes bench/results/published_lodo.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_results  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
KEYS = ("chosen_acc", "best_of_top3_acc", "inb_acc", "oracle_acc", "mean_acc", "kendall_tau")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("indexes/default"))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--nodes", type=int, default=5, help="benchmark classes matched per class")
    parser.add_argument("--zscore", action="store_true", help="score with accuracies standardised per dataset")
    parser.add_argument("--alpha", type=float, default=1.0,
                        help="weight of the matched classes against the model's mean over all visible datasets")
    args = parser.parse_args()
    from scipy.stats import kendalltau

    from mll_index.index.embed import EmbeddingCache, embed_classes, embedder_for
    from mll_index.index.node_index import load_index
    from mll_index.published.store import has_published, import_published, open_published, published_scores

    embedder = embedder_for(load_index(args.index).embedder)
    cache = EmbeddingCache.default()
    if not has_published(args.index):
        import_published(args.index, args.data / "openclip_results.csv",
                         [args.data / "clip_benchmark_classnames.json", args.data / "target_tasks"],
                         embedder=embedder, cache=cache)
    pub = open_published(args.index)
    truth_table = pub.accuracy.copy()
    if args.zscore:
        pub.accuracy = (pub.accuracy - np.nanmean(pub.accuracy, axis=0)) / np.nanstd(pub.accuracy, axis=0)
    names = pub.dataset_names
    inb = int(np.nanargmax([m["imagenet_acc"] if m["imagenet_acc"] is not None else np.nan for m in pub.models]))
    results, neighbours = {}, {}
    for j, dataset in enumerate(names):
        family = pub.datasets[j]["family"]
        hidden = [d["name"] for d in pub.datasets if d["family"] == family]
        classes = list(dict.fromkeys(pub.class_names[i] for i in np.flatnonzero(pub.class_dataset == j)))
        queries = embed_classes(classes, embedder, cache=cache)
        scores, matches = published_scores(pub, queries, args.nodes, hidden=hidden)
        truth = truth_table[:, j]
        known = ~np.isnan(truth)
        visible = [k for k, d in enumerate(pub.datasets) if d["name"] not in hidden]
        prior = np.nanmean(pub.accuracy[:, visible], axis=1)
        task_score = np.where(known, args.alpha * scores.mean(axis=1) + (1 - args.alpha) * prior, -np.inf)
        order = np.argsort(-task_score, kind="stable")
        top = [i for i in order if known[i]]
        tau = kendalltau(task_score[known], truth[known]).statistic
        results[dataset] = {"chosen_acc": float(truth[top[0]]), "best_of_top3_acc": float(np.max(truth[top[:3]])),
                            "inb_acc": float(truth[inb]), "oracle_acc": float(np.nanmax(truth)),
                            "mean_acc": float(np.nanmean(truth)), "kendall_tau": float(tau),
                            "chosen_model": pub.model_ids[top[0]], "hidden": hidden}
        counts: dict[str, int] = {}
        for ms in matches:
            for m in ms:
                counts[m.dataset] = counts.get(m.dataset, 0) + 1
        neighbours[dataset] = dict(sorted(counts.items(), key=lambda kv: -kv[1])[:4])
        results[dataset] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in results[dataset].items()}
    mean = {k: round(float(np.mean([r[k] for r in results.values()])), 4) for k in KEYS}
    wins = sum(r["chosen_acc"] > r["inb_acc"] for r in results.values())
    ties = sum(r["chosen_acc"] == r["inb_acc"] for r in results.values())
    md = ["# Selection from published results, leave one dataset out\n",
          f"{len(pub.models)} models; {len(names)} datasets with class names; INB = {pub.model_ids[inb]}. "
          f"Chosen beats INB on {wins} of {len(names)} datasets (ties {ties}).\n",
          "| dataset | chosen | best of top 3 | INB | oracle | mean | Kendall tau | matched neighbours (classes) |",
          "|---|---|---|---|---|---|---|---|"]
    for d, r in results.items():
        md.append(f"| {d} | {r['chosen_acc']:.3f} | {r['best_of_top3_acc']:.3f} | {r['inb_acc']:.3f} | "
                  f"{r['oracle_acc']:.3f} | {r['mean_acc']:.3f} | {r['kendall_tau']:.3f} | "
                  + ", ".join(f"{k} {v}" for k, v in neighbours[d].items()) + " |")
    md.append("| **mean** | " + " | ".join(f"**{mean[k]:.3f}**" for k in KEYS) + " | |")
    write_results("published_lodo", {"datasets": results, "mean": mean, "wins_over_inb": wins, "ties_with_inb": ties,
                                     "neighbours": neighbours, "nodes": args.nodes, "alpha": args.alpha}, "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
