"""Files users give mll-index, read one way: names files, task and batch files, hubs, results tables,
class-name lists, caption and mapping files, and the class names inside them.

Real tools write text in more ways than one: spreadsheets and Notepad put a UTF-8 byte-order mark
in front, Excel's "Unicode text" is UTF-16 with a mark, Windows ends lines with CR LF and old Macs
with CR, and spreadsheets leave a trailing empty column or blank last line. All of these read as
the plain UTF-8 file would. What cannot be read is an InputError of one line naming the file, the
line and what to do ("names.txt: line 3: not UTF-8 (byte 0xff at offset 21 of the file); save it
as UTF-8").

Class names are normalised here too (`normalize_class_name`), the way text-processing libraries
clean user text: NFKC (full-width letters, ligatures), invisible format characters and control
characters removed, whitespace collapsed.

Imports nothing from the package but its errors, so every stage can use it; the index's own files
are read by `artifacts`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mll_index.errors import InputError

# A user file above this size is refused before it is read: every file a user gives (names,
# tasks, hubs, tables, captions) is a few MB at most, and reading it whole must stay cheap.
MAX_FILE_BYTES = 64 << 20
# A command takes at most this many class names: matching and selecting embed each name's
# captions, and a list this long already takes many minutes on a CPU (ImageNet-21k has 21,841).
MAX_NAMES = 100_000
# JSON nested deeper than this is refused: no user file needs more than a few levels, and deeper
# structures make Python's parser and repr() recurse out of stack.
MAX_JSON_DEPTH = 64

# Longest marks first: UTF-32-LE's mark starts with UTF-16-LE's.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_ENCODING_NAMES = {"utf-8": "UTF-8", "utf-16-le": "UTF-16", "utf-16-be": "UTF-16",
                   "utf-32-le": "UTF-32", "utf-32-be": "UTF-32"}


def _line_of(data: bytes, offset: int, bom: int, encoding: str) -> int:
    """The 1-based line holding byte `offset` (counted as the text before it decodes)."""
    before = data[bom:offset].decode(encoding, errors="replace")
    return before.replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1


def decode_user_bytes(data: bytes, where: str) -> str:
    """A user file's bytes as text, with Unix line ends.

    UTF-8 with or without a byte-order mark, and UTF-16 or UTF-32 with a mark, are read; the mark
    is dropped and CR LF and lone CR become LF.

    Args:
        where: the file's name (or "stdin") for the message.
    Raises:
        InputError: bytes that are not text of the encoding, or a NUL byte (UTF-16 without a mark,
            or not a text file), naming the line and byte offset.
    """
    encoding, bom = "utf-8", 0
    for mark, name in _BOMS:
        if data.startswith(mark):
            encoding, bom = name, len(mark)
            break
    label = _ENCODING_NAMES[encoding]
    try:
        text = data[bom:].decode(encoding)
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        bad = data[offset:bom + exc.end]
        shown = f"byte 0x{bad.hex()}" if len(bad) == 1 else "bytes " + " ".join(f"0x{b:02x}" for b in bad)
        raise InputError(f"{where}: line {_line_of(data, offset, bom, encoding)}: not {label} ({shown} at offset "
                         f"{offset} of the file: {exc.reason}); save it as UTF-8") from None
    nul = text.find("\0")
    if nul >= 0:
        line = text[:nul].replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1
        raise InputError(f"{where}: line {line}: holds a NUL character (a UTF-16 file without its byte-order "
                         "mark, or not a text file); save it as UTF-8")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_user_bytes(path: Path) -> bytes:
    """A user file's bytes. Raises InputError (naming the file) when it is missing, unreadable or too large."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InputError(f"{path}: {size:,} bytes, more than the {MAX_FILE_BYTES >> 20} MiB a user file "
                             "may have; split it")
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_user_text(path: Path) -> str:
    """A user's text file as text with Unix line ends (see `decode_user_bytes` for what is read).

    Raises:
        InputError: a missing, unreadable or too large file, or one that is not text, naming it.
    """
    return decode_user_bytes(read_user_bytes(path), str(path))


def _check_parsed(data: Any, where: str, what: str) -> None:
    """Refuse parsed JSON nested deeper than MAX_JSON_DEPTH, or holding a string that is not Unicode text
    (a lone surrogate written as an escape, "\\udcff"); walked without recursion."""
    stack = [(data, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                shown = item.encode("utf-8", errors="backslashreplace").decode("ascii", errors="backslashreplace")
                raise InputError(f"{where}: not a readable {what} (the string {shown[:60]!r} holds a lone "
                                 "surrogate escape, not text)") from None
        elif isinstance(item, (list, dict)):
            if level > MAX_JSON_DEPTH:
                raise InputError(f"{where}: not a readable {what} (nested deeper than {MAX_JSON_DEPTH} levels)")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((v, level + 1) for v in children)


def parse_user_json(text: str, where: str, what: str = "JSON file") -> Any:
    """Parse a user's JSON text (`what` names its kind in the message).

    Raises:
        InputError: invalid JSON (with its line and column), JSON nested deeper than MAX_JSON_DEPTH, or a
            string escape that is no text (a lone surrogate).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not a readable {what} (not valid JSON: {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno})") from None
    except RecursionError:
        # The parser recurses once per level; Python stops it long before the stack runs out.
        raise InputError(f"{where}: not a readable {what} (nested deeper than {MAX_JSON_DEPTH} levels)") from None
    _check_parsed(data, where, what)
    return data


def read_user_json(path: Path, what: str = "JSON file") -> Any:
    """A user's JSON file (`what` names its kind in the message), in any encoding `decode_user_bytes` reads.

    Raises:
        InputError: a missing or unreadable file, text that is not JSON, or JSON nested too deeply, naming it.
    """
    return parse_user_json(read_user_text(path), str(path), what)


@dataclass(frozen=True)
class UserTable:
    """A CSV (or TSV) table: column names in order, and its rows as {column: cell}.

    A cell is the stripped text, or None where the row is shorter than the header; lines[i] is
    the 1-based line of rows[i] in the file, for messages.
    """

    columns: tuple[str, ...]
    rows: list[dict[str, str | None]]
    lines: list[int]


def read_user_csv(path: Path, what: str = "CSV file", delimiter: str = ",", *,
                  index_column: bool = False) -> UserTable:
    """A user's CSV table with a header row, read by the csv module.

    Spreadsheet habits are accepted: a byte-order mark, CR LF line ends, trailing empty columns
    (a header or row ending in the delimiter), blank lines and rows of empty cells.
    index_column: the first column is an unnamed row index (what pandas writes: `,task,dataset,...`)
    and is dropped from every row; column numbers and cell counts in errors still count it.

    Raises:
        InputError: naming the file (and line): unreadable text, malformed CSV, no header, an
            unnamed or repeated column, or a row with more cells than the header.
    """
    path = Path(path)
    text = read_user_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[dict[str, str | None]] = []
    lines: list[int] = []
    skip = 1 if index_column else 0
    try:
        header: list[str] | None = None
        for cells in reader:
            cells = [c.strip() for c in cells]
            if not any(cells):
                continue   # a blank line, or a spreadsheet's row of empty cells
            cells = cells[skip:]
            if header is None:
                while cells and not cells[-1]:
                    cells.pop()
                for number, name in enumerate(cells, 1 + skip):
                    if not name:
                        raise InputError(f"{path}: line {reader.line_num}: column {number} of the header has no name")
                repeated = sorted({c for c in cells if cells.count(c) > 1})
                if repeated:
                    raise InputError(f"{path}: line {reader.line_num}: column(s) {repeated} appear twice in the header")
                header = cells
                continue
            extra = cells[len(header):]
            if any(extra):
                raise InputError(f"{path}: line {reader.line_num}: {len(header) + len(extra) + skip} cells, the header "
                                 f"has {len(header) + skip} columns")
            rows.append({name: (cells[i] if i < len(cells) else None) for i, name in enumerate(header)})
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise InputError(f"{path}: line {reader.line_num}: not a readable {what} ({exc})") from None
    if header is None:
        raise InputError(f"{path}: not a readable {what} (no header row)")
    return UserTable(tuple(header), rows, lines)


# ---------------------------------------------------------------------------------------
# Class names


def normalize_class_name(name: str, where: str) -> str:
    """A class name as text-processing libraries clean user text.

    Invisible format characters (Unicode category Cf: zero-width space and joiners, U+2060,
    U+FEFF, bidi marks, soft hyphen) and control characters are removed, the rest is NFKC
    normalised (full-width letters, ligatures, compatibility forms) and whitespace collapsed
    to single spaces. Idempotent.

    Args:
        where: where the name comes from, for the message ("names.txt: line 3", "class name 2").
    Raises:
        InputError: a name that is not valid Unicode text (a command-line argument with a byte
            that is not UTF-8) or that is empty once cleaned.
    """
    text = str(name)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # Python passes undecodable argument bytes on as lone surrogates (PEP 383).
        raw = text.encode("utf-8", errors="surrogateescape") if 0xDC80 <= ord(text[exc.start]) <= 0xDCFF else None
        shown = repr(raw)[1:] if raw is not None else repr(text.encode("utf-8", errors="backslashreplace"))[1:]
        raise InputError(f"{where} ({shown}) is not valid UTF-8 text") from None
    kept = "".join(ch for ch in text if ch.isspace() or unicodedata.category(ch) not in ("Cf", "Cc"))
    cleaned = " ".join(unicodedata.normalize("NFKC", kept).split())
    if not cleaned:
        said = "is empty" if not text.strip() else "holds only invisible characters"
        raise InputError(f"{where} {said}")
    return cleaned


def names_from_text(text: str, where: str, what: str = "class names", *, skip_blank: bool = False) -> list[str]:
    """Names one per line, each normalised (`normalize_class_name`).

    Trailing blank lines are dropped; other blank lines are skipped when `skip_blank`, else refused.

    Raises:
        InputError: naming `where` and the line: a blank line, a name empty once cleaned, no
            name at all, or more than MAX_NAMES names.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) > MAX_NAMES:
        raise InputError(f"{where}: {len(lines):,} lines, more than the {MAX_NAMES:,} {what} a command takes; "
                         "split the list")
    names = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            if skip_blank:
                continue
            raise InputError(f"{where}: line {number} is blank ({what}, one per line)")
        names.append(normalize_class_name(line, f"{where}: line {number}"))
    if not names:
        raise InputError(f"{where}: no {what}")
    return names


def read_names_file(path: Path, what: str = "class names", *, skip_blank: bool = False) -> list[str]:
    """Names from a user's file, one per line (see `names_from_text`)."""
    return names_from_text(read_user_text(path), str(path), what, skip_blank=skip_blank)


def check_name_count(names: Sequence[object], where: str = "the command") -> None:
    """Raise InputError when more than MAX_NAMES class names are given at once."""
    if len(names) > MAX_NAMES:
        raise InputError(f"{where}: {len(names):,} class names, more than the {MAX_NAMES:,} a command takes; "
                         "split the list")


# The range a model's cost and accuracy fields must lie in, in a hub file or a results table: a cost
# below 0 would let a budget take the model for free, NaN passes every comparison, and a figure past
# these is a typo (10 trillion parameters, an exaFLOP per image); imagenet_acc is a fraction or a
# percentage, as hubs write it.
NUMBER_RANGES = {"params_m": (0.0, 1e7), "flops_b": (0.0, 1e9), "imagenet_acc": (0.0, 100.0)}


def number_in_range(name: str, value: Any) -> float | None:
    """`value` as a float when it is a number (not a bool), finite and within NUMBER_RANGES[name]; else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    low, high = NUMBER_RANGES.get(name, (-math.inf, math.inf))
    return float(value) if math.isfinite(value) and low <= value <= high else None
