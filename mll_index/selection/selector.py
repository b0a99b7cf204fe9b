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
     model predict? Read from each image's stored top-K nodes (the first of them in S;
     `confusion.restricted_confusion`, all models at once from a top-K table). When the
     task names a domain ("sketch") and sample images carry that domain tag (file names
     `<domain>-*`), only those images count; when it gives probe images (a few unlabeled
     images of the task), each sample image counts by its likeness to them (`probes`);
   - `counts`: the per-node counts over the whole labeled node set, stored at labeling time.
     Cheaper (no image is touched) but a node's errors count confusions with nodes that
     have nothing to do with the task.
3. Per class, the counts of its nodes, weighted by their similarity, give the model's F1.
4. score(model, class) = alpha * F1(model, class) + (1 - alpha) * mean F1(model, other classes).
5. The top-k models per class; the task-level ranking is the mean score over classes.

Label sources (settings `labels`): image-based labels (steps 1-4), published labels
(`published_rule`), or both. Both are merged by rank (`merge_by_rank`): their scores are on two
scales (F1 on sample images, published z-scores), so each becomes a rank among its own models per
class, and each source's best model scores 1.0 whatever its real accuracy. That is only sound when
the two sources rank largely the same models; `auto` (every source the index holds) warns in the
answer's `warnings` when they share fewer than half of the smaller source's models
(`unrelated_sources`) and names `--labels image` / `--labels published`. A tie in the merge goes to
the model that leads its own source(s) more clearly (its score's z-score among that source's
models), not to the source listed first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.core.plain import plain
from mll_index.errors import InputError
from mll_index.index.captions import CaptionExpander
from mll_index.index.embed import EmbeddingCache, LazyEmbedder, TextEmbedder, embed_classes
from mll_index.index.match import LOW_CONFIDENCE, Matcher, is_weak, read_class_name
from mll_index.index.node_index import NodeIndex, load_index
from mll_index.labels.folders import scan_labels
from mll_index.labels.matrix import has_matrix
from mll_index.labels.store import LabelStore, open_labels, refuse_damaged
from mll_index.published.store import (
    BenchmarkMatch, PublishedLabels, describe_ranking, has_published, open_published, published_evidence,
    unusable_published,
)
from mll_index.selection.confusion import class_f1, node_confusion, restricted_cost, smooth_scores
from mll_index.selection.explain import image_explain
from mll_index.selection.labeled_nodes import (
    LabeledNodes, NodeMatch, labeled_nodes, lent_blindly, match_labeled_nodes, top_stable,
)
from mll_index.selection.merge import merge_by_rank, published_left_out, sources_related, unrelated_sources
from mll_index.selection.answer_warnings import selection_warnings
from mll_index.selection.published_part import published_part
from mll_index.selection.settings import LABEL_SOURCES, SelectionSettings, settings_from
from mll_index.selection.task import Task

# `auto` takes the restricted mode while it reads at most this many image-model pairs from top-K
# tables (confusion.restricted_cost; about 2 s on 2 cores, bench/scale.py), the counts mode beyond.
RESTRICTED_BUDGET = 40_000_000
# Probe encodings a selector keeps (by the files' identity), oldest dropped first.
PROBE_CACHE_ENTRIES = 64


@dataclass(frozen=True)
class ModelScore:
    """A model and its score for a class or a task, higher is better; under the calibrated rule (whose
    score is a predicted F1) also the F1 on the sample images that the paper's rule reads (for a task:
    its mean over the classes), which predicted accuracy is calibrated on."""

    model: str
    score: float
    f1: float | None = None

    @classmethod
    def rounded(cls, model: str, score: float, f1: float | None = None) -> ModelScore:
        """The score as answers carry it: a Python float (not a numpy scalar) to 4 places."""
        return cls(model, round(float(score), 4), None if f1 is None else round(float(f1), 4))


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
    # The probe images used (probes.ProbeSet.summary: images, skipped, models, images_encoded, seconds); None without
    probe: dict[str, Any] | None = None
    published: dict[str, Any] | None = None  # published labels' rule, fallback and neighbours (published.describe_ranking)
    rule: str = "mll"   # how image-based labels ranked the models: "calibrated" (the index's fitted rule) or "mll"
    # Published labels alone: each model's predicted accuracy {estimate, low, high} (published_part), how it was
    # made, and whether it rests on no matched dataset; to_dict lists it with each ranked model.
    model_accuracy: dict[str, dict[str, float]] | None = None
    model_accuracy_about: str | None = None
    model_accuracy_weak: bool = False

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def models_for(self) -> dict[str, list[str]]:
        """Class name → chosen model ids."""
        return {c.name: [m.model for m in c.models] for c in self.classes}

    def to_dict(self) -> dict[str, Any]:
        out = plain(self)
        out["warnings"] = list(self.warnings)
        if out["probe"] is None:
            del out["probe"]
        if out["published"] is None:
            del out["published"]
        accuracy = out.pop("model_accuracy")
        del out["model_accuracy_about"], out["model_accuracy_weak"]
        if accuracy is not None:
            for entry in [*out["ranking"], *(m for c in out["classes"] for m in c["models"])]:
                entry["predicted_accuracy"] = accuracy.get(entry["model"])
        for entry in [*out["ranking"], *(m for c in out["classes"] for m in c["models"])]:
            if entry["f1"] is None:
                del entry["f1"]
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
    # Why a published folder that is there cannot be used (its manifest is gone): refused where asked for,
    # a warning under `auto`, never a silent switch to image labels.
    published_problem: str | None = None
    matcher: Matcher = field(init=False)  # the class-to-node scoring over `index`, opened once
    # Probe images encoded per (sources, limit, models): a sweep over settings encodes them once.
    probes: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)
    _rule: Any = field(default=None, repr=False)    # the calibrated rule, read on first use (False: none)
    _stale: InputError | None = field(default=None, repr=False)   # why it does not fit the labels, checked once

    def __post_init__(self) -> None:
        self.matcher = Matcher(self.index)

    def probe_set(self, task: Task, settings: SelectionSettings) -> Any:
        """The task's probe images encoded (probes.encode_probes), once per sources and settings.

        Raises:
            InputError: as encode_probes, led by the task's `where` ("tasks.jsonl:3: probe images: ...")
                when it was read from a file or a batch, so that the message names the task at fault.
        """
        from mll_index.selection.probes import encode_probes, probe_identity

        try:
            # Keyed by what the files are now (size, mtime, inode), not the path strings: replaced or deleted
            # images are never answered from the cache.
            key = (probe_identity(task.probe_images, settings.probe), settings.probe, settings.probe_models)
            if key not in self.probes:
                if len(self.probes) >= PROBE_CACHE_ENTRIES:   # a service named ever new folders: oldest out
                    del self.probes[next(iter(self.probes))]
                self.probes[key] = encode_probes(self.store, task.probe_images, limit=settings.probe,  # type: ignore[arg-type]
                                                 n_models=settings.probe_models)
            return self.probes[key]
        except InputError as exc:
            if task.where in ("", "task"):  # one task given directly: nothing to tell it from
                raise
            raise InputError(f"{task.where}: {exc}") from None

    def calibrated_rule(self, wanted: str) -> Any:
        """The index's calibrated rule (calibrated_rule.CalibratedRule) for settings' `rule`; None for
        "mll", or for "auto" where the index has none.

        Raises:
            InputError: "calibrated" asked for and the index has none, or the labels changed since it was
                fitted (a model added or labeled again).
            IndexFormatError: a damaged rule (either way: never applied, never skipped unsaid).
        """
        from mll_index.errors import IndexFormatError
        from mll_index.selection.calibrated_rule import REBUILD, has_rule, missing_manifest, read_rule, refuse_stale

        if wanted == "mll" or self.store is None:
            return None
        if self._rule is None and (missing := missing_manifest(self.index.path)) is not None:
            raise IndexFormatError(missing)
        if self._rule is None:
            self._rule = read_rule(self.index.path) if has_rule(self.index.path) else False
            if self._rule is not False:
                # The store does not change under an open selector: compare every model's label once.
                from mll_index.core.layout import selection_rule_dir

                try:
                    refuse_stale(self._rule, self.store, selection_rule_dir(self.index.path))
                except InputError as exc:
                    self._stale = exc
        if self._rule is False:
            if wanted == "calibrated":
                raise InputError(f"{self.index.path}: --rule calibrated, but the index has no calibrated rule; "
                                 f"{REBUILD}")
            return None
        if self._stale is not None:
            raise InputError(str(self._stale))
        return self._rule

    def match(self, names: Sequence[str], queries: np.ndarray, n: int = 5) -> list[list[NodeMatch]]:
        """The n best labeled nodes of each class (node_matching.match_labeled_nodes on this index's labels).

        Raises:
            InputError: the index holds published labels only.
        """
        if self.store is None or self.labeled is None:
            raise InputError(f"{self.index.path}: no image-based labels to match classes to (the index holds "
                             "published labels only); run `mll-index label`")
        return match_labeled_nodes(self.matcher, self.store, self.labeled, names, queries, n)


def open_selector(index_path: Path | str | None = None, embedder: TextEmbedder | None = None, *,
                  models: Sequence[str] | None = None, expander: CaptionExpander | None = None,
                  cache: EmbeddingCache | None = None) -> Selector:
    """Open an index and its labels for selection: image-based labels, published ones, or both.

    `index_path` defaults to the index the CLI uses (`core.paths.default_index_path`: $MLL_INDEX_HOME,
    else the checkout's indexes/default). `models` restricts the image-based labels to these models
    (published labels are then not used). The embedder defaults to the index's own.
    """
    from mll_index.core.paths import default_index_path

    index_path = Path(index_path) if index_path is not None else default_index_path()
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
                    labeled_nodes(index, store) if store is not None else None,
                    unusable_published(index_path) if published is None and not models else None)


def _image_part(sel: Selector, task: Task, matches: list[list[NodeMatch]],
                settings: SelectionSettings) -> dict[str, Any]:
    alpha, mode, use_domain = settings.alpha, settings.mode, settings.use_domain
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
    probes = sel.probe_set(task, settings) if task.probe_images and settings.probe > 0 and mode != "counts" else None
    if mode == "auto":
        refuse_damaged(store, mode)
        counts = node_confusion(store, nodes, "counts")
        fits = store.has_image_labels and restricted_cost(store, counts) <= RESTRICTED_BUDGET
        used = "restricted" if fits else "counts"
    if used == "restricted":
        from mll_index.selection.probes import probe_weights

        weights_by_set = probe_weights(store, probes) if probes is not None else None
        confusion = node_confusion(store, nodes, "restricted", domain, weights_by_set)
    else:
        confusion = counts if mode == "auto" else node_confusion(store, nodes, mode)
    f1 = class_f1(confusion, weights)
    domain_used = bool(domain) and used == "restricted" and any(
        domain.lower() in store.sample_group(fp).domain_set for fp in store.groups())
    rule = _rule_for(sel, settings, used)
    features = None
    if rule is not None:
        from mll_index.selection.rule_features import rule_features

        strength, in_domain = rule.strengths(store.model_ids, domain if domain_used else None)
        every = node_confusion(store, nodes, "restricted", None, weights_by_set) if domain_used else None
        features = rule_features(confusion, weights, strength, domain_images=domain_used, all_domains=every,
                                 strength_domain=in_domain)
        scores = rule.predict(features)
    else:
        scores = smooth_scores(f1, alpha)
    probe = None
    if task.probe_images and settings.probe > 0:
        probe = probes.summary() if probes is not None and used == "restricted" else {
            "images": 0, "ignored": f"probe images need the restricted mode; the {used} mode was used"}
    return {"ids": list(store.model_ids), "scores": scores, "f1": f1, "confusion": confusion,
            "weights": weights, "domain_used": domain_used, "mode": used, "probe": probe, "rule": rule,
            "features": features}


# Beyond this many models per class (a budget's internal ranking of every model) the vote is not
# searched: the calibrated rule's predicted F1 orders the class's models.
MAX_SEARCHED_K = 5


def _calibrated_votes(sel: Selector, task: Task, matches: list[list[NodeMatch]], image: dict[str, Any],
                      k: int) -> list[list[int]]:
    """Per class, its models under the calibrated rule: searched jointly on the sample images
    (vote_search.sample_votes), else ranked by predicted F1 within the rule's margin."""
    from mll_index.selection.vote_search import sample_votes

    rule, scores = image["rule"], image["scores"]
    if k <= MAX_SEARCHED_K and all(matches):
        pos = sel.store.node_position  # type: ignore[union-attr]
        nodes = np.array([pos[ms[0].wnid] for ms in matches], np.int64)
        found = sample_votes(sel.store, nodes, task.domain if image["domain_used"] else None,  # type: ignore[arg-type]
                             scores, k)
        if found is not None:
            return found
    return rule.vote(scores, k)


def _rule_for(sel: Selector, settings: SelectionSettings, mode: str) -> Any:
    """The calibrated rule this selection applies (None: the paper's rule).

    Raises:
        InputError: --rule calibrated where it cannot run (no rule, stale, or a counts-mode confusion:
            the rule was fitted on the restricted one).
    """
    rule = sel.calibrated_rule(settings.rule)
    if rule is not None and mode != "restricted":
        if settings.rule == "calibrated":
            raise InputError(f"the calibrated rule reads the restricted confusion, and this selection ran in {mode} "
                             "mode; use --mode restricted or --rule mll")
        return None
    return rule


def _select_one(sel: Selector, task: Task, matches: list[list[NodeMatch]], bench: list[list[BenchmarkMatch]],
                published_raw: np.ndarray | None, settings: SelectionSettings,
                queries: np.ndarray | None = None) -> Selection:
    k, alpha, explain, ranking_size = settings.k, settings.alpha, settings.explain, settings.ranking_size
    use_image, use_published = _sources(sel, settings.labels)
    image = _image_part(sel, task, matches, settings) if use_image else None
    unknown = [not sel.matcher.lemma_hits(read_class_name(name)) for name in task.classes]
    published, pub_ranking, part = None, None, None
    if published_raw is not None and use_published:
        # published_raw is (n_datasets, n_classes): the classes' similarity to each dataset (see prepare_tasks).
        part = published_part(sel.published, sel.embedder, sel.cache, published_raw.T, queries,  # type: ignore[arg-type]
                              domain=task.domain if settings.use_domain else None, description=task.description,
                              unknown=unknown, alpha=alpha)
        pub_ranking, published = part.ranking, part.scores
    source_note: tuple[str, ...] = ()
    if settings.labels == "auto" and image is not None and sel.published is not None and published is None:
        source_note = (published_left_out(task.name, image["ids"], sel.published.model_ids),)
    if settings.labels == "auto" and sel.published_problem is not None:
        source_note = (f"task {task.name!r}: published labels not used: {sel.published_problem}; answered from "
                       "image-based labels",)
    if image is not None and published is not None:
        pub_ids = [m["id"] for m in sel.published.models]  # type: ignore[union-attr]
        ids, scores = merge_by_rank([(image["ids"], image["scores"]), (pub_ids, published)])
        labels = "both"
        source_note = unrelated_sources(task.name, image["ids"], pub_ids) if settings.labels == "auto" else ()
    elif image is not None:
        ids, scores, labels = image["ids"], image["scores"], "image"
    else:
        ids, scores, labels = [m["id"] for m in sel.published.models], published, "published"  # type: ignore[union-attr]
    k_eff = min(k, len(ids))
    rule = image["rule"] if image is not None and labels == "image" else None
    votes = _calibrated_votes(sel, task, matches, image, k_eff) if rule is not None else None
    raw_f1 = image["f1"] if rule is not None else None
    # A task that is one of the table's datasets is ranked by that column: none of its classes rests on a weak match.
    own_dataset = pub_ranking is not None and pub_ranking.nearest is not None and pub_ranking.nearest.used
    classes = []
    for c, name in enumerate(task.classes):
        order = votes[c] if votes is not None else top_stable(scores[:, c], k_eff)
        chosen = tuple(ModelScore.rounded(ids[i], scores[i, c], None if raw_f1 is None else raw_f1[i, c])
                       for i in order)
        weak_image = is_weak(sel.matcher, name, matches[c][0].score if matches[c] else None) or \
            (bool(matches[c]) and lent_blindly(sel.matcher, name, matches[c][0]))
        # As the image path (match.is_weak): a name none of whose words is a lemma matches on the embedding alone.
        weak_bench = not own_dataset and (not bench[c] or bench[c][0].similarity < LOW_CONFIDENCE or unknown[c])
        weak = (weak_image or image is None) and (weak_bench or published is None)
        detail = None
        if explain:
            detail = {"labels": labels}
            if image is not None:
                detail.update(image_explain(image, c, alpha, k_eff, len(task.classes)))
            if published is not None:
                pub_ids = [m["id"] for m in sel.published.models]  # type: ignore[union-attr]
                detail["published_rule"] = (describe_ranking(sel.published, pub_ranking, task.classes)["rule"] +  # type: ignore[arg-type]
                                            f", smoothed with alpha {alpha}")
                detail["published_models"] = {pub_ids[i]: round(float(published[i, c]), 4)
                                              for i in top_stable(published[:, c], max(k_eff, 3))}
            if labels == "both":
                detail["combined_rule"] = "mean of the model's per-class rank among image-labeled and published models"
        classes.append(ClassSelection(name, tuple(matches[c]), chosen, weak, detail, tuple(bench[c])))
    task_scores = scores.mean(axis=1)
    ranked = top_stable(task_scores, len(ids) if ranking_size is None else ranking_size)
    ranking = tuple(ModelScore.rounded(ids[i], task_scores[i], None if raw_f1 is None else raw_f1[i].mean())
                    for i in ranked)
    # `mode` names the confusion mode that ran; published labels alone run none of them.
    used = image["mode"] if image is not None else "published"
    probe = image["probe"] if image is not None else None
    warnings = source_note + selection_warnings(sel, task, classes, probe)
    rule_ran = "calibrated" if image is not None and image["rule"] is not None else "mll"
    return Selection(task.name, used, k_eff, alpha, tuple(classes), ranking, labels=labels, domain=task.domain,
                     description=task.description, domain_images=bool(image and image["domain_used"]),
                     warnings=warnings, probe=probe,
                     published=describe_ranking(sel.published, pub_ranking, task.classes) if pub_ranking is not None else None,  # type: ignore[arg-type]
                     rule=rule_ran, **_accuracy_fields(part if labels == "published" else None))


def _accuracy_fields(part: Any) -> dict[str, Any]:
    """Selection's model_accuracy fields from a PublishedPart (published labels alone), else none."""
    if part is None:
        return {}
    return {"model_accuracy": part.accuracy, "model_accuracy_about": part.accuracy_about,
            "model_accuracy_weak": part.low_confidence}


def _sources(sel: Selector, labels: str) -> tuple[bool, bool]:
    """Whether the image-based and the published labels rank the models, for settings' `labels`.

    Raises:
        InputError: the source asked for is not in the index.
    """
    has_image, has_published = sel.store is not None, sel.published is not None
    if sel.published_problem is not None and labels in ("published", "both"):
        raise InputError(sel.published_problem)
    wanted_image = labels in ("image", "both") or (labels == "auto" and has_image)
    # auto takes the source whose models are the index's hub: published labels of another hub's models are
    # left out when image-based labels are there (merged, each source's best would score alike).
    wanted_published = labels in ("published", "both") or (labels == "auto" and has_published and not (
        has_image and not sources_related(sel.store.model_ids, sel.published.model_ids)))  # type: ignore[union-attr]
    for wanted, has, what, how in ((wanted_image, has_image, "image-based", "run `mll-index label`"),
                                   (wanted_published, has_published, "published", "run `mll-index published import`")):
        if wanted and not has:
            raise InputError(f"{sel.index.path}: labels {labels!r} asked for, but the index has no {what} labels "
                             f"({how}, or choose labels among {list(LABEL_SOURCES)})")
    return wanted_image, wanted_published


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
    ((n_datasets, n_distinct_classes): each class's similarity to every dataset, `published.published_evidence`)
    and of `queries` ((n_distinct_classes, d) unit class vectors, kept only for published labels: a task's
    class list is compared with each dataset's, `published.same_dataset`).
    """

    tasks: list[Task]
    n_nodes: int
    rows: list[list[int]]
    matched: list[list[NodeMatch]]
    bench: list[list[BenchmarkMatch]]
    published_raw: np.ndarray | None
    queries: np.ndarray | None = None


def prepare_tasks(sel: Selector, tasks: Sequence[Task],
                  settings: SelectionSettings | int | None = None) -> PreparedTasks:
    """Expand, embed and match every distinct class of the tasks once (step 1 of selection).

    Only `settings.n_nodes` matters here (an int is taken as n_nodes, as before settings were a record).
    """
    n_nodes = (settings or SelectionSettings()).n_nodes if not isinstance(settings, int) else \
        SelectionSettings(n_nodes=settings).n_nodes
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
        matched = sel.match(names, queries, n_nodes)
    else:
        matched = [[] for _ in keys]
    if sel.published is not None and keys:
        evidence = published_evidence(sel.published, queries, n_nodes)
        published_raw, bench = evidence.similarity.T, evidence.matches
    else:
        published_raw, bench = None, [[] for _ in keys]
    rows = [[distinct[_class_key(task, name)] for name in task.classes] for task in tasks]
    return PreparedTasks(list(tasks), n_nodes, rows, matched, bench, published_raw,
                         queries if published_raw is not None else None)


def select_prepared(sel: Selector, prepared: PreparedTasks, settings: SelectionSettings | None = None,
                    **changes: Any) -> list[Selection]:
    """Steps 2-5 for prepared tasks; a sweep over settings embeds nothing again.

    Args:
        settings: how to select (default SelectionSettings()); its n_nodes is the prepared tasks'.
        changes: SelectionSettings fields to change (`k=3`), checked with the record.
    Raises:
        InputError: a bad setting (one line), or what steps 2-5 refuse (damaged labels, ...).
    """
    settings = settings_from(settings, changes)
    out = []
    for task, rows in zip(prepared.tasks, prepared.rows):
        raw = prepared.published_raw[:, rows] if prepared.published_raw is not None else None
        queries = prepared.queries[rows] if prepared.queries is not None else None
        out.append(_select_one(sel, task, [prepared.matched[r] for r in rows], [prepared.bench[r] for r in rows], raw,
                               settings, queries))
    return out


def select_batch(sel: Selector, tasks: Sequence[Task], settings: SelectionSettings | None = None,
                 **changes: Any) -> list[Selection]:
    """Select for many tasks; every distinct class name is expanded, embedded and matched once.

    `settings` (with keyword `changes` applied, e.g. `use_domain=False` to ignore the tasks'
    domain words) as in select_prepared."""
    settings = settings_from(settings, changes)
    return select_prepared(sel, prepare_tasks(sel, tasks, settings), settings)


def select_models(sel: Selector, task: Task | Sequence[str], settings: SelectionSettings | None = None,
                  **changes: Any) -> Selection:
    """Choose the top-k models per class for one task (see the module docstring and select_batch).

    `task` is a Task (`task.make_task`, `read_task_file`) or a list of class names, checked as `make_task` does.

    Raises:
        InputError: a task that is neither, or one `make_task` refuses.
    """
    if not isinstance(task, Task):
        from mll_index.selection.task import make_task

        if isinstance(task, str) or not isinstance(task, Sequence) or not all(isinstance(n, str) for n in task):
            raise InputError(f"a task is a Task (mll_index.selection.task.make_task) or a list of class names, not "
                             f"{type(task).__name__}")
        task = make_task(list(task))
    return select_batch(sel, [task], settings, **changes)[0]
