"""What the routers share, as FastAPI dependencies read from `app.state` (set by `create_app`):
the state holder, the settings, the selection pool and the metrics; and the versioned answer.

    async def route(holder: Holder, settings: Settings, pool: Pool) -> JSONResponse: ...

The getters are coroutines so that FastAPI calls them on the event loop (a plain `def` would be
sent to a worker thread on every request).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from mll_index.service.metrics import ServiceMetrics
from mll_index.service.pool import SelectionPool
from mll_index.service.settings import ServiceSettings
from mll_index.service.state import IndexState, StateHolder

VERSION_HEADER = "X-Index-Version"


async def get_holder(request: Request) -> StateHolder:
    return request.app.state.holder


async def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def get_pool(request: Request) -> SelectionPool:
    return request.app.state.pool


async def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


Holder = Annotated[StateHolder, Depends(get_holder)]
Settings = Annotated[ServiceSettings, Depends(get_settings)]
Pool = Annotated[SelectionPool, Depends(get_pool)]
Metrics = Annotated[ServiceMetrics, Depends(get_metrics)]


def versioned(body: Any, state: IndexState) -> JSONResponse:
    """`body` as JSON, with the header naming the index version it came from."""
    return JSONResponse(body, headers={VERSION_HEADER: state.version})
