"""Tests of mll_index.index.embed with the real all-MiniLM-L6-v2 model and a real local embeddings server."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import EmbedderMismatchError, EndpointError, InputError, ModelLoadError
from mll_index.index import embed as E

from tests.conftest import free_port

from tests.openai_server import OpenAITestServer, fake_embedding

TEXTS = ["a photo of a tench.", "golden retriever", "a laptop on a desk", "crème brûlée"]


def assert_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# --- the MiniLM embedder --------------------------------------------------------------------

def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two arrays of unit rows."""
    return np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64), axis=1)


def test_minilm_vectors_are_unit_float32(embedder: E.TextEmbedder) -> None:
    assert isinstance(embedder, E.TextEmbedder)
    assert embedder.embedder_id == E.MINILM_ID
    assert (embedder.precision, embedder.runtime) == ("fp32", "onnxruntime")
    assert embedder.dim == 384
    assert_unit_rows(embedder.encode(TEXTS), len(TEXTS), 384)


def test_minilm_is_deterministic_and_meaningful(embedder: E.TextEmbedder) -> None:
    a = embedder.encode(["golden retriever", "a golden retriever dog", "a laptop computer"])
    b = embedder.encode(["golden retriever", "a golden retriever dog", "a laptop computer"])
    np.testing.assert_array_equal(a, b)
    assert a[0] @ a[1] > a[0] @ a[2] + 0.2


def test_minilm_vectors_do_not_depend_on_the_batch(embedder: E.TextEmbedder) -> None:
    """Padding to the longest text of a batch must not move a vector beyond fp32 noise."""
    texts = ["x", "a big red fire truck driving down a wet street at night with its sirens on", *TEXTS]
    together = embedder.encode(texts)
    alone = np.concatenate([embedder.encode([t]) for t in texts])
    assert cosines(together, alone).min() > 0.99999


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
    cache.put_many(E.vector_space(embedder), ["seed text"], seed)
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
    cached = cache.get_many(E.vector_space(embedder), ["golden retriever"])["golden retriever"]
    fresh = embedder.encode(["golden retriever"])[0]
    assert cached.dtype == np.float32 and cached.shape == (384,)
    # Encoded in another batch: equal to fp32 noise, not bit for bit.
    assert float(cached @ fresh) > 0.99999
    cache.close()


# --- load_embedder and embedder ids ---------------------------------------------------------

@pytest.mark.parametrize("spec", ["nope", "st:", "openai:http://127.0.0.1:9/v1", "", "bert"])
def test_load_embedder_bad_spec_lists_the_forms(spec: str) -> None:
    with pytest.raises(InputError) as info:
        E.load_embedder(spec)
    message = str(info.value)
    assert repr(spec) in message
    for form in ("minilm", "minilm@fp32", "minilm@bf16", "st:<model>", "openai:<base url>#<model>"):
        assert form in message


@pytest.mark.parametrize("spec", ["minilm@fp16", "st:some-model@int8"])
def test_load_embedder_bad_precision(spec: str) -> None:
    precision = spec.rpartition("@")[2]
    with pytest.raises(InputError, match=rf"unknown precision '{precision}'.*fp32, bf16"):
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


def test_embedder_for_its_record_round_trip(embedder: E.TextEmbedder) -> None:
    record = E.record_of(embedder)
    again = E.embedder_for(E.EmbedderRecord.from_dict(record.to_dict()))
    assert E.record_of(again) == record
    assert cosines(again.encode(["tench"]), embedder.encode(["tench"]))[0] > 0.99999


@pytest.fixture(scope="module")
def torch_fp32() -> E.TextEmbedder:
    return E.load_embedder("minilm@fp32/torch")


def test_onnx_and_torch_fp32_share_one_vector_space(embedder: E.TextEmbedder, torch_fp32: E.TextEmbedder) -> None:
    assert torch_fp32.runtime == "torch" and torch_fp32.precision == "fp32"
    assert E.vector_space(torch_fp32) == E.vector_space(embedder) == f"{E.MINILM_ID}@fp32"
    assert cosines(torch_fp32.encode(TEXTS), embedder.encode(TEXTS)).min() >= 0.9999
    E.check_agreement(E.record_of(embedder), E.record_of(torch_fp32), "here")  # accepted


@pytest.mark.slow
def test_bf16_is_its_own_space(embedder: E.TextEmbedder) -> None:
    bf16 = E.load_embedder("minilm@bf16")
    assert E.vector_space(bf16) == f"{E.MINILM_ID}@bf16" != E.vector_space(embedder)
    assert cosines(bf16.encode(TEXTS), embedder.encode(TEXTS)).min() > 0.99  # close, not interchangeable
    with pytest.raises(EmbedderMismatchError) as info:
        E.check_agreement(E.record_of(embedder), E.record_of(bf16), "idx")
    assert "bf16" in str(info.value) and "fp32" in str(info.value)


@pytest.mark.parametrize("data, expected", [
    ({"id": f"{E.MINILM_ID}@bf16", "dim": 384}, (E.MINILM_ID, "bf16", "torch", f"{E.MINILM_ID}@bf16")),
    ({"id": f"{E.MINILM_ID}@fp32", "dim": 384}, (E.MINILM_ID, "fp32", "torch", f"{E.MINILM_ID}@fp32")),
    ({"id": E.MINILM_ID, "precision": "fp32", "runtime": "onnxruntime", "dim": 384},
     (E.MINILM_ID, "fp32", "onnxruntime", f"{E.MINILM_ID}@fp32")),
    ({"id": "openai:http://h/v1#m", "dim": 8}, ("openai:http://h/v1#m", "remote", "http", "openai:http://h/v1#m")),
])
def test_embedder_records_read_old_and_new_manifests(data: dict, expected: tuple) -> None:
    """Indexes written before the precision was recorded apart keep loading, in the same vector space."""
    record = E.EmbedderRecord.from_dict(data)
    assert (record.model, record.precision, record.runtime, record.space) == expected


def test_other_model_or_dimension_is_refused_naming_both() -> None:
    built = E.EmbedderRecord(E.MINILM_ID, "fp32", "onnxruntime", 384)
    for query in (E.EmbedderRecord("st:other", "fp32", "torch", 384), E.EmbedderRecord(E.MINILM_ID, "fp32", "torch", 16)):
        with pytest.raises(EmbedderMismatchError) as info:
            E.check_agreement(built, query, "idx")
        assert built.describe() in str(info.value) and query.describe() in str(info.value)


def test_lazy_embedder_loads_only_when_a_text_is_new(tmp_path: Path, embedder: E.TextEmbedder) -> None:
    cache = E.EmbeddingCache(tmp_path / "e.sqlite")
    E.embed_texts(embedder, ["tench", "goldfish"], cache)
    lazy = E.LazyEmbedder(E.record_of(embedder))
    E.embed_texts(lazy, ["goldfish", "tench"], cache)
    assert lazy._loaded is None  # everything was cached
    fresh = E.embed_texts(lazy, ["laptop"], cache)
    assert lazy._loaded is not None and E.vector_space(lazy._loaded) == E.vector_space(embedder)
    assert cosines(fresh, embedder.encode(["laptop"]))[0] > 0.99999
    cache.close()


# --- the OpenAI-compatible embedder ---------------------------------------------------------

def test_openai_embedder_against_local_server() -> None:
    with OpenAITestServer(embed_dim=16) as server:
        embedder = E.load_embedder(f"openai:{server.base_url}/#embed-model")
        assert embedder.embedder_id == f"openai:{server.base_url}#embed-model"
        assert E.vector_space(embedder) == embedder.embedder_id  # as cached before precisions were recorded
        assert embedder.dim == 16
        vectors = embedder.encode(TEXTS)
        assert_unit_rows(vectors, len(TEXTS), 16)
        np.testing.assert_allclose(vectors[1], fake_embedding(TEXTS[1], 16), atol=1e-6)
        assert embedder.encode([]).shape == (0, 16)
        again = E.embedder_for(E.record_of(embedder))
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


def test_vectors_kept_in_memory_are_bounded_and_serve_without_encoding(tmp_path: Path,
                                                                       embedder: E.TextEmbedder) -> None:
    memory = E.MemoryVectors(max_bytes=3 * (8 + 6 + E.MemoryVectors.ENTRY_OVERHEAD))
    for i in range(10):
        memory.put_many("m", [f"text {i}"], [np.ones(2, np.float32)])
    # Trimmed to its bound, least recently used first: never an error however much is put.
    assert len(memory) == 3 and memory.bytes <= memory.max_bytes
    assert set(memory.get_many("m", [f"text {i}" for i in range(10)])) == {"text 7", "text 8", "text 9"}

    class Counting:
        def __init__(self, inner: E.TextEmbedder) -> None:
            self.inner, self.calls = inner, 0

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(self.inner, name)

        def encode(self, texts):  # type: ignore[no-untyped-def]
            self.calls += len(texts)
            return self.inner.encode(texts)

    counting = Counting(embedder)
    texts = [f"a caption seen once per process {tmp_path.name} {i}" for i in range(5)]
    first = E.embed_texts(counting, texts)              # no on-disk cache: memory alone
    again = E.embed_texts(counting, texts)
    assert counting.calls == 5
    np.testing.assert_array_equal(first, again)
    # A cache given later still receives them, from memory, with nothing encoded again.
    cache = E.EmbeddingCache(tmp_path / "e.sqlite")
    E.embed_texts(counting, texts, cache)
    assert counting.calls == 5 and len(cache) == 5
    cache.close()
