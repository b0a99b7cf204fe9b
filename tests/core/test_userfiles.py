"""User files as real tools write them (byte-order marks, UTF-16, CR LF, trailing empty columns),
class names as users type them (zero-width characters, full-width letters, undecodable bytes), and
hostile input: every reader returns or raises one InputError naming the file."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mll_index.core.userfiles import (
    decode_user_bytes, normalize_class_name, read_names_file, read_user_csv, read_user_json, read_user_text,
)
from mll_index.errors import InputError
from mll_index.index.captions import Concept, FileExpander, clean_class_names
from mll_index.index.match import match_names, read_class_name
from mll_index.models.hub import load_hub
from mll_index.published.store import dataset_settings, read_classnames, read_results
from mll_index.selection.task import make_task, read_batch_file, read_task_file
from tests.cli.runner import assert_one_line_error
from tests.conftest import run_cli

NAMES = "tiger\ngolden retriever\npizza\n"
TASK_JSON = json.dumps({"name": "cats", "domain": "sketch",
                        "classes": ["tiger", {"name": "lion", "captions": ["a big cat"]}]}, indent=1) + "\n"
BATCH = '{"classes": ["tiger", "lion"], "domain": "sketch"}\n\n["cow", "pig"]\n'
HUB_CSV = "id,arch,pretrained,params_m,licence\nrn50,RN50,openai,102.01,MIT\nvitb32,ViT-B-32,openai,,\n"
HUB_JSON = json.dumps({"name": "hub", "models": [{"id": "rn50", "arch": "RN50", "pretrained": "openai"}]}, indent=1)
RESULTS = ("name,pretrained,params (M),ImageNet 1k,Dogs,Food\n"
           "A,x,10,0.60,0.90,0.20\nB,y,20,0.70,0.30,\n")
CLASS_LISTS = json.dumps({"dogs": ["golden retriever", "pomeranian"], "food": ["pizza", "apple_pie"]}, indent=1)
CAPTIONS = json.dumps({"tiger": ["a striped cat", "a big cat"], "n02084071": ["a dog"]}, indent=1)
MAPPING = json.dumps({"datasets": {"Dogs": {"classnames": "dogs"}}}, indent=1)


def _captions(path: Path) -> list[list[str]]:
    return FileExpander(path).expand([Concept(name="tiger"), Concept(name="dog", wnid="n02084071")])


def _class_list_folder(path: Path) -> dict[str, list[str]]:
    folder = path.parent / "lists"
    folder.mkdir(exist_ok=True)
    (folder / "dogs.txt").write_bytes(path.read_bytes())
    return read_classnames([folder])


def _table(table: Any) -> tuple[Any, ...]:
    return table.models, table.datasets, table.accuracy.tobytes(), table.scale   # bytes: NaN equals NaN


# kind -> (plain text, file name, reader giving a comparable value)
KINDS: dict[str, tuple[str, str, Callable[[Path], Any]]] = {
    "names": (NAMES, "names.txt", read_names_file),
    "task text": (NAMES, "cats.txt", read_task_file),
    "task json": (TASK_JSON, "cats.json", read_task_file),
    # An unnamed batch task is named by its file:line: compared by line, whatever folder it was written to.
    "batch": (BATCH, "tasks.jsonl", lambda p: [replace(t, name=t.name.replace(str(p), "tasks.jsonl"))
                                               for t in read_batch_file(p)]),
    "hub csv": (HUB_CSV, "hub.csv", lambda p: load_hub(p, validate=False).models),
    "hub json": (HUB_JSON, "hub.json", lambda p: load_hub(p, validate=False).models),
    "results table": (RESULTS, "results.csv", lambda p: _table(read_results(p))),
    "class-name list": (CLASS_LISTS, "lists.json", lambda p: read_classnames([p])),
    "class-name folder": (NAMES, "dogs.txt", _class_list_folder),
    "captions": (CAPTIONS, "captions.json", _captions),
    "mapping": (MAPPING, "mapping.json", dataset_settings),
}


def _variants(text: str) -> dict[str, bytes]:
    crlf = text.replace("\n", "\r\n")
    return {
        "utf-8 bom": codecs.BOM_UTF8 + text.encode(),
        "crlf": crlf.encode(),
        "bom crlf": codecs.BOM_UTF8 + crlf.encode(),
        "lone cr": text.replace("\n", "\r").encode(),
        "utf-16 le bom": codecs.BOM_UTF16_LE + crlf.encode("utf-16-le"),
        "utf-16 be bom": codecs.BOM_UTF16_BE + text.encode("utf-16-be"),
        "trailing blank line": (text.rstrip("\n") + "\n\n").encode(),
    }


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_user_file_reads_the_same_with_bom_crlf_and_utf16(tmp_path: Path, kind: str) -> None:
    text, name, read = KINDS[kind]
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    (plain_dir / name).write_bytes(text.encode())
    expected = read(plain_dir / name)
    for variant, data in _variants(text).items():
        folder = tmp_path / variant.replace(" ", "-")
        folder.mkdir()
        (folder / name).write_bytes(data)
        assert read(folder / name) == expected, variant


def test_a_task_json_with_a_bom_is_json(tmp_path: Path) -> None:
    path = tmp_path / "cats.json"
    path.write_bytes(codecs.BOM_UTF8 + TASK_JSON.encode())
    task = read_task_file(path)
    assert task.classes == ("tiger", "lion") and task.domain == "sketch" and task.name == "cats"


@pytest.mark.parametrize("read, name", [(lambda p: load_hub(p, validate=False).models, "hub.csv"),
                                        (lambda p: _table(read_results(p)), "results.csv")])
def test_a_trailing_empty_csv_column_and_empty_rows_are_ignored(tmp_path: Path, read: Callable[[Path], Any],
                                                               name: str) -> None:
    text = HUB_CSV if name == "hub.csv" else RESULTS
    plain, excel = tmp_path / "plain" / name, tmp_path / "excel" / name
    plain.parent.mkdir()
    excel.parent.mkdir()
    plain.write_text(text)
    # What a spreadsheet writes when a column beyond the table was touched: a trailing
    # separator on every line, and a row of empty cells at the end.
    lines = [line + "," for line in text.splitlines()] + ["," * (text.splitlines()[0].count(",") + 1)]
    excel.write_bytes(codecs.BOM_UTF8 + "\r\n".join(lines).encode() + b"\r\n")
    assert read(excel) == read(plain)


def test_a_row_longer_than_the_header_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "hub.csv"
    path.write_text("id,arch,pretrained\nrn50,RN50,openai\nvit,ViT-B-32,openai,extra\n")
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: line 3: 4 cells, the header has 3 columns$"):
        load_hub(path, validate=False)


@pytest.mark.parametrize("read, name", [(read_names_file, "names.txt"), (read_task_file, "task.txt"),
                                        (lambda p: load_hub(p, validate=False), "hub.csv"),
                                        (read_results, "results.csv")])
def test_a_byte_that_is_not_utf8_names_file_line_and_offset(tmp_path: Path, read: Callable[[Path], Any],
                                                             name: str) -> None:
    path = tmp_path / name
    lines = (HUB_CSV if name == "hub.csv" else RESULTS if name == "results.csv" else NAMES).splitlines(keepends=True)
    data = (lines[0] + lines[1]).encode() + b"ti\xffger\n"
    path.write_bytes(data)
    with pytest.raises(InputError) as info:
        read(path)
    offset = data.index(b"\xff")
    assert str(info.value) == (f"{path}: line 3: not UTF-8 (byte 0xff at offset {offset} of the file: "
                               "invalid start byte); save it as UTF-8")


def test_utf16_without_a_mark_and_broken_utf16_are_named(tmp_path: Path) -> None:
    path = tmp_path / "names.txt"
    path.write_bytes(NAMES.encode("utf-16-le"))
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: line 1: holds a NUL character .*UTF-16"):
        read_names_file(path)
    path.write_bytes(codecs.BOM_UTF16_LE + "ab\n".encode("utf-16-le") + b"\x00\xdc")
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: line 2: not UTF-16 \(bytes 0x00 0xdc at offset 8"):
        read_names_file(path)


def test_missing_folder_and_too_large_files_are_input_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_user_text(tmp_path / "none.txt")
    with pytest.raises(InputError, match="is a folder"):
        read_user_text(tmp_path)
    from mll_index.core import userfiles

    monkeypatch.setattr(userfiles, "MAX_FILE_BYTES", 10)
    (tmp_path / "big.txt").write_text("x" * 11)
    with pytest.raises(InputError, match=r"big.txt: 11 bytes, more than"):
        read_user_text(tmp_path / "big.txt")


def test_too_many_names_are_refused_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mll_index.core import userfiles

    monkeypatch.setattr(userfiles, "MAX_NAMES", 3)
    path = tmp_path / "names.txt"
    path.write_text("a\nb\nc\nd\n")
    with pytest.raises(InputError, match=r"names.txt: 4 lines, more than the 3 class names a command takes"):
        read_names_file(path)
    with pytest.raises(InputError, match=r"4 class names, more than the 3"):
        clean_class_names(["a", "b", "c", "d"])


# --- class names ---------------------------------------------------------------------------


def test_a_name_of_zero_width_characters_only_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "names.txt"
    path.write_text("tiger\n\u200b\u200d\nlion\n")
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: line 2 holds only invisible characters$"):
        read_names_file(path)
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: line 2 holds only invisible characters$"):
        read_task_file(path)
    with pytest.raises(InputError, match=r"^class name 2 holds only invisible characters$"):
        make_task(["tiger", "\u200b"])
    with pytest.raises(InputError, match=r"tasks.jsonl:2: class 1 holds only invisible characters$"):
        (tmp_path / "tasks.jsonl").write_text('["tiger", "lion"]\n["\\u2060", "lion"]\n')
        read_batch_file(tmp_path / "tasks.jsonl")


@pytest.mark.parametrize("typed, clean", [
    ("ti\u200bger", "tiger"), ("\ufefftiger", "tiger"), ("golden\u00a0retriever", "golden retriever"),
    ("\u200egolden \u200c retriever\u202c", "golden retriever"), ("ｔｉｇｅｒ", "tiger"), ("ﬁre truck", "fire truck"),
    ("Ｇｏｌｄｅｎ　Ｒｅｔｒｉｅｖｅｒ", "Golden Retriever"), ("caf\u0065\u0301", "caf\u00e9"), ("pi\u00adzza", "pizza"),
    ("tiger\x07", "tiger"), ("  tiger \t shark ", "tiger shark"),
])
def test_names_are_normalised_like_text_libraries_do(typed: str, clean: str) -> None:
    assert normalize_class_name(typed, "class name 1") == clean
    assert read_class_name(typed) == read_class_name(clean)
    assert make_task([typed, "pig"]).classes == (clean, "pig")


def test_a_normalised_name_is_a_duplicate_of_its_plain_spelling() -> None:
    with pytest.raises(InputError, match="duplicate class name"):
        make_task(["tiger", "ｔｉ\u200bｇｅｒ"])


def test_a_name_with_an_undecodable_byte_is_refused() -> None:
    # What Python makes of the argument $'tig\xffer' (PEP 383).
    name = b"tig\xffer".decode("utf-8", errors="surrogateescape")
    with pytest.raises(InputError, match=r"^class name 2 \('tig\\xffer'\) is not valid UTF-8 text$"):
        make_task(["tiger", name])
    with pytest.raises(InputError, match=r"not valid UTF-8 text"):
        read_class_name(name)


def test_zero_width_inside_a_name_matches_as_without(node_index) -> None:  # type: ignore[no-untyped-def]
    plain = match_names(node_index, ["tiger", "golden retriever"], method="lemma")
    hidden = match_names(node_index, ["ti\u200bger", "golden\u2060 ｒｅｔｒｉｅｖｅｒ"], method="lemma")
    assert plain == hidden and plain[0]


# --- hostile input -------------------------------------------------------------------------


def test_deep_nesting_is_an_input_error(tmp_path: Path) -> None:
    task = tmp_path / "deep.json"
    task.write_text("[" * 200_000)
    with pytest.raises(InputError, match=rf"^{re.escape(str(task))}: not a readable JSON task file \(nested deeper"):
        read_task_file(task)
    task.write_text("[" * 100 + "]" * 100)   # valid JSON, still too deep to be a task
    with pytest.raises(InputError, match="nested deeper than 64 levels"):
        read_task_file(task)
    batch = tmp_path / "tasks.jsonl"
    batch.write_text('["cow", "pig"]\n' + "[" * 200_000 + "\n")
    with pytest.raises(InputError, match=rf"^{re.escape(str(batch))}:2: not a readable JSON task line \(nested"):
        read_batch_file(batch)
    with pytest.raises(InputError, match="lone surrogate"):
        batch.write_text('["cow", "p\\udcffig"]\n')
        read_batch_file(batch)


def test_cli_reads_a_bom_names_file_like_the_plain_one(tmp_path: Path, index_dir: Path) -> None:
    plain, bom = tmp_path / "plain.txt", tmp_path / "bom.txt"
    plain.write_text("tiger\ngolden retriever\n")
    bom.write_bytes(codecs.BOM_UTF8 + b"tiger\r\ngolden retriever\r\n")
    args = ("match", "--method", "lemma", "--format", "jsonl", "--index", str(index_dir), "--file")
    first, second = run_cli(*args, str(plain)), run_cli(*args, str(bom))
    assert first.returncode == 0, first.stderr
    assert second.stdout == first.stdout


def test_cli_refuses_hostile_input_with_one_line(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000)
    assert_one_line_error(run_cli("select", "--task", str(deep)), str(deep), "nested deeper")
    batch = tmp_path / "tasks.jsonl"
    batch.write_text('["cow", "pig"]\n' + "{" * 200_000 + "\n")
    assert_one_line_error(run_cli("select", "--batch", str(batch)), f"{batch}:2", "not a readable JSON task line")
    undecodable = b"tig\xffer".decode("utf-8", errors="surrogateescape")
    assert_one_line_error(run_cli("select", "tiger", undecodable), "class name 2", "is not valid UTF-8 text")
    names = tmp_path / "names.txt"
    names.write_bytes(b"tiger\n\xfflion\n")
    assert_one_line_error(run_cli("select", "--file", str(names)), f"{names}: line 2: not UTF-8 (byte 0xff")
    names.write_bytes(b"tiger\n\xe2\x80\x8b\n")
    assert_one_line_error(run_cli("select", "--file", str(names)), f"{names}: line 2 holds only invisible characters")


# --- any bytes: a value or one InputError naming the file ----------------------------------


READERS: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "text": ("any.txt", read_user_text),
    "json": ("any.json", read_user_json),
    "csv": ("any.csv", read_user_csv),
    "names": ("names.txt", read_names_file),
    "task": ("task.json", read_task_file),
    "batch": ("tasks.jsonl", read_batch_file),
    "hub csv": ("hub.csv", lambda p: load_hub(p, validate=False)),
    "hub json": ("hub.json", lambda p: load_hub(p, validate=False)),
    "results table": ("results.csv", read_results),
    "class-name list": ("lists.json", lambda p: read_classnames([p])),
    "captions": ("captions.json", FileExpander),
    "mapping": ("mapping.json", dataset_settings),
}

_json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["tiger", "lion", "id", "arch", "RN50", "openai", "name", "classes", "models"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["name", "classes", "captions", "domain", "models", "id", "arch", "pretrained", "checkpoint",
                         "datasets", "classnames", "tiger"]) | st.text(max_size=4), inner, max_size=4),
    max_leaves=12)
_csv_text = st.lists(st.lists(st.sampled_from(["name", "pretrained", "id", "arch", "RN50", "openai", "0.5", "45",
                                               "-1", "1e3", "", " ", '"', "x,y", "\u200b", "nan"]),
                              min_size=1, max_size=5), min_size=1, max_size=4).map(
    lambda rows: "\n".join(",".join(r) for r in rows))
_texts = st.one_of(st.text(max_size=60), _json_values.map(json.dumps), _csv_text)
_encoded = st.tuples(_texts, st.sampled_from([b"", codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE]),
                     st.sampled_from(["\n", "\r\n", "\r"])).map(
    lambda t: t[1] + t[0].replace("\n", t[2]).encode(
        {b"": "utf-8", codecs.BOM_UTF8: "utf-8", codecs.BOM_UTF16_LE: "utf-16-le"}.get(t[1], "utf-16-be"),
        errors="surrogatepass"))
_bytes = st.one_of(st.binary(max_size=120), _encoded)


@pytest.mark.parametrize("kind", sorted(READERS))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_bytes)
def test_any_bytes_give_a_value_or_one_input_error_naming_the_file(tmp_path: Path, kind: str, data: bytes) -> None:
    name, read = READERS[kind]
    path = tmp_path / name
    path.write_bytes(data)
    try:
        read(path)
    except InputError as exc:
        message = str(exc)
        assert str(path) in message and "\n" not in message, message


@settings(max_examples=200, deadline=None)
@given(name=st.text(st.characters(exclude_categories=()), max_size=30))
def test_the_normaliser_returns_clean_text_or_an_input_error(name: str) -> None:
    try:
        clean = normalize_class_name(name, "names.txt: line 7")
    except InputError as exc:
        assert str(exc).startswith("names.txt: line 7 ") and "\n" not in str(exc)
        return
    assert clean == normalize_class_name(clean, "again") and clean == clean.strip() and "  " not in clean
    clean.encode("utf-8")


def test_decode_user_bytes_names_stdin() -> None:
    with pytest.raises(InputError, match=r"^stdin: line 1: not UTF-8"):
        decode_user_bytes(b"\xc3", "stdin")
