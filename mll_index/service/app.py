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
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from mll_index import __version__
from mll_index.errors import InputError, MLLIndexError
from mll_index.index.match import Match
from mll_index.selection.accuracy import Interval
from mll_index.selection.selector import ClassSelection, Selection
from mll_index.service.state import IndexState, StateHolder

log = logging.getLogger(__name__)

T = TypeVar("T")
VERSION_HEADER = "X-Index-Version"
CONFIG_ENV = "MLL_INDEX_SERVICE_CONFIG"  # create_app_from_env's settings (uvicorn workers start from it)


@dataclass(frozen=True)
class ServiceSettings:
    """Limits and options of a service. Sizes in bytes, times in seconds.

    api_key: the bearer token every route but /healthz requires (None: no token asked).
    """

    max_body_bytes: int = 10 * 1024 * 1024
    max_classes: int = 1000          # classes per task, names per match request
    max_batch: int = 1000            # tasks per batch request
    request_timeout_s: float = 60.0
    threads: int = 4                 # selections running at once; the others wait (within the time limit)
    poll_s: float = 1.0              # how often the index files are checked for a new version
    batch_chunk: int = 16            # tasks selected together (their distinct classes embedded once) per streamed chunk
    api_key: str | None = None


class RequestError(Exception):
    """A request the service refuses: its HTTP status, the field at fault (None: the request as a whole)."""

    def __init__(self, status: int, field: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


def error_response(status: int, field: str | None, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


# ---------------------------------------------------------------------------------------
# Request bodies

_TASK_DOC = ('The task, as `mll-index select --task` reads it: a list of class names, or {"name", "classes": '
             '[name | {"name", "captions": [...]}], "domain", "description", "probe_images"}; probe_images: '
             'a folder or a list of folders and image files on the server, a few unlabeled images of the task.')


# The task's shape, for the OpenAPI document (and the clients and fuzzers generated from it);
# `parse_task` checks it, so that a wrong task is a 422 naming the class at fault.
_NAME = {"type": "string", "minLength": 1}
TASK_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "array", "items": _NAME, "minItems": 2, "uniqueItems": True},
    {"type": "object", "required": ["classes"], "additionalProperties": False, "properties": {
        "name": {"type": ["string", "null"]},
        "classes": {"type": "array", "minItems": 2, "uniqueItems": True, "items": {"anyOf": [_NAME, {
            "type": "object", "required": ["name"], "additionalProperties": False, "properties": {
                "name": _NAME, "captions": {"type": ["array", "null"], "items": _NAME, "minItems": 1}}}]}},
        "domain": {"type": ["string", "null"]}, "description": {"type": ["string", "null"]},
        "probe_images": {"anyOf": [_NAME, {"type": "array", "items": _NAME}, {"type": "null"}]}}}]}


class SelectRequest(BaseModel):
    """POST /v1/select: a task and the options of `mll-index select`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    task: Any = Field(description=_TASK_DOC, examples=[["tiger", "lion", "banana"]],
                      json_schema_extra=TASK_SCHEMA)
    k: int = Field(1, ge=1, le=1000, description="Models per class.")
    alpha: float = Field(0.7, ge=0.0, le=1.0, description="Weight of the class's own F1 against the other classes'.")
    nodes: int = Field(5, ge=1, le=1000, description="Labeled nodes matched per class.")
    mode: Literal["auto", "restricted", "counts"] = "auto"
    domain: str | None = Field(None, description="The task's image domain (overrides the task's own).")
    explain: bool = False
    ranking: int = Field(100, ge=0, description="Models in the task-level ranking (0: all).")
    probe: int = Field(16, ge=0, le=1000, description="Probe images of the task used at most (0: ignore them).")
    labels: Literal["auto", "image", "published", "both"] = Field(
        "auto", description="Labels that rank the models (see `mll-index select --labels`).")


class MatchRequest(BaseModel):
    """POST /v1/match: class names and the options of `mll-index match`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    names: list[str] = Field(description="Class names.", examples=[["tench", "golden retriever"]])
    k: int = Field(5, ge=1, le=1000, description="Nodes per name.")
    method: Literal["combined", "captions", "name", "lemma"] = "combined"


# Answers, for the OpenAPI documentation only: the routes send the package's own JSON
# (`Selection.to_dict`, `Match.to_dict`) as the CLI prints it, unvalidated and unreshaped.


@dataclass(frozen=True)
class ClassAnswer(ClassSelection):
    """One class as `mll-index select` prints it, with its predicted accuracy (absent without image-based labels)."""

    predicted_accuracy: Interval | None = None


@dataclass(frozen=True)
class SelectionAnswer(Selection):
    """A selection as `mll-index select` prints it (`answer.answer_tasks`), and the index version it
    came from. predicted_accuracy: the task's (absent without image-based labels), with
    predicted_accuracy_about naming the calibration it comes from."""

    classes: tuple[ClassAnswer, ...]  # type: ignore[assignment]
    predicted_accuracy: Interval | None = None
    predicted_accuracy_about: str | None = None
    index_version: str = ""


@dataclass(frozen=True)
class MatchRecord:
    """One class name's nodes, as `mll-index match --format jsonl` prints them."""

    query: str
    matches: list[Match]
    low_confidence: bool


@dataclass(frozen=True)
class MatchAnswer:
    index_version: str
    results: list[MatchRecord]


@dataclass(frozen=True)
class ErrorAnswer:
    """Every refusal: a one-line message, and the request field at fault (null: the request as a whole)."""

    error: str
    field: str | None


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorAnswer, "description": what} for code, what in [
        (400, "Malformed JSON, or a body that is not UTF-8."), (401, "A bearer token is required."),
        (413, "Too large: the body, the classes of a task, the tasks of a batch."),
        (422, "A field has a wrong type or value (the task, an option)."),
        (503, "Over the time limit, or the index cannot answer now.")]}


# ---------------------------------------------------------------------------------------
# Tasks from request JSON


def parse_task(data: Any, where: str, max_classes: int):  # type: ignore[no-untyped-def]
    """A checked Task from request JSON; RequestError (422, or 413 for too many classes) naming the field."""
    from mll_index.selection.task import task_from_json

    classes = data if isinstance(data, list) else data.get("classes") if isinstance(data, dict) else None
    if not isinstance(classes, list):
        raise RequestError(422, where, f'{where}: a task is a list of class names or an object with a "classes" list')
    if len(classes) > max_classes:
        raise RequestError(413, f"{where}.classes", f"{where}: {len(classes)} classes; at most {max_classes} per task")
    if isinstance(data, dict):
        for key in ("name", "domain", "description"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise RequestError(422, f"{where}.{key}", f"{where}: {key!r} must be a string")
        unknown = sorted(set(data) - {"name", "classes", "domain", "description", "probe_images"})
        if unknown:
            raise RequestError(422, f"{where}.{unknown[0]}", f"{where}: unknown keys {unknown}; "
                               "valid: ['classes', 'description', 'domain', 'name', 'probe_images']")
        probes = data.get("probe_images")
        if probes is not None and not (isinstance(probes, str) or (
                isinstance(probes, list) and all(isinstance(x, str) for x in probes))):
            raise RequestError(422, f"{where}.probe_images", f"{where}: 'probe_images' must be a folder or a list "
                               "of folders and image files (paths on the server)")
    for i, c in enumerate(classes):
        captions = c.get("captions") if isinstance(c, dict) else None
        if captions is not None and not (isinstance(captions, list) and all(isinstance(x, str) for x in captions)):
            raise RequestError(422, f"{where}.classes[{i}].captions", f"{where}: the captions of class {i + 1} "
                               "must be a list of strings")
    try:
        return task_from_json(data, where)
    except InputError as exc:
        raise RequestError(422, f"{where}.classes", str(exc)) from None


def parse_batch_body(body: bytes, max_batch: int, max_classes: int, jsonl: bool = False) -> list[Any]:
    """Tasks from a batch body: a JSON array of tasks, or JSONL (one task per line, blank lines skipped).

    `jsonl` (the body was sent as application/x-ndjson or jsonl) reads JSONL even when the body is
    one line holding one JSON array: a task given as a list of class names."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, "body", f"the body is not UTF-8 (byte {exc.start})") from None
    stripped = text.lstrip()
    if not stripped:
        raise RequestError(422, "body", "no tasks: send a JSON array of tasks or JSONL, one task per line")
    items: list[tuple[str, Any]] = []
    if not jsonl and stripped.startswith("[") and _is_one_json(stripped):
        data = json.loads(stripped)
        if data and all(isinstance(x, str) for x in data):
            raise RequestError(422, "body", "a JSON array of class names is one task: send it to /v1/select, "
                               "wrap it in another array, or send it as application/x-ndjson")
        items = [(f"body[{i}]", task) for i, task in enumerate(data)]
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append((f"line {number}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise RequestError(400, f"line {number}", f"line {number}: malformed JSON ({exc.msg})") from None
    if not items:
        raise RequestError(422, "body", "no tasks")
    if len(items) > max_batch:
        raise RequestError(413, "body", f"{len(items)} tasks; at most {max_batch} per batch")
    return [parse_task(task, where, max_classes) for where, task in items]


def _answer_chunk(selector: Any, chunk: Sequence[Any], settings: Any,
                  version: str) -> tuple[list[dict[str, Any]], InputError | None]:
    """The chunk's answers (`answer.answer_tasks`, its classes embedded together, each with "index_version"),
    and None; when a task of it is refused (InputError: its probe images, say), the tasks before that one
    answered one by one, and the error, so that the stream answers every task it can and names the one at fault."""
    from mll_index.selection.answer import answer_tasks

    try:
        return [{**a, "index_version": version} for a in answer_tasks(selector, chunk, settings)], None
    except InputError:
        pass
    done: list[dict[str, Any]] = []
    for task in chunk:
        try:
            done.append({**answer_tasks(selector, [task], settings)[0], "index_version": version})
        except InputError as exc:
            return done, exc
    return done, None


def _is_one_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


# ---------------------------------------------------------------------------------------
# Middleware


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, by Content-Length or while reading a chunked body."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await error_response(413, "body", f"the body is {int(declared)} bytes; at most {self.limit}")(scope, receive, send)
            return
        seen = {"bytes": 0, "over": False, "started": False}

        async def counted_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > self.limit:
                    seen["over"] = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if seen["over"]:
                return  # whatever the app answered to the cut-off body, ours goes out instead
            if message["type"] == "http.response.start":
                seen["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not seen["over"]:
                raise
        if seen["over"] and not seen["started"]:
            await error_response(413, "body", f"the body is over {self.limit} bytes")(scope, receive, send)


# ---------------------------------------------------------------------------------------
# The app


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
        from mll_index.core.paths import cache_dir

        holder = StateHolder(Path(index_path), EmbeddingCache(cache_dir() / "embeddings.sqlite"),
                             poll_s=settings.poll_s)
    if not holder.ready:
        holder.open()
    executor = ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="mll-index-select")
    registry = CollectorRegistry()
    requests_total = Counter("mll_index_requests", "HTTP requests by route, method and status.",
                             ["route", "method", "status"], registry=registry)
    latency = Histogram("mll_index_request_seconds", "Time to answer a request (to its first byte when streamed).",
                        ["route"], registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
    version_info = Info("mll_index_index", "The index version being served.", registry=registry)
    Gauge("mll_index_index_reloads", "New index versions swapped in since start.",
          registry=registry).set_function(lambda: holder.reloads)
    Gauge("mll_index_index_reload_failures", "Checks that found a new version that could not be opened yet.",
          registry=registry).set_function(lambda: holder.failures)
    Gauge("mll_index_index_opened_timestamp_seconds", "When the served index version was opened (Unix time).",
          registry=registry).set_function(lambda: holder.current.opened_at)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if watch:
            holder.start()
        try:
            yield
        finally:
            holder.stop()
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="mll-index selection service", version=__version__, lifespan=lifespan, responses=ERRORS,
                  description="Choose vision-language models per class of a task, from an index's labels.")
    app.state.holder = holder
    app.state.settings = settings

    async def run(fn: Callable[[IndexState], T], field: str | None) -> tuple[IndexState, T]:
        """fn(state) in the pool under the time limit; a vanished file retries once on a newer state."""
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
        return await _limited(work, field)

    async def _limited(work: Callable[[], T], field: str | None) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(executor, work), settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(503, None, f"the request took over {settings.request_timeout_s:g} s; "
                               "send fewer tasks or classes at once") from None
        except InputError as exc:
            raise RequestError(422, field, str(exc)) from None
        except MLLIndexError as exc:
            raise RequestError(503, None, f"the index cannot answer now: {exc}") from None

    def versioned(body: Any, state: IndexState) -> JSONResponse:
        return JSONResponse(body, headers={VERSION_HEADER: state.version})

    # -- errors: one JSON shape, no traceback ------------------------------------------

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        return error_response(exc.status, exc.field, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ())]
        if first.get("type") == "json_invalid":
            error = (first.get("ctx") or {}).get("error", "")
            return error_response(400, "body", f"malformed JSON at byte {loc[-1] if len(loc) > 1 else '?'}"
                                  + (f" ({error})" if error else ""))
        where = ".".join(loc[1:]) if len(loc) > 1 and loc[0] in ("body", "query", "header") else ".".join(loc) or "body"
        if where == "task" and first.get("type") == "missing":
            # The commonest slip: the task's own fields sent at the top level, {"classes": [...]}.
            return error_response(422, "task", 'task: field required; the body is {"task": {"classes": [...], ...} '
                                  'or a list of class names, "k": ..., "alpha": ..., ...}')
        return error_response(422, where, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, None, str(exc.detail), headers=getattr(exc, "headers", None))

    known_routes: set[str] = set()

    @app.middleware("http")
    async def guard_and_count(request: Request, call_next: Callable[..., Any]) -> Response:
        start = time.perf_counter()
        path = request.url.path
        if settings.api_key is not None and path != "/healthz" and not _authorised(request, settings.api_key):
            response: Response = error_response(401, "Authorization", "a bearer token is required: "
                                                "send 'Authorization: Bearer <token>'",
                                                headers={"WWW-Authenticate": "Bearer"})
        else:
            try:
                response = await call_next(request)
            except Exception:  # noqa: BLE001 - logged here; the caller gets one line, never a traceback
                log.exception("%s %s failed", request.method, path)
                response = error_response(500, None, "internal error; the service log has the details")
        if not known_routes:
            known_routes.update(getattr(r, "path", "") for r in app.routes)
        route = path if path in known_routes else "unmatched"
        requests_total.labels(route, request.method, str(response.status_code)).inc()
        latency.labels(route).observe(time.perf_counter() - start)
        return response

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    # -- routes ---------------------------------------------------------------------------

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Readiness: the index is open and warm (text model loaded, a first selection done)."""
        if not holder.ready:
            return error_response(503, None, "the index is not open yet")
        state = holder.current
        return versioned({"ready": True, "index_version": state.version,
                          "pending_version_error": holder.last_error}, state)

    @app.get("/metrics", tags=["health"])
    async def metrics() -> Response:
        """Prometheus metrics: requests by route and status, latency, the index version served.

        Per worker process: with several uvicorn workers a scrape reaches one of them and gets its
        counts only (prometheus-client's multiprocess mode would merge them, but it has no Info
        and no callback gauges, which the version and reload figures use)."""
        version_info.info({"version": holder.current.version, "path": str(holder.current.path)})
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/index", tags=["index"])
    async def index_summary() -> JSONResponse:
        """The served index: node count, embedder, format versions, label counts, index version."""
        state, summary = await run(lambda s: s.summary(), None)
        return versioned(summary, state)

    @app.get("/v1/models", tags=["index"])
    async def models() -> JSONResponse:
        """The labeled models, each with its labels (counts, image, published) and hub entry."""
        state = holder.current
        return versioned({"index_version": state.version, "models": state.models()}, state)

    @app.post("/v1/select", tags=["select"], responses={200: {"model": SelectionAnswer, "description": "The selection."}})
    async def select(body: SelectRequest) -> JSONResponse:
        """Select the top-k models per class for one task: the JSON `mll-index select` prints, plus index_version."""
        from mll_index.selection.answer import answer_tasks
        from mll_index.selection.settings import SelectionSettings

        task = _with_domain(parse_task(body.task, "task", settings.max_classes), body.domain)
        chosen = SelectionSettings(k=body.k, alpha=body.alpha, n_nodes=body.nodes, mode=body.mode,
                                   explain=body.explain, ranking_size=body.ranking or None, probe=body.probe,
                                   labels=body.labels)

        def answer(state: IndexState) -> dict[str, Any]:
            return {**answer_tasks(state.selector, [task], chosen)[0], "index_version": state.version}

        state, out = await run(answer, "task")
        return versioned(out, state)

    @app.post("/v1/select/batch", tags=["select"],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {"type": "array", "items": TASK_SCHEMA}},
                  "application/x-ndjson": {"schema": {"type": "string"}}}}})
    async def select_batch_route(
            request: Request, k: int = Query(1, ge=1, le=1000), alpha: float = Query(0.7, ge=0.0, le=1.0),
            nodes: int = Query(5, ge=1, le=1000), mode: Literal["auto", "restricted", "counts"] = Query("auto"),
            domain: str | None = Query(None), explain: bool = Query(False), ranking: int = Query(100, ge=0),
            probe: int = Query(16, ge=0, le=1000),
            labels: Literal["auto", "image", "published", "both"] = Query("auto"),
    ) -> StreamingResponse:
        """Select for many tasks (a JSON array of tasks, or JSONL): one JSON line per task, in input order.

        Every task is checked before the first line is sent; a line {"error": ...} ends a stream
        that could not finish (the time limit, the index gone)."""
        from mll_index.selection.settings import SelectionSettings

        chosen = SelectionSettings(k=k, alpha=alpha, n_nodes=nodes, mode=mode, explain=explain,
                                   ranking_size=ranking or None, probe=probe, labels=labels)
        tasks = [_with_domain(t, domain) for t in
                 parse_batch_body(await request.body(), settings.max_batch, settings.max_classes,
                                  jsonl="ndjson" in request.headers.get("content-type", "")
                                  or "jsonl" in request.headers.get("content-type", ""))]
        state = holder.current  # one version for the whole batch
        deadline = time.monotonic() + settings.request_timeout_s

        async def lines() -> AsyncIterator[bytes]:
            for at in range(0, len(tasks), settings.batch_chunk):
                chunk = tasks[at:at + settings.batch_chunk]
                remaining = deadline - time.monotonic()
                try:
                    if remaining <= 0:
                        raise RequestError(503, None, f"the batch took over {settings.request_timeout_s:g} s; "
                                           f"{at} of {len(tasks)} tasks answered")
                    loop = asyncio.get_running_loop()
                    work = partial(_answer_chunk, state.selector, chunk, chosen, state.version)
                    answers, failed = await asyncio.wait_for(loop.run_in_executor(executor, work), remaining)
                except asyncio.TimeoutError:
                    yield _error_line(f"the batch took over {settings.request_timeout_s:g} s; "
                                      f"{at} of {len(tasks)} tasks answered")
                    return
                except (RequestError, MLLIndexError, OSError) as exc:
                    yield _error_line(f"stopped after {at} of {len(tasks)} tasks: {exc}")
                    return
                for answer in answers:
                    yield (json.dumps(answer) + "\n").encode()
                if failed is not None:
                    done = at + len(answers)
                    yield _error_line(f"stopped at task {done + 1} of {len(tasks)} ({done} answered): {failed}")
                    return

        return StreamingResponse(lines(), media_type="application/x-ndjson", headers={VERSION_HEADER: state.version})

    @app.post("/v1/match", tags=["match"], responses={200: {"model": MatchAnswer, "description": "Nodes per name."}})
    async def match(body: MatchRequest) -> JSONResponse:
        """Class names to their top-k nodes: one record per name, as `mll-index match --format jsonl` prints."""
        if not body.names:
            raise RequestError(422, "names", "names: give at least one class name")
        if len(body.names) > settings.max_classes:
            raise RequestError(413, "names", f"{len(body.names)} names; at most {settings.max_classes}")
        names = list(body.names)

        def answer(state: IndexState) -> list[dict[str, Any]]:
            return match_records(state, names, body.k, body.method)

        state, results = await run(answer, "names")
        return versioned({"index_version": state.version, "results": results}, state)

    return app


def match_records(state: IndexState, names: Sequence[str], k: int, method: str) -> list[dict[str, Any]]:
    """Per name {"query", "matches", "low_confidence"}: the records `mll-index match --format jsonl` prints."""
    from mll_index.index.captions import make_expander
    from mll_index.index.match import is_weak, match_names

    sel = state.selector
    embedder = None if method == "lemma" else sel.embedder
    results = match_names(sel.index, names, embedder, k=k, method=method,  # type: ignore[arg-type]
                          expander=make_expander("wordnet"), cache=sel.cache, matcher=sel.matcher)
    out = []
    for name, matches in zip(names, results):
        weak = method != "lemma" and is_weak(sel.matcher, name, matches[0].score if matches else None)
        out.append({"query": name, "matches": [m.to_dict() for m in matches], "low_confidence": weak})
    return out


def _with_domain(task: Any, domain: str | None) -> Any:
    if not domain:
        return task
    from dataclasses import replace

    return replace(task, domain=domain)


def _error_line(message: str) -> bytes:
    return (json.dumps({"error": message, "field": None}) + "\n").encode()


def _authorised(request: Request, api_key: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # compare_digest: the time taken says nothing about how much of the token was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


def settings_to_env(index_path: Path, settings: ServiceSettings, api_key_env: str | None) -> str:
    """The JSON create_app_from_env reads (the key itself stays in its own variable)."""
    values = {k: v for k, v in asdict(settings).items() if k != "api_key"}
    return json.dumps({"index": str(index_path), "settings": values, "api_key_env": api_key_env})


def create_app_from_env() -> FastAPI:
    """The app described by $MLL_INDEX_SERVICE_CONFIG (`settings_to_env`): the factory each uvicorn worker calls."""
    config = json.loads(os.environ[CONFIG_ENV])
    key_env = config.get("api_key_env")
    settings = ServiceSettings(**config["settings"], api_key=os.environ.get(key_env) if key_env else None)
    return create_app(Path(config["index"]), settings)
