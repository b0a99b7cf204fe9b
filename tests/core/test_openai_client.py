"""Tests of mll_index.core.openai_client against a real local OpenAI-compatible server (no mocks)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from mll_index.core.openai_client import OpenAIClient
from mll_index.errors import EndpointError

from tests.openai_server import OpenAITestServer, fake_embedding

FAST = {"backoff_s": 0.01, "timeout_s": 5.0}


def _free_port() -> int:
    """A port that nothing listens on: bind, read the port, close."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_chat_returns_content_and_sends_request() -> None:
    with OpenAITestServer() as server:
        client = OpenAIClient(server.base_url + "/", **FAST)  # trailing slash is stripped
        reply = client.chat("test-model", [{"role": "user", "content": "goldfish"}], max_tokens=50)

    assert json.loads(reply) == ["a photo of goldfish.", "goldfish, seen up close.", "a picture showing goldfish."]
    assert len(server.requests) == 1
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["model"] == "test-model"
    assert request["body"]["temperature"] == 0.0
    assert request["body"]["max_tokens"] == 50
    assert request["headers"]["Content-Type"] == "application/json"
    assert "Authorization" not in request["headers"]


def test_chat_uses_custom_reply() -> None:
    with OpenAITestServer(chat_reply=lambda body: body["messages"][-1]["content"].upper()) as server:
        reply = OpenAIClient(server.base_url, **FAST).chat("m", [{"role": "user", "content": "tench"}])
    assert reply == "TENCH"


def test_embed_returns_vectors_in_index_order() -> None:
    texts = ["a tench", "a goldfish", "a great white shark"]
    with OpenAITestServer(embed_dim=5) as server:
        vectors = OpenAIClient(server.base_url, **FAST).embed("embed-model", texts)
    assert vectors == [fake_embedding(t, 5) for t in texts]
    assert all(len(v) == 5 for v in vectors)
    assert server.requests[0]["path"] == "/v1/embeddings"
    assert server.requests[0]["body"] == {"model": "embed-model", "input": texts}


def test_embed_reorders_shuffled_indices() -> None:
    payload = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 1, "embedding": [1.0, 1.0]},
            {"object": "embedding", "index": 0, "embedding": [0.0, 0.0]},
        ],
        "model": "m",
    }
    with OpenAITestServer(raw_body=json.dumps(payload).encode()) as server:
        vectors = OpenAIClient(server.base_url, **FAST).embed("m", ["first", "second"])
    assert vectors == [[0.0, 0.0], [1.0, 1.0]]


def test_bearer_header_sent() -> None:
    with OpenAITestServer(require_key="sk-test") as server:
        reply = OpenAIClient(server.base_url, "sk-test", **FAST).chat("m", [{"role": "user", "content": "x"}])
    assert reply
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-test"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_then_succeeds(status: int) -> None:
    with OpenAITestServer(fail_first=2, fail_status=status) as server:
        vectors = OpenAIClient(server.base_url, max_retries=3, **FAST).embed("m", ["x"])
    assert len(vectors) == 1
    assert len(server.requests) == 3


def test_gives_up_after_max_retries() -> None:
    with OpenAITestServer(fail_first=10, fail_status=500) as server:
        client = OpenAIClient(server.base_url, max_retries=2, **FAST)
        with pytest.raises(EndpointError) as info:
            client.chat("m", [{"role": "user", "content": "x"}])
    message = str(info.value)
    assert f"{server.base_url}/chat/completions answered 500" in message
    assert "after 2 retries" in message
    assert "\n" not in message
    assert len(server.requests) == 3


def test_retry_after_honoured() -> None:
    with OpenAITestServer(fail_first=1, fail_status=429, retry_after=0.3) as server:
        client = OpenAIClient(server.base_url, **FAST)
        start = time.monotonic()
        reply = client.chat("m", [{"role": "user", "content": "x"}])
        elapsed = time.monotonic() - start
    assert reply
    assert len(server.requests) == 2
    assert elapsed >= 0.3
    assert server.request_times[1] - server.request_times[0] >= 0.3


def test_401_raises_at_once_without_retry() -> None:
    with OpenAITestServer(require_key="sk-right") as server:
        client = OpenAIClient(server.base_url, "sk-wrong", max_retries=5, **FAST)
        with pytest.raises(EndpointError) as info:
            client.chat("m", [{"role": "user", "content": "x"}])
    assert len(server.requests) == 1
    assert f"{server.base_url}/chat/completions answered 401" in str(info.value)
    assert "invalid or missing API key" in str(info.value)


def test_404_raises_without_retry() -> None:
    with OpenAITestServer() as server:
        client = OpenAIClient(server.base_url + "/nope", max_retries=5, **FAST)
        with pytest.raises(EndpointError, match="answered 404"):
            client.embed("m", ["x"])
    assert len(server.requests) == 1


def test_unreachable_port_names_url() -> None:
    base_url = f"http://127.0.0.1:{_free_port()}/v1"
    client = OpenAIClient(base_url, max_retries=5, backoff_s=0.01, timeout_s=2.0)
    with pytest.raises(EndpointError) as info:
        client.chat("m", [{"role": "user", "content": "x"}])
    message = str(info.value)
    assert message.startswith(f"cannot reach {base_url}/chat/completions: connection refused")
    # A refused connection is retried once, not max_retries times.
    assert "after 1 retries" in message


def test_malformed_json_raises() -> None:
    with OpenAITestServer(raw_body=b"{not json") as server:
        client = OpenAIClient(server.base_url, **FAST)
        with pytest.raises(EndpointError) as info:
            client.chat("m", [{"role": "user", "content": "x"}])
    assert f"{server.base_url}/chat/completions returned malformed JSON" in str(info.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize("body", [b'{"id": "x"}', b'{"choices": []}', b"[1, 2]"])
def test_missing_choices_raises(body: bytes) -> None:
    with OpenAITestServer(raw_body=body) as server:
        with pytest.raises(EndpointError, match="chat/completions returned malformed JSON"):
            OpenAIClient(server.base_url, **FAST).chat("m", [{"role": "user", "content": "x"}])


def test_missing_data_raises() -> None:
    with OpenAITestServer(raw_body=b'{"object": "list"}') as server:
        with pytest.raises(EndpointError, match="embeddings returned malformed JSON"):
            OpenAIClient(server.base_url, **FAST).embed("m", ["x"])


def test_rate_limit_spaces_requests() -> None:
    with OpenAITestServer() as server:
        client = OpenAIClient(server.base_url, requests_per_minute=600, **FAST)
        for text in ["a", "b", "c", "d"]:
            client.embed("m", [text])
    gaps = [b - a for a, b in zip(server.request_times, server.request_times[1:])]
    assert len(gaps) == 3
    # The server stamps arrival, not send time, so one gap can look short when the previous request
    # arrived late; the span of the three gaps cannot, and no two requests come in a burst.
    assert sum(gaps) >= 0.29, gaps
    assert all(gap >= 0.05 for gap in gaps), gaps


def test_rate_limit_is_thread_safe() -> None:
    with OpenAITestServer() as server:
        client = OpenAIClient(server.base_url, requests_per_minute=600, **FAST)
        threads = [threading.Thread(target=client.embed, args=("m", [str(i)])) for i in range(4)]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - start
    assert len(server.requests) == 4
    assert elapsed >= 0.3  # four requests need three 0.1 s gaps


@pytest.mark.parametrize("body, message", [
    (b'{"data": [{"index": 0, "embedding": [NaN, 1.0]}]}', "not finite"),
    (b'{"data": [{"index": 0, "embedding": [1.0, Infinity]}]}', "not finite"),
    (b'{"data": [{"index": 0, "embedding": [1.0, 2.0]}, {"index": 1, "embedding": [1.0]}]}', "different lengths"),
    (b'{"data": [{"index": 0.5, "embedding": [1.0]}]}', "malformed JSON"),
    (b'{"data": [{"index": 0, "embedding": ["x"]}]}', "malformed JSON"),
])
def test_bad_embeddings_raise_endpoint_error(body: bytes, message: str) -> None:
    texts = ["a", "b"] if b'"index": 1' in body else ["a"]
    with OpenAITestServer(raw_body=body) as server:
        with pytest.raises(EndpointError, match=message) as info:
            OpenAIClient(server.base_url, **FAST).embed("m", texts)
    assert "\n" not in str(info.value)


def _garbled_chunked_server() -> tuple[str, threading.Thread, socket.socket]:
    """A server that answers every request with a chunked body whose chunk size is not hexadecimal."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                             b"\r\nzz\r\n{}\r\n0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/v1", thread, listener


def test_garbled_answer_is_an_endpoint_error() -> None:
    # http.client turns the bad chunk size into IncompleteRead: retried, then one EndpointError line.
    url, _, listener = _garbled_chunked_server()
    try:
        with pytest.raises(EndpointError, match="after 1 retries"):
            OpenAIClient(url, max_retries=1, **FAST).chat("m", [{"role": "user", "content": "x"}])
    finally:
        listener.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"base_url": "127.0.0.1:8000/v1"}, "not an http"), ({"base_url": "http://127.0.0.1:port/v1"}, "port"),
    ({"base_url": "http://127.0.0.1:9/v1 x"}, "not an http"),
    ({"base_url": "http://x", "max_retries": -1}, "retries"),
    ({"base_url": "http://x", "requests_per_minute": 0}, "per minute")])
def test_bad_client_settings_are_input_errors(kwargs: dict, message: str) -> None:
    from mll_index.errors import InputError

    with pytest.raises(InputError, match=message):
        OpenAIClient(**kwargs)



@pytest.mark.parametrize("body", [b'{"choices": ' + b"1" * 5000 + b"}", b"[" * 100000 + b"]" * 100000])
def test_json_python_cannot_read_is_an_endpoint_error(body: bytes) -> None:
    with OpenAITestServer(raw_body=body) as server:
        with pytest.raises(EndpointError, match="malformed JSON"):
            OpenAIClient(server.base_url, **FAST).chat("m", [{"role": "user", "content": "x"}])


def test_an_integer_too_large_for_a_float_is_an_endpoint_error() -> None:
    body = b'{"data": [{"index": 0, "embedding": [' + b"9" * 400 + b']}]}'
    with OpenAITestServer(raw_body=body) as server:
        with pytest.raises(EndpointError, match="malformed JSON"):
            OpenAIClient(server.base_url, **FAST).embed("m", ["a"])
