"""POST /v1/match: class names to their nodes, the records `mll-index match --format jsonl` prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from mll_index.service.dependencies import Pool, Settings, versioned
from mll_index.service.errors import RequestError
from mll_index.service.schemas import MatchAnswer, MatchRequest
from mll_index.service.state import IndexState

router = APIRouter(tags=["match"])


@router.post("/v1/match", responses={200: {"model": MatchAnswer, "description": "Nodes per name."}})
async def match(body: MatchRequest, settings: Settings, pool: Pool) -> JSONResponse:
    """Class names to their top-k nodes: one record per name, as `mll-index match --format jsonl` prints."""
    if not body.names:
        raise RequestError(422, "names", "names: give at least one class name")
    if len(body.names) > settings.max_classes:
        raise RequestError(413, "names", f"{len(body.names)} names; at most {settings.max_classes}")
    names = list(body.names)

    def answer(state: IndexState) -> list[dict[str, Any]]:
        return match_records(state, names, body.k, body.method)

    state, results = await pool.run(answer, "names")
    return versioned({"index_version": state.version, "results": results}, state)


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
