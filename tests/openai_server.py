"""A real local HTTP server speaking the OpenAI chat-completions and embeddings formats, for tests."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def default_chat_reply(body: dict[str, Any]) -> str:
    """Three captions built from the last user message, as a JSON array in text."""
    text = ""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            text = str(message.get("content", ""))
            break
    return json.dumps([f"a photo of {text}.", f"{text}, seen up close.", f"a picture showing {text}."])


def fake_embedding(text: str, dim: int) -> list[float]:
    """A deterministic unit vector of length `dim` seeded from sha256(text)."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    rng = random.Random(seed)
    vector = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]


class OpenAITestServer:
    """ThreadingHTTPServer on 127.0.0.1 (random port) in a daemon thread; use as a context manager.

    `raw_body`, when given, is sent verbatim (status 200) instead of every successful reply,
    to test malformed answers.
    """

    def __init__(
        self,
        *,
        fail_first: int = 0,
        fail_status: int = 500,
        retry_after: float | None = None,
        require_key: str | None = None,
        chat_reply: Callable[[dict[str, Any]], str] | None = None,
        embed_dim: int = 8,
        raw_body: bytes | None = None,
    ) -> None:
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.require_key = require_key
        self.chat_reply = chat_reply or default_chat_reply
        self.embed_dim = embed_dim
        self.raw_body = raw_body
        self.base_url = ""
        self.requests: list[dict[str, Any]] = []
        self.request_times: list[float] = []  # time.monotonic() of each request, in arrival order
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> OpenAITestServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        # A short poll interval keeps shutdown (and so each test) fast.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="openai-test-server", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def _record(self, path: str, body: Any, headers: dict[str, str]) -> int:
        """Store a request; returns its 0-based number."""
        with self._lock:
            self.requests.append({"path": path, "body": body, "headers": headers})
            self.request_times.append(time.monotonic())
            return len(self.requests) - 1

    def _chat_response(self, body: dict[str, Any]) -> dict[str, Any]:
        content = self.chat_reply(body)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])
        completion_tokens = len(content.split())
        return {
            "id": f"chatcmpl-test-{len(self.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", ""),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _embeddings_response(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body.get("input", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": fake_embedding(str(text), self.embed_dim)}
                for i, text in enumerate(inputs)
            ],
            "model": body.get("model", ""),
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }


def _make_handler(server: OpenAITestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
            pass

        def _send_json(self, status: int, payload: Any, extra_headers: dict[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (extra_headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, extra_headers: dict[str, str] | None = None) -> None:
            self._send_json(
                status, {"error": {"message": message, "type": "test_error", "code": status}}, extra_headers
            )

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = None
            number = server._record(self.path, body, dict(self.headers.items()))

            if number < server.fail_first:
                headers = {}
                if server.retry_after is not None:
                    headers["Retry-After"] = f"{server.retry_after:g}"
                self._error(server.fail_status, f"injected failure {number + 1}/{server.fail_first}", headers)
                return
            if server.require_key is not None:
                if self.headers.get("Authorization") != f"Bearer {server.require_key}":
                    self._error(401, "invalid or missing API key")
                    return
            if self.command != "POST" or self.path not in ("/v1/chat/completions", "/v1/embeddings"):
                self._error(404, f"no route for {self.command} {self.path}")
                return
            if not isinstance(body, dict):
                self._error(400, "request body must be a JSON object")
                return
            if server.raw_body is not None:
                self._send_json(200, server.raw_body)
                return
            if self.path == "/v1/chat/completions":
                self._send_json(200, server._chat_response(body))
            else:
                self._send_json(200, server._embeddings_response(body))

        do_POST = _handle
        do_GET = _handle

    return Handler
