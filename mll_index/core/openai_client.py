"""A small client for OpenAI-compatible HTTP endpoints (chat completions and embeddings), stdlib only."""

from __future__ import annotations

import http.client
import json
import logging
import math
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from mll_index.errors import EndpointError, InputError

logger = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0
_BODY_EXCERPT_CHARS = 200


def _one_line(text: str, limit: int = _BODY_EXCERPT_CHARS) -> str:
    """Collapse whitespace so a message stays on one line, and cut it to `limit` characters."""
    return " ".join(text.split())[:limit]


def _describe_reason(reason: object) -> str:
    """A short human cause for a URLError/OSError reason."""
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(reason, socket.gaierror):
        return f"name resolution failed ({reason.strerror or reason})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return _one_line(str(reason)) or type(reason).__name__


def _retry_after_s(value: str | None) -> float | None:
    """Parse a Retry-After header given in seconds; HTTP dates are ignored."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(0.0, seconds)


class OpenAIClient:
    """Client for an OpenAI-compatible endpoint such as ``http://127.0.0.1:8000/v1``.

    Retries 429, 5xx, connection errors and timeouts with exponential backoff; raises
    EndpointError for every failure.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        requests_per_minute: float | None = None,
    ) -> None:
        if requests_per_minute is not None and requests_per_minute <= 0:
            raise InputError(f"requests per minute must be positive, got {requests_per_minute}")
        if max_retries < 0:
            raise InputError(f"retries must be 0 or more, got {max_retries}")
        parts = urllib.parse.urlsplit(base_url)
        try:
            parts.port
        except ValueError:
            raise InputError(f"endpoint URL {base_url!r} has a port that is not a number in 0-65535") from None
        if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in base_url):
            # urllib would raise a bare ValueError ("unknown url type") at the first request.
            raise InputError(f"endpoint URL {base_url!r} is not an http(s) URL; give one like http://127.0.0.1:8000/v1")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.requests_per_minute = requests_per_minute
        self._min_interval_s = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._rate_lock = threading.Lock()
        self._next_slot = 0.0  # monotonic time before which no new request may start

    def __repr__(self) -> str:
        # Leave the key out so it never lands in logs or tracebacks.
        return f"OpenAIClient(base_url={self.base_url!r})"

    def chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
    ) -> str:
        """POST {base_url}/chat/completions; returns choices[0].message.content."""
        payload: dict[str, Any] = {"model": model, "messages": messages, "temperature": temperature}
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        url = f"{self.base_url}/chat/completions"
        reply = self._post(url, payload)
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise EndpointError(
                f"{url} returned malformed JSON: no choices[0].message.content ({type(exc).__name__}: {exc})"
            ) from None
        if not isinstance(content, str):
            raise EndpointError(
                f"{url} returned malformed JSON: choices[0].message.content is {type(content).__name__}, not a string"
            )
        return content

    def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """POST {base_url}/embeddings with {"model", "input": texts}; returns the vectors ordered by each item's "index"."""
        if not texts:
            return []
        url = f"{self.base_url}/embeddings"
        reply = self._post(url, {"model": model, "input": list(texts)})
        try:
            items = reply["data"]
            if not isinstance(items, list):
                raise TypeError(f"data is {type(items).__name__}, not a list")
            pairs = [(_index_of(item), [float(x) for x in item["embedding"]]) for item in items]
        except (KeyError, IndexError, TypeError, ValueError, OverflowError) as exc:
            raise EndpointError(f"{url} returned malformed JSON: bad data field ({type(exc).__name__}: "
                                f"{_one_line(str(exc))})") from None
        if len({len(vector) for _, vector in pairs}) > 1:
            raise EndpointError(f"{url} returned embeddings of different lengths "
                                f"({sorted({len(vector) for _, vector in pairs})})")
        if not all(math.isfinite(x) for _, vector in pairs for x in vector):
            # json accepts NaN and Infinity; such a vector would poison every cosine downstream.
            raise EndpointError(f"{url} returned embeddings with values that are not finite (NaN or infinite)")
        pairs.sort(key=lambda pair: pair[0])
        if [index for index, _ in pairs] != list(range(len(texts))):
            raise EndpointError(
                f"{url} returned malformed JSON: expected embeddings with indices 0..{len(texts) - 1}, "
                f"got {len(pairs)} items"
            )
        return [vector for _, vector in pairs]

    def _wait_for_slot(self) -> None:
        """Block until the rate limit allows another request (thread-safe)."""
        if not self._min_interval_s:
            return
        with self._rate_lock:
            now = time.monotonic()
            start = max(now, self._next_slot)
            self._next_slot = start + self._min_interval_s
        # Sleep outside the lock: each caller has already reserved its own slot.
        delay = start - now
        if delay > 0:
            time.sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, _MAX_BACKOFF_S)
        return min(self.backoff_s * (2**attempt), _MAX_BACKOFF_S)

    def _post(self, url: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST `payload` as JSON to `url` with retries; returns the parsed JSON object."""
        data = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"

        attempt = 0
        while True:
            self._wait_for_slot()
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            retry_after: float | None = None
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                body = _read_error_body(exc)
                status = exc.code
                if status != 429 and not 500 <= status < 600:
                    raise EndpointError(f"{url} answered {status}: {_one_line(body)}") from None
                retry_after = _retry_after_s(exc.headers.get("Retry-After") if exc.headers else None)
                failure = f"{url} answered {status}: {_one_line(body)}"
            except urllib.error.URLError as exc:
                failure = f"cannot reach {url}: {_describe_reason(exc.reason)}"
                # A refused connection or an unknown host rarely heals in seconds: retry once, not for a minute.
                if isinstance(exc.reason, (ConnectionRefusedError, socket.gaierror)) and attempt >= 1:
                    raise EndpointError(f"{failure} (after {attempt} retries)") from None
            except (TimeoutError, socket.timeout) as exc:
                failure = f"cannot reach {url}: {_describe_reason(exc)}"
            except (OSError, http.client.HTTPException) as exc:
                # Resets, broken pipes and truncated bodies while reading surface outside URLError.
                failure = f"cannot reach {url}: {_describe_reason(exc)}"
            except ValueError as exc:
                # urllib and http.client raise bare ValueErrors (InvalidURL, a bad header) that no retry heals.
                raise EndpointError(f"cannot request {url}: {_one_line(str(exc)) or type(exc).__name__}") from None
            else:
                return _parse_json(url, raw)

            if attempt >= self.max_retries:
                suffix = f" (after {self.max_retries} retries)" if self.max_retries else ""
                raise EndpointError(failure + suffix)
            delay = self._backoff(attempt, retry_after)
            # INFO, not WARNING: a retry that succeeds is no news, and one that fails ends in an
            # EndpointError saying how many retries it took (the CLI's one line).
            logger.info("%s; retry %d/%d in %.2fs", failure, attempt + 1, self.max_retries, delay)
            time.sleep(delay)
            attempt += 1


def _index_of(item: Any) -> int:
    """An embedding item's "index": an integer (a float like 1.5, or a bool, is malformed)."""
    index = item["index"]
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"index is {index!r}, not an integer")
    return index


def _read_error_body(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read().decode("utf-8", errors="replace")
    except Exception:  # the body is only for the message; never mask the HTTP error
        return ""
    finally:
        exc.close()


def _parse_json(url: str, raw: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        # Besides JSONDecodeError: bad UTF-8, an integer of more than 4300 digits (a plain ValueError),
        # nesting deeper than the recursion limit.
        raise EndpointError(f"{url} returned malformed JSON: {_one_line(str(exc)) or type(exc).__name__}") from None
    if not isinstance(parsed, dict):
        raise EndpointError(f"{url} returned malformed JSON: expected an object, got {type(parsed).__name__}")
    return parsed
