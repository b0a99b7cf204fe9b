"""Labels from published benchmark results: every model's accuracy on benchmark datasets, per class.

A results table (open_clip's wide `openclip_results.csv` or LOVM's long `eval_table.csv`, see
`published_table`) and class-name lists for its datasets become coarse labels: every class of a
benchmark dataset carries each model's accuracy on that dataset. The classes are embedded like a
task's classes (captions pooled, the index's embedder), and so are the datasets' domains and
descriptions when given (LOVM's `dataset_domains.json`, `dataset_tasks.json`). A task's classes,
domain and description are matched to them, and models are ranked by `published_rule`. Nothing is
downloaded.

    <index>/published/
        manifest.json       kind "published-labels": sources, embedder, counts, files, the rule's weights,
                            the accuracy model (`published.accuracy`), and its own checksum
                            (manifest_sha256: the rule and the accuracy model change answers; absent in
                            labels imported before, which open and which `info --verify` notes)
        models.json         hub entries of the table's models (id = name-pretrained, metadata)
        datasets.json       per dataset column: its class-name list key, family, class count, domain, description
        classes.json        per benchmark class: dataset position and class name
        class_vectors.npy   (n_classes, d) float32 unit rows, the classes' pooled caption embeddings
        accuracy.npy        (n_models, n_datasets) float32, NaN where the table has no figure
        domain_vectors.npy, description_vectors.npy
                            (n_datasets, d) float32 unit rows, zero where a dataset has no such text
                            (absent when no dataset has one, and in labels imported before)
"""

from __future__ import annotations

import json
import logging
import re
import tokenize
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.core.artifacts import (
    SELF_DIGEST, atomic_dir, check_self_digest, check_then_open, index_lock, manifest_digest, new_manifest,
    read_consistent, read_json, read_manifest, seal_manifest, write_json,
)
from mll_index.core.layout import MANIFEST, published_dir
from mll_index.core.userfiles import read_user_json
from mll_index.errors import IndexFormatError, InputError, MLLIndexError
from mll_index.index.embed import (
    EmbedderRecord, EmbeddingCache, LazyEmbedder, TextEmbedder, check_agreement, embed_classes, record_of,
)
from mll_index.index.node_index import load_index, read_index_manifest
from mll_index.published.accuracy import AccuracyModel, fit_accuracy_model
from mll_index.published.rule import (
    PublishedRule, TaskRanking, calibrate_rule, dataset_similarity, describe_choice, hidden_mask, rank_task,
    standardise, strength_of, text_similarity,
)
from mll_index.published.same_dataset import dataset_overlap, same_dataset_threshold
from mll_index.published.table import Scale, clean_benchmark_name, read_classnames, read_dataset_texts, read_results

log = logging.getLogger(__name__)

KIND = "published-labels"
TEXT_FIELDS = ("domain", "description")


def dataset_settings(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """Column → {"classnames": key, "family": name}: the shipped data/published_datasets.json or a user's file."""
    data = read_user_json(path, "dataset mapping") if path else \
        json.loads(resources.files("mll_index").joinpath("data/published_datasets.json").read_text())
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
        raise InputError(f'{path}: a dataset mapping is {{"datasets": {{column: {{"classnames": key}}}}}}')
    return data["datasets"]


def import_published(index_path: Path, results: Path, classnames: Sequence[Path], *, mapping: Path | None = None,
                     domains: Path | None = None, descriptions: Path | None = None,
                     embedder: TextEmbedder | None = None, cache: EmbeddingCache | None = None,
                     scale: Scale = "auto") -> dict[str, Any]:
    """Import a results table and class-name lists as published labels of the index (written atomically).

    Columns without a class-name list are left out, each named in a warning and in the summary.
    `domains` and `descriptions` are JSON maps {dataset: text} (LOVM's `dataset_domains.json`,
    `dataset_tasks.json`); a task's domain and description are matched against them. The rule's
    weights are chosen on the table itself (`published_rule.calibrate_rule`) and recorded in the
    manifest. `scale` says whether the table's figures are percentages or fractions (`auto`:
    decided from them, see `decide_scale`).

    Returns:
        A summary: models, datasets used, datasets left out, classes, the scale the figures were
        read in, the datasets with a domain or description, the rule, and the accuracy model
        (`AccuracyModel.summary`, fitted on the table by `published.accuracy.fit_accuracy_model`).
    Raises:
        InputError: an unreadable table or list (see `read_results`), or no column with a class-name list.
    """
    index = load_index(index_path)
    embedder = embedder or LazyEmbedder(index.embedder)
    index.check_embedder(embedder)
    table = read_results(results, scale)
    settings = dataset_settings(mapping)
    # Only the lists a column uses must be sound: a stray file in the folder does not stop the import.
    wanted = {key for d in table.datasets for key in _list_keys(settings, d)}
    names = read_classnames(classnames, used=wanted | {_loose(key) for key in wanted})
    texts = {f: read_dataset_texts(p, f"dataset {f} file") if p else {}
             for f, p in zip(TEXT_FIELDS, (domains, descriptions))}
    used, skipped = _usable_columns(results, table.datasets, settings, names)
    classes = [(j, clean_benchmark_name(n)) for j, d in enumerate(used) for n in names[_list_key(settings, d, names)]]
    class_vectors = _class_vectors([n for _, n in classes], embedder, cache)
    class_dataset = np.array([j for j, _ in classes], np.int64)
    accuracy = table.accuracy[:, [table.datasets.index(d) for d in used]]
    text_vectors = _text_vectors(used, texts, embedder, cache)
    families = [settings.get(d, {}).get("family", d) for d in used]
    rule = calibrate_rule(accuracy, used, families, class_vectors, class_dataset,
                          [text_vectors.get(f) for f in TEXT_FIELDS])
    strength, _ = strength_of(standardise(accuracy), used, np.ones(len(used), bool))
    rule = replace(rule, **dict(zip(("same_dataset", "same_dataset_by"), same_dataset_threshold(
        accuracy, used, families, class_vectors, class_dataset, strength))))
    accuracy_model = fit_accuracy_model(accuracy, used, families, class_vectors, class_dataset,
                                        [text_vectors.get(f) for f in TEXT_FIELDS])
    datasets = [{"name": d, "classnames": _list_key(settings, d, names), "family": families[k],
                 "classes": int((class_dataset == k).sum()), **{f: texts[f][d] for f in TEXT_FIELDS if d in texts[f]}}
                for k, d in enumerate(used)]
    arrays = {"class_vectors": class_vectors, "accuracy": accuracy,
              **{f"{f}_vectors": vecs for f, vecs in text_vectors.items()}}
    manifest = {"results": str(results), "classnames": [str(c) for c in classnames],
                "domains": str(domains) if domains else None,
                "descriptions": str(descriptions) if descriptions else None,
                "embedder": record_of(embedder).to_dict(),
                "counts": {"models": len(table.models), "datasets": len(used), "classes": len(classes)},
                "left_out": skipped, "scale": table.scale, "table_shape": table.shape, "rule": rule.to_dict(),
                "accuracy_model": accuracy_model.to_dict()}
    _write_published(index_path, table.models, datasets, classes, arrays, manifest)
    return {"models": len(table.models), "datasets": used, "left_out": skipped, "classes": len(classes),
            "scale": table.scale, **{f"with_{f}": [d for d in used if d in texts[f]] for f in TEXT_FIELDS},
            "rule": rule.to_dict(), "ranking": describe_choice(rule), "accuracy_model": accuracy_model.summary()}


def _list_key(settings: dict[str, dict[str, Any]], dataset: str, names: Collection[str] = ()) -> str:
    """The class-name list a dataset column reads: the mapping's `classnames` (a key, or a list of keys tried
    in order), else the column's own name; each matched as written, else ignoring case and punctuation
    when that finds one list of `names` (LOVM's `dtd.txt` for the mapping's "DTD", `stl10` for "STL10")."""
    candidates = _list_keys(settings, dataset)
    for key in candidates:
        if key in names:
            return key
        loose = [n for n in names if _loose(n) == _loose(key)]
        if len(loose) == 1:
            return loose[0]
    return candidates[0]


def _list_keys(settings: dict[str, dict[str, Any]], dataset: str) -> list[str]:
    wanted = settings.get(dataset, {}).get("classnames", dataset)
    return [wanted] if isinstance(wanted, str) else [str(w) for w in wanted]


def _loose(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _usable_columns(results: Path, datasets: Sequence[str], settings: dict[str, dict[str, Any]],
                    names: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """The table's dataset columns with a class-name list (used) and without (left out, each warned of).

    Raises:
        InputError: no column has a class-name list.
    """
    used, skipped = [], []
    for d in datasets:
        (used if _list_key(settings, d, names) in names else skipped).append(d)
    if not used:
        raise InputError(f"{results}: no dataset column has a class-name list; columns: {datasets[:10]}..., "
                         f"lists: {sorted(names)[:10]}...")
    for d in skipped:
        log.warning("%s: dataset %r has no class-name list (key %r); left out", results, d, _list_key(settings, d))
    return used, skipped


def _class_vectors(class_names: Sequence[str], embedder: TextEmbedder, cache: EmbeddingCache | None) -> np.ndarray:
    """(len(class_names), d) float32 unit rows; a name that several datasets share is embedded once."""
    distinct = sorted(set(class_names))
    vectors = embed_classes(distinct, embedder, cache=cache)
    row = {n: i for i, n in enumerate(distinct)}
    return vectors[[row[n] for n in class_names]].astype(np.float32)


def _text_vectors(used: Sequence[str], texts: dict[str, dict[str, str]], embedder: TextEmbedder,
                  cache: EmbeddingCache | None) -> dict[str, np.ndarray]:
    """Per text field some used dataset has: (len(used), d) float32, the text's embedding, zero rows where none.

    The texts are embedded bare (no caption templates): they describe a dataset, not name a class.
    """
    text_vectors: dict[str, np.ndarray] = {}
    for f in TEXT_FIELDS:
        given = [d for d in used if d in texts[f]]
        if given:
            vecs = embed_classes([texts[f][d] for d in given], embedder, cache=cache, bare=True)
            text_vectors[f] = np.zeros((len(used), vecs.shape[1]), np.float32)
            text_vectors[f][[used.index(d) for d in given]] = vecs
    return text_vectors


def _write_published(index_path: Path, models: list[dict[str, Any]], datasets: list[dict[str, Any]],
                     classes: list[tuple[int, str]], arrays: dict[str, np.ndarray], manifest: dict[str, Any]) -> None:
    """Write <index>/published/ under the index's writer lock, through a temporary folder renamed in.

    `arrays` maps a file stem to its array (class_vectors, accuracy, then <field>_vectors), and
    `manifest` holds the manifest's fields beyond its kind and version.
    """
    files = ["models.json", "datasets.json", "classes.json"]
    with index_lock(index_path), atomic_dir(published_dir(index_path)) as tmp:
        write_json(tmp / "models.json", models)
        write_json(tmp / "datasets.json", datasets)
        write_json(tmp / "classes.json", [{"dataset": j, "name": n} for j, n in classes])
        for stem, array in arrays.items():
            np.save(tmp / f"{stem}.npy", array)
            files.append(f"{stem}.npy")
        sealed = new_manifest(KIND, **manifest)
        seal_manifest(tmp, sealed, files)
        sealed[SELF_DIGEST] = manifest_digest(sealed)    # sealed once more with its own checksum
        write_json(tmp / MANIFEST, sealed)


@dataclass
class PublishedLabels:
    """Published labels of an index, opened: see the module docstring for the arrays."""

    models: list[dict[str, Any]]
    datasets: list[dict[str, Any]]
    class_dataset: np.ndarray   # (n_classes,) int, dataset position of each benchmark class
    class_names: list[str]
    class_vectors: np.ndarray   # (n_classes, d) float32
    accuracy: np.ndarray        # (n_models, n_datasets) float32, NaN missing
    manifest: dict[str, Any]
    # per text field ("domain", "description"): (n_datasets, d) float32, zero rows where none
    text_vectors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def model_ids(self) -> list[str]:
        return [m["id"] for m in self.models]

    @property
    def dataset_names(self) -> list[str]:
        return [d["name"] for d in self.datasets]

    @property
    def families(self) -> list[str]:
        return [d.get("family", d["name"]) for d in self.datasets]

    @property
    def rule(self) -> PublishedRule:
        """The rule's weights chosen at import (the defaults for labels imported before there was a choice)."""
        return PublishedRule.from_dict(self.manifest.get("rule"))

    @property
    def accuracy_model(self) -> AccuracyModel | None:
        """The accuracy model fitted at import (`published.accuracy`); None for labels imported before."""
        data = self.manifest.get("accuracy_model")
        try:
            return AccuracyModel.from_dict(data) if isinstance(data, dict) else None
        except (KeyError, TypeError, ValueError):
            # A model this version cannot read predicts nothing (the answer says to import again); ranking still works.
            return None


def has_published(index_path: Path) -> bool:
    return (published_dir(index_path) / MANIFEST).is_file()


def open_published(index_path: Path) -> PublishedLabels:
    """Open an index's published labels; errors name the file (or the embedder that differs from the index's).
    An import replacing them meanwhile makes it read again."""
    folder = published_dir(index_path)
    return read_consistent(lambda: _open_published(Path(index_path), folder),
                           [Path(index_path), folder, folder / MANIFEST])


def _open_published(index_path: Path, folder: Path) -> PublishedLabels:
    manifest = read_manifest(folder, KIND)
    own = check_self_digest(folder, manifest)
    if own:
        raise IndexFormatError(f"{own}; import the published labels again")
    try:
        index_embedder = EmbedderRecord.from_dict(read_index_manifest(Path(index_path))["embedder"])
        own = EmbedderRecord.from_dict(manifest["embedder"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{folder / MANIFEST}: missing or malformed embedder ({exc})") from None
    try:
        check_agreement(index_embedder, own, str(folder))
    except MLLIndexError as exc:
        raise IndexFormatError(f"{folder}: published labels embedded with {own.describe()}, the index with "
                               f"{index_embedder.describe()}; import them again") from exc
    classes = read_json(folder / "classes.json")
    text_vectors: dict[str, np.ndarray] = {}
    try:
        vectors = np.load(folder / "class_vectors.npy", mmap_mode="r")
        accuracy = np.load(folder / "accuracy.npy")
        for f in TEXT_FIELDS:
            if (folder / f"{f}_vectors.npy").is_file():
                text_vectors[f] = np.asarray(np.load(folder / f"{f}_vectors.npy"), np.float32)
    except (ValueError, OSError, SyntaxError, tokenize.TokenError) as exc:   # a damaged .npy header too
        raise IndexFormatError(f"{folder}: cannot read the published arrays ({exc})") from None
    models, datasets = read_json(folder / "models.json"), read_json(folder / "datasets.json")
    if vectors.shape[0] != len(classes) or accuracy.shape != (len(models), len(datasets)) or any(
            v.shape != (len(datasets), vectors.shape[1]) for v in text_vectors.values()):
        raise IndexFormatError(f"{folder}: arrays disagree with models.json, datasets.json or classes.json")
    return PublishedLabels(models, datasets, np.array([c["dataset"] for c in classes], np.int64),
                           [c["name"] for c in classes], np.asarray(vectors, np.float32), accuracy, manifest,
                           text_vectors)


def check_published(index_path: Path, checksums: bool = False) -> list[str]:
    """Every problem of an index's published labels, one line each naming the file; [] when all is sound
    (or there are none): the manifest, each file's size (with `checksums` its SHA-256), then opening them."""
    folder = published_dir(index_path)
    if not folder.is_dir():
        return []
    return check_then_open(folder, KIND, lambda: open_published(index_path), checksums=checksums)


def unusable_published(index_path: Path) -> str | None:
    """Why the index's published folder cannot be used though it is there (its manifest is missing), one
    line naming the file; None where there is no such folder or it has its manifest. Selection reports
    it rather than answer from image labels alone unsaid."""
    folder = published_dir(index_path)
    if folder.is_dir() and not (folder / MANIFEST).is_file():
        return (f"{folder / MANIFEST}: missing, so the published labels in {folder} cannot be used; import them "
                "again (`mll-index published import`)")
    return None


@dataclass(frozen=True)
class BenchmarkMatch:
    """A benchmark class matched to a task's class: its dataset, name and cosine similarity."""

    dataset: str
    name: str
    similarity: float


def published_scores(pub: PublishedLabels, queries: np.ndarray, n: int = 5,
                     hidden: Sequence[str] = ()) -> tuple[np.ndarray, list[list[BenchmarkMatch]]]:
    """Per task class, every model's published score and the benchmark classes it rests on.

    Args:
        queries: (n_classes, d) unit class embeddings (the index's embedder).
        hidden: dataset names to ignore (leave-one-out evaluation).
    Returns:
        scores (n_models, n_classes) float64: the similarity-weighted mean accuracy over the n most
        similar benchmark classes (a model without a figure on a dataset is scored on the others);
        and the matches per class, best first.
    """
    names = pub.dataset_names
    visible = np.array([names[d] not in set(hidden) for d in pub.class_dataset])
    if not visible.any():
        raise InputError("every benchmark dataset is hidden")
    sims = np.asarray(queries, np.float32) @ pub.class_vectors.T
    sims[:, ~visible] = -np.inf
    n = min(n, int(visible.sum()))
    top = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    scores = np.zeros((len(pub.models), len(queries)))
    matches = []
    for c in range(len(queries)):
        w = np.maximum(sims[c, top[c]], 0.0)
        acc = pub.accuracy[:, pub.class_dataset[top[c]]]                  # (n_models, n)
        known = ~np.isnan(acc)
        weight = np.where(known, w, 0.0)
        total = weight.sum(axis=1)
        scores[:, c] = np.where(total > 0, np.nansum(np.where(known, acc, 0.0) * weight, axis=1) / np.maximum(total, 1e-12), 0.0)
        matches.append([BenchmarkMatch(names[pub.class_dataset[j]], pub.class_names[j], round(float(sims[c, j]), 4))
                        for j in top[c]])
    return scores, matches


@dataclass(frozen=True)
class PublishedEvidence:
    """Per task class, its similarity to every benchmark dataset and the benchmark classes it matched.

    similarity: (n_classes, n_datasets) float64, the cosine similarity of the dataset's most similar class.
    matches: per class, its `n` most similar benchmark classes of the visible datasets, best first.
    """

    similarity: np.ndarray
    matches: list[list[BenchmarkMatch]]


def published_evidence(pub: PublishedLabels, queries: np.ndarray, n: int = 5,
                       hidden: Sequence[str] = ()) -> PublishedEvidence:
    """Step 1 of `published_rule` for task classes: their similarity to the benchmark datasets.

    Args:
        queries: (n_classes, d) unit class embeddings (the index's embedder).
        hidden: dataset names left out of the matches, with their families (leave-one-out evaluation;
            `rank_published` leaves them out of the ranking).
    Raises:
        InputError: every benchmark dataset is hidden.
    """
    visible = hidden_mask(pub.dataset_names, pub.families, hidden)
    if not visible.any():
        raise InputError("every benchmark dataset is hidden")
    sims = np.asarray(queries, np.float32) @ pub.class_vectors.T
    similarity = dataset_similarity(sims, pub.class_dataset, len(pub.datasets))
    sims[:, ~visible[pub.class_dataset]] = -np.inf
    n = min(n, int(visible[pub.class_dataset].sum()))
    top = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    names = pub.dataset_names
    matches = [[BenchmarkMatch(names[pub.class_dataset[j]], pub.class_names[j], round(float(sims[c, j]), 4))
                for j in top[c]] for c in range(len(queries))]
    return PublishedEvidence(similarity, matches)


def rank_published(pub: PublishedLabels, similarity: np.ndarray, *, domain: np.ndarray | None = None,
                   description: np.ndarray | None = None, hidden: Sequence[str] = (),
                   rule: PublishedRule | None = None, unknown: Sequence[bool] | None = None,
                   queries: np.ndarray | None = None) -> TaskRanking:
    """A task's published ranking (steps 1-5 of `published_rule`), with the classes that fell back and why;
    or, when the task's class list is one of the table's datasets (`same_dataset`), that dataset's column.

    Args:
        similarity: (n_classes, n_datasets) the task's rows of `PublishedEvidence.similarity`.
        domain, description: the task's (d,) unit text vectors, or None.
        hidden: datasets (and their families) the ranking may not use.
        rule: the weights; the ones chosen at import by default.
        unknown: per class, whether its name holds no WordNet lemma (`match.is_weak`'s test): such a
            class falls back to general strength.
        queries: (n_classes, d) the task's unit class vectors, for its overlap with each dataset (None:
            the same-dataset rule is not tried).
    """
    visible = hidden_mask(pub.dataset_names, pub.families, hidden)
    z = standardise(np.where(visible[None, :], pub.accuracy, np.nan))
    text = text_similarity([domain, description], [pub.text_vectors.get(f) for f in TEXT_FIELDS])
    overlap = None
    if queries is not None and len(queries):
        overlap = dataset_overlap(np.asarray(queries, np.float32) @ pub.class_vectors.T, pub.class_dataset,
                                  len(pub.datasets))
    return rank_task(z, pub.dataset_names, visible, similarity, text, rule or pub.rule, pub.model_ids, unknown,
                     overlap)


def task_text_vectors(pub: PublishedLabels, embedder: TextEmbedder, cache: EmbeddingCache | None, *,
                      domain: str | None, description: str | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The task's domain and description as (d,) unit vectors, each None where the task or the labels lack it
    (so a task without them, or labels without dataset texts, loads no text model)."""
    out: list[np.ndarray | None] = []
    for f, text in zip(TEXT_FIELDS, (domain, description)):
        wanted = bool(text and text.strip()) and f in pub.text_vectors
        out.append(embed_classes([text.strip()], embedder, cache=cache, bare=True)[0] if wanted else None)  # type: ignore[union-attr]
    return out[0], out[1]


def describe_ranking(pub: PublishedLabels, ranking: TaskRanking, class_names: Sequence[str],
                     top: int = 5) -> dict[str, Any]:
    """The published part of a selection answer.

    - `ranked_by`: in plain words what ranked the models: the task's own dataset's column, the
      neighbour rule, or general strength alone, and why the nearest dataset was or was not used;
    - `rule`: the rule with its weights and how they were chosen;
    - `fallback` (every class fell back to general strength), `fallback_classes` (class → why);
    - `strength`: the general-strength column;
    - `neighbours`: the task's `top` neighbour datasets with their weights (those holding at least 1%
      of it), only where they entered the scores; else `{}`, and `nearest_datasets` lists them;
    - `same_dataset`: the nearest dataset by class-list overlap, its overlap, the threshold and `used`.
    """
    names = pub.dataset_names
    # Datasets under 1% of the weight do not move the answer: not listed.
    order = [int(j) for j in np.argsort(-ranking.weights, kind="stable")[:top] if ranking.weights[j] >= 0.01]
    near = {names[j]: round(float(ranking.weights[j]), 4) for j in order}
    rule = pub.rule
    nearest = ranking.nearest
    used_neighbours = rule.neighbour_weight > 0 and not ranking.fallback and not (nearest and nearest.used)
    out = {"ranked_by": _ranked_by(rule, ranking, near, used_neighbours),
           "rule": (f"score = {rule.neighbour_weight} * weighted mean z-score on the neighbour datasets + "
                    f"{round(1 - rule.neighbour_weight, 4)} * general strength ({ranking.strength}); text weight "
                    f"{rule.text_weight}; weights chosen by {rule.chosen_by}; a task whose class list overlaps a "
                    f"dataset's at {rule.same_dataset} or more is ranked by that dataset's column (threshold "
                    f"{rule.same_dataset_by})"),
           "fallback": ranking.fallback,
           "fallback_classes": {c: r for c, r in zip(class_names, ranking.reasons) if r is not None},
           "strength": ranking.strength,
           "neighbours": near if used_neighbours else {}}
    if not used_neighbours:
        out["nearest_datasets"] = near
    if nearest is not None:
        out["same_dataset"] = {"dataset": nearest.name, "overlap": nearest.overlap, "threshold": nearest.threshold,
                               "used": nearest.used}
    return out


def _ranked_by(rule: PublishedRule, ranking: TaskRanking, near: dict[str, float], used_neighbours: bool) -> str:
    """One sentence: what ranked the task's models, and why its nearest dataset did or did not."""
    nearest = ranking.nearest
    if nearest is not None and nearest.used:
        return (f"ranked by {nearest.name}'s column: the task's class names overlap that dataset's at "
                f"{nearest.overlap:.2f} (>= {nearest.threshold}), so the task is taken to be {nearest.name}")
    closest = (f"{nearest.name} (class-list overlap {nearest.overlap:.2f} < {nearest.threshold})" if nearest is not None
               else next(iter(near), None))
    if used_neighbours:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in near.items())
        return (f"ranked by {rule.neighbour_weight} x the neighbour datasets' z-scores ({shown}) + "
                f"{round(1 - rule.neighbour_weight, 4)} x general strength ({ranking.strength})")
    if ranking.fallback:
        why = "every class fell back (see fallback_classes)"
    else:
        why = (f"this table's leave-one-dataset-out calibration gave the neighbour datasets weight "
               f"{rule.neighbour_weight}: on its own datasets they did not beat general strength")
    tail = f"; the nearest dataset, {closest}, was not used because {why}" if closest else f"; {why}"
    return f"ranked by general strength ({ranking.strength}) alone{tail}"
