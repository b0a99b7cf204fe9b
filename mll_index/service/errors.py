"""Refusals in one JSON shape, `{"error": message, "field": name}`, and never a traceback.

`RequestError` is what the service's own code raises; the handlers turn it, FastAPI's validation
errors and Starlette's HTTP errors into that shape (`create_app` installs them).
"""

from __future__ import annotations

import json

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class RequestError(Exception):
    """A request the service refuses: its HTTP status, the field at fault (None: the request as a whole)."""

    def __init__(self, status: int, field: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


def error_response(status: int, field: str | None, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def error_line(message: str) -> bytes:
    """The last line of a JSONL stream that could not finish: the error shape, on one line."""
    return (json.dumps({"error": message, "field": None}) + "\n").encode()


async def request_error(_: Request, exc: RequestError) -> JSONResponse:
    return error_response(exc.status, exc.field, exc.message)


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """The first of pydantic's errors, as a 422 naming its field (a 400 for malformed JSON)."""
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


async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, None, str(exc.detail), headers=getattr(exc, "headers", None))


HANDLERS = {RequestError: request_error, RequestValidationError: validation_error, StarletteHTTPException: http_error}
