"""Tests of mll_index.embed with the real all-MiniLM-L6-v2 model and a real local embeddings server."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from mll_index import embed as E
from mll_index.errors import EndpointError, InputError, ModelLoadError

try:
    from conftest import free_port
except ImportError:  # pragma: no cover
    from tests.conftest import free_port

try:
    from tests.openai_server import OpenAITestServer, fake_embedding
except ImportError:  # tests/ is on sys.path itself when it is not a package
    from openai_server import OpenAITestServer, fake_embedding

TEXTS = ["a photo of a tench.", "golden retriever", "a laptop on a desk", "crème brûlée"]


def assert_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# --- the MiniLM embedder --------------------------------------------------------------------

def test_minilm_vectors_are_unit_float32(embedder: E.TextEmbedder) -> None:
    assert isinstance(embedder, E.TextEmbedder)
    assert embedder.embedder_id == "sentence-transformers/all-MiniLM-L6-v2@bf16"
    assert embedder.dim == 384
    assert_unit_rows(embedder.encode(TEXTS), len(TEXTS), 384)


def test_minilm_is_deterministic_and_meaningful(embedder: E.TextEmbedder) -> None:
    a = embedder.encode(["golden retriever", "a golden retriever dog", "a laptop computer"])
    b = embedder.encode(["golden retriever", "a golden retriever dog", "a laptop computer"])
    np.testing.assert_array_equal(a, b)
    assert a[0] @ a[1] > a[0] @ a[2] + 0.2


def test_minilm_encodes_nothing(embedder: E.TextEmbedder) -> None:
    empty = embedder.encode([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32


# --- embed_texts and the cache --------------------------------------------------------------

def test_embed_texts_keeps_order_and_duplicates(embedder: E.TextEmbedder) -> None:
    texts = ["tench", "goldfish", "tench"]
    vectors = E.embed_texts(embedder, texts)
    assert_unit_rows(vectors, 3, 384)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert not np.allclose(vectors[0], vectors[1])
    assert E.embed_texts(embedder, []).shape == (0, 384)


def test_embedding_cache_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "embeddings.sqlite"
    cache = E.EmbeddingCache(path)
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.put_many("model-a", ["x", "y", "z"], vectors)
    assert len(cache) == 3
    got = cache.get_many("model-a", ["z", "x", "unknown"])
    assert set(got) == {"x", "z"}
    np.testing.assert_array_equal(got["x"], vectors[0])
    np.testing.assert_array_equal(got["z"], vectors[2])
    assert cache.get_many("model-b", ["x"]) == {}  # keyed by embedder id too
    cache.put_many("model-a", ["x"], vectors[1:2])  # replaces, does not add
    assert len(cache) == 3
    cache.close()
    reopened = E.EmbeddingCache(path)  # persisted on disk
    assert len(reopened) == 3
    np.testing.assert_array_equal(reopened.get_many("model-a", ["x"])["x"], vectors[1])
    reopened.close()


def test_embedding_cache_handles_many_keys(tmp_path: Path) -> None:
    cache = E.EmbeddingCache(tmp_path / "e.sqlite")
    texts = [f"text {i}" for i in range(1234)]  # more than one SQL chunk of 500
    cache.put_many("m", texts, np.ones((len(texts), 2), np.float32))
    assert len(cache.get_many("m", texts)) == 1234
    cache.close()


def test_embed_texts_through_a_cache_encodes_each_text_once(tmp_path: Path, embedder: E.TextEmbedder) -> None:
    cache = E.EmbeddingCache(tmp_path / "e.sqlite")
    # Seed the cache with one entry so that it exists and is non-empty.
    seed = embedder.encode(["seed text"])
    cache.put_many(embedder.embedder_id, ["seed text"], seed)
    texts = ["tench", "goldfish", "tench", "laptop", "goldfish", "seed text"]
    first = E.embed_texts(embedder, texts, cache)
    assert len(cache) == 4  # seed + 3 distinct new texts
    second = E.embed_texts(embedder, texts, cache)
    assert len(cache) == 4  # nothing new encoded or stored
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first[5], seed[0])  # the cached vector was used as is
    assert_unit_rows(second, len(texts), 384)
    cache.close()


def test_embed_texts_fills_a_fresh_cache(tmp_path: Path, embedder: E.TextEmbedder) -> None:
    cache = E.EmbeddingCache(tmp_path / "fresh.sqlite")
    E.embed_texts(embedder, ["tench", "goldfish", "tench"], cache)
    assert len(cache) == 2
    cache.close()


def test_cached_vector_equals_a_fresh_one(tmp_path: Path, embedder: E.TextEmbedder) -> None:
    cache = E.EmbeddingCache(tmp_path / "e.sqlite")
    cache.put_many("other-model", ["unrelated"], np.ones((1, 384), np.float32))  # non-empty cache
    E.embed_texts(embedder, ["a photo of a tench.", "golden retriever"], cache)
    cached = cache.get_many(embedder.embedder_id, ["golden retriever"])["golden retriever"]
    fresh = embedder.encode(["golden retriever"])[0]
    assert cached.dtype == np.float32 and cached.shape == (384,)
    np.testing.assert_allclose(cached, fresh, atol=1e-5)
    cache.close()


# --- load_embedder and embedder ids ---------------------------------------------------------

@pytest.mark.parametrize("spec", ["nope", "st:", "openai:http://127.0.0.1:9/v1", "", "bert"])
def test_load_embedder_bad_spec_lists_the_forms(spec: str) -> None:
    with pytest.raises(InputError) as info:
        E.load_embedder(spec)
    message = str(info.value)
    assert repr(spec) in message
    for form in ("minilm", "minilm@fp32", "st:<model>", "openai:<base url>#<model>"):
        assert form in message


@pytest.mark.parametrize("spec", ["minilm@fp16", "st:some-model@int8"])
def test_load_embedder_bad_precision(spec: str) -> None:
    precision = spec.rpartition("@")[2]
    with pytest.raises(InputError, match=rf"unknown precision '{precision}'.*fp32 or bf16"):
        E.load_embedder(spec)


def test_load_embedder_missing_model_is_one_line_model_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never probe the network from the tests
    with pytest.raises(ModelLoadError) as info:
        E.load_embedder("st:/nonexistent/path")
    message = str(info.value)
    assert "/nonexistent/path" in message
    assert "\n" not in message


def test_load_embedder_broken_local_model_is_model_load_error(tmp_path: Path) -> None:
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "config.json").write_text("{ not json")
    with pytest.raises(ModelLoadError) as info:
        E.load_embedder(f"st:{model}")
    message = str(info.value)
    assert str(model) in message
    assert "\n" not in message


def test_embedder_from_id_round_trip(embedder: E.TextEmbedder) -> None:
    again = E.embedder_from_id(embedder.embedder_id)
    assert again.embedder_id == embedder.embedder_id
    assert again.dim == embedder.dim
    np.testing.assert_allclose(again.encode(["tench"]), embedder.encode(["tench"]), atol=1e-6)


def test_minilm_fp32_is_another_id_close_to_bf16(embedder: E.TextEmbedder) -> None:
    fp32 = E.load_embedder("minilm@fp32")
    assert fp32.embedder_id == "sentence-transformers/all-MiniLM-L6-v2@fp32"
    assert E.embedder_from_id(fp32.embedder_id).embedder_id == fp32.embedder_id
    a, b = fp32.encode(TEXTS), embedder.encode(TEXTS)
    assert np.min(np.sum(a * b, axis=1)) > 0.99


# --- the OpenAI-compatible embedder ---------------------------------------------------------

def test_openai_embedder_against_local_server() -> None:
    with OpenAITestServer(embed_dim=16) as server:
        embedder = E.load_embedder(f"openai:{server.base_url}/#embed-model")
        assert embedder.embedder_id == f"openai:{server.base_url}#embed-model"
        assert embedder.dim == 16
        vectors = embedder.encode(TEXTS)
        assert_unit_rows(vectors, len(TEXTS), 16)
        np.testing.assert_allclose(vectors[1], fake_embedding(TEXTS[1], 16), atol=1e-6)
        assert embedder.encode([]).shape == (0, 16)
        again = E.embedder_from_id(embedder.embedder_id)
        assert again.embedder_id == embedder.embedder_id
    bodies = [r["body"] for r in server.requests]
    assert bodies[0] == {"model": "embed-model", "input": ["probe"]}  # the dimension probe
    assert {"model": "embed-model", "input": TEXTS} in bodies


def test_openai_embedder_batches_requests() -> None:
    texts = [f"text {i}" for i in range(7)]
    with OpenAITestServer(embed_dim=4) as server:
        embedder = E.OpenAIEmbedder(server.base_url, "m", batch_size=3)
        vectors = embedder.encode(texts)
    assert_unit_rows(vectors, 7, 4)
    assert [len(r["body"]["input"]) for r in server.requests[1:]] == [3, 3, 1]
    np.testing.assert_allclose(vectors[6], fake_embedding("text 6", 4), atol=1e-6)


def test_openai_embedder_unreachable_names_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EndpointError, match=re.escape(f"cannot reach {url}/embeddings")):
        E.load_embedder(f"openai:{url}#m")
