"""uvicorn's h11 protocol with a deadline on a request's head, so that slow clients are cut.

uvicorn times out an idle keep-alive connection (`timeout_keep_alive`) but not one that sends
its request line and headers a byte at a time: each byte re-arms nothing, and 40 such clients
held 40 connections for minutes. Here every connection must deliver a complete request head
within `HEAD_TIMEOUT_S` of opening (or of its previous response); otherwise it is closed. The
body's own deadline is the body-limit middleware's (`middleware.BodyLimit`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT_S = 10.0


class HeadTimeoutProtocol(H11Protocol):
    """H11Protocol closing a connection whose request head is not complete within HEAD_TIMEOUT_S."""

    head_timeout_s = HEAD_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.transport.close()  # never got a whole request head: nothing to answer

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()  # the head is in; the request runs under its own limits

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)
