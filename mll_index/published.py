"""Labels from published benchmark results: every model's accuracy on benchmark datasets, per class.

A results table (open_clip's `openclip_results.csv` shape: `name, pretrained, params (M),
FLOPs (B), <dataset columns>...`, accuracies in [0, 1]) and class-name lists for its datasets
become coarse labels: every class of a benchmark dataset carries each model's accuracy on
that dataset. The classes are embedded like a task's classes (captions pooled, the index's
embedder), so a task's class is matched to the benchmark classes most like it, and a model's
score for the class is the similarity-weighted mean of its accuracies there. Nothing is
downloaded.

    <index>/published/
        manifest.json       kind "published-labels": sources, embedder, counts, files
        models.json         hub entries of the table's models (id = name-pretrained, metadata)
        datasets.json       per dataset column: its class-name list key, family, class count
        classes.json        per benchmark class: dataset position and class name
        class_vectors.npy   (n_classes, d) float32 unit rows, the classes' pooled caption embeddings
        accuracy.npy        (n_models, n_datasets) float32, NaN where the table has no figure
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.artifacts import (atomic_dir, index_lock, new_manifest, read_consistent, read_json, read_manifest,
                                 read_user_json, seal_manifest, write_json)
from mll_index.embed import (EmbedderRecord, EmbeddingCache, LazyEmbedder, TextEmbedder, check_agreement, embed_classes,
                             record_of)
from mll_index.errors import IndexFormatError, InputError, MLLIndexError
from mll_index.index import load_index, read_index_manifest

log = logging.getLogger(__name__)

KIND = "published-labels"
FOLDER = "published"
META_COLUMNS = {"name", "pretrained", "params (M)", "FLOPs (B)", "Average perf. on 38 datasets"}
IMAGENET_COLUMN = "ImageNet 1k"


def dataset_settings(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """Column → {"classnames": key, "family": name}: the shipped data/published_datasets.json or a user's file."""
    data = read_user_json(path, "dataset mapping") if path else \
        json.loads(resources.files("mll_index").joinpath("data/published_datasets.json").read_text())
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
        raise InputError(f'{path}: a dataset mapping is {{"datasets": {{column: {{"classnames": key}}}}}}')
    return data["datasets"]


def read_classnames(sources: Sequence[Path]) -> dict[str, list[str]]:
    """Class-name lists by key from JSON files ({key: [names]}) and folders of `<key>.txt` (one name per line)."""
    out: dict[str, list[str]] = {}
    for source in sources:
        source = Path(source)
        if source.is_dir():
            for f in sorted(source.glob("*.txt")):
                names = [line.strip() for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
                out[f.stem] = names
        elif source.is_file():
            data = read_user_json(source, "JSON class-name file")
            if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
                raise InputError(f"{source}: a class-name file maps dataset keys to lists of names")
            out.update({k: [str(n) for n in v] for k, v in data.items()})
        else:
            raise InputError(f"{source}: no such class-name file or folder")
    return out


@dataclass(frozen=True)
class ResultsTable:
    """A published results table: models (hub entries) × dataset columns, accuracy in [0, 1] (NaN: missing)."""

    models: list[dict[str, Any]]
    datasets: list[str]
    accuracy: np.ndarray


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is None or math.isfinite(value) else None


def read_results(path: Path) -> ResultsTable:
    """Read a results CSV of open_clip's shape. Accuracies over 1 are taken as percentages.

    Raises:
        InputError: a missing `name` column, no dataset column, a value that is not a number.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            rows = list(reader)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from None
    if "name" not in header:
        raise InputError(f"{path}: a results table needs a 'name' column (and 'pretrained', dataset columns)")
    datasets = [c for c in header if c not in META_COLUMNS]
    if not datasets or not rows:
        raise InputError(f"{path}: no dataset columns or no models")
    acc = np.full((len(rows), len(datasets)), np.nan, np.float32)
    models, seen = [], set()
    for i, row in enumerate(rows):
        model_id = f"{row['name']}-{row['pretrained']}" if row.get("pretrained") else row["name"]
        if model_id in seen:
            raise InputError(f"{path}: line {i + 2}: model {model_id!r} appears twice")
        seen.add(model_id)
        for j, d in enumerate(datasets):
            raw = row.get(d)
            value = _number(raw)
            if raw not in (None, "") and value is None:
                raise InputError(f"{path}: line {i + 2}, column {d!r}: {raw!r} is not a number")
            if value is not None:
                acc[i, j] = value / 100 if value > 1 else value
        imagenet = acc[i, datasets.index(IMAGENET_COLUMN)] if IMAGENET_COLUMN in datasets else np.nan
        models.append({"id": model_id, "arch": row["name"], "pretrained": row.get("pretrained") or None,
                       "params_m": _number(row.get("params (M)")), "flops_b": _number(row.get("FLOPs (B)")),
                       "imagenet_acc": None if np.isnan(imagenet) else round(float(imagenet), 4)})
    return ResultsTable(models, datasets, acc)


def clean_benchmark_name(name: str) -> str:
    """A benchmark class name as a user would write it ('apple_pie' → 'apple pie')."""
    return " ".join(name.replace("_", " ").split())


def import_published(index_path: Path, results: Path, classnames: Sequence[Path], *, mapping: Path | None = None,
                     embedder: TextEmbedder | None = None, cache: EmbeddingCache | None = None) -> dict[str, Any]:
    """Import a results table and class-name lists as published labels of the index (written atomically).

    Columns without a class-name list are left out and reported. Returns a summary: models,
    datasets used, datasets left out, classes.
    """
    index = load_index(index_path)
    embedder = embedder or LazyEmbedder(index.embedder)
    index.check_embedder(embedder)
    table = read_results(results)
    names = read_classnames(classnames)
    settings = dataset_settings(mapping)
    used, skipped = [], []
    for d in table.datasets:
        key = settings.get(d, {}).get("classnames", d)
        (used if key in names else skipped).append(d)
    if not used:
        raise InputError(f"{results}: no dataset column has a class-name list; columns: {table.datasets[:10]}..., "
                         f"lists: {sorted(names)[:10]}...")
    classes: list[tuple[int, str]] = []
    for j, d in enumerate(used):
        key = settings.get(d, {}).get("classnames", d)
        classes.extend((j, clean_benchmark_name(n)) for n in names[key])
    distinct = sorted({n for _, n in classes})
    vectors = embed_classes(distinct, embedder, cache=cache)
    row = {n: i for i, n in enumerate(distinct)}
    class_vectors = vectors[[row[n] for _, n in classes]].astype(np.float32)
    accuracy = table.accuracy[:, [table.datasets.index(d) for d in used]]
    folder = Path(index_path) / FOLDER
    with index_lock(index_path), atomic_dir(folder) as tmp:
        write_json(tmp / "models.json", table.models)
        write_json(tmp / "datasets.json", [
            {"name": d, "classnames": settings.get(d, {}).get("classnames", d),
             "family": settings.get(d, {}).get("family", d), "classes": sum(1 for j, _ in classes if j == k)}
            for k, d in enumerate(used)])
        write_json(tmp / "classes.json", [{"dataset": j, "name": n} for j, n in classes])
        np.save(tmp / "class_vectors.npy", class_vectors)
        np.save(tmp / "accuracy.npy", accuracy)
        manifest = new_manifest(KIND, results=str(results), classnames=[str(c) for c in classnames],
                                embedder=record_of(embedder).to_dict(),
                                counts={"models": len(table.models), "datasets": len(used), "classes": len(classes)},
                                left_out=skipped)
        seal_manifest(tmp, manifest, ["models.json", "datasets.json", "classes.json", "class_vectors.npy",
                                      "accuracy.npy"])
    return {"models": len(table.models), "datasets": used, "left_out": skipped, "classes": len(classes)}


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

    @property
    def model_ids(self) -> list[str]:
        return [m["id"] for m in self.models]

    @property
    def dataset_names(self) -> list[str]:
        return [d["name"] for d in self.datasets]


def has_published(index_path: Path) -> bool:
    return (Path(index_path) / FOLDER / "manifest.json").is_file()


def open_published(index_path: Path) -> PublishedLabels:
    """Open an index's published labels; errors name the file (or the embedder that differs from the index's).
    An import replacing them meanwhile makes it read again."""
    folder = Path(index_path) / FOLDER
    return read_consistent(lambda: _open_published(Path(index_path), folder),
                           [Path(index_path), folder, folder / "manifest.json"])


def _open_published(index_path: Path, folder: Path) -> PublishedLabels:
    manifest = read_manifest(folder, KIND)
    try:
        index_embedder = EmbedderRecord.from_dict(read_index_manifest(Path(index_path))["embedder"])
        own = EmbedderRecord.from_dict(manifest["embedder"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{folder / 'manifest.json'}: missing or malformed embedder ({exc})") from None
    try:
        check_agreement(index_embedder, own, str(folder))
    except MLLIndexError as exc:
        raise IndexFormatError(f"{folder}: published labels embedded with {own.describe()}, the index with "
                               f"{index_embedder.describe()}; import them again") from exc
    classes = read_json(folder / "classes.json")
    try:
        vectors = np.load(folder / "class_vectors.npy", mmap_mode="r")
        accuracy = np.load(folder / "accuracy.npy")
    except (ValueError, OSError) as exc:
        raise IndexFormatError(f"{folder}: cannot read the published arrays ({exc})") from None
    models, datasets = read_json(folder / "models.json"), read_json(folder / "datasets.json")
    if vectors.shape[0] != len(classes) or accuracy.shape != (len(models), len(datasets)):
        raise IndexFormatError(f"{folder}: arrays disagree with models.json, datasets.json or classes.json")
    return PublishedLabels(models, datasets, np.array([c["dataset"] for c in classes], np.int64),
                           [c["name"] for c in classes], np.asarray(vectors, np.float32), accuracy, manifest)


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
