"""Selection from published results on LOVM's protocol: leave one dataset out, LOVM's metrics.

    python bench/published_lovm.py [--index indexes/default] [--results ../shared/data/lovm/eval_table.csv]
        [--classnames ../shared/data/lovm/classnames] [--domains ../shared/data/lovm/dataset_domains.json]
        [--descriptions ../shared/data/lovm/dataset_tasks.json] [--exclude imagenet1k] [--name published_lovm]

The table (any of `published import`'s shapes: LOVM's long `eval_table.csv`, open_clip's wide
table) is imported with its class names, domains and descriptions into a linked copy of the index
(the index itself is not touched). For each dataset but the excluded ones (LOVM leaves out
`imagenet1k`): its column is hidden (with its family, see `--mapping`), the rule's weights are
chosen by leave-one-dataset-out on the other datasets only (`calibrate_rule(..., hidden=[it])`:
nested, the hidden column never chooses them), and the models are ranked from its class names,
domain and description, as `select` does. Scored with LOVM's definitions (LOVM/lovm.py):

- top-5 recall: how many of the true top-5 models are in the predicted top 5, divided by 5;
- Kendall tau: over the models in both top-5s, ranked by true and by predicted accuracy
  (scipy's tau-b on the integer ranks); 0 when fewer than 3 models are in both;
- regret: the best accuracy on the dataset minus the first-ranked model's, in points; top-1 hit.

The same for INB (ranking by ImageNet accuracy) and the oracle. LOVM's published ModelGPT figures
are quoted. Writes bench/results/<name>.{json,md}.

`ceilings` (json and md) says how far a ranking of this kind can go, and these figures DO read the
hidden column, on purpose; they choose nothing. `oracle_weights`: per target, the grid's weights
(`NEIGHBOUR_WEIGHTS` x `TEXT_WEIGHTS`) with the best top-5 recall (tau breaking ties), chosen by
looking at the answer. `oracle_low_rank_<k>`: the hidden column's z-scores fitted by least squares
on general strength and the k leading model factors (SVD) of the visible datasets' z-scores less
general strength, which is the best any dataset loading of such a model could do. `oracle_dataset`:
the single visible dataset whose ranking is best.

`model_pred` (json and md) is LOVM's accuracy-prediction task on the same targets: the accuracy
model (`mll_index.published.accuracy`) is fitted with the target hidden (`fit_accuracy_model(...,
hidden=[it])`: nested, as the rule's weights) and predicts every model's top-1 accuracy from the
target's class names, domain and description. Scored with LOVM's `get_l1` (LOVM/lovm.py): for each
dataset, the 5 models predicted best, |mean over them of (predicted - true acc1)|, acc1 as a fraction;
the mean over the targets (LOVM's published INB 0.220 and ModelGPT 0.141 count imagenet1k as a
target too: `with_excluded`). Beside it, `mae`: the mean absolute error over every model (the
prediction `select` shows for every candidate), and `coverage_80`: the share of (model, dataset)
pairs whose true accuracy lies in the predicted 80% interval. INB predicts a model's ImageNet
accuracy; `dataset_mean` knows each target's true mean over the models and predicts it for every
model (a ceiling-style reference that reads the hidden column; ties in LOVM's top 5 go to table order).

LOVM's own `dataset_domains.json` lacks a comma after one entry; `published import` (the
package's `read_dataset_texts`) reads it with that comma added and warns, and the bench records
the warning in the results (`repairs`). Other invalid JSON is refused.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The package of this checkout, not an installed one elsewhere.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import linked_copy, write_results  # noqa: E402

LOVM = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "lovm"
KEYS = ("top5_recall", "tau", "regret", "top1_hit")
# LOVM's paper, Table 2 (model ranking, text-only): ModelGPT's top-5 recall and Kendall tau.
MODELGPT_PUBLISHED = {"top5_recall": 0.461, "tau": 0.223}
# LOVM's paper (model prediction): the L1 of ModelGPT and of INB.
MODEL_PRED_PUBLISHED = {"modelgpt": 0.141, "inb": 0.220}


def lovm_scores(predicted: np.ndarray, truth: np.ndarray, k: int = 5) -> dict[str, float]:
    """LOVM's `get_acc` and `get_k_tau`, the chosen model's regret (points) and whether it is the best.

    Args:
        predicted, truth: (n_models,) scores and true accuracies in [0, 1]; models without a true
            figure must be left out by the caller.
    """
    from scipy.stats import kendalltau, rankdata

    pred_top = [int(i) for i in np.argsort(-predicted, kind="stable")[:k]]
    true_top = [int(i) for i in np.argsort(-truth, kind="stable")[:k]]
    common = [i for i in true_top if i in set(pred_top)]
    tau = 0.0
    if len(common) > 2:
        # LOVM ranks both columns of the merged top-5s (pandas rank, descending) and casts to int.
        tau = float(kendalltau(rankdata(-truth[common]).astype(int), rankdata(-predicted[common]).astype(int)).statistic)
        tau = 0.0 if np.isnan(tau) else tau
    first = pred_top[0]
    return {"top5_recall": len(common) / k, "tau": tau, "regret": float(100 * (truth.max() - truth[first])),
            "top1_hit": float(first == int(np.argmax(truth)))}


def ceilings(pub: Any, j: int, similarity: np.ndarray, texts: list[np.ndarray | None], hidden: str,
             known: np.ndarray) -> dict[str, dict[str, float]]:
    """LOVM's scores of rankings that read the hidden column j (see the module docstring): upper bounds."""
    from mll_index.published.rule import (
        NEIGHBOUR_WEIGHTS, TEXT_WEIGHTS, PublishedRule, hidden_mask, standardise, strength_of,
    )
    from mll_index.published.store import rank_published

    truth = pub.accuracy[known, j].astype(np.float64)
    out: dict[str, dict[str, float]] = {}
    grid = [lovm_scores(rank_published(pub, similarity, domain=texts[0], description=texts[1], hidden=[hidden],
                                       rule=PublishedRule(b, g)).scores.mean(axis=1)[known], truth)
            for b in NEIGHBOUR_WEIGHTS for g in TEXT_WEIGHTS]
    out["oracle_weights"] = max(grid, key=lambda m: (m["top5_recall"], m["tau"]))
    names = pub.dataset_names
    visible = hidden_mask(names, pub.families, [hidden])
    z = standardise(np.where(visible[None, :], pub.accuracy, np.nan))
    strength, _ = strength_of(z, names, visible)
    residual = np.nan_to_num(z[:, visible]) - strength[:, None]
    u, _, _ = np.linalg.svd(residual - residual.mean(axis=0), full_matrices=False)
    target = standardise(pub.accuracy[:, [j]])[:, 0]
    for k in (2, 4):
        basis = np.column_stack([np.ones(len(strength)), strength, u[:, :k]])
        coef, *_ = np.linalg.lstsq(basis[known], target[known], rcond=None)
        out[f"oracle_low_rank_{k}"] = lovm_scores((basis @ coef)[known], truth)
    columns = [lovm_scores(np.nan_to_num(pub.accuracy[known, k].astype(np.float64), nan=-1.0), truth)
               for k in np.where(visible)[0]]
    out["oracle_dataset"] = max(columns, key=lambda m: (m["top5_recall"], m["tau"]))
    return out


def lovm_l1(predicted: np.ndarray, truth: np.ndarray, k: int = 5) -> float:
    """LOVM's `get_l1`: |mean of (predicted - truth)| over the k models predicted best (ties: table order).

    Args:
        predicted, truth: (n_models,) accuracies as fractions; models without a true figure left out.
    """
    top = np.argsort(-predicted, kind="stable")[:k]
    return float(abs(np.mean(predicted[top] - truth[top])))


def model_pred(pub: Any, exclude: list[str], inb_column: str | None, nodes: int) -> dict[str, Any]:
    """LOVM's accuracy-prediction task (see the module docstring): per target and mean, for mll-index,
    INB and the dataset-mean reference."""
    from mll_index.published.accuracy import fit_accuracy_model, predict_published_accuracy
    from mll_index.published.store import published_evidence

    names = pub.dataset_names
    text_vectors = [pub.text_vectors.get(f) for f in ("domain", "description")]
    per: dict[str, dict[str, dict[str, float]]] = {"mll_index": {}, "inb": {}, "dataset_mean": {}}
    pairs: dict[str, list[bool]] = {}
    notes: dict[str, Any] = {}
    for j, dataset in enumerate(names):
        known = ~np.isnan(pub.accuracy[:, j])
        if known.sum() < 5:
            continue
        truth = pub.accuracy[known, j].astype(np.float64)
        model = fit_accuracy_model(pub.accuracy, names, pub.families, pub.class_vectors, pub.class_dataset,
                                   text_vectors, hidden=[dataset])
        evidence = published_evidence(pub, pub.class_vectors[pub.class_dataset == j], nodes, hidden=[dataset])
        texts = [tv[j] if tv is not None and np.any(tv[j]) else None for tv in text_vectors]
        pred = predict_published_accuracy(pub, evidence.similarity, pub.class_vectors[pub.class_dataset == j],
                                          domain=texts[0], description=texts[1],
                                          hidden=[dataset], model=model)
        if pred is None:
            notes[dataset] = model.about
            continue
        guesses = {"mll_index": pred.estimate[known]}
        if inb_column is not None:
            guesses["inb"] = np.nan_to_num(pub.accuracy[known, names.index(inb_column)].astype(np.float64), nan=0.0)
        guesses["dataset_mean"] = np.full(len(truth), truth.mean())
        for method, guess in guesses.items():
            per[method][dataset] = {"l1": round(lovm_l1(guess, truth), 4),
                                    "mae": round(float(np.mean(np.abs(guess - truth))), 4)}
        inside = (truth >= pred.low[known] - 1e-9) & (truth <= pred.high[known] + 1e-9)
        pairs[dataset] = inside.tolist()
        per["mll_index"][dataset].update({"coverage_80": round(float(inside.mean()), 4),
                                          "level": round(pred.level, 4), "true_level": round(float(truth.mean()), 4),
                                          "low_confidence": pred.low_confidence,
                                          "predictor": "neighbours" if model.matched else "fallback"})
    out: dict[str, Any] = {}
    for method, rows in per.items():
        if not rows:
            continue
        targets = [d for d in rows if d not in exclude]
        figures = {"l1": round(float(np.mean([rows[d]["l1"] for d in targets])), 4),
                   "mae": round(float(np.mean([rows[d]["mae"] for d in targets])), 4),
                   "l1_per_dataset": {d: rows[d]["l1"] for d in targets},
                   "mae_per_dataset": {d: rows[d]["mae"] for d in targets},
                   "with_excluded": {"l1": round(float(np.mean([r["l1"] for r in rows.values()])), 4),
                                     "mae": round(float(np.mean([r["mae"] for r in rows.values()])), 4),
                                     "targets": len(rows)},
                   "coverage_80": None}
        if method == "mll_index":
            figures["coverage_80"] = round(float(np.mean([x for d in targets for x in pairs[d]])), 4)
            figures["coverage_80_per_dataset"] = {d: rows[d]["coverage_80"] for d in targets}
            figures["details"] = {d: {k: rows[d][k] for k in ("level", "true_level", "low_confidence", "predictor")}
                                  for d in targets}
        out[method] = figures
    return {**out.pop("mll_index"), **out, "published": MODEL_PRED_PUBLISHED, "no_prediction": notes}


def model_pred_markdown(figures: dict[str, Any]) -> list[str]:
    """The Markdown section of `model_pred`: per target, then the means."""
    inb, mean = figures.get("inb"), figures["dataset_mean"]
    md = ["", "## Accuracy prediction (LOVM's `model_pred`)", "",
          "LOVM's L1 (|mean error| of the 5 models predicted best, acc1 as a fraction), the mean absolute "
          "error over every model, and the share of (model, dataset) pairs inside mll-index's 80% interval.", "",
          "| dataset | mll-index L1 | MAE | 80% coverage | level (pred / true) | INB L1 | INB MAE | "
          "dataset mean L1 | dataset mean MAE |", "|---|---|---|---|---|---|---|---|---|"]
    for d, l1 in figures["l1_per_dataset"].items():
        detail = figures["details"][d]
        flag = " (low confidence)" if detail["low_confidence"] else ""
        md.append(f"| {d} | {l1:.3f} | {figures['mae_per_dataset'][d]:.3f} | "
                  f"{figures['coverage_80_per_dataset'][d]:.0%} | {detail['level']:.3f} / {detail['true_level']:.3f}"
                  f"{flag} | " + (f"{inb['l1_per_dataset'][d]:.3f} | {inb['mae_per_dataset'][d]:.3f} | " if inb else
                                  "- | - | ") + f"{mean['l1_per_dataset'][d]:.3f} | {mean['mae_per_dataset'][d]:.3f} |")
    md += ["", "| method | L1 (LOVM) | MAE | 80% coverage | L1, excluded datasets as targets too |", "|---|---|---|---|---|",
           f"| mll-index | **{figures['l1']:.3f}** | **{figures['mae']:.3f}** | {figures['coverage_80']:.1%} | "
           f"{figures['with_excluded']['l1']:.3f} |"]
    if inb:
        md.append(f"| INB | {inb['l1']:.3f} | {inb['mae']:.3f} | - | {inb['with_excluded']['l1']:.3f} |")
    md += [f"| dataset mean (reads the hidden column) | {mean['l1']:.3f} | {mean['mae']:.3f} | - | "
           f"{mean['with_excluded']['l1']:.3f} |",
           f"| ModelGPT (LOVM's paper) | {MODEL_PRED_PUBLISHED['modelgpt']:.3f} | - | - | - |",
           f"| INB (LOVM's paper, imagenet1k a target too) | {MODEL_PRED_PUBLISHED['inb']:.3f} | - | - | - |"]
    return md


class RepairLog(logging.Handler):
    """Collects the package's warnings about repaired text files (`read_dataset_texts`) for the results."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.repairs: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "missing comma" in record.getMessage():
            self.repairs.append(record.getMessage())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("indexes/default"))
    parser.add_argument("--results", type=Path, default=LOVM / "eval_table.csv")
    parser.add_argument("--classnames", type=Path, nargs="+", default=[LOVM / "classnames"])
    parser.add_argument("--domains", type=Path, default=LOVM / "dataset_domains.json", help="'none': no domains")
    parser.add_argument("--descriptions", type=Path, default=LOVM / "dataset_tasks.json", help="'none': none")
    parser.add_argument("--mapping", type=Path, default=None, help="column -> class-name key and family")
    parser.add_argument("--exclude", nargs="*", default=["imagenet1k"], help="datasets that are never targets")
    parser.add_argument("--nodes", type=int, default=5, help="benchmark classes matched per class")
    parser.add_argument("--name", default="published_lovm")
    args = parser.parse_args()
    domains = None if str(args.domains) == "none" else args.domains
    descriptions = None if str(args.descriptions) == "none" else args.descriptions

    from mll_index.index.embed import EmbeddingCache, embedder_for
    from mll_index.index.node_index import load_index
    from mll_index.published.rule import calibrate_rule
    from mll_index.published.store import import_published, open_published, published_evidence, rank_published

    embedder = embedder_for(load_index(args.index).embedder)
    cache = EmbeddingCache.default()
    repair_log = RepairLog()
    logging.getLogger("mll_index.published.table").addHandler(repair_log)
    repairs = repair_log.repairs
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        index = linked_copy(args.index, folder / "index", leave_out=("published", ".lock"))
        summary = import_published(index, args.results, args.classnames, mapping=args.mapping, domains=domains,
                                   descriptions=descriptions, embedder=embedder, cache=cache)
        pub = open_published(index)
    names, families = pub.dataset_names, pub.families
    text_vectors = [pub.text_vectors.get(f) for f in ("domain", "description")]
    inb_column = next((c for c in ("imagenet1k", "ImageNet 1k") if c in names), None)
    results: dict[str, Any] = {}
    bounds: dict[str, list[dict[str, float]]] = {}
    fallback_tasks: dict[str, Any] = {}
    excluded: dict[str, Any] = {}   # the excluded datasets scored too, for LOVM's published convention
    for j, dataset in enumerate(names):
        truth_all = pub.accuracy[:, j].astype(np.float64)
        known = ~np.isnan(truth_all)
        if known.sum() < 5:
            continue
        rule = calibrate_rule(pub.accuracy, names, families, pub.class_vectors, pub.class_dataset, text_vectors,
                              hidden=[dataset])
        evidence = published_evidence(pub, pub.class_vectors[pub.class_dataset == j], args.nodes, hidden=[dataset])
        texts = [tv[j] if tv is not None and np.any(tv[j]) else None for tv in text_vectors]
        ranking = rank_published(pub, evidence.similarity, domain=texts[0], description=texts[1], hidden=[dataset],
                                 rule=rule)
        scores = ranking.scores.mean(axis=1)
        truth = truth_all[known]
        row = {k: round(v, 4) for k, v in lovm_scores(scores[known], truth).items()}
        if inb_column is not None:
            inb = pub.accuracy[:, names.index(inb_column)].astype(np.float64)
            row["inb"] = {k: round(v, 4) for k, v in lovm_scores(np.nan_to_num(inb[known], nan=-1.0), truth).items()}
        order = np.argsort(-np.where(known, scores, -np.inf), kind="stable")
        row["chosen"] = pub.model_ids[int(order[0])]
        row["chosen_acc"] = round(float(truth_all[order[0]]), 4)
        row["oracle_acc"] = round(float(truth.max()), 4)
        row["rule"] = {"neighbour_weight": rule.neighbour_weight, "text_weight": rule.text_weight}
        row["neighbours"] = {names[k]: round(float(ranking.weights[k]), 3)
                             for k in np.argsort(-ranking.weights, kind="stable")[:3] if ranking.weights[k] > 0}
        fell = [r for r in ranking.reasons if r is not None]
        row["classes_fallen_back"] = f"{len(fell)}/{len(ranking.reasons)}"
        if dataset in args.exclude:
            excluded[dataset] = row
            continue
        for kind, scored in ceilings(pub, j, evidence.similarity, texts, dataset, known).items():
            bounds.setdefault(kind, []).append(scored)
        if ranking.fallback or fell:
            fallback_tasks[dataset] = {"all_classes": ranking.fallback, "classes": f"{len(fell)}/{len(ranking.reasons)}",
                                       "why": list(dict.fromkeys(fell))[:3]}
        results[dataset] = row
    mean = {k: round(float(np.mean([r[k] for r in results.values()])), 4) for k in KEYS}
    mean_inb = {k: round(float(np.mean([r["inb"][k] for r in results.values()])), 4) for k in KEYS} \
        if inb_column else None
    every = list(results.values()) + list(excluded.values())
    mean_every = {k: round(float(np.mean([r[k] for r in every])), 4) for k in KEYS}
    mean_every_inb = {k: round(float(np.mean([r["inb"][k] for r in every])), 4) for k in KEYS} \
        if inb_column else None
    mean_acc = {"chosen_acc": round(float(np.mean([r["chosen_acc"] for r in results.values()])), 4),
                "oracle_acc": round(float(np.mean([r["oracle_acc"] for r in results.values()])), 4)}
    wins = losses = 0
    if inb_column:
        inb_acc = pub.accuracy[int(np.nanargmax(pub.accuracy[:, names.index(inb_column)])), :]
        mean_acc["inb_acc"] = round(float(np.mean([inb_acc[names.index(d)] for d in results])), 4)
        wins = sum(r["chosen_acc"] > round(float(inb_acc[names.index(d)]), 4) for d, r in results.items())
        losses = sum(r["chosen_acc"] < round(float(inb_acc[names.index(d)]), 4) for d, r in results.items())
    md = [f"# Selection from published results, LOVM protocol ({args.results.name})\n",
          f"{len(pub.models)} models, {len(names)} datasets ({', '.join(summary['left_out']) or 'none'} left out: no "
          f"class names); targets: {len(results)} (excluded: {', '.join(args.exclude) or 'none'}). Each target's "
          f"column is hidden; the rule's weights are chosen by leave-one-dataset-out on the others. "
          f"INB = {inb_column or 'none'}'s best model. Chosen beats INB's model on {wins} datasets, loses on {losses}.\n",
          "| dataset | top-5 recall | tau | regret (pts) | top-1 | INB recall | INB tau | INB regret | chosen | "
          "weights (nb, text) | neighbours | classes fallen back |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d, r in results.items():
        inb = r.get("inb", {k: float("nan") for k in KEYS})
        md.append(f"| {d} | {r['top5_recall']:.1f} | {r['tau']:+.2f} | {r['regret']:.1f} | {int(r['top1_hit'])} | "
                  f"{inb['top5_recall']:.1f} | {inb['tau']:+.2f} | {inb['regret']:.1f} | {r['chosen']} | "
                  f"{r['rule']['neighbour_weight']}, {r['rule']['text_weight']} | "
                  + ", ".join(f"{k} {v}" for k, v in r["neighbours"].items()) + f" | {r['classes_fallen_back']} |")
    md += ["", "| method | top-5 recall | tau | regret (pts) | top-1 hits | mean chosen acc |", "|---|---|---|---|---|---|",
           f"| mll-index | **{mean['top5_recall']:.3f}** | **{mean['tau']:.3f}** | **{mean['regret']:.2f}** | "
           f"{mean['top1_hit']:.3f} | {mean_acc['chosen_acc']:.4f} |"]
    if mean_inb:
        md.append(f"| INB | {mean_inb['top5_recall']:.3f} | {mean_inb['tau']:.3f} | {mean_inb['regret']:.2f} | "
                  f"{mean_inb['top1_hit']:.3f} | {mean_acc['inb_acc']:.4f} |")
    md += [f"| ModelGPT (LOVM's paper) | {MODELGPT_PUBLISHED['top5_recall']:.3f} | {MODELGPT_PUBLISHED['tau']:.3f} | "
           "- | - | - |", f"| oracle | 1.000 | 1.000 | 0.00 | 1.000 | {mean_acc['oracle_acc']:.4f} |"]
    ceiling = {kind: {k: round(float(np.mean([m[k] for m in rows])), 4) for k in ("top5_recall", "tau", "regret")}
               for kind, rows in bounds.items()}
    md += ["", "Ceilings: rankings that read the hidden column (see the module docstring), top-5 recall / tau / "
           "regret: " + "; ".join(f"{kind} {c['top5_recall']:.3f} / {c['tau']:.3f} / {c['regret']:.2f}"
                                  for kind, c in ceiling.items()) + "."]
    if excluded and mean_every_inb:
        md += ["", f"With the excluded datasets as targets too ({', '.join(excluded)}; {len(every)} targets, the "
               f"convention of LOVM's published INB figures 0.452 / 0.177): mll-index {mean_every['top5_recall']:.3f} / "
               f"{mean_every['tau']:.3f} / {mean_every['regret']:.2f} points, INB {mean_every_inb['top5_recall']:.3f} / "
               f"{mean_every_inb['tau']:.3f} / {mean_every_inb['regret']:.2f} points."]
    prediction = model_pred(pub, args.exclude, inb_column, args.nodes)
    md += model_pred_markdown(prediction)
    if repairs:
        md += ["", "Repairs: " + "; ".join(repairs)]
    figures = {"datasets": results, "mean": {**mean, "inb": mean_inb}, "mean_accuracy": mean_acc,
               "wins_over_inb": wins, "losses_to_inb": losses, "ceilings": ceiling, "modelgpt_published": MODELGPT_PUBLISHED,
               "fallback_tasks": fallback_tasks, "excluded": args.exclude, "excluded_targets": excluded,
               "mean_with_excluded": {**mean_every, "inb": mean_every_inb}, "left_out": summary["left_out"],
               "rule_at_import": summary["rule"], "model_pred": prediction,
               "accuracy_model_at_import": summary["accuracy_model"], "nodes": args.nodes, "repairs": repairs,
               "inputs": {"results": str(args.results), "classnames": [str(c) for c in args.classnames],
                          "domains": str(args.domains), "descriptions": str(args.descriptions)}}
    write_results(args.name, figures, "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
