"""POST /v1/select (one task) and /v1/select/batch (many, streamed back as JSONL in input order).

The answers are `answer.answer_tasks`'s, as `mll-index select` prints them, plus index_version.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from mll_index.errors import MLLIndexError
from mll_index.service.dependencies import VERSION_HEADER, Holder, Pool, Settings, versioned
from mll_index.service.errors import RequestError, error_line
from mll_index.service.pool import SelectionPool
from mll_index.service.probe_paths import client_answer, client_text, task_with_probes
from mll_index.service.schemas import TASK_SCHEMA, SelectionAnswer, SelectRequest
from mll_index.service.settings import ServiceSettings
from mll_index.service.state import IndexState
from mll_index.service.tasks import answer_chunk, parse_batch_body, parse_task, selection_settings

router = APIRouter(tags=["select"])

_BATCH_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "array", "items": TASK_SCHEMA}},
    "application/x-ndjson": {"schema": {"type": "string"}}}}}


@router.post("/v1/select", responses={200: {"model": SelectionAnswer, "description": "The selection."}})
async def select(request: Request, body: SelectRequest, settings: Settings, pool: Pool) -> JSONResponse:
    """Select the top-k models per class for one task: the JSON `mll-index select` prints, plus index_version.

    probe_images are paths under the service's probe roots (403 without any), named in every message
    as they were sent."""
    from mll_index.selection.answer import answer_tasks
    from mll_index.selection.task import with_overrides

    task = with_overrides([parse_task(body.task, "task", settings.max_classes)], domain=body.domain)[0]
    chosen = selection_settings(**body.model_dump(exclude={"task", "domain"}))
    names: dict[str, str] = {}

    def answer(state: IndexState) -> dict[str, Any]:
        # In the pool: listing the probe folders is file system work, kept off the event loop.
        checked, probes = task_with_probes(task, settings)
        if probes is not None:
            names.update(probes.names)
        return {**answer_tasks(state.selector, [checked], chosen)[0], "index_version": state.version}

    try:
        state, out = await pool.run(answer, "task")
    except RequestError as exc:
        raise RequestError(exc.status, exc.field, client_text(exc.message, names, settings.probe_roots)) from None
    return versioned(client_answer(out, names, settings.probe_roots), state)


@router.post("/v1/select/batch", openapi_extra=_BATCH_BODY)
async def select_batch_route(
        request: Request, holder: Holder, settings: Settings, pool: Pool,
        k: int = Query(1, ge=1, le=1000), alpha: float = Query(0.7, ge=0.0, le=1.0),
        nodes: int = Query(5, ge=1, le=1000), mode: Literal["auto", "restricted", "counts"] = Query("auto"),
        domain: str | None = Query(None), explain: bool = Query(False), ranking: int = Query(100, ge=0),
        probe: int = Query(16, ge=0, le=1000),
        labels: Literal["auto", "image", "published", "both"] = Query("auto"),
        rule: Literal["auto", "calibrated", "mll"] = Query("auto"),
) -> StreamingResponse:
    """Select for many tasks (a JSON array of tasks, or JSONL): one JSON line per task, in input order.

    Every task is checked before the first line is sent; a line {"error": ...} ends a stream
    that could not finish (the time limit, the index gone)."""
    from mll_index.selection.task import with_overrides

    chosen = selection_settings(k=k, alpha=alpha, nodes=nodes, mode=mode, explain=explain, ranking=ranking,
                                probe=probe, labels=labels, rule=rule)
    content_type = request.headers.get("content-type", "")
    tasks = with_overrides(parse_batch_body(await request.body(), settings.max_batch, settings.max_classes,
                                            jsonl="ndjson" in content_type or "jsonl" in content_type), domain=domain)
    state = holder.current  # one version for the whole batch
    deadline = time.monotonic() + settings.request_timeout_s
    names: dict[str, str] = {}
    if any(task.probe_images for task in tasks):
        try:
            tasks = await pool.call(partial(_resolve_batch, tasks, settings, names), settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(503, None, f"listing the probe images took over {settings.request_timeout_s:g} s") from None
    lines = _answer_lines(tasks, chosen, state, pool, settings, deadline, names)
    return StreamingResponse(lines, media_type="application/x-ndjson", headers={VERSION_HEADER: state.version})


def _resolve_batch(tasks: Sequence[Any], settings: ServiceSettings, names: dict[str, str]) -> list[Any]:
    """Every task's probe_images resolved (in the pool), before the first line is sent; `names` filled."""
    out = []
    for task in tasks:
        checked, probes = task_with_probes(task, settings)
        if probes is not None:
            names.update(probes.names)
        out.append(checked)
    return out


async def _answer_lines(tasks: Sequence[Any], chosen: Any, state: IndexState, pool: SelectionPool,
                        settings: ServiceSettings, deadline: float,
                        names: dict[str, str]) -> AsyncIterator[bytes]:
    """One JSON line per task, `settings.batch_chunk` tasks selected at a time, all before `deadline`
    (time.monotonic); a last line {"error": ...} when the batch stops early (the time limit, the index
    gone, a task refused). Probe files are named as the client wrote them (`names`)."""
    roots = settings.probe_roots
    for at in range(0, len(tasks), settings.batch_chunk):
        chunk = tasks[at:at + settings.batch_chunk]
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise RequestError(503, None, f"the batch took over {settings.request_timeout_s:g} s; "
                                   f"{at} of {len(tasks)} tasks answered")
            work = partial(answer_chunk, state.selector, chunk, chosen, state.version)
            answers, failed = await pool.call(work, remaining)
        except asyncio.TimeoutError:
            yield error_line(f"the batch took over {settings.request_timeout_s:g} s; "
                             f"{at} of {len(tasks)} tasks answered")
            return
        except (RequestError, MLLIndexError, OSError) as exc:
            yield error_line(client_text(f"stopped after {at} of {len(tasks)} tasks: {exc}", names, roots))
            return
        for answer in answers:
            yield (json.dumps(client_answer(answer, names, roots)) + "\n").encode()
        if failed is not None:
            done = at + len(answers)
            yield error_line(client_text(f"stopped at task {done + 1} of {len(tasks)} ({done} answered): {failed}",
                                         names, roots))
            return
