"""Selection off the event loop: a bounded thread pool, each call under the request time limit.

The event loop only parses and streams; whatever reads the index runs here, on the state
`StateHolder.current` held when the call began.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from mll_index.errors import InputError, MLLIndexError
from mll_index.service.errors import RequestError
from mll_index.service.state import IndexState, StateHolder

T = TypeVar("T")


class SelectionPool:
    """`threads` calls at once; the others wait in line, within their time limit."""

    def __init__(self, holder: StateHolder, threads: int, timeout_s: float) -> None:
        self.holder, self.timeout_s = holder, timeout_s
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mll-index-select")
        self._running = 0
        self._count_lock = threading.Lock()

    def busy(self) -> int:
        """Calls running now (a time limit answers the client; its call runs on to its end)."""
        return self._running

    def _counted(self, work: Callable[[], T]) -> T:
        with self._count_lock:
            self._running += 1
        try:
            return work()
        finally:
            with self._count_lock:
                self._running -= 1

    async def run(self, fn: Callable[[IndexState], T], field: str | None) -> tuple[IndexState, T]:
        """fn(state) in the pool under the time limit; a vanished file retries once on a newer state.

        Raises RequestError: 503 over the time limit or when the index cannot answer, 422 naming
        `field` for an InputError."""
        holder = self.holder

        def work() -> tuple[IndexState, T]:
            state = holder.current
            try:
                return state, fn(state)
            except InputError:
                raise
            except (MLLIndexError, OSError):
                # A writer replaced files this (older) state had not opened yet: answer from the new one.
                if holder.check():
                    state = holder.current
                    return state, fn(state)
                raise

        try:
            return await self.call(work, self.timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(503, None, f"the request took over {self.timeout_s:g} s; "
                               "send fewer tasks or classes at once") from None
        except InputError as exc:
            raise RequestError(422, field, str(exc)) from None
        except MLLIndexError as exc:
            raise RequestError(503, None, f"the index cannot answer now: {exc}") from None

    async def call(self, work: Callable[[], T], timeout_s: float) -> T:
        """work() in the pool; asyncio.TimeoutError after `timeout_s` (the work itself runs on to its end)."""
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(self.executor, self._counted, work), timeout_s)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
