"""How well class names find their WordNet node: the 1000 ImageNet-1k classes, CLIP-style names.

    python bench/match_imagenet.py [--index indexes/default] [--classes ../shared/data/imagenet1k_classes.tsv]

Writes bench/results/match_imagenet.{json,md}: top-1 and top-5 accuracy of each match method
over the index's whole graph (the default visual node set, ~40,000 nodes), the time per name
(embedding included: no caption cache), and the commonest mistakes of the default method.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_results  # noqa: E402

from mll_index.embed import embedder_for  # noqa: E402
from mll_index.index import default_index_path, load_index  # noqa: E402
from mll_index.match import METHODS, match_names  # noqa: E402

DEFAULT_CLASSES = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet1k_classes.tsv"


def mistake_kind(graph, got: str, want: str, name: str) -> str:  # type: ignore[no-untyped-def]
    """Why a top-1 match is wrong: another sense of the same word, a relative in the tree, or elsewhere."""
    if graph.row(got) in graph.lookup(name, nodes_only=False):
        return "another sense of the same name"
    got_path, want_path = graph.hypernym_path(got), graph.hypernym_path(want)
    if got in want_path or want in got_path:
        return "hypernym or hyponym of the true node"
    if got_path[-2:-1] == want_path[-2:-1]:
        return "sibling of the true node"
    return "unrelated node"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=default_index_path())
    parser.add_argument("--classes", type=Path, default=DEFAULT_CLASSES)
    parser.add_argument("--limit", type=int, default=None, help="Only the first N classes (smoke run).")
    args = parser.parse_args()

    with open(args.classes, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))[: args.limit]
    names, truth = [r["openclip_name"] for r in rows], [r["wnid"] for r in rows]
    index = load_index(args.index)
    embedder = embedder_for(index.embedder)
    missing = [w for w in truth if index.graph.row_of.get(w) not in index.graph.node_position]
    methods, mistakes = {}, []
    for method in METHODS:
        started = time.perf_counter()
        # No caption cache: the time per name includes embedding its captions.
        # ImageNet names two classes 'missile': match each distinct name once.
        unique = list(dict.fromkeys(names))
        by_name = dict(zip(unique, match_names(index, unique, embedder, k=5, method=method, cache=None)))
        results = [by_name[n] for n in names]
        seconds = (time.perf_counter() - started) / len(names)
        top1 = sum(bool(r) and r[0].wnid == w for r, w in zip(results, truth)) / len(names)
        top5 = sum(w in [m.wnid for m in r] for r, w in zip(results, truth)) / len(names)
        methods[method] = {"top1": round(top1, 4), "top5": round(top5, 4), "seconds_per_name": round(seconds, 5)}
        print(f"{method:9s} top1 {top1:.3f} top5 {top5:.3f} {seconds * 1000:.1f} ms/name", flush=True)
        if method == "combined":
            mistakes = [(n, r[0].wnid if r else "", w) for n, r, w in zip(names, results, truth) if not r or r[0].wnid != w]
    default = methods["combined"]
    kinds = Counter(mistake_kind(index.graph, got, want, n) for n, got, want in mistakes if got)
    examples = [{"name": n, "got": index.graph.synsets[index.graph.row(g)] if g else None,
                 "want": index.graph.synsets[index.graph.row(w)]} for n, g, w in mistakes]
    figures = {
        "default_method": "combined",
        "top1": default["top1"], "top5": default["top5"], "seconds_per_name": default["seconds_per_name"],
        "nodes": index.size, "classes": len(names), "classes_not_in_graph": len(missing),
        "embedder": index.embedder.to_dict(), "methods": methods,
        "mistake_kinds": dict(kinds.most_common()), "mistakes": examples,
    }
    lines = ["# Matching ImageNet-1k class names to graph nodes", "",
             f"{len(names)} CLIP-style class names against {index.size} nodes ({index.embedder.describe()}).", "",
             "| method | top-1 | top-5 | ms per name |", "|---|---|---|---|"]
    lines += [f"| {m}{' (default)' if m == 'combined' else ''} | {v['top1']:.3f} | {v['top5']:.3f} | "
              f"{v['seconds_per_name'] * 1000:.1f} |" for m, v in methods.items()]
    lines += ["", "Mistakes of the default method, by kind:", ""]
    lines += [f"- {k}: {c}" for k, c in kinds.most_common()]
    lines += ["", "First mistakes:", ""] + [f"- {e['name']!r}: got {e['got']}, want {e['want']}" for e in examples[:25]]
    path = write_results("match_imagenet", figures, "\n".join(lines) + "\n")
    print(f"top1 {default['top1']:.3f} top5 {default['top5']:.3f} over {index.size} nodes -> {path}")


if __name__ == "__main__":
    main()
