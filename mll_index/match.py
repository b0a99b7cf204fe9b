"""Match class names to graph nodes.

Methods (compared in bench/match_imagenet.py):
    lemma     exact lemma lookup, WordNet sense order (no embedding);
    name      cosine of the bare name's embedding to the node embeddings;
    captions  cosine of the class's expanded captions (pooled) to the node embeddings;
    combined  captions + a bonus where the name is a lemma of the node (more for its first
              senses) + a small prior against non-visual senses (data/match_settings.json).
The default is `combined`, the best on ImageNet's class names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import numpy as np

from mll_index.captions import CaptionExpander, Concept, WordNetExpander, clean_class_names
from mll_index.embed import EmbeddingCache, TextEmbedder, embed_texts
from mll_index.errors import InputError
from mll_index.index import NodeIndex, embed_concept_captions

MatchMethod = Literal["lemma", "name", "captions", "combined"]
METHODS: tuple[str, ...] = ("lemma", "name", "captions", "combined")


@dataclass(frozen=True)
class Match:
    """One node matched to a class: its position in the node index, wnid, synset and score."""

    node: int
    wnid: str
    synset: str
    score: float
    lemma_match: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=1)
def match_settings() -> dict[str, Any]:
    """The scoring constants of the combined method (data/match_settings.json)."""
    return json.loads(resources.files("mll_index").joinpath("data/match_settings.json").read_text())


def _lexname_prior(index: NodeIndex) -> np.ndarray:
    """(n_nodes,) float32 additive prior by lexicographer file, cached on the index."""
    prior = getattr(index, "_lexname_prior", None)
    if prior is None:
        table = match_settings()["lexname_prior"]
        prior = np.array([table.get(index.graph.lexnames[r], 0.0) for r in index.graph.nodes], np.float32)
        index._lexname_prior = prior  # type: ignore[attr-defined]
    return prior


def _lemma_bonus(index: NodeIndex, name: str) -> dict[int, float]:
    """Node position -> bonus for nodes having `name` as a lemma, larger for earlier senses."""
    s = match_settings()
    pos = index.graph.node_position
    return {pos[r]: s["lemma_bonus"] + s["sense_bonus"] / (rank + 1)
            for rank, r in enumerate(index.graph.lookup(name))}


def embed_classes(names: Sequence[str], embedder: TextEmbedder, *, expander: CaptionExpander | None = None,
                  cache: EmbeddingCache | None = None, bare: bool = False) -> np.ndarray:
    """(n, d) float32 unit vectors of class names: the bare name, or its pooled expanded captions."""
    if bare:
        return embed_texts(embedder, list(names), cache)
    captions = (expander or WordNetExpander()).expand([Concept(name=n) for n in names])
    return embed_concept_captions(captions, embedder, cache)


def _to_matches(index: NodeIndex, positions: Sequence[int], scores: Sequence[float],
                lemma_nodes: set[int]) -> list[Match]:
    g = index.graph
    return [Match(int(p), g.wnids[g.nodes[p]], g.synsets[g.nodes[p]], round(float(s), 4), int(p) in lemma_nodes)
            for p, s in zip(positions, scores) if p >= 0]


def match_names(index: NodeIndex, names: Sequence[str], embedder: TextEmbedder | None = None, *, k: int = 5,
                method: MatchMethod = "combined", expander: CaptionExpander | None = None,
                cache: EmbeddingCache | None = None) -> list[list[Match]]:
    """Top-k nodes for each class name, best first.

    Args:
        index: the node index; `embedder` must be the one it was built with (not needed for `lemma`).
        names: class names as users type them; empty or duplicate names are an InputError.
        k: matches per name (fewer where the method finds fewer, e.g. `lemma`).
    Returns:
        one list of Match per name, in input order.
    """
    if method not in METHODS:
        raise InputError(f"unknown match method {method!r}; available: {list(METHODS)}")
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    names = clean_class_names(names)
    if method == "lemma":
        out = []
        for name in names:
            bonus = _lemma_bonus(index, name)
            ranked = sorted(bonus.items(), key=lambda kv: -kv[1])[:k]
            out.append(_to_matches(index, [p for p, _ in ranked], [b for _, b in ranked], set(bonus)))
        return out
    if embedder is None:
        raise InputError(f"match method {method!r} needs the index's text embedder")
    index.check_embedder(embedder)
    queries = embed_classes(names, embedder, expander=expander, cache=cache, bare=(method == "name"))
    if method in ("name", "captions"):
        scores, positions = index.search(queries, k)
        return [_to_matches(index, p, s, set()) for p, s in zip(positions, scores)]
    # combined: re-rank FAISS candidates together with every exact-lemma node.
    depth = min(index.size, k + match_settings()["candidates"])
    _, positions = index.search(queries, depth)
    prior = _lexname_prior(index)
    out = []
    for q, cand in zip(range(len(names)), positions):
        bonus = _lemma_bonus(index, names[q])
        pool = np.array(sorted(set(int(p) for p in cand if p >= 0) | set(bonus)), dtype=np.int64)
        score = np.asarray(index.vectors[pool]) @ queries[q] + prior[pool]
        score += np.array([bonus.get(int(p), 0.0) for p in pool], np.float32)
        best = np.argsort(-score, kind="stable")[:k]
        out.append(_to_matches(index, pool[best], score[best], set(bonus)))
    return out
