"""Tests of mll_index.index: building, loading and searching the node index (real model, real FAISS)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import pytest

from mll_index import artifacts as A
from mll_index import index as I
from mll_index.captions import Concept, WordNetExpander, node_concept
from mll_index.embed import EmbedderRecord, TextEmbedder, embed_concept_captions, pool_caption_vectors
from mll_index.errors import EmbedderMismatchError, IndexFormatError, InputError
from mll_index.graph import Graph, resolve_node_set, wnid_node_set

try:
    from conftest import GOLDFISH, LAPTOP, TENCH
except ImportError:  # pragma: no cover
    from tests.conftest import GOLDFISH, LAPTOP, TENCH

QUERIES = ["golden retriever", "a photo of a tench.", "a laptop computer", "pizza", "a crane lifting steel"]


class ExplodingExpander:
    """A caption expander that fails, as a flaky LLM endpoint would."""

    expander_id = "exploding-v1"

    def expand(self, concepts: Sequence[Concept]) -> list[list[str]]:
        raise RuntimeError("the expander broke down")


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.parent.iterdir() if p.name.startswith(f".{directory.name}."))


@pytest.fixture(scope="module")
def tiny_graph(taxonomy: Graph) -> Graph:
    return resolve_node_set(taxonomy, wnid_node_set([TENCH, GOLDFISH, LAPTOP]))


@pytest.fixture(scope="module")
def ivf_index(tmp_path_factory: pytest.TempPathFactory, small_graph: Graph, embedder: TextEmbedder) -> I.NodeIndex:
    """The small graph again, with approximate (IVF) search, built on one thread."""
    root = tmp_path_factory.mktemp("ivf")
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return I.build_index(root / "ivf", small_graph, embedder, search="ivf", cache=None)
    finally:
        faiss.omp_set_num_threads(threads)


# --- build and load -------------------------------------------------------------------------

def test_build_load_round_trip(index_dir: Path, node_index: I.NodeIndex, small_graph: Graph) -> None:
    n = len(small_graph.nodes)
    assert n == 197  # dog.n.01 and below (190) + 7 others
    assert node_index.size == n
    m = node_index.manifest
    assert m["kind"] == "node-index"
    assert m["embedder"] == {"id": "sentence-transformers/all-MiniLM-L6-v2", "precision": "fp32",
                             "runtime": "onnxruntime", "dim": 384}
    assert node_index.embedder_id == "sentence-transformers/all-MiniLM-L6-v2" and node_index.dim == 384
    assert m["counts"] == {"nodes": n, "captions": 3 * n}
    assert m["search"] == "flat" and m["metric"] == "inner_product"
    assert m["expander"] == "wordnet-v1"
    assert m["graph"] == {"wordnet": "3.0", "node_set": {"kind": "wnids", "value": f"{n} wnids"}, "synsets": 82115}
    assert set(m["files"]) == set(I.FILES)
    assert A.read_manifest(index_dir, "node-index", verify=True) == m
    assert node_index.graph.nodes == small_graph.nodes
    assert node_index.faiss_index.ntotal == n


def test_vectors_are_memory_mapped_unit_rows(node_index: I.NodeIndex) -> None:
    vectors = node_index.vectors
    assert isinstance(vectors, np.memmap)
    assert vectors.shape == (node_index.size, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_node_table_lists_nodes_in_row_order(index_dir: Path, node_index: I.NodeIndex) -> None:
    rows = [json.loads(line) for line in (index_dir / "nodes.jsonl").read_text(encoding="utf-8").splitlines()]
    g = node_index.graph
    assert [r["row"] for r in rows] == list(range(node_index.size))
    assert [r["wnid"] for r in rows] == g.node_wnids
    tench = rows[g.node_position[g.row(TENCH)]]
    assert tench["synset"] == "tench.n.01"
    assert tench["captions"] == WordNetExpander().expand([node_concept(g, g.row(TENCH))])[0]


def test_node_vector_is_the_pooled_caption_embedding(node_index: I.NodeIndex, embedder: TextEmbedder) -> None:
    g = node_index.graph
    pos = g.node_position[g.row(LAPTOP)]
    captions = WordNetExpander().expand([node_concept(g, g.row(LAPTOP))])
    expected = embed_concept_captions(captions, embedder, None)[0]
    assert float(expected @ node_index.vectors[pos]) > 0.999


def test_pool_caption_vectors() -> None:
    vectors = np.array([[1, 0], [0, 1], [3, 4]], np.float32)
    pooled = pool_caption_vectors(vectors, np.array([0, 0, 1]), 3)
    np.testing.assert_allclose(pooled, [[2 ** -0.5, 2 ** -0.5], [0.6, 0.8], [0, 0]], atol=1e-6)


def test_build_index_refuses_an_empty_node_set(tmp_path: Path, taxonomy: Graph, embedder: TextEmbedder) -> None:
    with pytest.raises(InputError, match="empty"):
        I.build_index(tmp_path / "idx", taxonomy, embedder)
    assert not (tmp_path / "idx").exists()


def test_default_index_path_follows_mll_index_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLL_INDEX_HOME", str(tmp_path))
    assert I.default_index_path() == tmp_path / "default"


# --- search ---------------------------------------------------------------------------------

def test_search_equals_brute_force(node_index: I.NodeIndex, embedder: TextEmbedder) -> None:
    queries = embedder.encode(QUERIES)
    k = 10
    scores, ids = node_index.search(queries, k)
    assert scores.shape == ids.shape == (len(QUERIES), k)
    brute = queries @ np.asarray(node_index.vectors).T
    expected_ids = np.argsort(-brute, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, np.take_along_axis(brute, expected_ids, axis=1), atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_search_pads_with_minus_one_when_k_exceeds_the_index(node_index: I.NodeIndex, embedder: TextEmbedder) -> None:
    n = node_index.size
    scores, ids = node_index.search(embedder.encode(["tench"]), n + 5)
    assert ids.shape == (1, n + 5)
    assert sorted(ids[0, :n].tolist()) == list(range(n))
    assert ids[0, n:].tolist() == [-1] * 5


def test_check_embedder(node_index: I.NodeIndex, embedder: TextEmbedder) -> None:
    node_index.check_embedder(embedder)
    node_index.check_embedder(EmbedderRecord(embedder.embedder_id, "fp32", "torch", 384))  # another runtime, same vectors
    other = EmbedderRecord(embedder.embedder_id, "bf16", "torch", 384)
    with pytest.raises(EmbedderMismatchError) as info:
        node_index.check_embedder(other)
    message = str(info.value)
    assert "bf16" in message and "fp32" in message and embedder.embedder_id in message
    with pytest.raises(EmbedderMismatchError, match=r"dim 16"):
        node_index.check_embedder(EmbedderRecord(embedder.embedder_id, "fp32", "onnxruntime", 16))


def test_an_index_of_the_older_embedder_format_still_loads(index_copy: Path, embedder: TextEmbedder) -> None:
    """Manifests before the precision was recorded apart wrote "<model>@<precision>" as the id."""
    manifest = json.loads((index_copy / "manifest.json").read_text())
    manifest["embedder"] = {"id": "sentence-transformers/all-MiniLM-L6-v2@fp32", "dim": 384}
    (index_copy / "manifest.json").write_text(json.dumps(manifest))
    old = I.load_index(index_copy, verify=True)
    assert (old.embedder.model, old.embedder.precision, old.embedder.runtime) == (embedder.embedder_id, "fp32", "torch")
    old.check_embedder(embedder)  # ONNX Runtime fp32 answers an index embedded by torch fp32


@pytest.mark.parametrize("shape", [(1, 16), (2, 383), (384,)])
def test_search_refuses_queries_of_another_dimension(node_index: I.NodeIndex, shape: tuple[int, ...]) -> None:
    queries = np.ones(shape, np.float32)
    with pytest.raises(EmbedderMismatchError, match=re.escape(str(shape))):
        node_index.search(queries, 3)


def test_ivf_index_finds_the_same_top1_as_flat(ivf_index: I.NodeIndex, node_index: I.NodeIndex,
                                                embedder: TextEmbedder) -> None:
    assert ivf_index.manifest["search"] == "ivf"
    assert ivf_index.manifest["ivf_self_recall"] == 1.0
    assert isinstance(ivf_index.faiss_index, faiss.IndexIVFFlat)
    assert isinstance(node_index.faiss_index, faiss.IndexFlatIP)
    assert ivf_index.size == node_index.size
    queries = embedder.encode(QUERIES)
    # Against brute force over the IVF index's own vectors: embeddings of the same text differ
    # in the last bits with the batch they were encoded in, which can swap near ties.
    full = queries @ np.asarray(ivf_index.vectors).T
    ivf_scores, ivf_ids = ivf_index.search(queries, 1)
    np.testing.assert_array_equal(ivf_ids[:, 0], full.argmax(1))
    np.testing.assert_allclose(ivf_scores[:, 0], full.max(1), atol=1e-4)
    _, flat_ids = node_index.search(queries, 1)
    assert (ivf_ids == flat_ids).mean() >= 0.6


def test_make_faiss_unknown_kind() -> None:
    with pytest.raises(InputError, match=r"'hnsw'.*flat or ivf"):
        I.make_faiss(np.eye(4, dtype=np.float32), "hnsw")  # type: ignore[arg-type]


# --- damaged indexes ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["nodes.faiss", "node_vectors.npy", "graph.json", "nodes.jsonl"])
def test_truncated_file_is_index_format_error_naming_it(index_copy: Path, name: str) -> None:
    path = index_copy / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match=re.escape(str(path))):
        I.load_index(index_copy)


@pytest.mark.parametrize("name", ["nodes.faiss", "node_vectors.npy", "graph.json"])
def test_overwritten_file_of_same_size_is_index_format_error_naming_it(index_copy: Path, name: str) -> None:
    path = index_copy / name
    path.write_bytes(b"\x00" * path.stat().st_size)
    with pytest.raises(IndexFormatError, match=re.escape(str(path))):
        I.load_index(index_copy)


def test_verify_catches_a_changed_byte(index_copy: Path) -> None:
    path = index_copy / "node_vectors.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert I.load_index(index_copy).size == 197  # sizes match: only --verify reads every byte
    with pytest.raises(IndexFormatError, match=re.escape(str(path)) + ": checksum differs"):
        I.load_index(index_copy, verify=True)


def test_missing_index_directory(tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError, match=re.escape(str(tmp_path / "none")) + ": no index here"):
        I.load_index(tmp_path / "none")


def test_manifest_node_count_disagrees(index_copy: Path) -> None:
    path = index_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["counts"]["nodes"] = 5
    path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=r"graph\.json nodes = 197, the manifest says 5 nodes"):
        I.load_index(index_copy)


def test_manifest_of_another_kind(index_copy: Path) -> None:
    path = index_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["kind"] = "graph"
    path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=r"manifest\.json: holds a 'graph', expected 'node-index'"):
        I.load_index(index_copy)


@pytest.mark.parametrize("key", ["counts", "embedder"])
def test_manifest_missing_required_field_is_index_format_error(index_copy: Path, key: str) -> None:
    path = index_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest[key]
    path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=r"manifest\.json"):
        I.load_index(index_copy)


def test_load_index_recovers_an_interrupted_swap(index_copy: Path) -> None:
    before = snapshot(index_copy)
    os.rename(index_copy, index_copy.with_name(f".{index_copy.name}.old"))
    assert I.load_index(index_copy).size == 197
    assert snapshot(index_copy) == before
    assert leftovers(index_copy) == []


# --- interrupted builds ---------------------------------------------------------------------

def test_failed_build_before_writing_leaves_previous_index(index_copy: Path, tiny_graph: Graph,
                                                           embedder: TextEmbedder) -> None:
    before = snapshot(index_copy)
    with pytest.raises(RuntimeError, match="expander broke down"):
        I.build_index(index_copy, tiny_graph, embedder, expander=ExplodingExpander(), cache=None)
    assert snapshot(index_copy) == before
    assert I.load_index(index_copy, verify=True).size == 197
    assert leftovers(index_copy) == []


def test_build_failing_inside_the_index_directory_leaves_previous_index(index_copy: Path, tiny_graph: Graph,
                                                                        embedder: TextEmbedder) -> None:
    before = snapshot(index_copy)
    # graph.json, nodes.jsonl and node_vectors.npy are written before the FAISS index fails.
    with pytest.raises(InputError, match="unknown search kind 'bogus'"):
        I.build_index(index_copy, tiny_graph, embedder, search="bogus", cache=None)  # type: ignore[arg-type]
    assert snapshot(index_copy) == before
    loaded = I.load_index(index_copy, verify=True)
    assert loaded.size == 197 and loaded.manifest == json.loads(before["manifest.json"])
    assert leftovers(index_copy) == []


def test_rebuild_replaces_the_index(index_copy: Path, tiny_graph: Graph, embedder: TextEmbedder) -> None:
    new = I.build_index(index_copy, tiny_graph, embedder, cache=None)
    assert new.size == 3
    assert sorted(I.load_index(index_copy, verify=True).graph.node_wnids) == sorted([TENCH, GOLDFISH, LAPTOP])
    assert leftovers(index_copy) == []


# ---------------------------------------------------------------------------------------
# Growth: add nodes without rebuilding

LION, ZEBRA, ORANGE = "n02129165", "n02391049", "n07747607"


def test_add_nodes_appends_what_a_full_build_would_embed(index_dir: Path, index_copy: Path, taxonomy: Graph,
                                                         small_wnids: list[str], embedder: TextEmbedder,
                                                         tmp_path: Path) -> None:
    from mll_index.embed import EmbeddingCache

    old = I.load_index(index_dir)
    report = I.add_nodes(index_copy, [LION, ZEBRA, TENCH, ORANGE], embedder,
                         cache=EmbeddingCache(tmp_path / "cache.sqlite"))
    assert report.added == [LION, ZEBRA, ORANGE] and report.skipped == [TENCH]
    grown = I.load_index(index_copy, verify=True)
    assert grown.size == old.size + 3
    assert grown.graph.nodes[:old.size] == old.graph.nodes          # existing nodes keep their rows
    assert np.array_equal(np.asarray(grown.vectors[:old.size]), np.asarray(old.vectors))
    built = I.build_index(tmp_path / "built", resolve_node_set(taxonomy, wnid_node_set(small_wnids + [LION, ZEBRA, ORANGE])),
                          embedder, cache=EmbeddingCache(tmp_path / "cache2.sqlite"))
    where = {w: i for i, w in enumerate(built.graph.node_wnids)}
    for i, w in enumerate(grown.graph.node_wnids):   # vectors shift in the last bits with the batch a text lands in
        assert float(grown.vectors[i] @ built.vectors[where[w]]) > 0.9999, w
    queries = embedder.encode(["a lion", "a zebra on the savanna", "an orange fruit"])
    _, top = grown.search(queries, 1)
    assert [grown.graph.node_wnids[t] for t in top[:, 0]] == [LION, ZEBRA, ORANGE]


def test_add_nodes_keeps_labels_and_refuses_bad_wnids(index_copy: Path, embedder: TextEmbedder,
                                                      tmp_path: Path) -> None:
    from mll_index.embed import EmbeddingCache
    from mll_index.label_matrix import append_labels, open_matrix

    append_labels(index_copy, [TENCH, GOLDFISH], [("m", {"id": "m"})], np.ones((2, 1, 3), int))

    def tree() -> dict[str, bytes]:
        return {str(p.relative_to(index_copy)): p.read_bytes() for p in sorted(index_copy.rglob("*")) if p.is_file()}

    before = tree()
    for bad, message in (([], "no node to add"), (["n99999999"], "n99999999"), ([LION, "tiger"], "tiger")):
        with pytest.raises(InputError, match=message):
            I.add_nodes(index_copy, bad, embedder)
        assert tree() == before and not leftovers(index_copy)
    assert I.add_nodes(index_copy, [TENCH], embedder).added == []
    I.add_nodes(index_copy, [LION], embedder, cache=EmbeddingCache(tmp_path / "c.sqlite"))
    assert open_matrix(index_copy).dense().sum() == 6                  # labels carried across the rewrite
    assert I.load_index(index_copy).graph.node_set["kind"] == "grown"
