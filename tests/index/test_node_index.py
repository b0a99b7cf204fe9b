"""Tests of mll_index.index.node_index: building, loading and searching the node index (real model, real FAISS)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import pytest

from mll_index.core import artifacts as A
from mll_index.core.paths import default_index_path
from mll_index.errors import EmbedderMismatchError, IndexFormatError, InputError
from mll_index.index import node_index as I
from mll_index.index.captions import Concept, WordNetExpander, node_concept
from mll_index.index.embed import EmbedderRecord, TextEmbedder, embed_concept_captions, pool_caption_vectors
from mll_index.index.graph import Graph, resolve_node_set, wnid_node_set

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
    assert m["format_version"] == I.FORMAT_VERSION == 2
    assert m["segments"] == [{"vectors": "node_vectors.npy", "table": "nodes.jsonl", "nodes": n}]
    assert m["faiss"] is None and m["next_segment"] == 1      # flat search: built from the vectors at load
    assert set(m["files"]) == set(I.FILES)
    assert I.read_index_manifest(index_dir, verify=True) == m
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
    assert default_index_path() == tmp_path / "default"


# --- search ---------------------------------------------------------------------------------

def test_search_equals_brute_force(node_index: I.NodeIndex, embedder: TextEmbedder) -> None:
    queries = embedder.encode(QUERIES)
    k = 10
    scores, ids = node_index.search(queries, k)
    assert scores.shape == ids.shape == (len(QUERIES), k)
    brute = queries.astype(np.float64) @ np.asarray(node_index.vectors, np.float64).T
    kth = -np.sort(-brute, axis=1)[:, k - 1]
    # The same top-k as brute force, up to the order of near ties (BLAS kernels round differently
    # on different CPUs): every returned node scores at least the k-th best, and scores are right.
    assert np.all(np.take_along_axis(brute, ids, axis=1) >= kth[:, None] - 1e-5)
    assert all(len(set(row)) == k for row in ids.tolist())
    np.testing.assert_allclose(scores, np.take_along_axis(brute, ids, axis=1), atol=1e-5)
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
    with pytest.raises(EmbedderMismatchError, match="all-mpnet-base-v2"):
        old.check_embedder(EmbedderRecord("sentence-transformers/all-mpnet-base-v2", "fp32", "torch", 384))


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

@pytest.mark.parametrize("name", ["node_vectors.npy", "graph.json", "nodes.jsonl"])
def test_truncated_file_is_index_format_error_naming_it(index_copy: Path, name: str) -> None:
    path = index_copy / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match=re.escape(str(path))):
        I.load_index(index_copy)


@pytest.mark.parametrize("name", ["node_vectors.npy", "graph.json"])
def test_overwritten_file_of_same_size_is_index_format_error_naming_it(index_copy: Path, name: str) -> None:
    path = index_copy / name
    path.write_bytes(b"\x00" * path.stat().st_size)
    with pytest.raises(IndexFormatError, match=re.escape(str(path))):
        I.load_index(index_copy)


@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_damaged_ivf_file_is_index_format_error_naming_it(ivf_index: I.NodeIndex, tmp_path: Path,
                                                          damage: str) -> None:
    copy = tmp_path / "ivf"
    shutil.copytree(ivf_index.path, copy)
    path = copy / "nodes.faiss"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * len(data))
    with pytest.raises(IndexFormatError, match=re.escape(str(path))):
        I.load_index(copy)


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
COUGAR = "n02125311"


def test_add_nodes_appends_what_a_full_build_would_embed(index_dir: Path, index_copy: Path, taxonomy: Graph,
                                                         small_wnids: list[str], embedder: TextEmbedder,
                                                         tmp_path: Path) -> None:
    from mll_index.index.embed import EmbeddingCache

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
    from mll_index.index.embed import EmbeddingCache
    from mll_index.labels.matrix import append_labels, open_matrix

    append_labels(index_copy, [TENCH, GOLDFISH], [("m", {"id": "m"})], np.ones((2, 1, 3), int))

    def tree() -> dict[str, bytes]:   # the writer's lock file is not content
        return {str(p.relative_to(index_copy)): p.read_bytes() for p in sorted(index_copy.rglob("*"))
                if p.is_file() and p.name != ".lock"}

    before = tree()
    for bad, message in (([], "no node to add"), (["n99999999"], "n99999999"), ([LION, "tiger"], "tiger")):
        with pytest.raises(InputError, match=message):
            I.add_nodes(index_copy, bad, embedder)
        assert tree() == before and not leftovers(index_copy)
    assert I.add_nodes(index_copy, [TENCH], embedder).added == []
    I.add_nodes(index_copy, [LION], embedder, cache=EmbeddingCache(tmp_path / "c.sqlite"))
    assert open_matrix(index_copy).dense().sum() == 6                  # labels carried across the rewrite
    assert I.load_index(index_copy).graph.node_set["kind"] == "grown"


def file_state(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Inode, size and modification time of every file under `directory` but the writer's lock file."""
    return {str(p.relative_to(directory)): (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
            for p in directory.rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def grown_dir(index_dir: Path, tmp_path_factory: pytest.TempPathFactory, embedder: TextEmbedder) -> Path:
    """The session index, copied and grown by one segment (lion, zebra, orange). Tests copy it before damaging it."""
    from mll_index.index.embed import EmbeddingCache

    root = tmp_path_factory.mktemp("grown")
    shutil.copytree(index_dir, root / "grown")
    I.add_nodes(root / "grown", [LION, ZEBRA, ORANGE], embedder, cache=EmbeddingCache(root / "cache.sqlite"))
    return root / "grown"


@pytest.fixture()
def grown_copy(grown_dir: Path, tmp_path: Path) -> Path:
    shutil.copytree(grown_dir, tmp_path / "grown")
    return tmp_path / "grown"


def test_growth_writes_one_segment_and_the_manifest(index_dir: Path, index_copy: Path, embedder: TextEmbedder,
                                                    tmp_path: Path) -> None:
    from mll_index.index.embed import EmbeddingCache

    before = file_state(index_copy)
    I.add_nodes(index_copy, [LION, ZEBRA], embedder, cache=EmbeddingCache(tmp_path / "cache.sqlite"))
    after = file_state(index_copy)
    touched = sorted(name for name in after if after[name] != before.get(name))
    assert touched == ["manifest.json", "node_vectors-000001.npy", "nodes-000001.jsonl"]
    assert after["node_vectors-000001.npy"][1] == 128 + 2 * 384 * 4          # the new rows, nothing more
    m = I.read_index_manifest(index_copy, verify=True)
    assert m["segments"][1] == {"vectors": "node_vectors-000001.npy", "table": "nodes-000001.jsonl", "nodes": 2}
    assert m["counts"]["nodes"] == 199 and m["next_segment"] == 2
    assert m["graph"]["node_set"] == {"kind": "grown", "value": {"kind": "wnids", "value": "197 wnids"}, "added": 2}
    rows = list(I.read_node_table(index_copy))
    assert [r["row"] for r in rows] == list(range(199)) and [r["wnid"] for r in rows[-2:]] == [LION, ZEBRA]


def test_grown_index_equals_its_compacted_rebuild(grown_dir: Path, grown_copy: Path, embedder: TextEmbedder) -> None:
    grown = I.load_index(grown_dir, verify=True)
    assert grown.size == 200 and len(grown.manifest["segments"]) == 2
    assert grown.graph.node_wnids[-3:] == [LION, ZEBRA, ORANGE]
    compacted = I.compact_index(grown_copy)                       # one segment, written by write_index
    assert len(compacted.manifest["segments"]) == 1 and compacted.manifest["counts"] == grown.manifest["counts"]
    assert compacted.graph.nodes == grown.graph.nodes and compacted.graph.node_set == grown.graph.node_set
    assert np.array_equal(np.asarray(compacted.vectors), np.asarray(grown.vectors))
    assert list(I.read_node_table(grown_copy)) == list(I.read_node_table(grown_dir))
    queries = embedder.encode(QUERIES + ["a lion", "a zebra on the savanna", "an orange fruit"])
    for k in (1, 10):
        grown_result, compacted_result = grown.search(queries, k), compacted.search(queries, k)
        assert np.array_equal(grown_result[1], compacted_result[1])
        assert np.array_equal(grown_result[0], compacted_result[0])
    brute = queries @ np.asarray(grown.vectors).T
    assert np.array_equal(grown.search(queries, 1)[1][:, 0], brute.argmax(1))


def test_an_unlisted_or_partial_segment_is_ignored_and_cleared_by_the_next_growth(
        grown_dir: Path, grown_copy: Path, embedder: TextEmbedder, tmp_path: Path) -> None:
    from mll_index.index.embed import EmbeddingCache

    # What a growth that died before its manifest leaves: segment 2's files, one cut short, and a temporary file.
    np.save(grown_copy / "node_vectors-000002.npy", np.ones((5, 384), np.float32))
    (grown_copy / "nodes-000002.jsonl").write_text('{"row": 200, "wnid": "n0212')
    (grown_copy / ".node_vectors-000003.npy.x1y2.tmp").write_bytes(b"\x93NUMPY")
    grown = I.load_index(grown_copy, verify=True)
    assert grown.size == 200 and np.array_equal(np.asarray(grown.vectors), np.asarray(I.load_index(grown_dir).vectors))
    I.add_nodes(grown_copy, [COUGAR], embedder, cache=EmbeddingCache(tmp_path / "cache.sqlite"))
    again = I.load_index(grown_copy, verify=True)
    assert again.size == 201 and again.graph.node_wnids[-1] == COUGAR
    assert sorted(p.name for p in grown_copy.iterdir() if "-00000" in p.name) == [
        "node_vectors-000001.npy", "node_vectors-000002.npy", "nodes-000001.jsonl", "nodes-000002.jsonl"]


@pytest.mark.parametrize("name", ["node_vectors-000001.npy", "nodes-000001.jsonl"])
def test_a_corrupt_segment_fails_verification_naming_it(grown_copy: Path, name: str) -> None:
    path = grown_copy / name
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=re.escape(str(path)) + ": checksum differs"):
        I.load_index(grown_copy, verify=True)


@pytest.mark.parametrize("name", ["node_vectors-000001.npy", "nodes-000001.jsonl"])
def test_a_missing_or_cut_segment_is_an_error_naming_it(grown_copy: Path, name: str) -> None:
    path = grown_copy / name
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IndexFormatError, match=re.escape(str(path))):
        I.load_index(grown_copy)
    path.unlink()
    with pytest.raises(IndexFormatError, match=re.escape(str(path)) + ": file listed in the manifest is missing"):
        I.load_index(grown_copy)


def write_format_1(path: Path) -> None:
    """Turn a one-segment index into what format version 1 wrote: the same files and nodes.faiss, no segments."""
    manifest = json.loads((path / "manifest.json").read_text())
    assert len(manifest["segments"]) == 1
    index = I.load_index(path)
    faiss.write_index(I.make_faiss(np.asarray(index.vectors), manifest["search"]), str(path / "nodes.faiss"))
    for key in ("segments", "faiss", "next_segment"):
        del manifest[key]
    manifest["format_version"] = 1
    manifest["files"]["nodes.faiss"] = A.file_record(path / "nodes.faiss")
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1))


def test_a_format_1_index_loads_and_grows(index_dir: Path, index_copy: Path, embedder: TextEmbedder,
                                          tmp_path: Path) -> None:
    from mll_index.index.embed import EmbeddingCache

    write_format_1(index_copy)
    old, current = I.load_index(index_copy, verify=True), I.load_index(index_dir)
    assert old.manifest["format_version"] == 1 and old.graph.nodes == current.graph.nodes
    assert np.array_equal(np.asarray(old.vectors), np.asarray(current.vectors))
    queries = embedder.encode(QUERIES)
    assert np.array_equal(old.search(queries, 5)[1], current.search(queries, 5)[1])
    graph_before = (index_copy / "graph.json").stat()
    I.add_nodes(index_copy, [LION], embedder, cache=EmbeddingCache(tmp_path / "cache.sqlite"))
    grown = I.load_index(index_copy, verify=True)
    assert grown.manifest["format_version"] == 2 and grown.manifest["faiss"] == "nodes.faiss"
    assert (index_copy / "graph.json").stat().st_mtime_ns == graph_before.st_mtime_ns
    assert grown.size == 198 and grown.faiss_index.ntotal == 198
    assert grown.graph.node_wnids[-1] == LION and grown.search(embedder.encode(["a lion"]), 1)[1][0, 0] == 197


def test_ivf_index_grows_by_adding_to_its_lists(ivf_index: I.NodeIndex, tmp_path: Path,
                                                embedder: TextEmbedder) -> None:
    from mll_index.index.embed import EmbeddingCache

    copy = tmp_path / "ivf"
    shutil.copytree(ivf_index.path, copy)
    faiss_bytes = (copy / "nodes.faiss").read_bytes()
    I.add_nodes(copy, [LION, ZEBRA, ORANGE], embedder, cache=EmbeddingCache(tmp_path / "cache.sqlite"))
    assert (copy / "nodes.faiss").read_bytes() == faiss_bytes        # trained once; the new vectors join at load
    grown = I.load_index(copy, verify=True)
    assert isinstance(grown.faiss_index, faiss.IndexIVFFlat) and grown.faiss_index.ntotal == 200
    _, top = grown.search(np.asarray(grown.vectors[-3:]), 1)
    assert top[:, 0].tolist() == [197, 198, 199]
