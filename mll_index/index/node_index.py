"""The node index: the graph's node embeddings in FAISS, persisted as one directory that grows by segments.

    indexes/<name>/
        manifest.json      format version, embedder id and dimension, graph and expander settings,
                           counts, the segments in row order, and the size and SHA-256 of every file below
        graph.json         the WordNet noun taxonomy and the node set of the first segment (see graph.py)
        nodes.jsonl        segment 0's node table: row, wnid, synset, captions embedded for it
        node_vectors.npy   segment 0's (n0, d) float32, L2-normalised node embeddings, memory-mappable
        nodes.faiss        IVF search only: the trained IVF index over segment 0's vectors
        nodes-<k>.jsonl    segment k's node table (rows continue where segment k-1's stop)
        node_vectors-<k>.npy  segment k's (n_k, d) float32 node embeddings
        labels/            model labels (see labels/folders.py), kept when the node index is rebuilt

A full build writes segment 0; `add_nodes` writes one more segment (its two files) and then the
manifest, replaced last: the taxonomy, the nodes and the vectors there are never rewritten, and a
crash before the manifest leaves the old index, its unlisted files ignored (the next growth
removes them). `compact_index` folds the segments back into one. Row i of the index is node i of
the concatenated node tables and row i of the concatenated vectors; graph.json's node list holds
segment 0's nodes and the node tables' wnids the later ones'. Flat search needs no file of its own:
its FAISS index is built from the vectors at load. An IVF index adds the later segments' vectors to
the lists it was trained with (a rebuild retrains it). Format version 1 (no segments: one set of
files, nodes.faiss always written) is still read, and grows into version 2.

Every writer of an index (build, growth, labels, compaction, published import) holds its writer
lock, `<index>/.lock`, so none drops another's work; readers take no lock and read again when a
writer replaced the manifest or the folder meanwhile. What a killed writer left (temporary files
and folders, a swap backup, unlisted segments) is removed by the next writer and reported by
`index_leftovers`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from mll_index import __version__
from mll_index.core.artifacts import (
    atomic_dir, atomic_file, check_then_open, clear_leftovers, file_record, find_leftovers, index_lock, new_manifest,
    read_consistent, read_json, read_manifest, seal_manifest, size_of, write_json, writer_lock, writing,
)
from mll_index.core.layout import (
    FAISS_FILE, GRAPH, LABELS, MANIFEST, NODE_TABLE, NODE_VECTORS, PUBLISHED, SEGMENT_PATTERNS, segment_files,
)
from mll_index.errors import EmbedderMismatchError, IndexFormatError, InputError, MLLIndexError
from mll_index.index.captions import CaptionExpander, WordNetExpander, node_concept
from mll_index.index.embed import (
    EmbedderRecord, EmbeddingCache, LazyEmbedder, TextEmbedder, check_agreement, embed_concept_captions, record_of,
)
from mll_index.index.graph import Graph, load_graph, save_graph
from mll_index.index.search import SearchKind, flat_search, make_faiss

log = logging.getLogger(__name__)

KIND = "node-index"
FORMAT_VERSION = 2             # 2: node segments; 1: one set of files, all rewritten by growth
READ_VERSIONS = (1, 2)
FILES = [GRAPH, NODE_TABLE, NODE_VECTORS]   # and FAISS_FILE with IVF search


@dataclass
class NodeIndex:
    """A loaded node index: manifest, graph, node vectors and the FAISS index.

    `vectors` is (size, d) float32, L2-normalised, row i = node graph.nodes[i]: memory-mapped for a
    one-segment index, in memory for a grown one.
    """

    path: Path
    manifest: dict[str, Any]
    graph: Graph
    vectors: np.ndarray
    _faiss: Any = None  # the IVF index, read at load; a flat one is made on first use

    @property
    def faiss_index(self) -> Any:
        """The FAISS index over `vectors` (IndexIVFFlat as stored, or an IndexFlatIP made on first use)."""
        if self._faiss is None:
            import faiss

            flat = faiss.IndexFlatIP(self.dim)
            flat.add(np.ascontiguousarray(self.vectors, dtype=np.float32))
            self._faiss = flat
        return self._faiss

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
        if self._faiss is None and self.manifest.get("search", "flat") == "flat":
            return flat_search(self.vectors, queries, k)
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
    cache = cache if cache is not None else EmbeddingCache.default()
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
    if (old / LABELS).is_dir():
        shutil.copytree(old / LABELS, new / LABELS, copy_function=_link_or_copy)
    if (old / PUBLISHED / MANIFEST).is_file():
        try:
            kept = EmbedderRecord.from_dict(read_json(old / PUBLISHED / MANIFEST)["embedder"])
            same = kept.space == embedder.space and kept.dim == embedder.dim
        except (MLLIndexError, KeyError, TypeError, ValueError):
            same = False
        if same:
            shutil.copytree(old / PUBLISHED, new / PUBLISHED, copy_function=_link_or_copy)
        else:
            log.warning("%s: published labels were embedded with another embedder; import them again",
                        old / PUBLISHED)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def _lock(path: Path) -> contextlib.AbstractContextManager[None]:
    """The index's writer lock (see `index_lock`); nothing to lock before the first build."""
    return index_lock(path) if Path(path).is_dir() else contextlib.nullcontext()


def _write_table(handle: IO[str], graph: Graph, rows: Sequence[int], captions: Sequence[Sequence[str]],
                 first: int) -> None:
    """Node table lines for taxonomy rows `rows`, numbered from index row `first`."""
    for i, (row, caps) in enumerate(zip(rows, captions), first):
        handle.write(json.dumps({"row": i, "wnid": graph.wnids[row], "synset": graph.synsets[row],
                                 "captions": list(caps)}, ensure_ascii=False) + "\n")


def write_index(path: Path, graph: Graph, vectors: np.ndarray, captions: Sequence[Sequence[str]], *,
                embedder: EmbedderRecord, expander_id: str, search: SearchKind = "flat",
                build_seconds: float | None = None) -> None:
    """Write an index directory (one segment) from node vectors already embedded, atomically; labels at
    `path` are kept.

    Args:
        vectors: (len(graph.nodes), d) float32, unit rows; row i is node graph.nodes[i].
        captions: the captions each node's vector pools (recorded in nodes.jsonl), one list per node.
    """
    if not Path(path).is_dir():
        clear_leftovers(Path(path))     # a first build killed before: nothing to lock, its pid is gone
    with _lock(path):
        _write_index(Path(path), graph, vectors, captions, embedder=embedder, expander_id=expander_id, search=search,
                     build_seconds=build_seconds)


def _write_index(path: Path, graph: Graph, vectors: np.ndarray, captions: Sequence[Sequence[str]], *,
                 embedder: EmbedderRecord, expander_id: str, search: SearchKind, build_seconds: float | None) -> None:
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(graph.nodes) or len(captions) != len(graph.nodes):
        raise InputError(f"{len(graph.nodes)} nodes, {vectors.shape} vectors and {len(captions)} caption lists")
    if search not in ("flat", "ivf"):
        raise InputError(f"unknown search kind {search!r}; choose flat or ivf")
    with contextlib.ExitStack() as held, atomic_dir(path) as tmp:
        # The new folder is locked before it is renamed in: a writer that finds it there waits for
        # this one (the lock of the folder it replaces stays with the old one).
        held.enter_context(writer_lock(tmp))
        if path.is_dir():
            _carry_labels(path, tmp, embedder)
        with writing(path / GRAPH):
            save_graph(graph, tmp / GRAPH, atomic=False)
        with writing(path / NODE_TABLE), open(tmp / NODE_TABLE, "w", encoding="utf-8") as handle:
            _write_table(handle, graph, graph.nodes, captions, 0)
        with writing(path / NODE_VECTORS):
            np.save(tmp / NODE_VECTORS, vectors)
        files = list(FILES)
        extra: dict[str, Any] = {}
        if search == "ivf":
            faiss_index = make_faiss(vectors, search)
            # Serialised here and written by Python: faiss.write_index only prints a failed close
            # (a full disk noticed at the last flush), leaving a cut file behind.
            with writing(path / FAISS_FILE), open(tmp / FAISS_FILE, "wb") as handle:
                handle.write(faiss.serialize_index(faiss_index).data)
            files.append(FAISS_FILE)
            # Recorded so a user can judge the approximation: how many nodes find themselves.
            _, top = faiss_index.search(vectors, 1)
            extra["ivf_self_recall"] = round(float((top[:, 0] == np.arange(len(vectors))).mean()), 5)
        if build_seconds is not None:
            extra["build_seconds"] = round(build_seconds, 1)
        manifest = new_manifest(
            KIND,
            version=FORMAT_VERSION,
            embedder=dataclasses.replace(embedder, dim=int(vectors.shape[1])).to_dict(),
            metric="inner_product",
            search=search,
            graph={"wordnet": "3.0", "node_set": graph.node_set, "synsets": len(graph.wnids)},
            expander=expander_id,
            counts={"nodes": len(graph.nodes), "captions": sum(len(c) for c in captions)},
            segments=[{"vectors": NODE_VECTORS, "table": NODE_TABLE, "nodes": len(graph.nodes)}],
            faiss=FAISS_FILE if search == "ivf" else None,
            next_segment=1,
            **extra,
        )
        seal_manifest(tmp, manifest, files)


def compact_index(path: Path) -> NodeIndex:
    """Rewrite a grown index as one segment: the same nodes, vectors and labels; an IVF index is retrained."""
    path = Path(path)
    read_index_manifest(path)                     # an error naming the path, before any lock is taken
    with index_lock(path):
        index = load_index(path)
        captions = [row["captions"] for row in read_node_table(path)]
        _write_index(path, index.graph, np.asarray(index.vectors), captions, embedder=index.embedder,
                     expander_id=index.manifest.get("expander", "wordnet-v1"), search=index.manifest.get("search", "flat"),
                     build_seconds=None)
    return load_index(path)


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

    The new nodes are expanded and embedded into one new segment; the files there are not
    rewritten, only the manifest is replaced (see the module docstring). Nodes already there
    are skipped.

    Raises:
        InputError: no wnid given, or a wnid that is not a WordNet 3.0 noun synset.
        EmbedderMismatchError: `embedder` is not the index's.
    """
    path = Path(path)
    read_index_manifest(path)                     # an error naming the path, before any lock is taken
    if not wnids:
        raise InputError("no node to add: give at least one wnid")
    with index_lock(path):
        manifest = read_index_manifest(path)
        _remove_unlisted(path, manifest.get("files", {}))
        graph = load_index_graph(path, manifest)
        rows = [graph.row(w.strip()) for w in wnids]     # raises on an unknown wnid, naming it
        present = graph.node_position
        new_rows = list(dict.fromkeys(r for r in rows if r not in present))
        skipped = sorted({graph.wnids[r] for r in rows if r in present})
        if not new_rows:
            return GrowthReport([], skipped, 0.0, 0.0)
        built = EmbedderRecord.from_dict(manifest["embedder"])
        embedder = embedder or LazyEmbedder(built)
        check_agreement(built, record_of(embedder), str(path))
        expander = expander or WordNetExpander()
        if manifest.get("expander") not in (None, expander.expander_id):
            log.warning("%s: built with expander %s, adding nodes with %s", path, manifest.get("expander"),
                        expander.expander_id)
        cache = cache if cache is not None else EmbeddingCache.default()
        started = time.perf_counter()
        captions = expander.expand([node_concept(graph, r) for r in new_rows])
        fresh = embed_concept_captions(captions, embedder, cache)
        embedded = time.perf_counter()
        _append_segment(path, manifest, graph, new_rows, captions, fresh)
        done = time.perf_counter()
    log.info("added %d nodes to %s (%.2f s embedding, %.2f s writing)", len(new_rows), path, embedded - started,
             done - embedded)
    return GrowthReport([graph.wnids[r] for r in new_rows], skipped, embedded - started, done - embedded)


def _append_segment(path: Path, manifest: dict[str, Any], graph: Graph, new_rows: Sequence[int],
                    captions: Sequence[Sequence[str]], vectors: np.ndarray) -> None:
    """Write one segment's files, then the manifest listing them, replaced last."""
    segments, faiss_file = _layout(path, manifest)
    number = int(manifest.get("next_segment", len(segments)))
    first = sum(int(s["nodes"]) for s in segments)
    vectors_file, table_file = segment_files(number)
    segment = {"vectors": vectors_file, "table": table_file, "nodes": len(new_rows)}
    files = dict(manifest.get("files", {}))
    with atomic_file(path / segment["vectors"], "wb") as handle:
        np.save(handle, np.ascontiguousarray(vectors, dtype=np.float32))
    with atomic_file(path / segment["table"]) as handle:
        _write_table(handle, graph, new_rows, captions, first)
    files.update({segment["vectors"]: file_record(path / segment["vectors"]),
                  segment["table"]: file_record(path / segment["table"])})
    node_set = manifest.get("graph", {}).get("node_set") or graph.node_set
    before = node_set.get("added", 0) if node_set.get("kind") == "grown" else 0
    base = node_set.get("value") if node_set.get("kind") == "grown" else node_set
    counts = dict(manifest["counts"])
    counts["nodes"] = first + len(new_rows)
    counts["captions"] = int(counts.get("captions", 0)) + sum(len(c) for c in captions)
    grown = {key: value for key, value in manifest.items() if key != "files"}
    grown.update({"format_version": FORMAT_VERSION, "package_version": __version__,
                  "graph": {**manifest.get("graph", {}),
                            "node_set": {"kind": "grown", "value": base, "added": before + len(new_rows)}},
                  "counts": counts, "segments": segments + [segment], "faiss": faiss_file,
                  "next_segment": number + 1, "files": files})
    write_json(path / MANIFEST, grown)


def _remove_unlisted(path: Path, listed: dict[str, Any]) -> None:
    """Delete segment files a crashed growth left behind: no manifest lists them, no reader opens them."""
    for pattern in SEGMENT_PATTERNS:
        for file in path.glob(pattern):
            if file.name not in listed:
                file.unlink(missing_ok=True)


def read_index_manifest(path: Path, verify: bool = False) -> dict[str, Any]:
    """An index's manifest (format version 1 or 2), checked: every listed file's size, and with
    `verify` its SHA-256 (every segment's files).

    Raises:
        IndexFormatError: a missing, truncated, corrupt or other-version file, named.
    """
    path = Path(path)
    if not path.name:
        path = path.resolve()       # "." and "": the folder's own name, which a crash backup would sit beside
    if not path.name or (path.is_dir() and not (path / MANIFEST).is_file()):
        raise IndexFormatError(f"{path} is not an mll-index index (no {MANIFEST}); build one with "
                               f"`mll-index build --index <folder>`")
    return read_manifest(path, KIND, verify=verify, versions=READ_VERSIONS, own_lock=True)


def check_index_files(path: Path, checksums: bool = False) -> list[str]:
    """Every problem of the node index's own files (manifest, graph, every segment's node table and
    vectors, the FAISS file), one line each naming the file; [] when all is sound.

    Every listed file's size is checked, with `checksums` its SHA-256 too; when those hold, the
    index is opened as `load_index` opens it (shapes, counts, node tables).

    Raises:
        IndexFormatError: `path` is not an index (no manifest.json).
    """
    path = Path(path)
    if not path.name or not (path / MANIFEST).is_file():
        read_index_manifest(path)            # raises, saying why (not an index, no folder), or recovers a swap
    return check_then_open(path, KIND, lambda: load_index(path), checksums=checksums, versions=READ_VERSIONS)


def index_leftovers(path: Path) -> dict[str, Any]:
    """What interrupted writes left in or beside an index (temporary files and folders, swap backups,
    segment files no manifest lists), for `info`: {"paths": [...], "bytes": n}. Reported, not
    removed: the next writer removes them under its lock."""
    path = Path(path)
    found = find_leftovers(path)
    try:
        listed = read_json(path / MANIFEST).get("files", {})
        found += [f for pattern in ("node_vectors-*.npy", "nodes-*.jsonl") for f in path.glob(pattern)
                  if f.name not in listed]
    except (MLLIndexError, AttributeError):
        pass
    return {"paths": [str(f) for f in sorted(found)], "bytes": size_of(found)}


def _layout(path: Path, manifest: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The segments ({"vectors", "table", "nodes"} each, in row order) and the FAISS file (None: flat, built
    from the vectors at load) of an index; a version-1 index is one segment with its FAISS file."""
    try:
        if manifest["format_version"] == 1:
            return [{"vectors": NODE_VECTORS, "table": NODE_TABLE,
                     "nodes": int(manifest["counts"]["nodes"])}], FAISS_FILE
        segments = [{"vectors": str(s["vectors"]), "table": str(s["table"]), "nodes": int(s["nodes"])}
                    for s in manifest["segments"]]
        if not segments:
            raise ValueError("'segments' is empty")
        return segments, manifest.get("faiss")
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{Path(path) / MANIFEST}: missing or malformed field {exc}") from None


def _read_table(file: Path) -> Iterator[dict[str, Any]]:
    try:
        with open(file, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise IndexFormatError(f"{file}: line {number} is not valid JSON ({exc})") from None
    except FileNotFoundError:
        raise IndexFormatError(f"{file}: file listed in the manifest is missing") from None
    except UnicodeDecodeError as exc:
        raise IndexFormatError(f"{file}: not UTF-8 text ({exc})") from None


def read_node_table(path: Path) -> Iterator[dict[str, Any]]:
    """The node table of an index in row order, across its segments: {"row", "wnid", "synset", "captions"} per node."""
    path = Path(path)
    segments, _ = _layout(path, read_index_manifest(path))
    for segment in segments:
        yield from _read_table(path / segment["table"])


def load_index_graph(path: Path, manifest: dict[str, Any] | None = None) -> Graph:
    """An index's graph: graph.json's taxonomy, with the nodes of every segment in row order.

    Raises:
        IndexFormatError: graph.json or a node table disagrees with the manifest, naming the file.
    """
    path = Path(path)
    manifest = manifest if manifest is not None else read_index_manifest(path)
    segments, _ = _layout(path, manifest)
    graph = load_graph(path / GRAPH)
    if len(segments) == 1:
        return graph
    if len(graph.nodes) != segments[0]["nodes"]:
        raise IndexFormatError(f"{path / GRAPH}: {len(graph.nodes)} nodes, the manifest's first segment "
                               f"holds {segments[0]['nodes']}")
    nodes = list(graph.nodes)
    for segment in segments[1:]:
        file = path / segment["table"]
        wnids = [row.get("wnid") for row in _read_table(file)]
        unknown = [w for w in wnids if w not in graph.row_of]
        if unknown or len(wnids) != segment["nodes"]:
            raise IndexFormatError(f"{file}: {len(wnids)} nodes ({len(unknown)} unknown wnids: {unknown[:3]}), "
                                   f"the manifest lists {segment['nodes']}")
        nodes += [graph.row_of[w] for w in wnids]
    node_set = manifest.get("graph", {}).get("node_set") or graph.node_set
    return dataclasses.replace(graph, nodes=nodes, node_set=node_set)


def _open_vectors(file: Path, rows: int, dim: int) -> np.ndarray:
    """One segment's vectors, memory-mapped; (rows, dim) float32 or an IndexFormatError naming the file."""
    try:
        vectors = np.load(file, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise IndexFormatError(f"{file}: cannot read ({exc})") from None
    if vectors.ndim != 2 or vectors.dtype != np.float32 or vectors.shape[0] != rows:
        raise IndexFormatError(f"{file}: {vectors.dtype} array of shape {vectors.shape}, the manifest lists "
                               f"{rows} nodes of dimension {dim}")
    if vectors.shape[1] != dim:
        raise IndexFormatError(f"{file}: vectors of dimension {vectors.shape[1]}, the manifest says {dim}")
    return vectors


def load_index(path: Path, verify: bool = False) -> NodeIndex:
    """Open an index directory. A one-segment index's vectors are memory-mapped; a grown one's are
    concatenated in memory ((n, d) float32) until `compact_index` folds its segments.

    A writer replacing the index meanwhile (a rebuild, a growth) makes it read again: what is
    returned is one version.

    Raises:
        IndexFormatError: a missing, truncated, corrupt or other-version file, named.
    """
    path = Path(path)
    return read_consistent(lambda: _load_index(path, verify), [path, path / MANIFEST])


def _load_index(path: Path, verify: bool) -> NodeIndex:
    manifest = read_index_manifest(path, verify=verify)
    try:
        n, dim = int(manifest["counts"]["nodes"]), int(manifest["embedder"]["dim"])
        EmbedderRecord.from_dict(manifest["embedder"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{path / MANIFEST}: missing or malformed field {exc}") from None
    segments, faiss_file = _layout(path, manifest)
    graph = load_index_graph(path, manifest)
    if len(graph.nodes) != n:
        raise IndexFormatError(f"{path}: graph.json nodes = {len(graph.nodes)}, the manifest says {n} nodes")
    files = [path / s["vectors"] for s in segments]
    parts = [_open_vectors(f, s["nodes"], dim) for f, s in zip(files, segments)]
    if sum(len(p) for p in parts) != n:
        raise IndexFormatError(f"{path}: node vector rows = {sum(len(p) for p in parts)}, the manifest says {n} nodes")
    vectors = parts[0] if len(parts) == 1 else np.concatenate(parts)
    del parts
    if faiss_file is None:
        return NodeIndex(path, manifest, graph, vectors)   # flat: searched by flat_search, FAISS only if asked
    import faiss

    try:
        faiss_index = faiss.read_index(str(path / faiss_file))
    except RuntimeError as exc:
        raise IndexFormatError(f"{path / faiss_file}: not a readable FAISS index ({str(exc).splitlines()[0]})") from None
    if faiss_index.ntotal != segments[0]["nodes"] or faiss_index.d != dim:
        raise IndexFormatError(f"{path / faiss_file}: {faiss_index.ntotal} vectors of dimension {faiss_index.d}, "
                               f"the manifest says {segments[0]['nodes']} of dimension {dim}")
    for file in files[1:]:
        # A mapping of its own, dropped after the copy: the pages FAISS reads do not stay resident.
        faiss_index.add(np.load(file, mmap_mode="r"))
    return NodeIndex(path, manifest, graph, vectors, faiss_index)
