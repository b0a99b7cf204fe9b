"""Tests of mll_index.index.captions: the WordNet, file and LLM expanders (the LLM one against a real
local OpenAI-compatible HTTP server), class-name checks and chat-reply parsing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mll_index.errors import EndpointError, InputError
from mll_index.index import captions as C
from mll_index.index.graph import Graph

from tests.conftest import GOLDFISH, TENCH, free_port

from tests.openai_server import OpenAITestServer


def concept_of(graph: Graph, wnid: str) -> C.Concept:
    return C.node_concept(graph, graph.row(wnid))


# --- concepts and the WordNet expander ------------------------------------------------------

def test_node_concept_of_tench(taxonomy: Graph) -> None:
    c = concept_of(taxonomy, TENCH)
    assert c.name == "tench"
    assert c.wnid == TENCH
    assert c.lemmas == ("tench", "Tinca tinca")
    assert c.gloss.startswith("freshwater dace-like game fish")
    assert c.hypernym == "cyprinid"


def test_wordnet_expander_for_nodes(taxonomy: Graph) -> None:
    expander = C.WordNetExpander()
    assert isinstance(expander, C.CaptionExpander)
    assert expander.expander_id == "wordnet-v1"
    tench, goldfish = expander.expand([concept_of(taxonomy, TENCH), concept_of(taxonomy, GOLDFISH)])
    assert tench == [
        "tench, Tinca tinca",
        "tench, Tinca tinca: freshwater dace-like game fish of Europe and western Asia noted for ability to "
        "survive outside water",
        "a photo of a tench, a kind of cyprinid.",
    ]
    assert goldfish[0].startswith("goldfish")
    assert all(isinstance(s, str) and s for s in goldfish)


def test_wordnet_expander_for_class_names() -> None:
    out = C.WordNetExpander().expand([C.Concept(name="golden retriever"), C.Concept(name="crème brûlée")])
    assert out == [["golden retriever", "a photo of a golden retriever."],
                   ["crème brûlée", "a photo of a crème brûlée."]]
    assert C.WordNetExpander().expand([]) == []


def test_wordnet_expander_node_without_hypernym(taxonomy: Graph) -> None:
    entity = taxonomy.wnids[taxonomy.synsets.index("entity.n.01")]
    (captions,) = C.WordNetExpander().expand([concept_of(taxonomy, entity)])
    assert captions[-1] == "a photo of a entity, a kind of thing."


# --- class names ----------------------------------------------------------------------------

def test_clean_class_names_strips_and_keeps_order() -> None:
    assert C.clean_class_names(["  golden   retriever ", "tench", "crème brûlée", "Crane"]) == [
        "golden retriever", "tench", "crème brûlée", "Crane"]
    assert C.clean_class_names([]) == []


@pytest.mark.parametrize("names, pattern", [
    (["tench", ""], r"class name 2 is empty"),
    (["tench", "goldfish", " \t "], r"class name 3 is empty"),
    (["x" * 201], r"class name 1 is 201 characters long \(at most 200\): 'xxxx"),
    (["Tench", "goldfish", "tench"], r"duplicate class name 'tench' \(entries 1 and 3\)"),
    (["golden retriever", "Golden  Retriever"], r"duplicate class name 'Golden Retriever' \(entries 1 and 2\)"),
])
def test_clean_class_names_errors_say_where(names: list[str], pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        C.clean_class_names(names)


def test_clean_class_names_accepts_200_characters() -> None:
    assert C.clean_class_names(["y" * 200]) == ["y" * 200]


# --- the file expander ----------------------------------------------------------------------

def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_file_expander_by_name_and_wnid_with_wordnet_fallback(tmp_path: Path, taxonomy: Graph) -> None:
    path = write_json(tmp_path / "caps.json", {
        "Golden_Retriever": ["a friendly golden dog", "a dog with a golden coat"],
        TENCH: ["a green-gold fish held by an angler"],
    })
    expander = C.FileExpander(path)
    assert isinstance(expander, C.CaptionExpander)
    assert expander.expander_id.startswith("file:caps.json#") and expander.expander_id.endswith("+wordnet-v1")
    out = expander.expand([C.Concept(name="golden retriever"), concept_of(taxonomy, TENCH),
                           C.Concept(name="laptop"), concept_of(taxonomy, GOLDFISH)])
    assert out[0] == ["a friendly golden dog", "a dog with a golden coat"]
    assert out[1] == ["a green-gold fish held by an angler"]
    assert out[2] == C.WordNetExpander().expand([C.Concept(name="laptop")])[0]
    assert out[3] == C.WordNetExpander().expand([concept_of(taxonomy, GOLDFISH)])[0]


def test_file_expander_id_changes_with_content(tmp_path: Path) -> None:
    a = C.FileExpander(write_json(tmp_path / "caps.json", {"tench": ["a fish"]})).expander_id
    b = C.FileExpander(write_json(tmp_path / "caps.json", {"tench": ["another fish"]})).expander_id
    assert a != b


@pytest.mark.parametrize("content, pattern", [
    ("{not json", "not valid JSON"),
    ('["a list", "not an object"]', "expected a JSON object"),
    ('{"tench": "a string, not a list"}', "expected a JSON object"),
    ('{"tench": []}', "expected a JSON object"),
    ('{"tench": ["ok", "  "]}', "expected a JSON object"),
    ('{"tench": [1, 2]}', "expected a JSON object"),
])
def test_file_expander_bad_file_names_it(tmp_path: Path, content: str, pattern: str) -> None:
    path = tmp_path / "bad captions.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(str(path)) + ".*" + pattern):
        C.FileExpander(path)


def test_file_expander_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"crème": ["a dessert"]}'.encode("latin-1"))
    with pytest.raises(InputError, match=re.escape(str(path))):
        C.FileExpander(path)


def test_file_expander_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.json"
    with pytest.raises(InputError, match=re.escape(str(path)) + ": caption file not found"):
        C.FileExpander(path)


# --- parsing chat replies -------------------------------------------------------------------

def test_parse_plain_json_array() -> None:
    assert C.parse_caption_reply('["a red fish", "a fish   in\\na net", "", "  "]') == ["a red fish", "a fish in a net"]


@pytest.mark.parametrize("reply", [
    '```json\n["a red fish", "a fish in a net"]\n```',
    '```\n["a red fish", "a fish in a net"]\n```',
    'Here you are:\n```json\n["a red fish", "a fish in a net"]\n```\n',
])
def test_parse_code_fenced_json(reply: str) -> None:
    assert C.parse_caption_reply(reply) == ["a red fish", "a fish in a net"]


def test_parse_bullet_and_numbered_lines() -> None:
    assert C.parse_caption_reply("- a red fish\n* a fish in a net\n\n  - a fish on ice  \n") == [
        "a red fish", "a fish in a net", "a fish on ice"]
    assert C.parse_caption_reply("1. a laptop on a desk\n2) an open laptop") == ["a laptop on a desk", "an open laptop"]
    assert C.parse_caption_reply("") == []


def test_parse_numbered_lines_keeps_leading_digits_of_captions() -> None:
    assert C.parse_caption_reply("1. 3D model of a laptop\n2. 101 dalmatians on a lawn\n- 2 tench in a net") == [
        "3D model of a laptop", "101 dalmatians on a lawn", "2 tench in a net"]


# --- the LLM expander against a real local server -------------------------------------------

def test_llm_expander_parses_reply_and_keeps_name_first(tmp_path: Path) -> None:
    with OpenAITestServer() as server:
        expander = C.LLMExpander(server.base_url, "test-model", n=3, cache_path=tmp_path / "llm.sqlite",
                                 backoff_s=0.01)
        (captions,) = expander.expand([C.Concept(name="golden retriever")])
    assert expander.expander_id == f"llm:{server.base_url}#test-model/n3"
    assert captions[0] == "golden retriever"
    assert len(captions) == 4
    user = "Give 3 descriptions of what a photo of a golden retriever looks like."
    assert captions[1:] == [f"a photo of {user}.", f"{user}, seen up close.", f"a picture showing {user}."]
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["model"] == "test-model"
    assert request["body"]["messages"][0]["role"] == "system"


def test_llm_expander_sends_wordnet_context_for_nodes(tmp_path: Path, taxonomy: Graph) -> None:
    with OpenAITestServer(chat_reply=lambda body: '["a fish"]') as server:
        expander = C.LLMExpander(server.base_url, "m", cache_path=tmp_path / "llm.sqlite", backoff_s=0.01)
        assert expander.expand([concept_of(taxonomy, TENCH)]) == [["tench", "a fish"]]
    user = server.requests[0]["body"]["messages"][-1]["content"]
    assert "tench, Tinca tinca" in user and "freshwater dace-like" in user


def test_llm_expander_cache_on_disk_avoids_new_requests(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "llm.sqlite"
    names = [C.Concept(name="tench"), C.Concept(name="goldfish")]
    with OpenAITestServer() as server:
        first = C.LLMExpander(server.base_url, "m", cache_path=cache, backoff_s=0.01).expand(names)
        assert len(server.requests) == 2
        second = C.LLMExpander(server.base_url, "m", cache_path=cache, backoff_s=0.01).expand(names)
        assert len(server.requests) == 2  # every answer came from the cache
        assert second == first
        # Another model is another cache key.
        C.LLMExpander(server.base_url, "other-model", cache_path=cache, backoff_s=0.01).expand(names[:1])
        assert len(server.requests) == 3


def test_llm_expander_retries_server_errors(tmp_path: Path) -> None:
    with OpenAITestServer(fail_first=2, fail_status=503) as server:
        expander = C.LLMExpander(server.base_url, "m", cache_path=tmp_path / "llm.sqlite", backoff_s=0.01)
        (captions,) = expander.expand([C.Concept(name="tench")])
    assert captions[0] == "tench" and len(captions) == 4
    assert len(server.requests) == 3


def test_llm_expander_empty_reply_is_endpoint_error(tmp_path: Path) -> None:
    with OpenAITestServer(chat_reply=lambda body: "   ") as server:
        expander = C.LLMExpander(server.base_url, "quiet-model", cache_path=tmp_path / "llm.sqlite", backoff_s=0.01)
        with pytest.raises(EndpointError, match=r"quiet-model gave no captions for 'tench'"):
            expander.expand([C.Concept(name="tench")])


def test_llm_expander_unreachable_endpoint_names_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    expander = C.LLMExpander(url, "m", cache_path=tmp_path / "llm.sqlite", backoff_s=0.01, max_retries=2)
    with pytest.raises(EndpointError, match=re.escape(f"cannot reach {url}/chat/completions")):
        expander.expand([C.Concept(name="tench")])


# --- make_expander --------------------------------------------------------------------------

def test_make_expander_builds_each_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(C.make_expander("wordnet"), C.WordNetExpander)
    caps = write_json(tmp_path / "c.json", {"tench": ["a fish"]})
    assert isinstance(C.make_expander("file", caption_file=caps), C.FileExpander)
    llm = C.make_expander("llm", base_url="http://127.0.0.1:9/v1/", model="m")
    assert isinstance(llm, C.LLMExpander)
    assert llm.expander_id == "llm:http://127.0.0.1:9/v1#m/n5"
    monkeypatch.setenv("MLL_INDEX_LLM_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("MLL_INDEX_LLM_MODEL", "env-model")
    assert C.make_expander("llm").expander_id == "llm:http://127.0.0.1:9/v1#env-model/n5"


def test_make_expander_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLL_INDEX_LLM_URL", raising=False)
    monkeypatch.delenv("MLL_INDEX_LLM_MODEL", raising=False)
    with pytest.raises(InputError, match=r"'gpt'.*\['file', 'llm', 'wordnet'\]"):
        C.make_expander("gpt")
    with pytest.raises(InputError, match="--llm-url and --llm-model"):
        C.make_expander("llm", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(InputError, match="--captions"):
        C.make_expander("file")
