"""How well class names find their WordNet node: LVIS's 1,203 category names as users type them.

    python bench/match_lvis.py [--index indexes/default] [--compare-ref 3627811]

The development set of the combined matcher (data/match_settings.json): the LVIS v1 categories
whose synset is in the index's node set, underscores typed as spaces and parenthesised senses
kept ('bat (animal)'), scored against the synset LVIS assigns, overall and per frequency group
(f: frequent, c: common, r: rare); and bench/data/everyday_names.tsv, names built and checked
by hand. `--compare-ref` runs the matcher of another commit on the same names in the same run
(the speed comparison). Writes bench/results/match_lvis.{json,md}: top-1, top-5 and seconds per
name (embedding included: no caption cache) per method, the mistakes of the default method, and
the LVIS rows judged debatable (bench/data/lvis_debatable.tsv).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package, not an installed one

from common import write_results  # noqa: E402
from matching import median, run_methods, score_results  # noqa: E402

from mll_index.core.paths import default_index_path  # noqa: E402
from mll_index.index.embed import embedder_for  # noqa: E402
from mll_index.index.match import METHODS, match_names  # noqa: E402
from mll_index.index.node_index import load_index

HERE = Path(__file__).resolve().parent
DEFAULT_LVIS = HERE.parents[1] / "shared" / "data" / "lvis_v1_synsets.tsv"
EVERYDAY = HERE / "data" / "everyday_names.tsv"
DEBATABLE = HERE / "data" / "lvis_debatable.tsv"


def typed(name: str) -> str:
    """An LVIS name as a user types it: 'bat_(animal)' → 'bat (animal)'."""
    return " ".join(name.replace("_", " ").split())


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader((line for line in handle if not line.startswith("#")), delimiter="\t"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=default_index_path())
    parser.add_argument("--lvis", type=Path, default=DEFAULT_LVIS)
    parser.add_argument("--compare-ref", default=None, help="Also run the matcher of this git commit (speed, figures).")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs of each matcher, in turn (median).")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N names (smoke run).")
    args = parser.parse_args()

    rows = [r for r in read_tsv(args.lvis) if r["in_visual_node_set"] == "True"][: args.limit]
    names, truth, groups = [typed(r["name"]) for r in rows], [r["wnid"] for r in rows], [r["frequency"] for r in rows]
    index = load_index(args.index)
    g = index.graph
    embedder = embedder_for(index.embedder)
    embedder.encode(["warm up"])          # the model's load is not a per-name cost
    run = run_methods(index, names, embedder, args.repeats, args.compare_ref, args.index)
    methods, default, seconds = dict(run["answers"]), run["combined"], run["seconds"]
    other_seconds = run["ref_seconds"]
    for method in METHODS:
        methods[method] = score_results(methods[method], truth, groups, median(seconds[method]))
        print(f"{method:9s} top1 {methods[method]['top1']:.3f} top5 {methods[method]['top5']:.3f} "
              f"{methods[method]['seconds_per_name'] * 1000:.1f} ms/name", flush=True)
    assert default is not None
    figures = {"default_method": "combined", **methods["combined"], "names": len(names), "nodes": index.size,
               "embedder": index.embedder.to_dict(), "methods": methods, "repeats": args.repeats,
               "seconds_per_name_runs": [round(t / len(names), 5) for t in seconds["combined"]]}
    if args.compare_ref:
        figures["compared_with"] = {"ref": args.compare_ref,
                                    **score_results([run["ref_top5"][n] for n in names], truth, groups,
                                                  median(other_seconds)),
                                    "seconds_per_name_runs": [round(t / len(names), 5) for t in other_seconds]}
        figures["speed_ratio"] = round(figures["seconds_per_name"] / figures["compared_with"]["seconds_per_name"], 3)
        print(f"ref {args.compare_ref}: top1 {figures['compared_with']['top1']:.3f} "
              f"{figures['compared_with']['seconds_per_name'] * 1000:.1f} ms/name", flush=True)

    every = read_tsv(EVERYDAY)
    by_synset = {s: i for i, s in enumerate(g.synsets)}
    want = [g.wnids[by_synset[r["synset"]]] for r in every]
    answers = match_names(index, [r["name"] for r in every], embedder, k=5)
    figures["everyday"] = score_results([[m.wnid for m in a] for a in answers], want)
    figures["everyday"]["mistakes"] = [{"name": r["name"], "got": a[0].synset, "want": r["synset"]}
                                       for r, a, w in zip(every, answers, want) if a[0].wnid != w]

    debatable = {r["name"]: r["why"] for r in read_tsv(DEBATABLE)} if DEBATABLE.exists() else {}
    mistakes = []
    for r, name, res in zip(rows, names, default):
        if res[0].wnid != r["wnid"]:
            rank = next((i + 1 for i, m in enumerate(res) if m.wnid == r["wnid"]), None)
            mistakes.append({"name": name, "frequency": r["frequency"], "got": res[0].synset, "want": r["synset"],
                             "rank": rank, "debatable": debatable.get(name)})
    figures["mistakes"] = mistakes
    figures["debatable_mistakes"] = sum(m["debatable"] is not None for m in mistakes)

    f = figures["by_frequency"]
    lines = ["# Matching LVIS category names to graph nodes", "",
             f"{len(names)} LVIS v1 names in the node set, typed with spaces for underscores and parenthesised senses "
             f"kept, against {index.size} nodes ({index.embedder.describe()}). Development set of data/match_settings.json.",
             "", "| method | top-1 | top-5 | top-1 f | top-1 c | top-1 r | ms per name |", "|---|---|---|---|---|---|---|"]
    rows_md = list(methods.items())
    if "compared_with" in figures:
        rows_md.append((f"combined at {args.compare_ref}", figures["compared_with"]))
    for m, v in rows_md:
        bf = v["by_frequency"]
        lines.append(f"| {m}{' (default)' if m == 'combined' else ''} | {v['top1']:.3f} | {v['top5']:.3f} | "
                     f"{bf['f']['top1']:.3f} | {bf['c']['top1']:.3f} | {bf['r']['top1']:.3f} | "
                     f"{v['seconds_per_name'] * 1000:.1f} |")
    lines += ["", f"Frequency groups (default method): f {f['f']['top1']:.3f} / {f['f']['top5']:.3f}, "
              f"c {f['c']['top1']:.3f} / {f['c']['top5']:.3f}, r {f['r']['top1']:.3f} / {f['r']['top5']:.3f} (top-1 / top-5)."]
    if "speed_ratio" in figures:
        lines += [f"Time per name against {args.compare_ref}: {figures['speed_ratio']:.2f}x."]
    e = figures["everyday"]
    lines += ["", f"Everyday names (bench/data/everyday_names.tsv, {len(every)} names): top-1 {e['top1']:.3f}, "
              f"top-5 {e['top5']:.3f}; misses: " + (", ".join(f"{m['name']!r} → {m['got']} (want {m['want']})"
                                                        for m in e["mistakes"]) or "none") + "."]
    lines += ["", f"Mistakes of the default method: {len(mistakes)}, of which {figures['debatable_mistakes']} on rows "
              "judged debatable (bench/data/lvis_debatable.tsv).", "",
              "| name | group | got | LVIS | rank of LVIS's | debatable: why |", "|---|---|---|---|---|---|"]
    lines += [f"| {m['name']} | {m['frequency']} | {m['got']} | {m['want']} | {m['rank'] or '>5'} | {m['debatable'] or ''} |"
              for m in mistakes]
    path = write_results("match_lvis", figures, "\n".join(lines) + "\n")
    print(f"top1 {figures['top1']:.3f} top5 {figures['top5']:.3f} f {f['f']['top1']:.3f} c {f['c']['top1']:.3f} "
          f"r {f['r']['top1']:.3f} -> {path}")


if __name__ == "__main__":
    main()
