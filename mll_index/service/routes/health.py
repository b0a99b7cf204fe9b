"""GET /healthz (liveness), /readyz (the index open and warm) and /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from mll_index.service.dependencies import Holder, Metrics, versioned
from mll_index.service.errors import error_response
from mll_index.service.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(holder: Holder) -> JSONResponse:
    """Readiness: the index is open and warm (text model loaded, a first selection done)."""
    if not holder.ready:
        return error_response(503, None, "the index is not open yet")
    state = holder.current
    return versioned({"ready": True, "index_version": state.version,
                      "pending_version_error": holder.last_error}, state)


@router.get("/metrics")
async def metrics(service_metrics: Metrics) -> Response:
    """Prometheus metrics: requests by route and status, latency, the index version served.

    Per worker process: with several uvicorn workers a scrape reaches one of them and gets its
    counts only (prometheus-client's multiprocess mode would merge them, but it has no Info
    and no callback gauges, which the version and reload figures use)."""
    return Response(service_metrics.exposition(), media_type=CONTENT_TYPE)
