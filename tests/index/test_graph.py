"""Tests of mll_index.index.graph on the real WordNet 3.0 noun taxonomy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mll_index.core import paths
from mll_index.errors import IndexFormatError, InputError
from mll_index.index import graph as G

from tests.conftest import CRANE_BIRD, CRANE_MACHINE, DOG, GOLDEN_RETRIEVER, GOLDFISH, LAPTOP, PIZZA, TENCH


def tiny_graph() -> G.Graph:
    """A two-synset graph (entity > tench) built by hand, for cheap file-format tests."""
    return G.Graph(wnids=["n00001740", TENCH], synsets=["entity.n.01", "tench.n.01"],
                   lemmas=[["entity"], ["tench", "Tinca tinca"]], glosses=["that which exists", "a fish"],
                   lexnames=["noun.Tops", "noun.animal"], hypernyms=[[], [0]],
                   lexicon={"entity": [0], "tench": [1], "tinca tinca": [1]}, instances=[], nodes=[1],
                   node_set={"kind": "wnids", "value": "1 wnids"})


@pytest.fixture(scope="module")
def visual(taxonomy: G.Graph) -> G.Graph:
    return G.resolve_node_set(taxonomy, G.recipe_node_set("visual"))


# --- the taxonomy ---------------------------------------------------------------------------

def test_taxonomy_has_every_wordnet_noun_synset(taxonomy: G.Graph) -> None:
    assert len(taxonomy.wnids) == 82115
    assert len(taxonomy.synsets) == len(taxonomy.lemmas) == len(taxonomy.glosses) == 82115
    assert len(set(taxonomy.wnids)) == 82115
    assert taxonomy.nodes == []


def test_wnids_are_n_plus_8_digits(taxonomy: G.Graph) -> None:
    pattern = re.compile(r"^n\d{8}$")
    assert all(pattern.match(w) for w in taxonomy.wnids)
    assert G.wnid_of(1440764) == TENCH


def test_taxonomy_is_cached_in_the_hermetic_cache(taxonomy: G.Graph, hermetic_cache: Path) -> None:
    cached = hermetic_cache / "wordnet_taxonomy.json"
    assert paths.cache_dir() == hermetic_cache
    assert cached.is_file()
    again = G.load_taxonomy()  # from the JSON file, not nltk
    assert again.wnids == taxonomy.wnids
    assert len(again.lexicon) == len(taxonomy.lexicon)


def test_describe_tench(taxonomy: G.Graph) -> None:
    d = taxonomy.describe(TENCH)
    assert d["wnid"] == TENCH
    assert d["synset"] == "tench.n.01"
    assert d["lemmas"] == ["tench", "Tinca tinca"]
    assert "freshwater" in d["gloss"] and "Europe" in d["gloss"]
    assert d["lexname"] == "noun.animal"
    path = d["hypernym_path"]
    assert path[0] == "entity.n.01"
    assert path[-1] == "tench.n.01"
    assert "fish.n.01" in path and "cyprinid.n.01" in path
    assert d["children"] == []  # tench is a leaf
    assert d["in_node_set"] is False  # the bare taxonomy has no nodes


def test_hypernym_path_and_children(taxonomy: G.Graph) -> None:
    path = taxonomy.hypernym_path(GOLDEN_RETRIEVER)
    assert path[0] == taxonomy.wnids[taxonomy.synsets.index("entity.n.01")]
    assert path[-1] == GOLDEN_RETRIEVER
    assert DOG in path
    children = [taxonomy.synsets[taxonomy.row(w)] for w in taxonomy.children(DOG)]
    assert "puppy.n.01" in children and "hunting_dog.n.01" in children
    assert taxonomy.describe(DOG)["children"] == children


def test_unknown_wnid_is_input_error_naming_it(taxonomy: G.Graph) -> None:
    with pytest.raises(InputError, match="n99999999"):
        taxonomy.describe("n99999999")
    with pytest.raises(InputError, match=r"'tench'.*n \+ 8 digits"):
        taxonomy.row("tench")


# --- lookup ---------------------------------------------------------------------------------

def test_lookup_is_in_sense_order(taxonomy: G.Graph) -> None:
    rows = taxonomy.lookup("crane", nodes_only=False)
    assert [taxonomy.synsets[r] for r in rows] == ["crane.n.01", "crane.n.02", "grus.n.01", "crane.n.04", "crane.n.05"]
    assert taxonomy.wnids[rows[3]] == CRANE_MACHINE
    assert taxonomy.wnids[rows[4]] == CRANE_BIRD


@pytest.mark.parametrize("name", ["Golden Retriever", "golden_retriever", "GOLDEN-retriever", "  golden   retriever "])
def test_lookup_folds_case_underscores_and_hyphens(taxonomy: G.Graph, name: str) -> None:
    assert [taxonomy.wnids[r] for r in taxonomy.lookup(name, nodes_only=False)] == [GOLDEN_RETRIEVER]


def test_lookup_folds_accents(taxonomy: G.Graph) -> None:
    plain = taxonomy.lookup("creme brulee", nodes_only=False)
    assert [taxonomy.synsets[r] for r in plain] == ["creme_brulee.n.01"]
    assert taxonomy.lookup("Crème Brûlée", nodes_only=False) == plain
    assert G.normalize_name("Crème_Brûlée") == "creme brulee"


def test_lookup_unknown_and_nodes_only(taxonomy: G.Graph, small_graph: G.Graph) -> None:
    assert taxonomy.lookup("no such thing at all", nodes_only=False) == []
    assert taxonomy.lookup("crane") == []  # the bare taxonomy has no nodes
    assert [small_graph.wnids[r] for r in small_graph.lookup("crane")] == [CRANE_MACHINE, CRANE_BIRD]


# --- node sets ------------------------------------------------------------------------------

def test_visual_recipe_node_set(visual: G.Graph, taxonomy: G.Graph) -> None:
    assert 35_000 <= len(visual.nodes) <= 45_000
    in_set = set(visual.node_wnids)
    assert {TENCH, GOLDFISH, LAPTOP, PIZZA, GOLDEN_RETRIEVER, CRANE_BIRD, CRANE_MACHINE} <= in_set
    assert visual.node_set == {"kind": "recipe", "value": "visual"}
    assert visual.describe(TENCH)["in_node_set"] is True


def test_visual_recipe_excludes_instances_and_abstractions(visual: G.Graph, taxonomy: G.Graph) -> None:
    assert taxonomy.instances, "WordNet has instance synsets (named places and people)"
    assert not set(visual.nodes) & set(taxonomy.instances)
    paris = taxonomy.wnids[taxonomy.synsets.index("paris.n.01")]
    assert paris not in set(visual.node_wnids)
    freedom = taxonomy.wnids[taxonomy.synsets.index("freedom.n.01")]
    assert freedom not in set(visual.node_wnids)


def test_unknown_recipe_lists_available() -> None:
    with pytest.raises(InputError, match=r"'nope'.*visual"):
        G.recipe_node_set("nope")


def test_wnid_node_set(taxonomy: G.Graph) -> None:
    ns = G.wnid_node_set([f" {TENCH} ", LAPTOP, TENCH, ""])
    assert ns.wnids == (TENCH, LAPTOP)
    g = G.resolve_node_set(taxonomy, ns)
    assert sorted(g.node_wnids) == sorted([TENCH, LAPTOP])
    assert g.node_set == {"kind": "wnids", "value": "2 wnids"}
    assert g.wnids is taxonomy.wnids  # the same taxonomy, another node set


def test_wnid_node_set_unknown_wnid_names_it(taxonomy: G.Graph) -> None:
    with pytest.raises(InputError, match="n99999999"):
        G.resolve_node_set(taxonomy, G.wnid_node_set([TENCH, "n99999999"]))


@pytest.mark.parametrize("bad", ["tench", "n0144076", "n014407645", "N01440764"])
def test_wnid_node_set_malformed_names_it(bad: str) -> None:
    with pytest.raises(InputError, match=re.escape(bad)):
        G.wnid_node_set([TENCH, bad])


def test_wnid_node_set_empty() -> None:
    with pytest.raises(InputError, match="empty"):
        G.wnid_node_set(["", "  "])


def test_folder_node_set(tmp_path: Path, taxonomy: G.Graph) -> None:
    for name in (TENCH, GOLDFISH, "not_a_wnid"):
        (tmp_path / name).mkdir()
    (tmp_path / "n01443537.txt").write_text("a file, not a folder")
    ns = G.folder_node_set(tmp_path)
    assert ns.kind == "folder"
    assert ns.wnids == (TENCH, GOLDFISH)
    g = G.resolve_node_set(taxonomy, ns)
    assert sorted(g.node_wnids) == sorted([TENCH, GOLDFISH])
    assert g.node_set == {"kind": "folder", "value": str(tmp_path)}


def test_folder_node_set_without_wnid_folders(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    with pytest.raises(InputError, match=re.escape(str(tmp_path))):
        G.folder_node_set(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        G.folder_node_set(tmp_path / "missing")


def test_folder_node_set_unknown_wnid_folder(tmp_path: Path, taxonomy: G.Graph) -> None:
    (tmp_path / TENCH).mkdir()
    (tmp_path / "n99999999").mkdir()
    with pytest.raises(InputError, match=r"n99999999") as info:
        G.resolve_node_set(taxonomy, G.folder_node_set(tmp_path))
    assert str(tmp_path) in str(info.value)


# --- save / load ----------------------------------------------------------------------------

def test_save_load_round_trip(small_graph: G.Graph, tmp_path: Path) -> None:
    path = tmp_path / "sub" / "graph.json"
    G.save_graph(small_graph, path)
    loaded = G.load_graph(path)
    assert loaded.wnids == small_graph.wnids
    assert loaded.synsets == small_graph.synsets
    assert loaded.nodes == small_graph.nodes
    assert loaded.lexicon == small_graph.lexicon
    assert loaded.hypernyms == small_graph.hypernyms
    assert loaded.instances == small_graph.instances
    assert loaded.node_set == small_graph.node_set
    assert loaded.describe(TENCH) == small_graph.describe(TENCH)
    assert [p.name for p in path.parent.iterdir()] == ["graph.json"]  # no temporary file left


def test_truncated_graph_is_index_format_error_naming_file(tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    G.save_graph(tiny_graph(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match=re.escape(str(path))):
        G.load_graph(path)


@pytest.mark.parametrize("content", [b"\x00\xff garbage", b"[1, 2, 3]", b"null", b'{"graph_format_version": 1}',
                                     b'"a string"'])
def test_garbage_graph_is_index_format_error_naming_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "graph.json"
    path.write_bytes(content)
    with pytest.raises(IndexFormatError, match=re.escape(str(path))):
        G.load_graph(path)


def test_graph_of_another_format_version(tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    G.save_graph(tiny_graph(), path)
    data = json.loads(path.read_text())
    data["graph_format_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(IndexFormatError, match=r"graph\.json.*99"):
        G.load_graph(path)


def test_graph_with_columns_of_different_length(tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    G.save_graph(tiny_graph(), path)
    data = json.loads(path.read_text())
    data["glosses"] = data["glosses"][:-1]
    path.write_text(json.dumps(data))
    with pytest.raises(IndexFormatError, match=r"graph\.json.*differ in length"):
        G.load_graph(path)


def test_missing_graph_file(tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError, match=r"nothing\.json: file is missing"):
        G.load_graph(tmp_path / "nothing.json")


def test_graph_files_store_flat_columns_and_old_files_still_load(tmp_path: Path) -> None:
    graph = tiny_graph()
    G.save_graph(graph, tmp_path / "graph.json")
    data = json.loads((tmp_path / "graph.json").read_text())
    assert data["graph_format_version"] == 2
    assert data["lemmas"] == ["entity", "tench\tTinca tinca"]
    assert data["lexicon"] == {"keys": ["entity", "tench", "tinca tinca"], "offsets": [0, 1, 2, 3], "rows": [0, 1, 1]}
    loaded = G.load_graph(tmp_path / "graph.json")
    assert loaded.lemmas[1] == ["tench", "Tinca tinca"] and list(loaded.lemmas) == graph.lemmas
    assert loaded.lexicon == graph.lexicon and loaded.lookup("Tinca tinca") == [1]
    # Format 1 (nested lists, a lexicon object), as indexes written before held it.
    data.update(graph_format_version=1, lemmas=[["entity"], ["tench", "Tinca tinca"]],
                lexicon={"entity": [0], "tench": [1], "tinca tinca": [1]})
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = G.load_graph(tmp_path / "old.json")
    assert old.lemmas == loaded.lemmas and old.lexicon == loaded.lexicon and old.lookup("tench") == [1]
    data["graph_format_version"] = 9
    (tmp_path / "future.json").write_text(json.dumps(data))
    with pytest.raises(IndexFormatError, match=r"future.json: graph format 9"):
        G.load_graph(tmp_path / "future.json")
