"""Tasks from request JSON, checked field by field (a wrong task is a 422 or 413 naming the field at
fault), and the streamed batch's answers, a chunk of tasks at a time."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mll_index.errors import InputError
from mll_index.service.errors import RequestError


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
        data = _loads(stripped, "body")
        if data and all(isinstance(x, str) for x in data):
            raise RequestError(422, "body", "a JSON array of class names is one task: send it to /v1/select, "
                               "wrap it in another array, or send it as application/x-ndjson")
        items = [(f"body[{i}]", task) for i, task in enumerate(data)]
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append((f"line {number}", _loads(line, f"line {number}")))
                except json.JSONDecodeError as exc:
                    raise RequestError(400, f"line {number}", f"line {number}: malformed JSON ({exc.msg})") from None
    if not items:
        raise RequestError(422, "body", "no tasks")
    if len(items) > max_batch:
        raise RequestError(413, "body", f"{len(items)} tasks; at most {max_batch} per batch")
    return [parse_task(task, where, max_classes) for where, task in items]


def answer_chunk(selector: Any, chunk: Sequence[Any], settings: Any,
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
        _loads(text, "body")
    except json.JSONDecodeError:
        return False
    return True


def _loads(text: str, where: str) -> Any:
    """json.loads, with JSON nested past Python's recursion limit (~1,000 levels; its parser raises
    RecursionError, which was a 500) refused as a 400. Shallower nesting is refused by parse_task."""
    try:
        return json.loads(text)
    except RecursionError:
        raise RequestError(400, where, f"{where}: JSON nested too deeply") from None


def selection_settings(*, k: int, alpha: float, nodes: int, mode: str, explain: bool, ranking: int, probe: int,
                       labels: str, rule: str = "auto") -> Any:
    """A request's options (SelectRequest's, or the batch's query parameters) as the SelectionSettings
    `mll-index select` builds from its flags (ranking 0: the whole ranking)."""
    from mll_index.selection.settings import SelectionSettings

    return SelectionSettings(k=k, alpha=alpha, n_nodes=nodes, mode=mode, explain=explain,  # type: ignore[arg-type]
                             ranking_size=ranking or None, probe=probe, labels=labels,  # type: ignore[arg-type]
                             rule=rule)  # type: ignore[arg-type]
