"""GET /v1/index (the served index's summary and version) and /v1/models (the labeled models)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from mll_index.service.dependencies import Holder, Pool, versioned

router = APIRouter(tags=["index"])


@router.get("/v1/index")
async def index_summary(pool: Pool) -> JSONResponse:
    """The served index: node count, embedder, format versions, label counts, index version."""
    state, summary = await pool.run(lambda s: s.summary(), None)
    return versioned(summary, state)


@router.get("/v1/models")
async def models(holder: Holder) -> JSONResponse:
    """The labeled models, each with its labels (counts, image, published) and hub entry."""
    state = holder.current
    return versioned({"index_version": state.version, "models": state.models()}, state)
