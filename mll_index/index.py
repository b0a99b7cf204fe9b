"""The node index: the graph's node embeddings in FAISS, persisted as one directory.

    indexes/<name>/
        manifest.json      format version, embedder id and dimension, graph and expander settings,
                           counts, and the size and SHA-256 of every file below
        graph.json         the WordNet noun taxonomy and the node set (see graph.py)
        nodes.jsonl        the node table: row, wnid, synset, captions embedded for it
        node_vectors.npy   (n, d) float32, L2-normalised node embeddings, memory-mappable
        nodes.faiss        FAISS index over node_vectors (inner product = cosine; flat or IVF)
        labels/            model labels (see labels.py), kept when the node index is rebuilt

Row i of node_vectors and of the FAISS index is node i of the node table.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mll_index.artifacts import atomic_dir, new_manifest, read_json, read_manifest, seal_manifest
from mll_index.captions import CaptionExpander, WordNetExpander, node_concept
from mll_index.embed import (EmbedderRecord, EmbeddingCache, LazyEmbedder, TextEmbedder, check_agreement,
                             embed_concept_captions, record_of)
from mll_index.errors import EmbedderMismatchError, IndexFormatError, InputError, MLLIndexError
from mll_index.graph import Graph, cache_dir, load_graph, save_graph

log = logging.getLogger(__name__)

KIND = "node-index"
SearchKind = Literal["flat", "ivf"]
FILES = ["graph.json", "nodes.jsonl", "node_vectors.npy", "nodes.faiss"]


def default_index_path() -> Path:
    """$MLL_INDEX_HOME/default; else ./indexes/default if it exists; else indexes/default of the source checkout."""
    import os

    home = os.environ.get("MLL_INDEX_HOME")
    if home:
        return Path(home) / "default"
    local = Path("indexes") / "default"
    checkout = Path(__file__).resolve().parent.parent / "indexes" / "default"
    return local if local.exists() or not checkout.parent.is_dir() else checkout


def make_faiss(vectors: np.ndarray, search: SearchKind = "flat") -> Any:
    """A FAISS inner-product index over normalised vectors: exact (flat) or approximate (ivf).

    The approximate kind is IVF-Flat: every node sits in exactly one list, so none can become
    unreachable (HNSW was seen to lose outlying nodes), and probing a quarter of the lists
    (at least 8) keeps recall near 1 while scanning far fewer vectors on graphs of millions of nodes.
    """
    import faiss

    n, d = vectors.shape
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if search == "flat":
        index = faiss.IndexFlatIP(d)
    elif search == "ivf":
        nlist = max(1, min(int(4 * np.sqrt(n)), n // 39 or 1))  # >= 39 training points per centroid
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 1234
        index.train(vectors)
        index.nprobe = min(nlist, max(8, nlist // 4))
    else:
        raise InputError(f"unknown search kind {search!r}; choose flat or ivf")
    index.add(vectors)
    return index


@dataclass
class NodeIndex:
    """A loaded node index: manifest, graph, node vectors (memory-mapped) and the FAISS index."""

    path: Path
    manifest: dict[str, Any]
    graph: Graph
    vectors: np.ndarray
    faiss_index: Any

    @property
    def embedder(self) -> EmbedderRecord:
        """The embedder the node vectors were made with (model, precision, runtime, dimension)."""
        return EmbedderRecord.from_dict(self.manifest["embedder"])

    @property
    def embedder_id(self) -> str:
        """The model that embedded the nodes (without precision or runtime)."""
        return self.embedder.model

    @property
    def dim(self) -> int:
        return int(self.manifest["embedder"]["dim"])

    @property
    def size(self) -> int:
        return len(self.graph.nodes)

    def check_embedder(self, embedder: TextEmbedder | EmbedderRecord) -> None:
        """Refuse queries from an embedder whose vectors do not agree with the index's (another model,
        dimension, or a precision not within cosine 0.9999); another runtime of the same vectors is fine.

        Raises:
            EmbedderMismatchError: naming both embedders.
        """
        query = embedder if isinstance(embedder, EmbedderRecord) else record_of(embedder)
        check_agreement(self.embedder, query, str(self.path))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k nodes by cosine for each query.

        Args:
            queries: (n, d) float32, L2-normalised, d == self.dim.
        Returns:
            scores (n, k) float32 and node positions (n, k) int64, best first; -1 where the index has fewer than k nodes.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise EmbedderMismatchError(f"{self.path}: queries have shape {queries.shape}, index dimension is {self.dim}")
        return self.faiss_index.search(queries, k)


def build_index(path: Path, graph: Graph, embedder: TextEmbedder, *, expander: CaptionExpander | None = None,
                cache: EmbeddingCache | None = None, search: SearchKind = "flat",
                progress: bool = False) -> NodeIndex:
    """Embed every node of `graph` and write the index directory atomically.

    An interrupted build leaves the previous index at `path` intact.
    """
    if not graph.nodes:
        raise InputError("the graph's node set is empty")
    if search not in ("flat", "ivf"):
        raise InputError(f"unknown search kind {search!r}; choose flat or ivf")
    expander = expander or WordNetExpander()
    cache = cache if cache is not None else EmbeddingCache(cache_dir() / "embeddings.sqlite")
    started = time.time()
    concepts = [node_concept(graph, row) for row in graph.nodes]
    captions = expander.expand(concepts)
    vectors = embed_concept_captions(captions, embedder, cache, progress)
    write_index(path, graph, vectors, captions, embedder=record_of(embedder), expander_id=expander.expander_id,
                search=search, build_seconds=time.time() - started)
    log.info("wrote %s: %d nodes in %.0f s", path, len(graph.nodes), time.time() - started)
    return load_index(path)


def _carry_labels(old: Path, new: Path, embedder: EmbedderRecord) -> None:
    """Keep an index's labels across a rewrite of its nodes.

    Model labels name nodes by wnid, so they stay valid. Their files are never modified once
    written, so they are hard-linked, not copied: a rewrite costs the same with 10 or 10,000
    labeled models. Published labels hold class embeddings: kept only under the same embedder.
    """
    if (old / "labels").is_dir():
        shutil.copytree(old / "labels", new / "labels", copy_function=_link_or_copy)
    if (old / "published" / "manifest.json").is_file():
        try:
            kept = EmbedderRecord.from_dict(read_json(old / "published" / "manifest.json")["embedder"])
            same = kept.space == embedder.space and kept.dim == embedder.dim
        except (MLLIndexError, KeyError, TypeError, ValueError):
            same = False
        if same:
            shutil.copytree(old / "published", new / "published", copy_function=_link_or_copy)
        else:
            log.warning("%s: published labels were embedded with another embedder; import them again",
                        old / "published")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def write_index(path: Path, graph: Graph, vectors: np.ndarray, captions: Sequence[Sequence[str]], *,
                embedder: EmbedderRecord, expander_id: str, search: SearchKind = "flat",
                build_seconds: float | None = None, node_table_from: Path | None = None) -> None:
    """Write an index directory from node vectors already embedded, atomically; labels at `path` are kept.

    Args:
        vectors: (len(graph.nodes), d) float32, unit rows; row i is node graph.nodes[i].
        captions: the captions each node's vector pools (recorded in nodes.jsonl); with
            `node_table_from`, only those of the last rows, the first ones being that node
            table's lines, copied as they are (growth appends without re-reading them).
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    first = len(graph.nodes) - len(captions) if node_table_from is not None else 0
    if vectors.ndim != 2 or len(vectors) != len(graph.nodes) or not 0 <= first <= len(graph.nodes) \
            or (node_table_from is None and len(captions) != len(graph.nodes)):
        raise InputError(f"{len(graph.nodes)} nodes, {vectors.shape} vectors and {len(captions)} caption lists")
    path = Path(path)
    with atomic_dir(path) as tmp:
        if path.is_dir():
            _carry_labels(path, tmp, embedder)
        save_graph(graph, tmp / "graph.json", atomic=False)
        if node_table_from is not None:
            shutil.copyfile(node_table_from, tmp / "nodes.jsonl")
        with open(tmp / "nodes.jsonl", "a", encoding="utf-8") as handle:
            for i, caps in enumerate(captions, first):
                row = graph.nodes[i]
                handle.write(json.dumps({"row": i, "wnid": graph.wnids[row], "synset": graph.synsets[row],
                                         "captions": list(caps)}, ensure_ascii=False) + "\n")
        np.save(tmp / "node_vectors.npy", vectors)
        faiss_index = make_faiss(vectors, search)
        faiss.write_index(faiss_index, str(tmp / "nodes.faiss"))
        extra: dict[str, Any] = {}
        if search == "ivf":
            # Recorded so a user can judge the approximation: how many nodes find themselves.
            _, top = faiss_index.search(vectors, 1)
            extra["ivf_self_recall"] = round(float((top[:, 0] == np.arange(len(vectors))).mean()), 5)
        if build_seconds is not None:
            extra["build_seconds"] = round(build_seconds, 1)
        manifest = new_manifest(
            KIND,
            embedder=dataclasses.replace(embedder, dim=int(vectors.shape[1])).to_dict(),
            metric="inner_product",
            search=search,
            graph={"wordnet": "3.0", "node_set": graph.node_set, "synsets": len(graph.wnids)},
            expander=expander_id,
            counts={"nodes": len(graph.nodes), "captions": sum(len(c) for c in captions)},
            **extra,
        )
        seal_manifest(tmp, manifest, FILES)


@dataclass(frozen=True)
class GrowthReport:
    """What add_nodes did: nodes added and skipped (already there), and where the time went."""

    added: list[str]
    skipped: list[str]
    embed_seconds: float
    write_seconds: float


def add_nodes(path: Path, wnids: Sequence[str], embedder: TextEmbedder | None = None, *,
              expander: CaptionExpander | None = None, cache: EmbeddingCache | None = None) -> GrowthReport:
    """Add WordNet noun synsets to an index's node set without re-embedding the nodes it has.

    The new nodes are expanded and embedded; the rest is appended to the existing files and the
    index is swapped in atomically, its labels hard-linked. Nodes already there are skipped.

    Raises:
        InputError: no wnid given, or a wnid that is not a WordNet 3.0 noun synset.
        EmbedderMismatchError: `embedder` is not the index's.
    """
    index = load_index(path)
    if not wnids:
        raise InputError("no node to add: give at least one wnid")
    graph = index.graph
    rows = [graph.row(w.strip()) for w in wnids]     # raises on an unknown wnid, naming it
    present = graph.node_position
    new_rows = list(dict.fromkeys(r for r in rows if r not in present))
    skipped = sorted({graph.wnids[r] for r in rows if r in present})
    if not new_rows:
        return GrowthReport([], skipped, 0.0, 0.0)
    embedder = embedder or LazyEmbedder(index.embedder)
    index.check_embedder(embedder)
    expander = expander or WordNetExpander()
    if index.manifest.get("expander") not in (None, expander.expander_id):
        log.warning("%s: built with expander %s, adding nodes with %s", path, index.manifest.get("expander"),
                    expander.expander_id)
    cache = cache if cache is not None else EmbeddingCache(cache_dir() / "embeddings.sqlite")
    started = time.perf_counter()
    captions = expander.expand([node_concept(graph, r) for r in new_rows])
    fresh = embed_concept_captions(captions, embedder, cache)
    embedded = time.perf_counter()
    before = graph.node_set.get("added", 0) if graph.node_set.get("kind") == "grown" else 0
    base = graph.node_set.get("value") if graph.node_set.get("kind") == "grown" else graph.node_set
    # Appended: existing nodes keep their positions.
    grown = dataclasses.replace(graph, nodes=list(graph.nodes) + new_rows,
                                node_set={"kind": "grown", "value": base, "added": before + len(new_rows)})
    vectors = np.concatenate([np.asarray(index.vectors, np.float32), fresh])
    write_index(path, grown, vectors, [list(c) for c in captions], embedder=index.embedder,
                expander_id=index.manifest.get("expander", expander.expander_id),
                search=index.manifest.get("search", "flat"), node_table_from=Path(path) / "nodes.jsonl")
    done = time.perf_counter()
    log.info("added %d nodes to %s (%.2f s embedding, %.2f s writing)", len(new_rows), path, embedded - started,
             done - embedded)
    return GrowthReport([graph.wnids[r] for r in new_rows], skipped, embedded - started, done - embedded)


def load_index(path: Path, verify: bool = False) -> NodeIndex:
    """Open an index directory; node vectors are memory-mapped.

    Raises:
        IndexFormatError: a missing, truncated, corrupt or other-version file, named.
    """
    import faiss

    path = Path(path)
    manifest = read_manifest(path, KIND, verify=verify)
    try:
        n, dim = int(manifest["counts"]["nodes"]), int(manifest["embedder"]["dim"])
        EmbedderRecord.from_dict(manifest["embedder"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{path / 'manifest.json'}: missing or malformed field {exc}") from None
    graph = load_graph(path / "graph.json")
    try:
        vectors = np.load(path / "node_vectors.npy", mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise IndexFormatError(f"{path / 'node_vectors.npy'}: cannot read ({exc})") from None
    try:
        faiss_index = faiss.read_index(str(path / "nodes.faiss"))
    except RuntimeError as exc:
        raise IndexFormatError(f"{path / 'nodes.faiss'}: not a readable FAISS index ({str(exc).splitlines()[0]})") from None
    for what, got in (("graph.json nodes", len(graph.nodes)), ("node_vectors.npy rows", vectors.shape[0]),
                      ("nodes.faiss vectors", faiss_index.ntotal)):
        if got != n:
            raise IndexFormatError(f"{path}: {what} = {got}, the manifest says {n} nodes")
    if vectors.shape[1] != dim or faiss_index.d != dim:
        raise IndexFormatError(f"{path}: vectors of dimension {vectors.shape[1]}/{faiss_index.d}, the manifest says {dim}")
    return NodeIndex(path, manifest, graph, vectors, faiss_index)
