"""The selection service's ASGI app: `create_app(index_path)` opens and warms the index, then serves it.

Routes (JSON in and out; errors are `{"error": message, "field": name}` with a 4xx for a
caller's mistake, never a traceback):

    POST /v1/select        a task and options -> the selection `mll-index select` prints, plus index_version
    POST /v1/select/batch  tasks (a JSON array or JSONL body), options as query parameters -> JSONL, in order
    POST /v1/match         class names -> their nodes, as `mll-index match --format jsonl` prints them
    GET  /v1/models        the labeled models and the labels each has
    GET  /v1/index         the index's manifest summary and version
    GET  /healthz          liveness;  GET /readyz: the index is open and warm
    GET  /metrics          Prometheus text format: the counts of the worker process that answers
                           (with `serve --workers N` each worker counts its own requests)

Every answer that comes from the index names its version (`index_version` and the
`X-Index-Version` header). Selection runs in a bounded thread pool, each request under a time
limit; the event loop only parses and streams.

This module is the factory alone; the app's pieces are its neighbours, after FastAPI's guide to
bigger applications:

    settings.py      ServiceSettings, and their way to uvicorn's workers through the environment
    schemas.py       request models (pydantic) and answer models (the package's dataclasses), for OpenAPI
    errors.py        RequestError and the handlers that give every refusal one JSON shape
    middleware.py    the body limit, the bearer token, a 500 without traceback, request metrics
    metrics.py       the Prometheus registry and its figures
    pool.py          the thread pool selection runs in, under the time limit
    dependencies.py  what routes get from app.state: holder, settings, pool, metrics
    tasks.py         tasks checked from request JSON; a batch's answers, chunk by chunk
    routes/          one APIRouter per resource: health, index, selection, match
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from fastapi import FastAPI

from mll_index import __version__
from mll_index.service.errors import HANDLERS
from mll_index.service.metrics import ServiceMetrics
from mll_index.service.middleware import BodyLimit, guard_and_count
from mll_index.service.pool import SelectionPool
from mll_index.service.routes import health, index, match, selection
from mll_index.service.schemas import ERRORS
from mll_index.service.settings import CONFIG_ENV, ServiceSettings
from mll_index.service.state import StateHolder

ROUTERS = (health.router, index.router, selection.router, match.router)  # in the OpenAPI document's order


def create_app(index_path: Path, settings: ServiceSettings | None = None, *, holder: StateHolder | None = None,
               watch: bool = True) -> FastAPI:
    """The service for the index at `index_path`, its first state opened and warmed before this returns.

    Args:
        settings: limits and the API key (defaults: ServiceSettings()).
        holder: a StateHolder to serve from (tests pass one to drive `check()` themselves).
        watch: poll the index for new versions while the app runs (in its lifespan).
    Raises:
        MLLIndexError: the index is missing, unlabeled or damaged (before any port is opened).
    """
    settings = settings or ServiceSettings()
    if holder is None:
        from mll_index.index.embed import EmbeddingCache

        holder = StateHolder(Path(index_path), EmbeddingCache.default(),
                             poll_s=settings.poll_s)
    if not holder.ready:
        holder.open()
    app = FastAPI(title="mll-index selection service", version=__version__, responses=ERRORS,
                  lifespan=partial(_lifespan, watch=watch),
                  description="Choose vision-language models per class of a task, from an index's labels.")
    app.state.holder = holder
    app.state.settings = settings
    app.state.pool = SelectionPool(holder, settings.threads, settings.request_timeout_s)
    for error, handler in HANDLERS.items():
        app.add_exception_handler(error, handler)  # type: ignore[arg-type]
    app.middleware("http")(guard_and_count)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, timeout_s=settings.body_timeout_s)  # outermost: before the token is asked
    for router in ROUTERS:
        app.include_router(router)
    # The paths counted by name in the metrics: FastAPI's own (/openapi.json, /docs, ...) and the routers'.
    routes = [*app.routes, *(route for router in ROUTERS for route in router.routes)]
    app.state.metrics = ServiceMetrics(holder, (route.path for route in routes if hasattr(route, "path")))
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI, *, watch: bool) -> AsyncIterator[None]:
    """While the app runs: the holder polls the index for new versions (when `watch`); at its end the
    polling stops and the pool is shut down."""
    if watch:
        app.state.holder.start()
    try:
        yield
    finally:
        app.state.holder.stop()
        app.state.pool.shutdown()


def create_app_from_env() -> FastAPI:
    """The app described by $MLL_INDEX_SERVICE_CONFIG (`settings.settings_to_env`): the factory each uvicorn
    worker calls."""
    config = json.loads(os.environ[CONFIG_ENV])
    key_env = config.get("api_key_env")
    settings = ServiceSettings(**config["settings"], api_key=os.environ.get(key_env) if key_env else None)
    return create_app(Path(config["index"]), settings)
