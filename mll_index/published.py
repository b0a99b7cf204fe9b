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

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mll_index.artifacts import (atomic_dir, check_then_open, index_lock, new_manifest, read_consistent, read_json,
                                 read_manifest, seal_manifest, write_json)
from mll_index.embed import (EmbedderRecord, EmbeddingCache, LazyEmbedder, TextEmbedder, check_agreement, embed_classes,
                             record_of)
from mll_index.errors import IndexFormatError, InputError, MLLIndexError
from mll_index.index import load_index, read_index_manifest
from mll_index.layout import MANIFEST, published_dir
from mll_index.userfiles import names_from_text, normalize_class_name, read_user_csv, read_user_json, read_user_text

log = logging.getLogger(__name__)

KIND = "published-labels"
META_COLUMNS = {"name", "pretrained", "params (M)", "FLOPs (B)", "Average perf. on 38 datasets"}
IMAGENET_COLUMN = "ImageNet 1k"
Scale = Literal["auto", "percent", "fraction"]
SCALES: tuple[str, ...] = ("auto", "percent", "fraction")


def dataset_settings(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """Column → {"classnames": key, "family": name}: the shipped data/published_datasets.json or a user's file."""
    data = read_user_json(path, "dataset mapping") if path else \
        json.loads(resources.files("mll_index").joinpath("data/published_datasets.json").read_text())
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
        raise InputError(f'{path}: a dataset mapping is {{"datasets": {{column: {{"classnames": key}}}}}}')
    return data["datasets"]


def read_classnames(sources: Sequence[Path]) -> dict[str, list[str]]:
    """Class-name lists by key from JSON files ({key: [names]}) and folders of `<key>.txt` (one name per line,
    blank lines and empty names skipped, the latter with a warning); names are normalised as task class
    names are (`userfiles.normalize_class_name`).

    Raises:
        InputError: a missing source, an unreadable file or a name empty once cleaned, naming the file.
    """
    out: dict[str, list[str]] = {}
    for source in sources:
        source = Path(source)
        if source.is_dir():
            for f in sorted(source.glob("*.txt")):
                out[f.stem] = names_from_text(read_user_text(f), str(f), skip_blank=True)
        elif source.is_file():
            data = read_user_json(source, "JSON class-name file")
            if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
                raise InputError(f"{source}: a class-name file maps dataset keys to lists of names")
            for key, names in data.items():
                # A benchmark's list may hold an empty name (CLIP_benchmark's CLEVR distances do): it names
                # nothing to match, so it is left out, as blank lines of a text list are, and said.
                blank = [i for i, n in enumerate(names, 1) if not str(n).strip()]
                if blank:
                    log.warning("%s: %r: empty class name(s) at position %s left out", source, key,
                                ", ".join(map(str, blank)))
                out[key] = [normalize_class_name(str(n), f"{source}: {key!r} name {i}")
                            for i, n in enumerate(names, 1) if str(n).strip()]
        else:
            raise InputError(f"{source}: no such class-name file or folder")
    return out


@dataclass(frozen=True)
class ResultsTable:
    """A published results table: models (hub entries) × dataset columns, accuracy in [0, 1] (NaN: missing).

    scale: how the table's figures were read: "percent" (divided by 100) or "fraction".
    """

    models: list[dict[str, Any]]
    datasets: list[str]
    accuracy: np.ndarray
    scale: str = "fraction"


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is None or math.isfinite(value) else None


def decide_scale(path: Path, datasets: Sequence[str], values: np.ndarray, scale: Scale = "auto") -> str:
    """Whether a table's figures are percentages or fractions, decided from all its values, never one by one.

    With `auto`, a table with any figure above 1 is in percent, every column of it: one tool
    wrote the table, and a percent column where every model scored below 1% (0.9 meaning 0.9%)
    must not read as 90%. A table whose figures are all in [0, 1] holds fractions. Each column
    is checked: a negative figure or one above 100 is an error, and so is a figure above 1 when
    `scale` says fractions.

    Args:
        values: (n_models, n_datasets) raw figures, NaN where missing.
    Returns:
        "percent" or "fraction".
    Raises:
        InputError: naming the file and the column.
    """
    if scale not in SCALES:
        raise InputError(f"unknown scale {scale!r}; valid: {list(SCALES)}")
    above_one = False
    for j, d in enumerate(datasets):
        column = values[:, j][~np.isnan(values[:, j])]
        if not column.size:
            continue
        low, high = float(column.min()), float(column.max())
        if low < 0 or high > 100:
            raise InputError(f"{path}: column {d!r}: figures from {low:g} to {high:g}; accuracies are fractions in "
                             "[0, 1] or percentages in [0, 100]")
        if scale == "fraction" and high > 1:
            raise InputError(f"{path}: column {d!r}: figure {high:g} is above 1, but the table was said to hold "
                             "fractions")
        above_one = above_one or high > 1
    return "percent" if scale == "percent" or (scale == "auto" and above_one) else "fraction"


def read_results(path: Path, scale: Scale = "auto") -> ResultsTable:
    """Read a results CSV of open_clip's shape; percent or fraction is decided for the whole table (`decide_scale`).

    Raises:
        InputError: a missing `name` column, no dataset column, a value that is not a number, figures
            outside [0, 100] or a unit that contradicts `scale`.
    """
    path = Path(path)
    table = read_user_csv(path, "results table")
    header, rows = table.columns, table.rows
    if "name" not in header:
        raise InputError(f"{path}: a results table needs a 'name' column (and 'pretrained', dataset columns); "
                         f"its columns are {list(header)[:8]}")
    datasets = [c for c in header if c not in META_COLUMNS]
    if not datasets or not rows:
        raise InputError(f"{path}: no dataset columns or no models")
    acc = np.full((len(rows), len(datasets)), np.nan, np.float64)
    for i, row in enumerate(rows):
        for j, d in enumerate(datasets):
            raw = row.get(d)
            value = _number(raw)
            if raw not in (None, "") and value is None:
                raise InputError(f"{path}: line {table.lines[i]}, column {d!r}: {raw!r} is not a number")
            if value is not None:
                acc[i, j] = value
    unit = decide_scale(path, datasets, acc, scale)
    acc = (acc / 100 if unit == "percent" else acc).astype(np.float32)
    models, seen = [], set()
    for i, row in enumerate(rows):
        if not row.get("name"):
            raise InputError(f"{path}: line {table.lines[i]}: no model name")
        model_id = f"{row['name']}-{row['pretrained']}" if row.get("pretrained") else row["name"]
        if model_id in seen:
            raise InputError(f"{path}: line {table.lines[i]}: model {model_id!r} appears twice")
        seen.add(model_id)
        imagenet = acc[i, datasets.index(IMAGENET_COLUMN)] if IMAGENET_COLUMN in datasets else np.nan
        models.append({"id": model_id, "arch": row["name"], "pretrained": row.get("pretrained") or None,
                       "params_m": _number(row.get("params (M)")), "flops_b": _number(row.get("FLOPs (B)")),
                       "imagenet_acc": None if np.isnan(imagenet) else round(float(imagenet), 4)})
    log.info("%s: figures read as %s", path, "percentages" if unit == "percent" else "fractions")
    return ResultsTable(models, datasets, acc, unit)


def clean_benchmark_name(name: str) -> str:
    """A benchmark class name as a user would write it ('apple_pie' → 'apple pie')."""
    return " ".join(name.replace("_", " ").split())


def import_published(index_path: Path, results: Path, classnames: Sequence[Path], *, mapping: Path | None = None,
                     embedder: TextEmbedder | None = None, cache: EmbeddingCache | None = None,
                     scale: Scale = "auto") -> dict[str, Any]:
    """Import a results table and class-name lists as published labels of the index (written atomically).

    Columns without a class-name list are left out and reported. `scale` says whether the
    table's figures are percentages or fractions (`auto`: decided from them, see `decide_scale`).
    Returns a summary: models, datasets used, datasets left out, classes, and the scale the
    figures were read in (also recorded in the manifest).
    """
    index = load_index(index_path)
    embedder = embedder or LazyEmbedder(index.embedder)
    index.check_embedder(embedder)
    table = read_results(results, scale)
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
    folder = published_dir(index_path)
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
                                left_out=skipped, scale=table.scale)
        seal_manifest(tmp, manifest, ["models.json", "datasets.json", "classes.json", "class_vectors.npy",
                                      "accuracy.npy"])
    return {"models": len(table.models), "datasets": used, "left_out": skipped, "classes": len(classes),
            "scale": table.scale}


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
    return (published_dir(index_path) / MANIFEST).is_file()


def open_published(index_path: Path) -> PublishedLabels:
    """Open an index's published labels; errors name the file (or the embedder that differs from the index's).
    An import replacing them meanwhile makes it read again."""
    folder = published_dir(index_path)
    return read_consistent(lambda: _open_published(Path(index_path), folder),
                           [Path(index_path), folder, folder / MANIFEST])


def _open_published(index_path: Path, folder: Path) -> PublishedLabels:
    manifest = read_manifest(folder, KIND)
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


def check_published(index_path: Path, checksums: bool = False) -> list[str]:
    """Every problem of an index's published labels, one line each naming the file; [] when all is sound
    (or there are none): the manifest, each file's size (with `checksums` its SHA-256), then opening them."""
    folder = published_dir(index_path)
    if not folder.is_dir():
        return []
    return check_then_open(folder, KIND, lambda: open_published(index_path), checksums=checksums)


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
