"""Tests of mll_index.index.match on the small session index (real model, real FAISS)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import EmbedderMismatchError, InputError
from mll_index.index import match as M
from mll_index.index.embed import EmbeddingCache, TextEmbedder, vector_space
from mll_index.index.node_index import NodeIndex

from tests.conftest import CRANE_BIRD, CRANE_MACHINE, GOLDEN_RETRIEVER, GOLDFISH, LAPTOP, PIZZA, POMERANIAN, TENCH, TIGER

EXPECTED = {"golden retriever": GOLDEN_RETRIEVER, "tench": TENCH, "laptop": LAPTOP, "Pomeranian": POMERANIAN,
            "goldfish": GOLDFISH}
NAMES = ["golden retriever", "tench", "laptop", "Pomeranian", "goldfish", "crane", "pizza", "tiger", "a red sports car"]


@pytest.fixture(scope="module")
def bf16_embedder() -> TextEmbedder:
    """The same model in bf16: vectors of the same dimension that do not agree to cosine 0.9999."""
    from mll_index.index.embed import load_embedder

    return load_embedder("minilm@bf16")


@pytest.mark.parametrize("method", ["combined", "captions", "name"])
def test_known_names_match_their_node_first(node_index: NodeIndex, embedder: TextEmbedder, method: str) -> None:
    results = M.match_names(node_index, list(EXPECTED), embedder, k=3, method=method)
    assert [r[0].wnid for r in results] == list(EXPECTED.values())


def test_combined_matches_carry_wnid_synset_score_and_lemma_flag(node_index: NodeIndex, embedder: TextEmbedder) -> None:
    (matches,) = M.match_names(node_index, ["golden retriever"], embedder, k=3)
    best = matches[0]
    assert best.wnid == GOLDEN_RETRIEVER and best.synset == "golden_retriever.n.01"
    assert best.lemma_match is True
    assert not any(m.lemma_match for m in matches[1:])
    assert node_index.graph.node_wnids[best.node] == GOLDEN_RETRIEVER
    assert best.to_dict() == {"node": best.node, "wnid": GOLDEN_RETRIEVER, "synset": "golden_retriever.n.01",
                              "score": best.score, "lemma_match": True}
    # the combined score adds the lemma bonus to the cosine
    s = M.match_settings()
    assert best.score > s["kind_bonus"]["exact"]


def test_combined_ranks_both_cranes_first(node_index: NodeIndex, embedder: TextEmbedder) -> None:
    (matches,) = M.match_names(node_index, ["crane"], embedder, k=4)
    assert {m.wnid for m in matches[:2]} == {CRANE_BIRD, CRANE_MACHINE}
    assert all(m.lemma_match for m in matches[:2])


def test_lemma_method_returns_senses_in_order_within_the_node_set(node_index: NodeIndex) -> None:
    (crane,) = M.match_names(node_index, ["crane"], None, k=10, method="lemma")
    # WordNet: crane.n.01 and n.02 are people, grus.n.01 a constellation: not in the node set.
    assert [m.synset for m in crane] == ["crane.n.04", "crane.n.05"]
    assert [m.wnid for m in crane] == [CRANE_MACHINE, CRANE_BIRD]
    assert all(m.lemma_match for m in crane)
    assert crane[0].score > crane[1].score
    (tiger,) = M.match_names(node_index, ["Tiger"], None, method="lemma")
    assert [m.wnid for m in tiger] == [TIGER]  # tiger.n.01 (a fierce person) is not a node
    (crane1,) = M.match_names(node_index, ["crane"], None, k=1, method="lemma")
    assert [m.wnid for m in crane1] == [CRANE_MACHINE]


def test_lemma_method_finds_nothing_for_unknown_names(node_index: NodeIndex) -> None:
    assert M.match_names(node_index, ["a red sports car", "crème brûlée"], method="lemma") == [[], []]


@pytest.mark.parametrize("method", M.METHODS)
@pytest.mark.parametrize("k", [1, 5, 500])
def test_each_method_returns_at_most_k_in_descending_order(node_index: NodeIndex, embedder: TextEmbedder,
                                                          method: str, k: int) -> None:
    results = M.match_names(node_index, NAMES, embedder, k=k, method=method)
    assert len(results) == len(NAMES)
    for matches in results:
        assert len(matches) <= min(k, node_index.size)
        scores = [m.score for m in matches]
        assert scores == sorted(scores, reverse=True)
        assert len({m.node for m in matches}) == len(matches)
        assert all(0 <= m.node < node_index.size for m in matches)
        assert all(m.wnid in set(node_index.graph.node_wnids) for m in matches)
    if method != "lemma":
        assert all(len(matches) == min(k, node_index.size) for matches in results)


def test_results_follow_input_order_and_pizza(node_index: NodeIndex, embedder: TextEmbedder) -> None:
    results = M.match_names(node_index, ["pizza", "tench"], embedder, k=1)
    assert [r[0].wnid for r in results] == [PIZZA, TENCH]


def test_match_through_an_embedding_cache(node_index: NodeIndex, embedder: TextEmbedder, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    cache.put_many(vector_space(embedder), ["seed"], embedder.encode(["seed"]))  # a non-empty cache
    first = M.match_names(node_index, list(EXPECTED), embedder, k=3, cache=cache)
    size = len(cache)
    assert size > 1
    second = M.match_names(node_index, list(EXPECTED), embedder, k=3, cache=cache)
    assert len(cache) == size
    assert first == second
    cache.close()


def test_embed_classes(embedder: TextEmbedder) -> None:
    bare = M.embed_classes(["tench", "laptop"], embedder, bare=True)
    pooled = M.embed_classes(["tench", "laptop"], embedder)
    assert bare.shape == pooled.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)
    assert np.sum(bare * embedder.encode(["tench", "laptop"]), axis=1).min() > 0.99999  # fp32, another batch
    assert float(bare[0] @ pooled[0]) > 0.9


# --- errors ---------------------------------------------------------------------------------

def test_mismatched_embedder_is_refused(node_index: NodeIndex, bf16_embedder: TextEmbedder) -> None:
    assert bf16_embedder.dim == node_index.dim and vector_space(bf16_embedder) != node_index.embedder.space
    for method in ("combined", "captions", "name"):
        with pytest.raises(EmbedderMismatchError) as info:
            M.match_names(node_index, ["tench"], bf16_embedder, method=method)  # type: ignore[arg-type]
        assert "bf16" in str(info.value) and "fp32" in str(info.value)


def test_openai_embedder_of_another_dimension_is_refused(node_index: NodeIndex) -> None:
    try:
        from tests.openai_server import OpenAITestServer
    except ImportError:
        from tests.openai_server import OpenAITestServer
    from mll_index.index.embed import load_embedder

    with OpenAITestServer(embed_dim=16) as server:
        other = load_embedder(f"openai:{server.base_url}#m")
        with pytest.raises(EmbedderMismatchError, match=r"dim 16"):
            M.match_names(node_index, ["tench"], other)
    assert len(server.requests) == 1  # the dimension probe only: nothing embedded before the check


def test_embedding_methods_need_an_embedder(node_index: NodeIndex) -> None:
    with pytest.raises(InputError, match="'combined' needs the index's text embedder"):
        M.match_names(node_index, ["tench"])


@pytest.mark.parametrize("method", ["fuzzy", "", "LEMMA"])
def test_unknown_method_lists_methods(node_index: NodeIndex, method: str) -> None:
    with pytest.raises(InputError, match=rf"unknown match method '{method}'.*'lemma', 'name', 'captions', 'combined'"):
        M.match_names(node_index, ["tench"], method=method)  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [0, -3])
def test_k_below_one(node_index: NodeIndex, k: int) -> None:
    with pytest.raises(InputError, match=rf"k must be at least 1, got {k}"):
        M.match_names(node_index, ["tench"], method="lemma", k=k)


def test_bad_names_are_refused(node_index: NodeIndex) -> None:
    with pytest.raises(InputError, match="class name 2 is empty"):
        M.match_names(node_index, ["tench", "  "], method="lemma")


@pytest.mark.parametrize("name", ["of the", "???", "(a) -- the", "  /  "])
def test_names_of_stop_words_or_punctuation_are_refused_naming_them(node_index: NodeIndex, name: str) -> None:
    with pytest.raises(InputError, match=rf"class name 2 \({re.escape(repr(' '.join(name.split())))}\) has no word to match"):
        M.match_names(node_index, ["tench", name], method="lemma")


@pytest.mark.parametrize("name", ["near", "far", "on", "up"])
def test_spatial_words_are_class_names_not_stop_words(node_index: NodeIndex, embedder: TextEmbedder, name: str) -> None:
    """KITTI's distance classes and switch states are named by words a sentence would skip."""
    results = M.match_names(node_index, ["tench", name], embedder, k=1)
    assert len(results) == 2 and len(results[1]) == 1


def test_repeated_names_are_each_answered(node_index: NodeIndex, embedder: TextEmbedder) -> None:
    results = M.match_names(node_index, ["tench", "TENCH", "laptop", "tench"], embedder, k=2)
    assert [r[0].wnid for r in results] == [TENCH, TENCH, LAPTOP, TENCH]
    assert results[0] == results[1] == results[3]


# --- senses: names as people type them, on an index of every visual sense of their words ----------

EVERYDAY = {"dog": "dog.n.01", "cat": "cat.n.01", "tiger": "tiger.n.02", "train": "train.n.01",
            "person": "person.n.01", "couch": "sofa.n.01", "knife": "knife.n.01", "frog": "frog.n.01",
            "helmet": "helmet.n.02", "stove": "stove.n.01", "mouse": "mouse.n.01", "horse": "horse.n.01",
            "bird": "bird.n.01", "chair": "chair.n.01", "table": "table.n.02", "car": "car.n.01", "cow": "cow.n.01",
            "fish": "fish.n.01", "shoe": "shoe.n.01", "window": "window.n.01", "pig": "hog.n.03", "toilet": "toilet.n.02",
            "bench": "bench.n.01", "glove": "glove.n.02", "drum": "drum.n.01", "curtain": "curtain.n.01",
            "lion": "lion.n.01", "whale": "whale.n.02"}
# WordNet's tagged uses favour the other sense (egg: 19 to 1 for the biological egg; lamp: 12 to 2 for
# any light source), and nothing in a bare name says otherwise: known misses, listed so that a fix shows.
MISSED = {"egg": "egg.n.02", "lamp": "lamp.n.02"}
SPELLED = {"dogs": "dog.n.01", "Dogs": "dog.n.01", "mice": "mouse.n.01", "golden_retrievers": "golden_retriever.n.01",
           "shower head": "showerhead.n.01", "shower-head": "showerhead.n.01", "teddy_bear": "teddy.n.01",
           "jack o lantern": "jack-o'-lantern.n.02", "hot-dog": "hotdog.n.02", "T-shirt": "jersey.n.03"}
SENSED = {"bat (animal)": "bat.n.01", "bat_(animal)": "bat.n.01", "salmon (food)": "salmon.n.03",
          "salmon (fish)": "salmon.n.01", "drum (musical instrument)": "drum.n.01", "chicken (animal)": "chicken.n.02",
          "chicken (food)": "chicken.n.01", "mouse (computer equipment)": "mouse.n.04", "crane (machine)": "crane.n.04",
          "crane, bird": "crane.n.05", "cooler (for food)": "cooler.n.01"}
HEADED = {"crane bird": "crane.n.05", "horse carriage": "carriage.n.02", "stop sign": "street_sign.n.01",
          "bass guitar": "bass_guitar.n.01"}


@pytest.fixture(scope="module")
def senses_index(tmp_path_factory: pytest.TempPathFactory, taxonomy, embedder: TextEmbedder) -> NodeIndex:  # type: ignore[no-untyped-def]
    """Every sense in the visual node set of the words above, the expected synsets, and their hypernyms
    in that set: a small part of the default index, where the senses compete as they do there."""
    from mll_index.index.embed import EmbeddingCache as Cache
    from mll_index.index.graph import recipe_node_set, resolve_node_set, wnid_node_set
    from mll_index.index.node_index import build_index

    visual = resolve_node_set(taxonomy, recipe_node_set("visual"))
    by_synset = {s: r for r, s in enumerate(taxonomy.synsets)}
    names = {**EVERYDAY, **MISSED, **SPELLED, **SENSED, **HEADED}
    rows = {by_synset[s] for s in names.values()} | {by_synset["sign.n.02"], by_synset["bird.n.01"]}
    for name in names:
        for word in M.read_class_name(name).words:
            rows |= set(visual.lookup(word))
    rows |= {h for r in list(rows) for h in taxonomy.hypernyms[r] if h in visual.node_position}
    root = tmp_path_factory.mktemp("senses")
    cache = Cache(root / "embeddings.sqlite")
    graph = resolve_node_set(taxonomy, wnid_node_set(taxonomy.wnids[r] for r in sorted(rows)))
    index = build_index(root / "index", graph, embedder, cache=cache)
    cache.close()
    return index


def _top_synsets(index: NodeIndex, embedder: TextEmbedder, names: dict[str, str]) -> dict[str, str]:
    return {n: r[0].synset for n, r in zip(names, M.match_names(index, list(names), embedder, k=3))}


@pytest.mark.parametrize("table", [EVERYDAY, SPELLED, SENSED, HEADED], ids=["everyday", "spelled", "sensed", "headed"])
def test_names_come_out_as_the_sense_people_mean(senses_index: NodeIndex, embedder: TextEmbedder,
                                                 table: dict[str, str]) -> None:
    got = _top_synsets(senses_index, embedder, table)
    assert {n: s for n, s in got.items() if s != table[n]} == {}


def test_known_misses_still_miss(senses_index: NodeIndex, embedder: TextEmbedder) -> None:
    got = _top_synsets(senses_index, embedder, MISSED)
    assert all(got[n] != s for n, s in MISSED.items()), "a known miss is fixed: move it to EVERYDAY"
    for name, want in MISSED.items():   # the sense people mean is still among the first matches
        (matches,) = M.match_names(senses_index, [name], embedder, k=3)
        assert want in [m.synset for m in matches]


def test_a_rare_sense_needs_evidence_in_the_name(senses_index: NodeIndex, embedder: TextEmbedder) -> None:
    # 'pin (non jewelry)': the ruled-out sense must not win; a bare 'crane' is the machine (WordNet's first).
    got = _top_synsets(senses_index, embedder, {"mouse": "", "mouse (animal)": "", "pin (non jewelry)": ""})
    assert got["mouse"] == got["mouse (animal)"] == "mouse.n.01"
    assert got["pin (non jewelry)"] != "pin.n.01"   # pin.n.01: a piece of jewelry


def test_node_scores_rank_what_match_names_returns(senses_index: NodeIndex, embedder: TextEmbedder) -> None:
    from mll_index.index.embed import embed_classes

    names = ["dog", "bat (animal)", "horse carriage", "dogs"]
    matcher = M.Matcher(senses_index)
    scores = matcher.node_scores(embed_classes(names, embedder), [M.read_class_name(n) for n in names])
    assert scores.shape == (len(names), senses_index.size) and scores.dtype == np.float32
    results = M.match_names(senses_index, names, embedder, k=4, matcher=matcher)
    for row, matches in zip(scores, results):
        assert [m.node for m in matches] == list(np.argsort(-row, kind="stable")[:4])
        np.testing.assert_allclose([m.score for m in matches], np.sort(row)[::-1][:4], atol=1e-4)


@pytest.mark.parametrize("name, words, sense, negated, alternatives", [
    ("bat_(animal)", ("bat",), ("animal",), (), ()),
    ("Golden  Retrievers", ("golden", "retrievers"), (), (), ()),
    ("pin (non jewelry)", ("pin",), (), ("jewelry",), ()),
    ("arctic (type of shoe)", ("arctic",), ("shoe",), (), ()),
    ("crane, bird", ("crane",), ("bird",), (), ()),
    ("baluster / handrail", ("baluster",), (), (), (("handrail",),)),
    ("Crème brûlée", ("creme", "brulee"), (), (), ()),
    ("(animal)", ("animal",), (), (), ()),
])
def test_read_class_name(name: str, words: tuple, sense: tuple, negated: tuple, alternatives: tuple) -> None:
    c = M.read_class_name(name)
    assert (c.words, c.sense_words, c.negated_words, c.alternatives) == (words, sense, negated, alternatives)
    assert c.text == " ".join(name.replace("_", " ").split())


def test_weak_matches_are_flagged(node_index: NodeIndex, embedder: TextEmbedder) -> None:
    matcher = M.Matcher(node_index)
    names = ["qwzx blorf vrrk", "狗", "tench"]
    results = M.match_names(node_index, names, embedder, k=1, matcher=matcher)
    assert [M.is_weak(matcher, n, r[0].score) for n, r in zip(names, results)] == [True, True, False]
