"""The service's middleware: the body size limit (`BodyLimit`, outermost) and `guard_and_count`,
which asks for the bearer token, turns an unexpected failure into one JSON line and counts every
request in the app's metrics."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from mll_index.service.errors import error_response

log = logging.getLogger(__name__)


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, by Content-Length or while reading a chunked body,
    and bodies not all received within `timeout_s` of the first read with 408 (a client sending a byte
    every few seconds holds a connection and a task for as long as it likes otherwise)."""

    def __init__(self, app: Any, limit: int, timeout_s: float = 30.0) -> None:
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await error_response(413, "body", f"the body is {int(declared)} bytes; at most {self.limit}")(scope, receive, send)
            return
        seen = {"bytes": 0, "over": False, "started": False, "slow": False, "done": False, "deadline": None}

        async def counted_receive() -> dict[str, Any]:
            if seen["done"]:
                return await receive()  # after the body: waiting for a disconnect, with no deadline
            if seen["deadline"] is None:
                seen["deadline"] = asyncio.get_running_loop().time() + self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), seen["deadline"] - asyncio.get_running_loop().time())
            except asyncio.TimeoutError:
                seen["slow"] = True
                raise _BodyTooSlow() from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                seen["done"] = True
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > self.limit:
                    seen["over"] = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if seen["over"] or seen["slow"]:
                return  # whatever the app answered to the cut-off body, ours goes out instead
            if message["type"] == "http.response.start":
                seen["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not (seen["over"] or seen["slow"]):
                raise
        if seen["over"] and not seen["started"]:
            await error_response(413, "body", f"the body is over {self.limit} bytes")(scope, receive, send)
        elif seen["slow"] and not seen["started"]:
            await error_response(408, "body", f"the body did not arrive within {self.timeout_s:g} s")(
                scope, receive, send)


async def guard_and_count(request: Request, call_next: Callable[..., Any]) -> Response:
    """The token (every route but /healthz, when the settings hold an api_key), a 500 in the error
    shape for what no handler caught, and the request counted by route, method and status."""
    start = time.perf_counter()
    path = request.url.path
    api_key = request.app.state.settings.api_key
    if api_key is not None and path != "/healthz" and not _authorised(request, api_key):
        response: Response = error_response(401, "Authorization", "a bearer token is required: "
                                            "send 'Authorization: Bearer <token>'",
                                            headers={"WWW-Authenticate": "Bearer"})
    else:
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001 - logged here; the caller gets one line, never a traceback
            log.exception("%s %s failed", request.method, path)
            response = error_response(500, None, "internal error; the service log has the details")
    request.app.state.metrics.count(path, request.method, response.status_code, time.perf_counter() - start)
    return response


def _authorised(request: Request, api_key: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # compare_digest: the time taken says nothing about how much of the token was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())
