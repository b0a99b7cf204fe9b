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

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mll_index.artifacts import atomic_dir, new_manifest, read_json, read_manifest, seal_manifest
from mll_index.captions import CaptionExpander, WordNetExpander, node_concept
from mll_index.embed import EmbeddingCache, TextEmbedder, embed_texts
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


def pool_caption_vectors(vectors: np.ndarray, owners: np.ndarray, n: int) -> np.ndarray:
    """Mean of each owner's caption embeddings, re-normalised.

    Args:
        vectors: (m, d) float32 caption embeddings.
        owners: (m,) int, the row (0..n-1) each caption belongs to.
    Returns:
        (n, d) float32, L2-normalised.
    """
    pooled = np.zeros((n, vectors.shape[1]), np.float32)
    np.add.at(pooled, owners, vectors)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def embed_concept_captions(captions: Sequence[Sequence[str]], embedder: TextEmbedder,
                           cache: EmbeddingCache | None, progress: bool = False) -> np.ndarray:
    """(n, d) pooled embeddings of n caption lists."""
    flat = [c for caps in captions for c in caps]
    owners = np.repeat(np.arange(len(captions)), [len(c) for c in captions])
    return pool_caption_vectors(embed_texts(embedder, flat, cache, progress), owners, len(captions))


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
    def embedder_id(self) -> str:
        return self.manifest["embedder"]["id"]

    @property
    def dim(self) -> int:
        return int(self.manifest["embedder"]["dim"])

    @property
    def size(self) -> int:
        return len(self.graph.nodes)

    def check_embedder(self, embedder_id: str, dim: int | None = None) -> None:
        """Refuse queries embedded by another embedder than the one the index was built with."""
        if embedder_id != self.embedder_id or (dim is not None and dim != self.dim):
            raise EmbedderMismatchError(
                f"{self.path}: index built with embedder {self.embedder_id!r} (dim {self.dim}), "
                f"query embedded with {embedder_id!r}" + (f" (dim {dim})" if dim is not None else "")
            )

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
    path = Path(path)
    with atomic_dir(path) as tmp:
        # Model labels name nodes by wnid: they stay valid across a rebuild, so keep them.
        if (path / "labels").is_dir():
            shutil.copytree(path / "labels", tmp / "labels")
        # Published labels hold class embeddings: valid only under the same embedder.
        if (path / "published" / "manifest.json").is_file():
            try:
                same = read_json(path / "published" / "manifest.json")["embedder"]["id"] == embedder.embedder_id
            except (MLLIndexError, KeyError, TypeError):
                same = False
            if same:
                shutil.copytree(path / "published", tmp / "published")
            else:
                log.warning("%s: published labels were embedded with another embedder; import them again",
                            path / "published")
        save_graph(graph, tmp / "graph.json")
        with open(tmp / "nodes.jsonl", "w", encoding="utf-8") as handle:
            for i, (row, caps) in enumerate(zip(graph.nodes, captions)):
                handle.write(json.dumps({"row": i, "wnid": graph.wnids[row], "synset": graph.synsets[row],
                                         "captions": caps}, ensure_ascii=False) + "\n")
        np.save(tmp / "node_vectors.npy", vectors)
        import faiss

        faiss_index = make_faiss(vectors, search)
        faiss.write_index(faiss_index, str(tmp / "nodes.faiss"))
        extra = {}
        if search == "ivf":
            # Recorded so a user can judge the approximation: how many nodes find themselves.
            _, top = faiss_index.search(np.ascontiguousarray(vectors, np.float32), 1)
            extra["ivf_self_recall"] = round(float((top[:, 0] == np.arange(len(vectors))).mean()), 5)
        manifest = new_manifest(
            KIND,
            embedder={"id": embedder.embedder_id, "dim": embedder.dim},
            metric="inner_product",
            search=search,
            graph={"wordnet": "3.0", "node_set": graph.node_set, "synsets": len(graph.wnids)},
            expander=expander.expander_id,
            counts={"nodes": len(graph.nodes), "captions": sum(len(c) for c in captions)},
            build_seconds=round(time.time() - started, 1),
            **extra,
        )
        seal_manifest(tmp, manifest, FILES)
    log.info("wrote %s: %d nodes in %.0f s", path, len(graph.nodes), time.time() - started)
    return load_index(path)


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
        str(manifest["embedder"]["id"])
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
