"""Reading published results: accuracy tables, class-name lists and the datasets' domains and descriptions.

Two table shapes are read, told apart by their header:

- wide (open_clip's `openclip_results.csv`): one row per model (`name`, `pretrained`, `params (M)`,
  `FLOPs (B)`), one accuracy column per dataset;
- long (LOVM's `eval_table.csv`, CLIP_benchmark's merged output): one row per model and dataset,
  with a `dataset` column, an accuracy column (`acc1`) and the model as `model` + `pretrained`
  or as `model_fullname` ("ViT-B-32 laion2b_e16"). An unnamed first column (the index pandas
  writes) is ignored.

Either way a model's id is `<arch>-<pretrained>` (open_clip's `name,pretrained` convention), so
the same model has the same id in both tables. Nothing here imports more than numpy.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mll_index.core.userfiles import (
    NUMBER_RANGES, UserTable, names_from_text, normalize_class_name, number_in_range, parse_user_json, read_user_csv,
    read_user_json, read_user_text,
)
from mll_index.errors import InputError

log = logging.getLogger(__name__)

META_COLUMNS = {"name", "pretrained", "params (M)", "FLOPs (B)", "Average perf. on 38 datasets"}
# The ImageNet column under open_clip's and LOVM's names: the models' general strength.
IMAGENET_COLUMNS = ("ImageNet 1k", "imagenet1k")
IMAGENET_COLUMN = IMAGENET_COLUMNS[0]
LONG_ACCURACY = "acc1"
Scale = Literal["auto", "percent", "fraction"]
SCALES: tuple[str, ...] = ("auto", "percent", "fraction")


def read_classnames(sources: Sequence[Path], used: Collection[str] | None = None) -> dict[str, list[str]]:
    """Class-name lists by key from JSON files ({key: [names]}) and folders of `<key>.txt` (one name per line,
    blank lines and empty names skipped, the latter with a warning); names are normalised as task class
    names are (`userfiles.normalize_class_name`).

    Args:
        used: the keys the caller needs (None: every key). A list outside them that cannot be read
            (a stray empty `.txt` in the folder) is left out with a warning instead of stopping the import.
    Raises:
        InputError: a missing source, an unreadable JSON file, or a used list that is unreadable or
            holds a name empty once cleaned, naming the file.
    """
    out: dict[str, list[str]] = {}

    def keep(key: str, read: Callable[[], list[str]], where: str) -> None:
        try:
            out[key] = read()
        except InputError as exc:
            if used is None or key in used:
                raise
            log.warning("%s: class-name list %r left out, no results column uses it (%s)", where, key, exc)

    for source in sources:
        source = Path(source)
        if source.is_dir():
            for f in sorted(source.glob("*.txt")):
                keep(f.stem, lambda f=f: names_from_text(read_user_text(f), str(f), skip_blank=True), str(f))  # type: ignore[misc]
        elif source.is_file():
            data = read_user_json(source, "JSON class-name file")
            if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
                raise InputError(f"{source}: a class-name file maps dataset keys to lists of names")
            for key, names in data.items():
                keep(key, lambda source=source, key=key, names=names: _json_names(source, key, names),  # type: ignore[misc]
                     str(source))
        else:
            raise InputError(f"{source}: no such class-name file or folder")
    return out


def _json_names(source: Path, key: str, names: list[Any]) -> list[str]:
    # A benchmark's list may hold an empty name (CLIP_benchmark's CLEVR distances do): it names
    # nothing to match, so it is left out, as blank lines of a text list are, and said.
    blank = [i for i, n in enumerate(names, 1) if not str(n).strip()]
    if blank:
        log.warning("%s: %r: empty class name(s) at position %s left out", source, key, ", ".join(map(str, blank)))
    return [normalize_class_name(str(n), f"{source}: {key!r} name {i}") for i, n in enumerate(names, 1) if str(n).strip()]


# A closing quote at a line's end and an opening quote at the next line's start: in a {name: text}
# map only a missing comma puts them there (LOVM's dataset_domains.json lacks one after
# "kitti_closest_vehicle_distance").
_MISSING_COMMA = re.compile(r'("[ \t]*)(\r?\n[ \t]*")')


def read_dataset_texts(path: Path, what: str) -> dict[str, str]:
    """A JSON file {dataset: text} (LOVM's `dataset_domains.json`, `dataset_tasks.json`), texts cleaned.

    One defect is repaired, with a warning naming the file and lines: a missing comma between two
    entries on consecutive lines (as LOVM ships `dataset_domains.json`). Only when the file does not
    parse as it is and parses with those commas added; any other invalid JSON stays an error.

    Raises:
        InputError: naming the file (and the line, for JSON that does not parse), when it is not such a map.
    """
    text = read_user_text(Path(path))
    try:
        data = parse_user_json(text, str(path), what)
    except InputError:
        fixed, n = _MISSING_COMMA.subn(r"\1,\2", text)
        try:
            data = json.loads(fixed) if n else None
        except json.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise
        lines = [text.count("\n", 0, m.start()) + 1 for m in _MISSING_COMMA.finditer(text)]
        log.warning("%s: not valid JSON; read with %d missing comma(s) added at the end of line(s) %s (fix the file "
                    "to silence this)", path, n, ", ".join(map(str, lines)))
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InputError(f"{path}: a {what} maps dataset names to one text each")
    return {str(k): normalize_class_name(v, f"{path}: {k!r}") for k, v in data.items() if v.strip()}


@dataclass(frozen=True)
class ResultsTable:
    """A published results table: models (hub entries) × dataset columns, accuracy in [0, 1] (NaN: missing).

    scale: how the table's figures were read: "percent" (divided by 100) or "fraction".
    shape: "wide" (a column per dataset) or "long" (a row per model and dataset).
    """

    models: list[dict[str, Any]]
    datasets: list[str]
    accuracy: np.ndarray
    scale: str = "fraction"
    shape: str = "wide"


def _cost(path: Path, line: int, column: str, raw: str | None, model: str) -> float | None:
    """A model's params (M) or FLOPs (B) cell: None when empty, else a finite number >= 0.

    Raises:
        InputError: naming the file, line, column and model: a budget would take a negative or NaN cost for free.
    """
    text = (raw or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{path}: line {line}: column {column!r} of model {model!r}: {text!r} is not a number") from None
    field = {"params (M)": "params_m", "FLOPs (B)": "flops_b"}.get(column, column)
    if number_in_range(field, value) is None:
        high = NUMBER_RANGES.get(field, (0.0, math.inf))[1]
        raise InputError(f"{path}: line {line}: column {column!r} of model {model!r}: {text!r} must be a finite "
                         f"number >= 0 and at most {high:g} (leave it empty where unknown)")
    return value


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


def _read_table(path: Path) -> UserTable:
    """The CSV as read_user_csv reads it; an unnamed first column (the index pandas writes:
    `,task,dataset,...`) is dropped."""
    text = read_user_text(path)
    try:
        first = next((cells for cells in csv.reader(io.StringIO(text, newline=""), strict=True)
                      if any(c.strip() for c in cells)), [])
    except csv.Error:
        first = []    # read_user_csv names the line
    indexed = bool(first) and not first[0].strip() and any(c.strip() for c in first[1:])
    return read_user_csv(path, "results table", index_column=indexed)


def _cell(path: Path, line: int, column: str, raw: str | None) -> float:
    """A figure of the table: NaN where the cell is empty.

    Raises:
        InputError: a cell that is not a number (naming the line and column).
    """
    text = (raw or "").strip()
    if not text:
        return np.nan
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):    # "nan" and "inf" parse, but are no figure
        raise InputError(f"{path}: line {line}, column {column!r}: {raw!r} is not a number")
    return value


def _long_model_ids(path: Path, table: UserTable) -> list[tuple[str, str, str | None]]:
    """(id, arch, pretrained) per row of a long table, from `model` + `pretrained` or `model_fullname`."""
    header = table.columns
    out = []
    for i, row in enumerate(table.rows):
        arch, tag = row.get("model") or None, row.get("pretrained") or None
        if arch is None and row.get("model_fullname"):
            arch, _, rest = str(row["model_fullname"]).strip().partition(" ")
            tag = rest.strip() or None
        if not arch:
            raise InputError(f"{path}: line {table.lines[i]}: no model name (columns 'model' or 'model_fullname' "
                             f"expected; the table has {list(header)[:8]})")
        out.append((f"{arch}-{tag}" if tag else arch, arch, tag))
    return out


def _read_long(path: Path, table: UserTable, scale: Scale) -> ResultsTable:
    header = table.columns
    for needed in ("dataset", LONG_ACCURACY):
        if needed not in header:
            raise InputError(f"{path}: a results table with one row per model and dataset needs "
                             f"{'an' if needed[0] in 'aeiou' else 'a'} {needed!r} column; "
                             f"its columns are {list(header)[:10]}")
    if "model" not in header and "model_fullname" not in header:
        raise InputError(f"{path}: a results table with one row per model and dataset needs a 'model' (with "
                         f"'pretrained') or a 'model_fullname' column; its columns are {list(header)[:10]}")
    ids = _long_model_ids(path, table)
    models = list(dict.fromkeys(ids))
    datasets = list(dict.fromkeys(str(row["dataset"]) for row in table.rows if row.get("dataset")))
    acc = np.full((len(models), len(datasets)), np.nan, np.float64)
    where: dict[tuple[int, int], int] = {}
    m_pos, d_pos = {m: i for i, m in enumerate(models)}, {d: j for j, d in enumerate(datasets)}
    for r, row in enumerate(table.rows):
        if not row.get("dataset"):
            raise InputError(f"{path}: line {table.lines[r]}: no dataset name")
        i, j = m_pos[ids[r]], d_pos[str(row["dataset"])]
        if (i, j) in where:
            raise InputError(f"{path}: line {table.lines[r]}: dataset {row['dataset']!r} named twice for model "
                             f"{ids[r][0]!r} (first at line {where[i, j]})")
        where[i, j] = table.lines[r]
        acc[i, j] = _cell(path, table.lines[r], LONG_ACCURACY, row.get(LONG_ACCURACY))
    unit = decide_scale(path, datasets, acc, scale)
    acc = (acc / 100 if unit == "percent" else acc).astype(np.float32)
    entries = [_entry(model_id, arch, tag, None, None, acc[i], datasets) for i, (model_id, arch, tag) in enumerate(models)]
    return ResultsTable(entries, datasets, acc, unit, "long")


def _entry(model_id: str, arch: str, tag: str | None, params: float | None, flops: float | None, row: np.ndarray,
           datasets: Sequence[str]) -> dict[str, Any]:
    imagenet = next((row[datasets.index(c)] for c in IMAGENET_COLUMNS if c in datasets), np.nan)
    return {"id": model_id, "arch": arch, "pretrained": tag, "params_m": params, "flops_b": flops,
            "imagenet_acc": None if np.isnan(imagenet) else round(float(imagenet), 4)}


def read_results(path: Path, scale: Scale = "auto") -> ResultsTable:
    """Read a results CSV, wide (open_clip's) or long (LOVM's), see the module docstring; percent or fraction
    is decided for the whole table (`decide_scale`).

    Raises:
        InputError: one line naming the file: a missing `name` column (wide) or `dataset`, `acc1`,
            `model`/`model_fullname` column (long), no dataset column, a value that is not a number,
            figures outside [0, 100], a unit that contradicts `scale`, a model or a (model, dataset)
            pair named twice.
    """
    path = Path(path)
    table = _read_table(path)
    header, rows = table.columns, table.rows
    if "dataset" in header and "name" not in header:
        return _read_long(path, table, scale)
    if "name" not in header:
        raise InputError(f"{path}: a results table needs a 'name' column (and 'pretrained', dataset columns), or "
                         f"one row per model and dataset ('dataset', 'model_fullname', 'acc1'); its columns are "
                         f"{list(header)[:8]}")
    datasets = [c for c in header if c not in META_COLUMNS]
    if not datasets or not rows:
        raise InputError(f"{path}: no dataset columns or no models")
    acc = np.full((len(rows), len(datasets)), np.nan, np.float64)
    for i, row in enumerate(rows):
        for j, d in enumerate(datasets):
            acc[i, j] = _cell(path, table.lines[i], d, row.get(d))
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
        models.append(_entry(str(model_id), str(row["name"]), row.get("pretrained") or None,
                             _cost(path, table.lines[i], "params (M)", row.get("params (M)"), model_id),
                             _cost(path, table.lines[i], "FLOPs (B)", row.get("FLOPs (B)"), model_id), acc[i], datasets))
    log.info("%s: figures read as %s", path, "percentages" if unit == "percent" else "fractions")
    return ResultsTable(models, datasets, acc, unit, "wide")


def clean_benchmark_name(name: str) -> str:
    """A benchmark class name as a user would write it ('apple_pie' → 'apple pie')."""
    return " ".join(name.replace("_", " ").split())
