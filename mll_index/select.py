"""Model selection (Model Label Learning): from a task's class names to models per class, using labels only.

1. Each class is expanded into captions, embedded, and matched to the `n` labeled nodes most
   like it (a labeled node has sample images). Every node of the graph is scored by
   `match.Matcher.node_scores`, the rule `mll-index match` ranks by (cosine, WordNet sense
   frequencies, lemma hits); a graph node without images that scores better than every
   labeled node lends its score to the labeled nodes among its hyponyms and hypernyms up to
   two steps away, times 0.9 per step (the paper pools the images of related synsets for the
   same reason). A lent score counts as weak evidence unless the class name is a lemma of the
   lender (`lent_blindly`): an unrelated node may match a name on the embedding alone.
2. For every model, the confusion on the union S of the task's matched nodes:
   - `restricted` (default): among the sample images of S's nodes, which node of S does the
     model predict? Exact, recomputed from the stored image and node embeddings. When the
     task names a domain ("sketch") and sample images carry that domain tag (file names
     `<domain>-*`), only those images count;
   - `counts`: the per-node counts over the whole labeled node set, stored at labeling time.
     Cheaper (no image is touched) but a node's errors count confusions with nodes that
     have nothing to do with the task.
3. Per class, the counts of its nodes, weighted by their similarity, give the model's F1.
4. score(model, class) = alpha * F1(model, class) + (1 - alpha) * mean F1(model, other classes).
5. The top-k models per class; the task-level ranking is the mean score over classes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mll_index.captions import CaptionExpander, clean_class_names
from mll_index.embed import EmbeddingCache, LazyEmbedder, TextEmbedder, embed_classes
from mll_index.errors import IndexFormatError, InputError
from mll_index.index import NodeIndex, load_index
from mll_index.label_matrix import LabelMatrix, Shard, has_matrix, open_matrix
from mll_index.labels import (SampleTable, folder_counts, load_label, read_sample_table, relabel_hint, scan_labels,
                              stale_in_matrix)
from mll_index.match import LOW_CONFIDENCE, ClassName, Matcher, is_weak, read_class_name, read_class_names
from mll_index.published import (BenchmarkMatch, PublishedLabels, describe_ranking, has_published, open_published,
                                  published_evidence, rank_published, task_text_vectors)
from mll_index.userfiles import names_from_text, normalize_class_name, parse_user_json, read_user_text

log = logging.getLogger(__name__)

SelectionMode = Literal["auto", "restricted", "counts"]
MODES: tuple[str, ...] = ("auto", "restricted", "counts")
# `auto` takes the restricted mode while it costs at most this many image-model scorings
# (about half a second on 2 cores; bench/scale.py measures it), the counts mode beyond.
RESTRICTED_BUDGET = 500_000
RANKING_SIZE = 100
MATCH_BLOCK = 256     # classes matched at once
GRAPH_STEP = 0.9      # score kept per hypernym/hyponym step when a match has no images
GRAPH_DEPTH = 2
DOMAIN_TAG_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)-")


# ---------------------------------------------------------------------------------------
# Tasks


@dataclass(frozen=True)
class Task:
    """A user's task: class names, optionally captions per class, a domain word and a description.

    The domain word restricts the restricted confusion to the sample images of that domain
    (where the sample set tags its images); the description is kept in the output.
    """

    classes: tuple[str, ...]
    name: str = "task"
    captions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    domain: str | None = None
    description: str | None = None


def make_task(classes: Sequence[str], name: str = "task", captions: dict[str, Sequence[str]] | None = None,
              domain: str | None = None, description: str | None = None) -> Task:
    """A checked Task. Raises InputError for no class, one class, duplicate names or a name of stop words only."""
    cleaned = clean_class_names(list(classes))
    read_class_names(cleaned)
    if len(cleaned) < 2:
        raise InputError(f"task {name!r}: a task needs at least 2 classes, got {len(cleaned)} ({cleaned})")
    caps = {}
    for cls, values in (captions or {}).items():
        if cls not in cleaned:
            raise InputError(f"task {name!r}: captions given for {cls!r}, which is not one of its classes")
        if not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise InputError(f"task {name!r}: captions of {cls!r} must be a non-empty list of strings")
        caps[cls] = tuple(values)
    return Task(tuple(cleaned), name, caps, domain, description)


def task_from_json(data: Any, where: str = "task") -> Task:
    """A Task from JSON: a list of class names, or {"name", "classes": [name | {"name", "captions"}],
    "domain", "description"}.

    Args:
        where: the file (and line, for a batch file) for messages ("tasks.jsonl:3").
    Raises:
        InputError: naming `where` (and the class): a malformed task, or a class name empty once
            cleaned (`userfiles.normalize_class_name`).
    """
    if isinstance(data, list):
        data = {"classes": data}
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
        raise InputError(f'{where}: a task is a list of class names or an object with a "classes" list')
    names, captions = [], {}
    for i, c in enumerate(data["classes"], 1):
        if isinstance(c, str):
            names.append(normalize_class_name(c, f"{where}: class {i}"))
        elif isinstance(c, dict) and isinstance(c.get("name"), str):
            names.append(normalize_class_name(c["name"], f"{where}: class {i}"))
            if c.get("captions") is not None:
                captions[names[-1]] = c["captions"]
        else:
            shown = repr(c) if not isinstance(c, (list, dict)) else f"a JSON {'list' if isinstance(c, list) else 'object'}"
            raise InputError(f"{where}: class {i}: a class is a name or an object with a 'name', not {shown[:80]}")
    for key in ("name", "domain", "description"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise InputError(f"{where}: {key!r} must be a string")
    try:
        return make_task(names, data.get("name") or "task", captions, data.get("domain"), data.get("description"))
    except InputError as exc:
        if where == "task":
            raise
        raise InputError(f"{where}: {exc}") from None


def read_task_file(path: Path) -> Task:
    """A task from a file: JSON (see task_from_json) or plain text, one class name per line (blank lines skipped).

    The file is read as `userfiles.read_user_text` reads (a byte-order mark, UTF-16, CR LF); it is
    JSON when its first character is '{' or '['.

    Raises:
        InputError: naming the file (and line): unreadable text, invalid JSON, a malformed task.
    """
    text = read_user_text(path)
    if text.lstrip().startswith(("{", "[")):
        return task_from_json(parse_user_json(text, str(path), "JSON task file"), str(path))
    names = names_from_text(text, str(path), skip_blank=True)
    try:
        return make_task(names, Path(path).stem)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def read_batch_file(path: Path) -> list[Task]:
    """Tasks from a JSON-lines file, one task (see task_from_json) per line; blank lines are skipped.

    Raises:
        InputError: naming the file and line ("tasks.jsonl:3"): unreadable text, a line that is not
            JSON or not a task, or no task at all.
    """
    tasks = []
    for number, line in enumerate(read_user_text(path).split("\n"), 1):
        if line.strip():
            where = f"{path}:{number}"
            tasks.append(task_from_json(parse_user_json(line, where, "JSON task line"), where))
    if not tasks:
        raise InputError(f"{path}: no tasks")
    return tasks


# ---------------------------------------------------------------------------------------
# Labels, gathered across models


@dataclass
class ImageLabels:
    """One model's image-level label, on the store's node axis (read only by the restricted mode).

    image_nodes: (n_images,) int64 node-axis positions; image_embeddings: (n_images, d) float16
    memory-mapped; node_axis: (m_model,) node-axis positions of the rows of node_embeddings
    (m_model, d); domains: (n_images,) str, "" where untagged.
    """

    image_nodes: np.ndarray
    image_embeddings: np.ndarray
    node_axis: np.ndarray
    node_embeddings: np.ndarray
    domains: np.ndarray

    def images_of(self, in_set: np.ndarray) -> np.ndarray:
        """Rows of the images whose node is in the set (in_set: (n_axis,) bool)."""
        return np.flatnonzero(in_set[self.image_nodes])

    @cached_property
    def _axis_order(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.node_axis, kind="stable")
        return order, self.node_axis[order]

    @cached_property
    def node_vectors(self) -> np.ndarray:
        """node_embeddings as float32 in memory (a few thousand rows, read by every task)."""
        return np.asarray(self.node_embeddings, np.float32)

    @cached_property
    def domain_set(self) -> frozenset[str]:
        return frozenset(self.domains.tolist())

    def node_rows(self, nodes: np.ndarray) -> np.ndarray:
        """Rows of node_embeddings for node-axis positions (-1 where this model has no such node)."""
        order, sorted_axis = self._axis_order
        at = np.minimum(np.searchsorted(sorted_axis, nodes), len(order) - 1)
        return np.where(sorted_axis[at] == nodes, order[at], -1)


@dataclass
class LabelStore:
    """The labels of an index's models on one node axis: the label matrix, and image-level labels on demand.

    `matrix` gives every model's TP, FP, FN per node (the `counts` mode reads only it);
    `image_labels(i)` opens model i's label folder the first time the restricted mode needs it.
    """

    index_path: Path
    matrix: LabelMatrix
    folders: dict[str, str]  # model id -> sample fingerprint, for models with a label folder
    # Model id -> why its label folder cannot be used (labels.scan_labels): the restricted and auto
    # modes refuse while there is one, rather than leave the model out or fall back to counts.
    damaged: dict[str, str] = field(default_factory=dict)
    _image: dict[int, ImageLabels | None] = field(default_factory=dict, repr=False)
    # Sample tables and their images' domain tags, read once per fingerprint: every model of a
    # hub labeled on one sample set shares them.
    _tables: dict[str, tuple[SampleTable, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def model_ids(self) -> tuple[str, ...]:
        return tuple(self.matrix.model_ids)

    @property
    def node_wnids(self) -> list[str]:
        return self.matrix.node_wnids

    @property
    def entries(self) -> dict[str, dict[str, Any]]:
        return dict(zip(self.matrix.model_ids, self.matrix.entries))

    @cached_property
    def node_position(self) -> dict[str, int]:
        return {w: j for j, w in enumerate(self.node_wnids)}

    @cached_property
    def has_image_labels(self) -> bool:
        """Whether every model has an image-level label (the restricted mode needs them)."""
        return all(m in self.folders for m in self.matrix.model_ids)

    def image_labels(self, i: int) -> ImageLabels | None:
        """Model i's image-level label, opened once; None if it has only counts."""
        if i not in self._image:
            model_id = self.matrix.model_ids[i]
            self._image[i] = _open_image_labels(self.index_path, model_id, self.node_position, self._tables) \
                if model_id in self.folders else None
        return self._image[i]


def _open_image_labels(index_path: Path, model_id: str, node_position: dict[str, int],
                       tables: dict[str, tuple[SampleTable, np.ndarray]]) -> ImageLabels:
    label = load_label(index_path, model_id)
    fingerprint = label.manifest["samples"]
    if fingerprint not in tables:
        table = read_sample_table(index_path, fingerprint)
        tables[fingerprint] = (table, image_domains(table.paths))
    table, domains = tables[fingerprint]
    if label.counts.shape[0] != len(table.node_wnids):
        raise IndexFormatError(f"label of {model_id!r}: counts for {label.counts.shape[0]} nodes, "
                               f"its sample table has {len(table.node_wnids)}")
    try:
        axis = np.array([node_position[w] for w in table.node_wnids], np.int64)
    except KeyError as exc:
        raise IndexFormatError(f"label of {model_id!r}: node {exc} is not in the label matrix; "
                               "run `mll-index labels compact`") from None
    return ImageLabels(axis[table.image_nodes], label.image_embeddings, axis, label.node_embeddings, domains)


def open_labels(index_path: Path, models: Sequence[str] | None = None) -> LabelStore:
    """Open the labels of an index (all labeled models, or those named).

    Label folders the matrix does not hold yet (written by an older version, or a crash between
    the two writes) are read into it in memory; `mll-index labels compact` stores them.

    Raises:
        InputError: no model is labeled, or a named model is not.
    """
    scan = scan_labels(index_path)
    folders = scan.samples
    damaged = {m: why for m, why in scan.damaged.items() if not models or m in models}
    if not folders and not has_matrix(index_path):
        if damaged:
            raise InputError(damaged_message(damaged))
        raise InputError(f"{index_path}: no model is labeled in this index; run `mll-index label`, or import "
                         "published results with `mll-index published import`")
    matrix = open_matrix(index_path) if has_matrix(index_path) else LabelMatrix(index_path, [], [], [], [])
    lost = {m: why for m, why in damaged.items() if m not in matrix.model_ids}
    if models and lost:
        raise InputError(damaged_message(lost))
    stale = stale_in_matrix(index_path, folders, matrix)
    if stale:
        log.info("%s: %d label folder(s) not in the label matrix yet; read in memory", index_path, len(stale))
        matrix = _with_folders(index_path, matrix, stale)
    if models:
        matrix = matrix.subset(list(models))
    else:
        matrix = matrix.subset(sorted(matrix.model_ids))
    return LabelStore(Path(index_path), matrix, folders, damaged)


def damaged_message(damaged: dict[str, str], mode: str | None = None) -> str:
    """One line: the first model whose label cannot be used, why, and what to run (see LabelStore.damaged)."""
    model_id, why = next(iter(damaged.items()))
    more = f"; {len(damaged) - 1} more model(s) likewise: {list(damaged)[1:4]}" if len(damaged) > 1 else ""
    counts = " (or select with --mode counts, from the label matrix's counts)" if mode else ""
    return f"the label of model {model_id!r} cannot be used ({why}); {relabel_hint(model_id)}{counts}{more}"


def _refuse_damaged(store: LabelStore, mode: str) -> None:
    """The restricted mode (and auto, which would otherwise fall back to counts unasked) needs every label."""
    if store.damaged:
        raise InputError(damaged_message(store.damaged, mode))


def _with_folders(index_path: Path, matrix: LabelMatrix, model_ids: Sequence[str]) -> LabelMatrix:
    """The matrix extended in memory with these models' label folders (later, so they win)."""
    nodes, ids, entries = list(matrix.node_wnids), list(matrix.model_ids), list(matrix.entries)
    node_pos, model_pos = {w: j for j, w in enumerate(nodes)}, {m: j for j, m in enumerate(ids)}
    shards = list(matrix.shards)
    for model_id in model_ids:
        wnids, entry, counts = folder_counts(index_path, model_id)
        for w in wnids:
            if w not in node_pos:
                node_pos[w] = len(nodes)
                nodes.append(w)
        if model_id not in model_pos:
            model_pos[model_id] = len(ids)
            ids.append(model_id)
            entries.append(entry)
        else:
            entries[model_pos[model_id]] = entry
        rows = np.array([node_pos[w] for w in wnids], np.int64)
        order = np.argsort(rows, kind="stable")
        shards.append(Shard(f"folder:{model_id}", rows[order], np.array([model_pos[model_id]], np.int64),
                            counts[order][:, None, :]))
    return LabelMatrix(matrix.path, nodes, ids, entries, shards)


def image_domain(path: str) -> str:
    """The domain tag of a sample image: its file name's prefix before the first '-' (lower case), or "".

    The emoji world names its sample images `<domain>-<n>.png`; any sample set can do the same.
    """
    match = DOMAIN_TAG_RE.match(path.rpartition("/")[2])
    return match.group(1).lower() if match else ""


def image_domains(paths: Sequence[str]) -> np.ndarray:
    """(n,) str: image_domain of every path, each distinct file name parsed once."""
    names = [p.rpartition("/")[2] for p in paths]
    tags = {n: image_domain(n) for n in set(names)}
    return np.array([tags[n] for n in names]) if names else np.zeros(0, "<U1")


# ---------------------------------------------------------------------------------------
# Step 1: classes to labeled nodes


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


def _top_stable(score: np.ndarray, n: int) -> np.ndarray:
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


def match_labeled_nodes(sel: Selector, names: Sequence[str], queries: np.ndarray,
                        n: int = 5) -> list[list[NodeMatch]]:
    """The n best labeled nodes of each class (see the module docstring, step 1).

    Every node is scored by `match.Matcher.node_scores`, the rule `mll-index match` ranks by.

    Args:
        names: the class names (as users wrote them).
        queries: (len(names), d) unit class embeddings from the index's embedder.
    """
    if sel.store is None or sel.labeled is None:
        raise InputError(f"{sel.index.path}: no image-based labels to match classes to (the index holds published "
                         "labels only); run `mll-index label`")
    read = [read_class_name(name) for name in names]
    queries = np.asarray(queries, np.float32)
    out: list[list[NodeMatch]] = []
    # In blocks, so that a batch of thousands of classes never holds (n_classes x n_nodes) scores at once.
    for s in range(0, len(names), MATCH_BLOCK):
        out += _match_block(sel, read[s:s + MATCH_BLOCK], queries[s:s + MATCH_BLOCK], n)
    return out


def _match_block(sel: Selector, names: Sequence[ClassName], queries: np.ndarray, n: int) -> list[list[NodeMatch]]:
    index, store, labeled = sel.index, sel.store, sel.labeled
    if store is None or labeled is None:   # match_labeled_nodes checked; a type narrowing that -O keeps
        raise InputError(f"{index.path}: no image-based labels to match classes to")
    g = index.graph
    scores = sel.matcher.node_scores(queries, names)              # (n_q, n_index)
    inside = labeled.positions >= 0
    if len(labeled.positions) == index.size and labeled.in_order:
        direct = scores                                           # every node is labeled, in index order
    else:
        direct = np.full((len(names), len(labeled.rows)), -np.inf, np.float32)
        direct[:, inside] = scores[:, labeled.positions[inside]]
    depth = min(index.size, n + int(sel.matcher.settings["candidates"]))
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
                              via.get(int(j), "direct")) for j in _top_stable(score, n)])
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


# ---------------------------------------------------------------------------------------
# Steps 2-5: confusion, F1, smoothing, top-k


def node_confusion(store: LabelStore, nodes: np.ndarray, mode: SelectionMode = "restricted",
                   domain: str | None = None) -> np.ndarray:
    """(n_models, len(nodes), 3) float32 TP, FP, FN of every model on the nodes S (node-axis positions).

    restricted: each sample image of S is assigned the node of S its model scores highest;
    with a domain, only the images tagged with it count (all images where S has none);
    counts: the label matrix's counts over the whole labeled node set (no domain).
    The result is a view of a node-major array: `class_f1` uses it without a copy.
    """
    nodes = np.asarray(nodes, np.int64)
    if mode == "counts":
        return store.matrix.gather(nodes).transpose(1, 0, 2)
    if mode != "restricted":
        raise InputError(f"unknown selection mode {mode!r}; modes: {list(MODES)}")
    _refuse_damaged(store, mode)
    if not store.has_image_labels:
        lacking = [m for m in store.model_ids if m not in store.folders]
        raise InputError(f"the restricted mode needs image-level labels; {len(lacking)} model(s) have only counts "
                         f"(e.g. {lacking[:3]}); use --mode counts")
    out = np.zeros((len(nodes), len(store.model_ids), 3), np.float32)
    in_set = np.zeros(len(store.node_wnids), bool)
    in_set[nodes] = True
    local = np.full(len(store.node_wnids), -1, np.int64)
    local[nodes] = np.arange(len(nodes))
    k = len(nodes)
    for i in range(len(store.model_ids)):
        lab = store.image_labels(i)
        if lab is None:     # has_image_labels said every model has one; a label folder removed since
            raise IndexFormatError(f"{store.index_path}: model {store.model_ids[i]!r} has no image-level label "
                                   "folder any more; run `mll-index label` again or use --mode counts")
        rows = lab.images_of(in_set)
        if domain:
            in_domain = rows[lab.domains[rows] == domain.lower()]
            rows = in_domain if len(in_domain) else rows
        if len(rows) == 0:
            continue
        node_rows = lab.node_rows(nodes)
        has = node_rows >= 0
        emb = np.asarray(lab.image_embeddings[rows], np.float32)
        if has.all():
            logits = emb @ lab.node_vectors[node_rows].T
        else:   # a node this model was never labeled on cannot be its prediction
            logits = np.full((len(rows), k), -np.inf, np.float32)
            logits[:, has] = emb @ lab.node_vectors[node_rows[has]].T
        true = local[lab.image_nodes[rows]]
        pred = np.argmax(logits, axis=1)
        hit = pred == true
        tp = np.bincount(true[hit], minlength=k)
        out[:, i, 0] = tp
        out[:, i, 1] = np.bincount(pred[~hit], minlength=k)
        out[:, i, 2] = np.bincount(true, minlength=k) - tp
    return out.transpose(1, 0, 2)


def restricted_work(store: LabelStore, counts: np.ndarray) -> int:
    """Image-model scorings the restricted mode would do on the nodes of `counts` ((n_models, |S|, 3) TP, FP, FN)."""
    return int(counts[:, :, 0].sum() + counts[:, :, 2].sum())


def class_f1(confusion: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n_models, n_classes) F1 from node confusion (n_models, |S|, 3) and class-node weights (n_classes, |S|).

    Each class has a handful of nodes, so each class sums only its own nodes' rows: the cost grows
    with n_classes x nodes per class x n_models, not n_classes x |S| x n_models. (A scipy sparse
    product does the same; importing scipy.sparse costs a quarter of a second of every CLI call.)
    """
    n_models, s, _ = confusion.shape
    node_major = np.ascontiguousarray(confusion.transpose(1, 0, 2), dtype=np.float32).reshape(s, n_models * 3)
    weights = np.asarray(weights, np.float32)
    summed = np.zeros((len(weights), n_models * 3), np.float32)
    for c, row in enumerate(weights):
        nodes = np.flatnonzero(row)
        if len(nodes):
            summed[c] = row[nodes] @ node_major[nodes]
    summed = summed.reshape(len(weights), n_models, 3)
    tp, fp, fn = (summed[..., j].T.astype(np.float64) for j in range(3))   # (n_models, n_classes)
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def smooth_scores(f1: np.ndarray, alpha: float) -> np.ndarray:
    """alpha * F1(model, class) + (1 - alpha) * mean F1(model, the task's other classes)."""
    n_classes = f1.shape[1]
    if n_classes < 2:
        return f1.copy()
    others = (f1.sum(axis=1, keepdims=True) - f1) / (n_classes - 1)
    return alpha * f1 + (1 - alpha) * others


@dataclass(frozen=True)
class ModelScore:
    model: str
    score: float


@dataclass(frozen=True)
class ClassSelection:
    """One class: its matched labeled nodes, the chosen models (best first) and whether the match is weak."""

    name: str
    nodes: tuple[NodeMatch, ...]
    models: tuple[ModelScore, ...]
    low_confidence: bool
    explain: dict[str, Any] | None = None
    benchmark: tuple[BenchmarkMatch, ...] = ()  # benchmark classes the published labels rest on


@dataclass(frozen=True)
class Selection:
    """The answer for one task: per class its nodes and models, and the task-level ranking of all models."""

    task: str
    mode: str
    k: int
    alpha: float
    classes: tuple[ClassSelection, ...]
    ranking: tuple[ModelScore, ...]
    labels: str = "image"
    domain: str | None = None
    description: str | None = None
    domain_images: bool = False  # whether the confusion used only the domain's sample images
    warnings: tuple[str, ...] = ()  # chosen models whose tokenizer cuts a class name or merges two classes' prompts
    published: dict[str, Any] | None = None  # published labels' rule, fallback and neighbours (published.describe_ranking)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def models_for(self) -> dict[str, list[str]]:
        """Class name → chosen model ids."""
        return {c.name: [m.model for m in c.models] for c in self.classes}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        if out["published"] is None:
            del out["published"]
        for c in out["classes"]:
            if c["explain"] is None:
                del c["explain"]
            if not c["benchmark"]:
                del c["benchmark"]
        return out


@dataclass
class Selector:
    """An opened index and its labels, ready to answer many tasks (open once, select often)."""

    index: NodeIndex
    store: LabelStore | None
    embedder: TextEmbedder
    expander: CaptionExpander | None = None
    cache: EmbeddingCache | None = None
    published: PublishedLabels | None = None
    labeled: LabeledNodes | None = None  # the store's node axis mapped onto the index, once
    matcher: Matcher = field(init=False)  # the class-to-node scoring over `index`, opened once

    def __post_init__(self) -> None:
        self.matcher = Matcher(self.index)


def open_selector(index_path: Path, embedder: TextEmbedder | None = None, *, models: Sequence[str] | None = None,
                  expander: CaptionExpander | None = None, cache: EmbeddingCache | None = None) -> Selector:
    """Open an index and its labels for selection: image-based labels, published ones, or both.

    `models` restricts the image-based labels to these models (published labels are then not used).
    The embedder defaults to the index's own.
    """
    index = load_index(index_path)
    published = open_published(index_path) if has_published(index_path) and not models else None
    # A damaged label folder counts: its model is then named, never left out unsaid.
    scan = None if has_matrix(index_path) else scan_labels(index_path)
    image_labels = scan is None or bool(scan.folders or scan.damaged)
    store = open_labels(index_path, models) if (image_labels or models or published is None) else None
    # Loaded only if a caption is not in the cache: a warm select imports no text runtime.
    embedder = embedder or LazyEmbedder(index.embedder)
    index.check_embedder(embedder)
    return Selector(index, store, embedder, expander, cache, published,
                    labeled_nodes(index, store) if store is not None else None)


def _percentile_ranks(scores: np.ndarray) -> np.ndarray:
    """(n_models, n_classes) ranks in [0, 1] per class (1 = best), ties sharing their mean rank."""
    from scipy.stats import rankdata

    n = scores.shape[0]
    if n == 1:
        return np.ones_like(scores, dtype=np.float64)
    return (rankdata(scores, method="average", axis=0) - 1) / (n - 1)


def _image_part(sel: Selector, task: Task, matches: list[list[NodeMatch]], alpha: float, mode: SelectionMode,
                use_domain: bool) -> dict[str, Any]:
    store = sel.store
    if store is None:
        raise InputError(f"{sel.index.path}: no image-based labels in this index (published labels only)")
    pos = store.node_position
    union = sorted({pos[m.wnid] for ms in matches for m in ms})
    col = {j: i for i, j in enumerate(union)}
    weights = np.zeros((len(task.classes), len(union)))
    for c, ms in enumerate(matches):
        for m in ms:
            weights[c, col[pos[m.wnid]]] = max(m.score, 0.0)
    nodes = np.array(union, np.int64)
    domain = task.domain if use_domain else None
    used: str = mode
    if mode == "auto":
        _refuse_damaged(store, mode)
        counts = node_confusion(store, nodes, "counts")
        fits = store.has_image_labels and restricted_work(store, counts) <= RESTRICTED_BUDGET
        used = "restricted" if fits else "counts"
        confusion = node_confusion(store, nodes, "restricted", domain) if fits else counts
    else:
        confusion = node_confusion(store, nodes, mode, domain)
    f1 = class_f1(confusion, weights)
    domain_used = bool(domain) and used == "restricted" and any(
        domain.lower() in lab.domain_set for lab in (store.image_labels(i) for i in range(len(store.model_ids)))
        if lab is not None)
    return {"ids": list(store.model_ids), "scores": smooth_scores(f1, alpha), "f1": f1, "confusion": confusion,
            "weights": weights, "domain_used": domain_used, "mode": used}


def _select_one(sel: Selector, task: Task, matches: list[list[NodeMatch]], bench: list[list[BenchmarkMatch]],
                published_raw: np.ndarray | None, k: int, alpha: float, mode: SelectionMode, explain: bool,
                use_domain: bool = True, ranking_size: int | None = RANKING_SIZE) -> Selection:
    image = _image_part(sel, task, matches, alpha, mode, use_domain) if sel.store is not None else None
    published, pub_ranking = None, None
    if published_raw is not None:
        # published_raw is (n_datasets, n_classes): the classes' similarity to each dataset (see prepare_tasks).
        domain_vec, description_vec = task_text_vectors(sel.published, sel.embedder, sel.cache,  # type: ignore[arg-type]
                                                        domain=task.domain if use_domain else None,
                                                        description=task.description)
        pub_ranking = rank_published(sel.published, published_raw.T, domain=domain_vec,  # type: ignore[arg-type]
                                description=description_vec)
        published = smooth_scores(pub_ranking.scores, alpha)
    if image is not None and published is not None:
        # Two scales (F1 on sample images, published accuracy): each becomes a rank among its own
        # models per class, and a model's score is the mean of the ranks it has.
        pub_ids = [m["id"] for m in sel.published.models]  # type: ignore[union-attr]
        ids = image["ids"] + [m for m in pub_ids if m not in image["ids"]]
        total = np.zeros((len(ids), len(task.classes)))
        count = np.zeros((len(ids), 1))
        for part_ids, part in ((image["ids"], image["scores"]), (pub_ids, published)):
            rows = [ids.index(m) for m in part_ids]
            total[rows] += _percentile_ranks(part)
            count[rows] += 1
        scores, labels = total / count, "both"
    elif image is not None:
        ids, scores, labels = image["ids"], image["scores"], "image"
    else:
        ids, scores, labels = [m["id"] for m in sel.published.models], published, "published"  # type: ignore[union-attr]
    k_eff = min(k, len(ids))
    classes = []
    for c, name in enumerate(task.classes):
        order = _top_stable(scores[:, c], k_eff)
        chosen = tuple(ModelScore(ids[i], round(float(scores[i, c]), 4)) for i in order)
        weak_image = is_weak(sel.matcher, name, matches[c][0].score if matches[c] else None) or \
            (bool(matches[c]) and lent_blindly(sel.matcher, name, matches[c][0]))
        weak_bench = not bench[c] or bench[c][0].similarity < LOW_CONFIDENCE
        weak = (weak_image or image is None) and (weak_bench or published is None)
        detail = None
        if explain:
            detail = {"labels": labels}
            if image is not None:
                f1, confusion, w = image["f1"], image["confusion"], image["weights"]
                summed = np.einsum("s,msk->mk", w[c], confusion)
                detail["rule"] = (f"score = {alpha} * F1 + {round(1 - alpha, 4)} * mean F1 on the other classes; F1 from "
                                  f"TP/FP/FN of the matched nodes ({image['mode']} confusion), weighted by node score")
                detail["models"] = {image["ids"][i]: {
                    "f1": round(float(f1[i, c]), 4),
                    "mean_f1_other_classes": round(float((f1[i].sum() - f1[i, c]) / max(1, len(task.classes) - 1)), 4),
                    "weighted_tp_fp_fn": [round(float(v), 2) for v in summed[i]],
                    "score": round(float(image["scores"][i, c]), 4)}
                    for i in _top_stable(image["scores"][:, c], max(k_eff, 3))}
            if published is not None:
                pub_ids = [m["id"] for m in sel.published.models]  # type: ignore[union-attr]
                detail["published_rule"] = (describe_ranking(sel.published, pub_ranking, task.classes)["rule"] +  # type: ignore[arg-type]
                                            f", smoothed with alpha {alpha}")
                detail["published_models"] = {pub_ids[i]: round(float(published[i, c]), 4)
                                              for i in _top_stable(published[:, c], max(k_eff, 3))}
            if labels == "both":
                detail["combined_rule"] = "mean of the model's per-class rank among image-labeled and published models"
        classes.append(ClassSelection(name, tuple(matches[c]), chosen, weak, detail, tuple(bench[c])))
    task_scores = scores.mean(axis=1)
    ranked = _top_stable(task_scores, len(ids) if ranking_size is None else ranking_size)
    ranking = tuple(ModelScore(ids[i], round(float(task_scores[i]), 4)) for i in ranked)
    used = image["mode"] if image is not None else mode
    return Selection(task.name, used, k_eff, alpha, tuple(classes), ranking, labels=labels, domain=task.domain,
                     description=task.description, domain_images=bool(image and image["domain_used"]),
                     warnings=prompt_warnings(sel, task, classes),
                     published=describe_ranking(sel.published, pub_ranking, task.classes) if pub_ranking is not None else None)  # type: ignore[arg-type]


def prompt_warnings(sel: Selector, task: Task, classes: Sequence[ClassSelection]) -> tuple[str, ...]:
    """One line per context length among the chosen models whose tokenizer cuts a class name or
    makes two classes' prompts identical (the prompts `reuse` writes: see zeroshot.prompt_names).

    Read from the models' configs and CLIP's vocabulary, without torch; models with another
    tokenizer than open_clip's default are not checked here (`reuse` checks every model).
    """
    from mll_index.zeroshot import check_prompt_rows, clip_token_rows, lemma_of, prompt_names, zero_shot_templates

    entries = dict(sel.store.entries) if sel.store is not None else {}
    if sel.published is not None:
        entries = {m["id"]: m for m in sel.published.models} | entries
    by_length: dict[int, list[str]] = {}
    for model in dict.fromkeys(m.model for c in classes for m in c.models):
        length = text_context_of(entries.get(model))
        if length is not None:
            by_length.setdefault(length, []).append(model)
    if not by_length:
        return ()
    names = list(task.classes)
    written = prompt_names(names, {c.name: lemma_of(c.nodes[0].synset) for c in classes if c.nodes})
    longest = max(len(t.format(name=w).lower().encode("utf-8")) for w in written for t in zero_shot_templates())
    plain = all(w.isascii() for w in written) and len({" ".join(w.lower().split()) for w in written}) == len(written)
    out = []
    for length, models in sorted(by_length.items()):
        if plain and longest + 2 < length:
            continue    # a CLIP token covers at least one byte: nothing can be cut, and no two names read alike
        if clip_token_rows([], length) is None:
            return ()   # open_clip is not installed: reuse cannot run either
        check = check_prompt_rows(lambda texts: clip_token_rows(texts, length), names, written)  # noqa: B023
        if check.ok:
            continue
        parts = [f"classes {list(g)} get identical prompts" for g in check.identical]
        if check.cut:
            parts.append(f"the name of {list(check.cut)[:5]}{' and others' if len(check.cut) > 5 else ''} is cut")
        shown = f"{models[:5]}{' and others' if len(models) > 5 else ''}"
        out.append(f"task {task.name!r}: model(s) {shown} read at most {length} tokens: " + "; ".join(parts) +
                   " (reuse refuses them unless --force; shorten or rename those classes)")
    return tuple(out)


def text_context_of(entry: dict[str, Any] | None) -> int | None:
    """The context length of a labeled model's default CLIP tokenizer (None: unknown or another tokenizer)."""
    from mll_index.zeroshot import text_context

    return text_context(entry) if entry else None


def _check_params(k: int, alpha: float, n_nodes: int, mode: str) -> None:
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    if n_nodes < 1:
        raise InputError(f"the number of nodes per class must be at least 1, got {n_nodes}")
    if mode not in MODES:
        raise InputError(f"unknown selection mode {mode!r}; modes: {list(MODES)}")


def _class_key(task: Task, name: str) -> str:
    """The key a class is embedded under: its name as `match` reads it ('golden_retriever' →
    'golden retriever'), plus its captions when the task gives some (given captions make a class
    distinct from the same name without them)."""
    text = read_class_name(name).text
    return text + "\0" + "\0".join(task.captions[name]) if name in task.captions else text


@dataclass
class PreparedTasks:
    """Tasks with every distinct class embedded and matched once, ready to select under any settings.

    rows[t]: per class of task t, its row in `matched`, `bench` and the columns of `published_raw`
    ((n_datasets, n_distinct_classes): each class's similarity to every dataset, `published.published_evidence`).
    """

    tasks: list[Task]
    n_nodes: int
    rows: list[list[int]]
    matched: list[list[NodeMatch]]
    bench: list[list[BenchmarkMatch]]
    published_raw: np.ndarray | None


def prepare_tasks(sel: Selector, tasks: Sequence[Task], n_nodes: int = 5) -> PreparedTasks:
    """Expand, embed and match every distinct class of the tasks once (step 1 of selection)."""
    if n_nodes < 1:
        raise InputError(f"the number of nodes per class must be at least 1, got {n_nodes}")
    distinct: dict[str, int] = {}
    captions: dict[str, tuple[str, ...]] = {}
    for task in tasks:
        for name in task.classes:
            key = _class_key(task, name)
            if name in task.captions:
                captions[key] = task.captions[name]
            distinct.setdefault(key, len(distinct))
    keys = list(distinct)
    names = [key.split("\0", 1)[0] for key in keys]
    queries = embed_classes(keys, sel.embedder, expander=sel.expander, captions=captions, cache=sel.cache) if keys else None
    if sel.store is not None and keys:
        matched = match_labeled_nodes(sel, names, queries, n_nodes)
    else:
        matched = [[] for _ in keys]
    if sel.published is not None and keys:
        evidence = published_evidence(sel.published, queries, n_nodes)
        published_raw, bench = evidence.similarity.T, evidence.matches
    else:
        published_raw, bench = None, [[] for _ in keys]
    rows = [[distinct[_class_key(task, name)] for name in task.classes] for task in tasks]
    return PreparedTasks(list(tasks), n_nodes, rows, matched, bench, published_raw)


def select_prepared(sel: Selector, prepared: PreparedTasks, *, k: int = 1, alpha: float = 0.7,
                    mode: SelectionMode = "auto", explain: bool = False, use_domain: bool = True,
                    ranking_size: int | None = RANKING_SIZE) -> list[Selection]:
    """Steps 2-5 for prepared tasks; a sweep over k, alpha and mode embeds nothing again.

    `ranking_size` bounds each Selection's task-level ranking (None: every model)."""
    _check_params(k, alpha, prepared.n_nodes, mode)
    out = []
    for task, rows in zip(prepared.tasks, prepared.rows):
        raw = prepared.published_raw[:, rows] if prepared.published_raw is not None else None
        out.append(_select_one(sel, task, [prepared.matched[r] for r in rows], [prepared.bench[r] for r in rows], raw,
                               k, alpha, mode, explain, use_domain, ranking_size))
    return out


def select_batch(sel: Selector, tasks: Sequence[Task], *, k: int = 1, alpha: float = 0.7, n_nodes: int = 5,
                 mode: SelectionMode = "auto", explain: bool = False, use_domain: bool = True,
                 ranking_size: int | None = RANKING_SIZE) -> list[Selection]:
    """Select for many tasks; every distinct class name is expanded, embedded and matched once.

    `use_domain=False` ignores the tasks' domain words (for comparisons)."""
    _check_params(k, alpha, n_nodes, mode)
    return select_prepared(sel, prepare_tasks(sel, tasks, n_nodes), k=k, alpha=alpha, mode=mode, explain=explain,
                           use_domain=use_domain, ranking_size=ranking_size)


def select_models(sel: Selector, task: Task, *, k: int = 1, alpha: float = 0.7, n_nodes: int = 5,
                  mode: SelectionMode = "auto", explain: bool = False, use_domain: bool = True,
                  ranking_size: int | None = RANKING_SIZE) -> Selection:
    """Choose the top-k models per class for one task (see the module docstring)."""
    return select_batch(sel, [task], k=k, alpha=alpha, n_nodes=n_nodes, mode=mode, explain=explain,
                        use_domain=use_domain, ranking_size=ranking_size)[0]
