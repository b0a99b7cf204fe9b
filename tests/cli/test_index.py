"""Tests of the node index's commands (mll_index/cli/index.py: match, graph, expand, build, info,
add-nodes, labels compact): output through click's CliRunner (in process), exit codes and one-line
errors through real subprocesses (kept few, and none that loads the model)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mll_index.errors import InputError, MLLIndexError
from tests.cli.runner import assert_one_line_error, invoke, jsonl

from tests.conftest import GOLDEN_RETRIEVER, GOLDFISH, LAPTOP, TENCH, free_port, run_cli

from tests.openai_server import OpenAITestServer


# --- match (in process) ---------------------------------------------------------------------

def test_match_jsonl_one_object_per_name(index_dir: Path) -> None:
    result = invoke("match", "--index", str(index_dir), "--format", "jsonl", "-k", "3",
                    "golden retriever", "tench", "laptop")
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert [r["query"] for r in rows] == ["golden retriever", "tench", "laptop"]
    assert [r["matches"][0]["wnid"] for r in rows] == [GOLDEN_RETRIEVER, TENCH, LAPTOP]
    for row in rows:
        matches = row["matches"]
        assert len(matches) == 3
        assert {"wnid", "synset", "score"} <= set(matches[0])
        scores = [m["score"] for m in matches]
        assert scores == sorted(scores, reverse=True)
    assert rows[1]["matches"][0]["synset"] == "tench.n.01"


def test_match_names_from_file(index_dir: Path, tmp_path: Path) -> None:
    names = tmp_path / "classes.txt"
    names.write_text("goldfish\nlaptop\n\n\n", encoding="utf-8")  # trailing blank lines are fine
    result = invoke("match", "--index", str(index_dir), "--format", "jsonl", "-k", "1", "--file", str(names))
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert [(r["query"], r["matches"][0]["wnid"]) for r in rows] == [("goldfish", GOLDFISH), ("laptop", LAPTOP)]


@pytest.mark.parametrize("extra", [[], ["--file", "-"]])
def test_match_names_from_stdin(index_dir: Path, extra: list[str]) -> None:
    result = invoke("match", "--index", str(index_dir), "--format", "jsonl", "-k", "2", *extra,
                    input="tench\ngolden retriever\n")
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert [r["query"] for r in rows] == ["tench", "golden retriever"]
    assert [r["matches"][0]["wnid"] for r in rows] == [TENCH, GOLDEN_RETRIEVER]
    assert all(len(r["matches"]) == 2 for r in rows)


def test_match_table_format(index_dir: Path) -> None:
    result = invoke("match", "--index", str(index_dir), "-k", "2", "tench")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "tench"
    assert TENCH in lines[1] and "tench.n.01" in lines[1] and "(lemma)" in lines[1]
    assert len(lines) == 3


def test_match_lemma_method_without_a_match(index_dir: Path) -> None:
    result = invoke("match", "--index", str(index_dir), "--method", "lemma", "a red sports car", "crane")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "a red sports car", "  (no match)",
        "crane", "    1.000  n03126707  crane.n.04  (lemma)", "    0.500  n02012849  crane.n.05  (lemma)"]


def test_match_names_and_file_together_is_an_error(index_dir: Path, tmp_path: Path) -> None:
    names = tmp_path / "n.txt"
    names.write_text("tench\n")
    result = invoke("match", "--index", str(index_dir), "--file", str(names), "goldfish")
    assert result.exit_code == 1
    assert isinstance(result.exception, InputError)
    assert "not both" in str(result.exception)


def test_match_missing_names_file(index_dir: Path, tmp_path: Path) -> None:
    result = invoke("match", "--index", str(index_dir), "--method", "lemma", "--file", str(tmp_path / "none.txt"))
    assert isinstance(result.exception, InputError)
    assert str(tmp_path / "none.txt") in str(result.exception)


def test_match_bad_k_is_a_usage_error(index_dir: Path) -> None:
    result = invoke("match", "--index", str(index_dir), "-k", "0", "tench")
    assert result.exit_code == 2
    assert "-k" in result.output


# --- other commands (in process) ------------------------------------------------------------

def test_graph_show_prints_tench(index_dir: Path) -> None:
    result = invoke("graph", "show", "--index", str(index_dir), TENCH, GOLDFISH)
    assert result.exit_code == 0, result.output
    tench, goldfish = jsonl(result.stdout)
    assert tench["wnid"] == TENCH and tench["synset"] == "tench.n.01"
    assert tench["lemmas"] == ["tench", "Tinca tinca"]
    assert tench["hypernym_path"][0] == "entity.n.01" and tench["hypernym_path"][-1] == "tench.n.01"
    assert tench["in_node_set"] is True
    assert goldfish["synset"] == "goldfish.n.01"


def test_info_prints_the_manifest(index_dir: Path) -> None:
    result = invoke("info", "--index", str(index_dir), "--verify")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest == json.loads((index_dir / "manifest.json").read_text())
    assert manifest["kind"] == "node-index"
    assert manifest["embedder"]["id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["embedder"]["precision"] == "fp32"
    assert manifest["counts"]["nodes"] == 197


def test_expand_wordnet(tmp_path: Path) -> None:
    result = invoke("expand", "golden retriever", "crème brûlée")
    assert result.exit_code == 0, result.output
    assert jsonl(result.stdout) == [
        {"query": "golden retriever", "captions": ["golden retriever", "a photo of a golden retriever."]},
        {"query": "crème brûlée", "captions": ["crème brûlée", "a photo of a crème brûlée."]},
    ]


def test_expand_file(tmp_path: Path) -> None:
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({"tench": ["an olive-green fish"]}))
    result = invoke("expand", "--expander", "file", "--captions", str(caps), "tench", "laptop")
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert rows[0]["captions"] == ["an olive-green fish"]
    assert rows[1]["captions"] == ["laptop", "a photo of a laptop."]


def test_expand_llm_against_local_server() -> None:
    with OpenAITestServer(chat_reply=lambda body: '["a green fish", "a fish in a net"]') as server:
        result = invoke("expand", "--expander", "llm", "--llm-url", server.base_url, "--llm-model", "m", "tench")
    assert result.exit_code == 0, result.output
    assert jsonl(result.stdout) == [{"query": "tench", "captions": ["tench", "a green fish", "a fish in a net"]}]
    assert len(server.requests) == 1


def test_graph_build_with_wnids_file(tmp_path: Path) -> None:
    wnids = tmp_path / "wnids.txt"
    wnids.write_text(f"{TENCH}\n{GOLDFISH} {LAPTOP}\n")
    out = tmp_path / "g.json"
    result = invoke("graph", "build", "--wnids", str(wnids), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{out}: 3 nodes over 82115 WordNet noun synsets"
    assert json.loads(out.read_text())["node_set"] == {"kind": "wnids", "value": "3 wnids"}


def test_build_match_and_info_on_a_new_index(tmp_path: Path, index_dir: Path) -> None:
    dataset = tmp_path / "dataset"
    for wnid in (TENCH, GOLDFISH, LAPTOP, "README-not-a-class"):
        (dataset / wnid).mkdir(parents=True)
    index = tmp_path / "indexes" / "mine"
    result = invoke("build", "--index", str(index), "--folder", str(dataset))
    assert result.exit_code == 0, result.output
    assert f"{index}: 3 nodes, embedder sentence-transformers/all-MiniLM-L6-v2 (fp32), flat search" in result.stdout
    info = json.loads(invoke("info", "--index", str(index)).stdout)
    assert info["graph"]["node_set"] == {"kind": "folder", "value": str(dataset)}
    matched = jsonl(invoke("match", "--index", str(index), "--format", "jsonl", "-k", "1", "goldfish").stdout)
    assert matched[0]["matches"][0]["wnid"] == GOLDFISH


def test_build_recipe_with_unknown_keys(tmp_path: Path) -> None:
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"node_set": "visual", "colour": "blue"}))
    result = invoke("build", "--recipe", str(recipe), "--index", str(tmp_path / "idx"))
    assert isinstance(result.exception, InputError)
    assert str(recipe) in str(result.exception) and "'colour'" in str(result.exception)
    assert not (tmp_path / "idx").exists()


def test_build_recipe_that_is_not_an_object(tmp_path: Path) -> None:
    recipe = tmp_path / "r.json"
    recipe.write_text("[]")
    result = invoke("build", "--recipe", str(recipe), "--index", str(tmp_path / "idx"))
    assert isinstance(result.exception, MLLIndexError)
    assert str(recipe) in str(result.exception)


# --- exit codes and one-line errors (subprocesses) ------------------------------------------

def test_blank_line_in_the_middle_is_one_line_error(index_dir: Path) -> None:
    proc = run_cli("match", "--index", str(index_dir), "--method", "lemma", stdin="tench\n\ngoldfish\n")
    assert_one_line_error(proc, "stdin: line 2 is blank")
    assert proc.stdout == ""


def test_match_answers_every_line_of_a_names_file_repeats_included(index_dir: Path, tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("tench\ngoldfish\nTench\ngoldfish\n")
    result = invoke("match", "--index", str(index_dir), "--format", "jsonl", "-k", "1", "--file", str(names))
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert [r["query"] for r in rows] == ["tench", "goldfish", "Tench", "goldfish"]
    assert [r["matches"][0]["wnid"] for r in rows] == [TENCH, GOLDFISH, TENCH, GOLDFISH]
    assert not any(r["low_confidence"] for r in rows)


def test_a_name_of_stop_words_only_is_one_line_error(index_dir: Path) -> None:
    proc = run_cli("match", "--index", str(index_dir), "--method", "lemma", "tench", "of the")
    assert_one_line_error(proc, "class name 2 ('of the') has no word to match")
    proc = run_cli("match", "--index", str(index_dir), "--method", "lemma", stdin="tench\n?!\n")
    assert_one_line_error(proc, "class name 2 ('?!') has no word to match")


def test_missing_index_is_one_line_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-index-here"
    proc = run_cli("match", "--index", str(missing), "tench")
    assert_one_line_error(proc, str(missing))
    proc = run_cli("info", "--index", str(missing))
    assert_one_line_error(proc, str(missing), "no index here")


def test_corrupt_manifest_is_one_line_error_naming_it(index_copy: Path) -> None:
    (index_copy / "manifest.json").write_text('{"format": "mll-index", "format_ver')
    proc = run_cli("match", "--index", str(index_copy), "--method", "lemma", "tench")
    assert_one_line_error(proc, str(index_copy / "manifest.json"))


def test_manifest_without_counts_is_one_line_error(index_copy: Path) -> None:
    path = index_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["counts"]
    path.write_text(json.dumps(manifest))
    assert_one_line_error(run_cli("info", "--index", str(index_copy)), "manifest.json")


def test_graph_show_prints_tench_and_refuses_unknown_wnid(index_dir: Path) -> None:
    proc = run_cli("graph", "show", "--index", str(index_dir), TENCH)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["synset"] == "tench.n.01"
    proc = run_cli("graph", "show", "--index", str(index_dir), "n99999999")
    assert_one_line_error(proc, "unknown wnid", "n99999999")


@pytest.fixture(scope="module")
def unreachable_llm() -> tuple[str, subprocess.CompletedProcess[str]]:
    url = f"http://127.0.0.1:{free_port()}/v1"
    return url, run_cli("expand", "--expander", "llm", "--llm-url", url, "--llm-model", "m", "tench")


def test_unreachable_llm_exits_1_naming_the_url(unreachable_llm: tuple[str, subprocess.CompletedProcess[str]]) -> None:
    url, proc = unreachable_llm
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mll-index: error: cannot reach ")
    assert f"{url}/chat/completions" in last
    assert proc.stdout == ""


def test_unreachable_llm_is_exactly_one_line(unreachable_llm: tuple[str, subprocess.CompletedProcess[str]]) -> None:
    url, proc = unreachable_llm
    assert_one_line_error(proc, f"{url}/chat/completions")


def test_add_nodes_and_labels_compact(index_copy: Path) -> None:
    result = run_cli("add-nodes", "--index", str(index_copy), "n02129165", "n02129165")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 1
    again = run_cli("add-nodes", "--index", str(index_copy), "n02129165")
    assert json.loads(again.stdout)["skipped_already_there"] == ["n02129165"]
    bad = run_cli("add-nodes", "--index", str(index_copy), "n99999999")
    assert bad.returncode != 0 and "n99999999" in bad.stderr and "Traceback" not in bad.stderr
    compact = run_cli("labels", "compact", "--index", str(index_copy))
    assert compact.returncode == 0, compact.stderr
    assert json.loads(compact.stdout)["stored_from_folders"] == []


@pytest.mark.parametrize("record, says", [
    ({"id": "/nowhere/text-model", "precision": "fp32", "runtime": "torch", "dim": 384}, "/nowhere/text-model"),
    ({"id": "sentence-transformers/all-MiniLM-L6-v2", "precision": "int4", "runtime": "other", "dim": 384},
     "rebuild it with `mll-index build`"),
])
def test_an_embedder_that_cannot_be_recreated_is_one_line(index_copy: Path, record: dict, says: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never probe the network from the tests
    manifest = json.loads((index_copy / "manifest.json").read_text())
    manifest["embedder"] = record
    (index_copy / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(run_cli("match", "--index", str(index_copy), "a never cached name 7f3a"), says)




@pytest.mark.parametrize("args", [["labels", "compact"], ["info"], ["match", "tiger"], ["select", "tiger", "lion"],
                                  ["add-nodes", "n01440764"]])
def test_a_folder_that_is_no_index_is_refused_and_left_as_it_was(tmp_path: Path, args: list[str]) -> None:
    folder = tmp_path / "not-an-index"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    result = run_cli(*args, "--index", str(folder))
    assert result.returncode == 1 and "not an mll-index index" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]      # no .lock, nothing written
    missing = tmp_path / "missing"
    result = run_cli(*args, "--index", str(missing))
    assert result.returncode == 1 and not missing.exists()
