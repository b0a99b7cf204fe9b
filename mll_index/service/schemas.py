"""The service's request and answer models, for validation and the OpenAPI document.

Requests are pydantic models (strict: a wrong type is a 422 naming the field). Answers are
documented only: the routes send the package's own JSON (`answer.answer_tasks`, `Match.to_dict`)
as the CLI prints it, unvalidated and unreshaped, and these dataclasses (extending the package's
own) describe it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mll_index.index.match import Match
from mll_index.selection.accuracy import Interval
from mll_index.selection.selector import ClassSelection, Selection

# ---------------------------------------------------------------------------------------
# Request bodies

_TASK_DOC = ('The task, as `mll-index select --task` reads it: a list of class names, or {"name", "classes": '
             '[name | {"name", "captions": [...]}], "domain", "description", "probe_images"}; probe_images: '
             'a folder or a list of folders and image files on the server, a few unlabeled images of the task.')


# The task's shape, for the OpenAPI document (and the clients and fuzzers generated from it);
# `tasks.parse_task` checks it, so that a wrong task is a 422 naming the class at fault.
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
    rule: Literal["auto", "calibrated", "mll"] = Field(
        "auto", description="How image-based labels rank a class's models (see `mll-index select --rule`).")


class MatchRequest(BaseModel):
    """POST /v1/match: class names and the options of `mll-index match`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    names: list[str] = Field(description="Class names.", examples=[["tench", "golden retriever"]])
    k: int = Field(5, ge=1, le=1000, description="Nodes per name.")
    method: Literal["combined", "captions", "name", "lemma"] = "combined"


# ---------------------------------------------------------------------------------------
# Answers, for the OpenAPI documentation only


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
