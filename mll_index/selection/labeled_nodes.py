"""Step 1 of selection: each class to the labeled nodes most like it.

Every node of the graph is scored by `match.Matcher.node_scores` (the rule `mll-index match`
ranks by); a graph node without images that scores better than every labeled node lends its
score to its labeled relatives (see `match_labeled_nodes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from mll_index.index.match import ClassName, Matcher, read_class_name
from mll_index.index.node_index import NodeIndex
from mll_index.labels.store import LabelStore

MATCH_BLOCK = 256     # classes matched at once
GRAPH_STEP = 0.9      # score kept per hypernym/hyponym step when a match has no images
GRAPH_DEPTH = 2


@dataclass(frozen=True)
class NodeMatch:
    """A labeled node matched to a class: its wnid, synset, score and how it was reached.

    `via` is "direct" (scored itself) or "hyponym:<synset>" / "hypernym:<synset>" (a relative
    of the graph node that matched, which has no images).
    """

    wnid: str
    synset: str
    score: float
    via: str = "direct"


@dataclass
class LabeledNodes:
    """The store's node axis seen from the node index, computed once per opened selector.

    rows: (m,) taxonomy rows; positions: (m,) node-index positions, -1 where the index lacks
    the node; of_row: taxonomy row -> node-axis position; unlabeled: (n_index,) bool, the index's
    nodes without images (those that may lend their score).
    """

    rows: np.ndarray
    positions: np.ndarray
    of_row: dict[int, int]
    unlabeled: np.ndarray

    @cached_property
    def in_order(self) -> bool:
        """Whether labeled node j is node j of the index (then the index's scores need no gather)."""
        return bool(np.array_equal(self.positions, np.arange(len(self.positions))))


def labeled_nodes(index: NodeIndex, store: LabelStore) -> LabeledNodes:
    """Map the store's node axis onto the node index (see LabeledNodes)."""
    g = index.graph
    pos = g.node_position
    rows = np.array([g.row(w) for w in store.node_wnids], np.int64)
    positions = np.array([pos.get(int(r), -1) for r in rows], np.int64)
    unlabeled = np.ones(index.size, bool)
    unlabeled[positions[positions >= 0]] = False
    return LabeledNodes(rows, positions, {int(r): j for j, r in enumerate(rows)}, unlabeled)


def top_stable(score: np.ndarray, n: int) -> np.ndarray:
    """Positions of the n highest finite scores, best first, ties to the lower position (as a stable argsort).

    For the few (n <= 16) that selection asks for, n passes of argmax (which returns the first
    of equal maxima) beat a partition of the whole row several times over.
    """
    if n <= 16 and n < len(score):
        work = np.array(score, dtype=np.float64 if score.dtype == np.float64 else np.float32)
        work[np.isnan(work)] = -np.inf          # argmax would take a NaN for the maximum
        picked = []
        for _ in range(n):
            j = int(np.argmax(work))
            if not np.isfinite(work[j]):
                break
            picked.append(j)
            work[j] = -np.inf
        order = np.array(picked, np.int64)
    elif n >= len(score):
        order = np.argsort(-score, kind="stable")
    else:
        kth = np.partition(score, len(score) - n)[len(score) - n]
        cand = np.flatnonzero(score >= kth)
        order = cand[np.argsort(-score[cand], kind="stable")][:n]
    order = order[:n]
    return order[np.isfinite(score[order])]


def match_labeled_nodes(matcher: Matcher, store: LabelStore, labeled: LabeledNodes, names: Sequence[str],
                        queries: np.ndarray, n: int = 5) -> list[list[NodeMatch]]:
    """The n best labeled nodes of each class (see the module docstring of `mll_index.selection.selector`, step 1).

    Every node is scored by `match.Matcher.node_scores`, the rule `mll-index match` ranks by.

    Args:
        matcher: the class-to-node scoring over the node index.
        store, labeled: the labels and their node axis mapped onto the index (`labeled_nodes`).
        names: the class names (as users wrote them).
        queries: (len(names), d) unit class embeddings from the index's embedder.
    Returns:
        Per class, up to n NodeMatch, best first.
    """
    read = [read_class_name(name) for name in names]
    queries = np.asarray(queries, np.float32)
    out: list[list[NodeMatch]] = []
    # In blocks, so that a batch of thousands of classes never holds (n_classes x n_nodes) scores at once.
    for s in range(0, len(names), MATCH_BLOCK):
        out += _match_block(matcher, store, labeled, read[s:s + MATCH_BLOCK], queries[s:s + MATCH_BLOCK], n)
    return out


def _match_block(matcher: Matcher, store: LabelStore, labeled: LabeledNodes, names: Sequence[ClassName],
                 queries: np.ndarray, n: int) -> list[list[NodeMatch]]:
    index = matcher.index
    g = index.graph
    scores = matcher.node_scores(queries, names)                  # (n_q, n_index)
    inside = labeled.positions >= 0
    if len(labeled.positions) == index.size and labeled.in_order:
        direct = scores                                           # every node is labeled, in index order
    else:
        direct = np.full((len(names), len(labeled.rows)), -np.inf, np.float32)
        direct[:, inside] = scores[:, labeled.positions[inside]]
    depth = min(index.size, n + int(matcher.settings["candidates"]))
    out = []
    for q in range(len(names)):
        score = direct[q].copy()
        via: dict[int, str] = {}
        # Graph nodes with no images that match the class better than every labeled node lend
        # their score to their labeled relatives: the class is about them.
        best_direct = float(score.max()) if len(score) else -np.inf
        lenders = np.flatnonzero((scores[q] > best_direct) & labeled.unlabeled)
        if len(lenders) > depth:
            lenders = lenders[np.argpartition(-scores[q, lenders], depth - 1)[:depth]]
        for p in lenders[np.argsort(-scores[q, lenders], kind="stable")]:
            row, s = int(g.nodes[p]), float(scores[q, p])
            for relation, steps in (("hyponym", g.hyponyms), ("hypernym", g.hypernyms)):
                frontier, seen = [row], {row}
                for d in range(1, GRAPH_DEPTH + 1):
                    frontier = [c for r in frontier for c in steps[r] if c not in seen]
                    seen.update(frontier)
                    for c in frontier:
                        j = labeled.of_row.get(c)
                        if j is not None and s * GRAPH_STEP ** d > score[j]:
                            score[j] = s * GRAPH_STEP ** d
                            via[j] = f"{relation}:{g.synsets[row]}"
        out.append([NodeMatch(store.node_wnids[j], g.synsets[labeled.rows[j]], round(float(score[j]), 4),
                              via.get(int(j), "direct")) for j in top_stable(score, n)])
    return out


def lent_blindly(matcher: Matcher, name: str, match: NodeMatch) -> bool:
    """Whether a match's score was lent by a graph node the class name does not name.

    A lent score says "the class is about this unlabeled node, and this labeled node is its
    relative"; that holds when the name is a lemma of the lender (or a plural or joined spelling
    of one: "big cats" lending from big_cat.n.01 to tiger). When it is not, the lender matched
    on the embedding alone, and its score, however high, says nothing of the class ("stork"
    lent through Stradivarius to violin): such a match is weak.
    """
    if match.via == "direct":
        return False
    lender = match.via.split(":", 1)[1]
    synsets = matcher.index.graph.synsets
    named = {synsets[h.row] for h in matcher.lemma_hits(read_class_name(name)) if h.kind in ("exact", "variant")}
    return lender not in named
