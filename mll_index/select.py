"""Model selection (Model Label Learning): from a task's class names to models per class, using labels only.

1. Each class is expanded into captions, embedded, and matched to the `n` labeled nodes most
   like it (a labeled node has sample images). Matching scores every labeled node directly
   (cosine + lemma bonus, as `match.py`'s combined method) and also searches the whole graph:
   a graph node without images that matches the class better than every labeled node
   lends its score to the labeled nodes among its hyponyms and hypernyms up to two steps
   away, times 0.9 per step (the paper pools the images of related synsets for the same
   reason).
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

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mll_index.artifacts import read_user_text
from mll_index.captions import CaptionExpander, Concept, WordNetExpander, clean_class_names
from mll_index.embed import EmbeddingCache, TextEmbedder
from mll_index.errors import IndexFormatError, InputError
from mll_index.index import NodeIndex, embed_concept_captions, load_index
from mll_index.labels import labeled_models, load_label, read_sample_table
from mll_index.match import _lemma_bonus, _lexname_prior, match_settings
from mll_index.published import BenchmarkMatch, PublishedLabels, has_published, open_published, published_scores

log = logging.getLogger(__name__)

SelectionMode = Literal["restricted", "counts"]
MODES: tuple[str, ...] = ("restricted", "counts")
GRAPH_STEP = 0.9      # score kept per hypernym/hyponym step when a match has no images
GRAPH_DEPTH = 2
LOW_CONFIDENCE = 0.45
DOMAIN_TAG_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)-")  # a class whose best labeled node scores below this is reported as a weak match


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
    """A checked Task. Raises InputError for no class, one class or duplicate names."""
    cleaned = clean_class_names(list(classes))
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
    "domain", "description"}."""
    if isinstance(data, list):
        data = {"classes": data}
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
        raise InputError(f'{where}: a task is a list of class names or an object with a "classes" list')
    names, captions = [], {}
    for c in data["classes"]:
        if isinstance(c, str):
            names.append(c)
        elif isinstance(c, dict) and isinstance(c.get("name"), str):
            names.append(c["name"])
            if c.get("captions") is not None:
                captions[" ".join(c["name"].split())] = c["captions"]
        else:
            raise InputError(f"{where}: a class is a name or an object with a 'name', not {c!r}")
    for key in ("name", "domain", "description"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise InputError(f"{where}: {key!r} must be a string")
    return make_task(names, data.get("name") or "task", captions, data.get("domain"), data.get("description"))


def read_task_file(path: Path) -> Task:
    """A task from a file: JSON (see task_from_json) or plain text, one class name per line."""
    text = read_user_text(path)
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return task_from_json(json.loads(text), str(path))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from None
    return make_task([line for line in text.splitlines() if line.strip()], Path(path).stem)


# ---------------------------------------------------------------------------------------
# Labels, gathered across models


@dataclass
class LabelStore:
    """The labels of an index's models on one shared node axis.

    node_wnids: (m,) labeled nodes (union over models); counts: (n_models, m, 4) int32
    n_true, TP, FP, FN (zeros where a model lacks the node; `has_node` says which).
    Per model, `tables[i]` gives its images' node positions on the shared axis and its
    memory-mapped embeddings, read only by the restricted mode.
    """

    model_ids: tuple[str, ...]
    node_wnids: tuple[str, ...]
    counts: np.ndarray
    has_node: np.ndarray
    image_nodes: list[np.ndarray]
    image_embeddings: list[np.ndarray]
    node_embeddings: list[np.ndarray]   # (m, d) per model on the shared axis (zero rows where missing)
    entries: dict[str, dict[str, Any]]  # hub entry of each model, as labeled
    image_domains: list[np.ndarray] = field(default_factory=list)  # per model, (n_images,) str, "" if none
    _images_of: list[dict[int, np.ndarray]] = field(default_factory=list, repr=False)

    @property
    def node_position(self) -> dict[str, int]:
        return {w: j for j, w in enumerate(self.node_wnids)}

    def images_of(self, model: int, nodes: np.ndarray) -> np.ndarray:
        """Rows of the model's images whose node is one of `nodes` (shared positions)."""
        by_node = self._images_of[model]
        parts = [by_node[int(j)] for j in nodes if int(j) in by_node]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def open_labels(index_path: Path, models: Sequence[str] | None = None) -> LabelStore:
    """Open the labels of an index (all labeled models, or those named).

    Raises:
        InputError: no model is labeled, or a named model is not.
    """
    done = labeled_models(index_path)
    if not done:
        raise InputError(f"{index_path}: no model is labeled in this index; run `mll-index label`, or import "
                         "published results with `mll-index published import`")
    if models:
        missing = [m for m in models if m not in done]
        if missing:
            raise InputError(f"model(s) {missing} have no label in {index_path}; labeled: {sorted(done)}")
        ids = list(models)
    else:
        ids = sorted(done)
    labels = [load_label(index_path, m) for m in ids]
    tables = {fp: read_sample_table(index_path, fp) for fp in {lab.manifest["samples"] for lab in labels}}
    node_wnids = tuple(sorted({w for t in tables.values() for w in t.node_wnids}))
    pos = {w: j for j, w in enumerate(node_wnids)}
    m = len(node_wnids)
    counts = np.zeros((len(ids), m, 4), np.int32)
    has = np.zeros((len(ids), m), bool)
    image_nodes, image_emb, node_emb, by_node, domains = [], [], [], [], []
    for i, lab in enumerate(labels):
        table = tables[lab.manifest["samples"]]
        cols = np.array([pos[w] for w in table.node_wnids], np.int64)
        if lab.counts.shape[0] != len(cols):
            raise IndexFormatError(f"label of {lab.model_id!r}: counts for {lab.counts.shape[0]} nodes, "
                                   f"its sample table has {len(cols)}")
        counts[i, cols] = lab.counts
        has[i, cols] = True
        nodes = cols[table.image_nodes]
        image_nodes.append(nodes)
        domains.append(np.array([image_domain(p) for p in table.paths]))
        image_emb.append(lab.image_embeddings)
        shared = np.zeros((m, lab.node_embeddings.shape[1]), np.float32)
        shared[cols] = lab.node_embeddings
        node_emb.append(shared)
        order = np.argsort(nodes, kind="stable")
        starts = np.searchsorted(nodes[order], np.arange(m + 1))
        by_node.append({j: order[starts[j]:starts[j + 1]] for j in range(m) if starts[j + 1] > starts[j]})
    return LabelStore(tuple(ids), node_wnids, counts, has, image_nodes, image_emb, node_emb,
                      {lab.model_id: lab.manifest["model"] for lab in labels}, domains, by_node)


def image_domain(path: str) -> str:
    """The domain tag of a sample image: its file name's prefix before the first '-' (lower case), or "".

    The emoji world names its sample images `<domain>-<n>.png`; any sample set can do the same.
    """
    match = DOMAIN_TAG_RE.match(Path(path).name)
    return match.group(1).lower() if match else ""


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


def _embed_tasks_classes(names: Sequence[str], captions: dict[str, tuple[str, ...]], embedder: TextEmbedder,
                         expander: CaptionExpander | None, cache: EmbeddingCache | None) -> np.ndarray:
    """(n, d) pooled caption embeddings; given captions replace the expander's for their class."""
    expander = expander or WordNetExpander()
    need = [n for n in names if n not in captions]
    expanded = dict(zip(need, expander.expand([Concept(name=n) for n in need]))) if need else {}
    lists = [list(captions[n]) if n in captions else list(expanded[n]) for n in names]
    return embed_concept_captions(lists, embedder, cache)


def match_labeled_nodes(index: NodeIndex, store: LabelStore, names: Sequence[str], queries: np.ndarray,
                        n: int = 5) -> list[list[NodeMatch]]:
    """The n best labeled nodes of each class (see the module docstring, step 1).

    Args:
        queries: (len(names), d) unit class embeddings from the index's embedder.
    """
    g = index.graph
    pos = g.node_position
    labeled_rows = np.array([g.row(w) for w in store.node_wnids], np.int64)
    labeled_pos = np.array([pos.get(int(r), -1) for r in labeled_rows], np.int64)
    in_index = labeled_pos >= 0
    vectors = np.zeros((len(labeled_rows), index.dim), np.float32)
    vectors[in_index] = np.asarray(index.vectors[labeled_pos[in_index]], np.float32)
    prior = np.zeros(len(labeled_rows), np.float32)
    prior[in_index] = _lexname_prior(index)[labeled_pos[in_index]]
    direct = queries @ vectors.T + prior                      # (n_classes, m)
    direct[:, ~in_index] = -np.inf
    labeled_of_row = {int(r): j for j, r in enumerate(labeled_rows)}
    depth = min(index.size, n + match_settings()["candidates"])
    top_scores, top_pos = index.search(queries, depth)
    out = []
    for q, name in enumerate(names):
        score = direct[q].copy()
        via = ["direct"] * len(score)
        bonus = _lemma_bonus(index, name)
        for p, b in bonus.items():
            j = labeled_of_row.get(int(g.nodes[p]))
            if j is not None:
                score[j] += b
        # Graph matches with no images of their own lend their score to labeled relatives.
        candidates = {int(p): float(s) for p, s in zip(top_pos[q], top_scores[q]) if p >= 0}
        for p, b in bonus.items():
            candidates[p] = candidates.get(p, float(np.asarray(index.vectors[p]) @ queries[q])) + b
        # Only graph nodes that beat every labeled node lend their score: the class is about them.
        best_direct = float(score.max()) if len(score) else -np.inf
        for p, s in candidates.items():
            row = int(g.nodes[p])
            s += float(_lexname_prior(index)[p])
            if row in labeled_of_row or s <= best_direct:
                continue
            for relation, steps in (("hyponym", g.hyponyms), ("hypernym", g.hypernyms)):
                frontier, seen = [row], {row}
                for d in range(1, GRAPH_DEPTH + 1):
                    frontier = [c for r in frontier for c in steps[r] if c not in seen]
                    seen.update(frontier)
                    for c in frontier:
                        j = labeled_of_row.get(c)
                        if j is not None and s * GRAPH_STEP ** d > score[j]:
                            score[j] = s * GRAPH_STEP ** d
                            via[j] = f"{relation}:{g.synsets[row]}"
        best = np.argsort(-score, kind="stable")[:n]
        out.append([NodeMatch(store.node_wnids[j], g.synsets[labeled_rows[j]], round(float(score[j]), 4), via[j])
                    for j in best if np.isfinite(score[j])])
    return out


# ---------------------------------------------------------------------------------------
# Steps 2-5: confusion, F1, smoothing, top-k


def node_confusion(store: LabelStore, nodes: np.ndarray, mode: SelectionMode = "restricted",
                   domain: str | None = None) -> np.ndarray:
    """(n_models, len(nodes), 3) float64 TP, FP, FN of every model on the nodes S (shared positions).

    restricted: each sample image of S is assigned the node of S its model scores highest;
    with a domain, only the images tagged with it count (all images where S has none);
    counts: the stored counts over the whole labeled node set (no domain).
    """
    nodes = np.asarray(nodes, np.int64)
    if mode == "counts":
        return store.counts[:, nodes, 1:4].astype(np.float64)
    if mode != "restricted":
        raise InputError(f"unknown selection mode {mode!r}; modes: {list(MODES)}")
    out = np.zeros((len(store.model_ids), len(nodes), 3))
    local = np.full(len(store.node_wnids), -1, np.int64)
    local[nodes] = np.arange(len(nodes))
    for i in range(len(store.model_ids)):
        rows = np.sort(store.images_of(i, nodes))
        if domain and store.image_domains:
            in_domain = rows[store.image_domains[i][rows] == domain.lower()]
            rows = in_domain if len(in_domain) else rows
        if len(rows) == 0:
            continue
        emb = np.asarray(store.image_embeddings[i][rows], np.float32)
        true = local[store.image_nodes[i][rows]]
        pred = np.argmax(emb @ store.node_embeddings[i][nodes].T, axis=1)
        hit = pred == true
        k = len(nodes)
        tp = np.bincount(true[hit], minlength=k)
        out[i, :, 0] = tp
        out[i, :, 1] = np.bincount(pred[~hit], minlength=k)
        out[i, :, 2] = np.bincount(true, minlength=k) - tp
    return out


def class_f1(confusion: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n_models, n_classes) F1 from node confusion (n_models, |S|, 3) and class-node weights (n_classes, |S|)."""
    summed = np.einsum("cs,msk->mck", weights, confusion)
    tp, fp, fn = summed[..., 0], summed[..., 1], summed[..., 2]
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

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def models_for(self) -> dict[str, list[str]]:
        """Class name → chosen model ids."""
        return {c.name: [m.model for m in c.models] for c in self.classes}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
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


def open_selector(index_path: Path, embedder: TextEmbedder | None = None, *, models: Sequence[str] | None = None,
                  expander: CaptionExpander | None = None, cache: EmbeddingCache | None = None) -> Selector:
    """Open an index and its labels for selection: image-based labels, published ones, or both.

    `models` restricts the image-based labels to these models (published labels are then not used).
    The embedder defaults to the index's own.
    """
    from mll_index.embed import embedder_from_id

    index = load_index(index_path)
    published = open_published(index_path) if has_published(index_path) and not models else None
    store = open_labels(index_path, models) if (labeled_models(index_path) or models or published is None) else None
    embedder = embedder or embedder_from_id(index.embedder_id)
    index.check_embedder(embedder.embedder_id, embedder.dim)
    return Selector(index, store, embedder, expander, cache, published)


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
    assert store is not None
    pos = store.node_position
    union = sorted({pos[m.wnid] for ms in matches for m in ms})
    col = {j: i for i, j in enumerate(union)}
    weights = np.zeros((len(task.classes), len(union)))
    for c, ms in enumerate(matches):
        for m in ms:
            weights[c, col[pos[m.wnid]]] = max(m.score, 0.0)
    domain = task.domain if use_domain else None
    confusion = node_confusion(store, np.array(union, np.int64), mode, domain)
    f1 = class_f1(confusion, weights)
    used = bool(domain) and mode == "restricted" and any((d == domain.lower()).any() for d in store.image_domains)
    return {"ids": list(store.model_ids), "scores": smooth_scores(f1, alpha), "f1": f1, "confusion": confusion,
            "weights": weights, "domain_used": used}


def _select_one(sel: Selector, task: Task, matches: list[list[NodeMatch]], bench: list[list[BenchmarkMatch]],
                published_raw: np.ndarray | None, k: int, alpha: float, mode: SelectionMode, explain: bool,
                use_domain: bool = True) -> Selection:
    image = _image_part(sel, task, matches, alpha, mode, use_domain) if sel.store is not None else None
    published = smooth_scores(published_raw, alpha) if published_raw is not None else None
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
        order = np.argsort(-scores[:, c], kind="stable")[:k_eff]
        chosen = tuple(ModelScore(ids[i], round(float(scores[i, c]), 4)) for i in order)
        weak_image = not matches[c] or matches[c][0].score < LOW_CONFIDENCE
        weak_bench = not bench[c] or bench[c][0].similarity < LOW_CONFIDENCE
        weak = (weak_image or image is None) and (weak_bench or published is None)
        detail = None
        if explain:
            detail = {"labels": labels}
            if image is not None:
                f1, confusion, w = image["f1"], image["confusion"], image["weights"]
                summed = np.einsum("s,msk->mk", w[c], confusion)
                detail["rule"] = (f"score = {alpha} * F1 + {round(1 - alpha, 4)} * mean F1 on the other classes; F1 from "
                                  f"TP/FP/FN of the matched nodes ({mode} confusion), weighted by node score")
                detail["models"] = {image["ids"][i]: {
                    "f1": round(float(f1[i, c]), 4),
                    "mean_f1_other_classes": round(float((f1[i].sum() - f1[i, c]) / max(1, len(task.classes) - 1)), 4),
                    "weighted_tp_fp_fn": [round(float(v), 2) for v in summed[i]],
                    "score": round(float(image["scores"][i, c]), 4)}
                    for i in np.argsort(-image["scores"][:, c], kind="stable")[:max(k_eff, 3)]}
            if published is not None:
                pub_ids = [m["id"] for m in sel.published.models]  # type: ignore[union-attr]
                detail["published_rule"] = ("published score = similarity-weighted mean accuracy on the matched "
                                            f"benchmark classes, smoothed with alpha {alpha}")
                detail["published_models"] = {pub_ids[i]: round(float(published[i, c]), 4)
                                              for i in np.argsort(-published[:, c], kind="stable")[:max(k_eff, 3)]}
            if labels == "both":
                detail["combined_rule"] = "mean of the model's per-class rank among image-labeled and published models"
        classes.append(ClassSelection(name, tuple(matches[c]), chosen, weak, detail, tuple(bench[c])))
    task_scores = scores.mean(axis=1)
    ranking = tuple(ModelScore(ids[i], round(float(task_scores[i]), 4)) for i in np.argsort(-task_scores, kind="stable"))
    return Selection(task.name, mode, k_eff, alpha, tuple(classes), ranking, labels=labels, domain=task.domain,
                     description=task.description, domain_images=bool(image and image["domain_used"]))


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
    """The key a class is embedded under: its name, plus its captions when the task gives some
    (given captions make a class distinct from the same name without them)."""
    return name + "\0" + "\0".join(task.captions[name]) if name in task.captions else name


@dataclass
class PreparedTasks:
    """Tasks with every distinct class embedded and matched once, ready to select under any settings.

    rows[t]: per class of task t, its row in `matched`, `bench` and the columns of `published_raw`.
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
    queries = _embed_tasks_classes(keys, captions, sel.embedder, sel.expander, sel.cache) if keys else None
    if sel.store is not None and keys:
        matched = match_labeled_nodes(sel.index, sel.store, names, queries, n_nodes)
    else:
        matched = [[] for _ in keys]
    if sel.published is not None and keys:
        published_raw, bench = published_scores(sel.published, queries, n_nodes)
    else:
        published_raw, bench = None, [[] for _ in keys]
    rows = [[distinct[_class_key(task, name)] for name in task.classes] for task in tasks]
    return PreparedTasks(list(tasks), n_nodes, rows, matched, bench, published_raw)


def select_prepared(sel: Selector, prepared: PreparedTasks, *, k: int = 1, alpha: float = 0.7,
                    mode: SelectionMode = "restricted", explain: bool = False,
                    use_domain: bool = True) -> list[Selection]:
    """Steps 2-5 for prepared tasks; a sweep over k, alpha and mode embeds nothing again."""
    _check_params(k, alpha, prepared.n_nodes, mode)
    out = []
    for task, rows in zip(prepared.tasks, prepared.rows):
        raw = prepared.published_raw[:, rows] if prepared.published_raw is not None else None
        out.append(_select_one(sel, task, [prepared.matched[r] for r in rows], [prepared.bench[r] for r in rows], raw,
                               k, alpha, mode, explain, use_domain))
    return out


def select_batch(sel: Selector, tasks: Sequence[Task], *, k: int = 1, alpha: float = 0.7, n_nodes: int = 5,
                 mode: SelectionMode = "restricted", explain: bool = False, use_domain: bool = True) -> list[Selection]:
    """Select for many tasks; every distinct class name is expanded, embedded and matched once.

    `use_domain=False` ignores the tasks' domain words (for comparisons)."""
    _check_params(k, alpha, n_nodes, mode)
    return select_prepared(sel, prepare_tasks(sel, tasks, n_nodes), k=k, alpha=alpha, mode=mode, explain=explain,
                           use_domain=use_domain)


def select_models(sel: Selector, task: Task, *, k: int = 1, alpha: float = 0.7, n_nodes: int = 5,
                  mode: SelectionMode = "restricted", explain: bool = False, use_domain: bool = True) -> Selection:
    """Choose the top-k models per class for one task (see the module docstring)."""
    return select_batch(sel, [task], k=k, alpha=alpha, n_nodes=n_nodes, mode=mode, explain=explain,
                        use_domain=use_domain)[0]
