"""A client of the selection service, on the standard library alone.

urllib rather than httpx: `mll-index select --server` must answer from a cold process in a
fraction of a second, so this module imports nothing beyond the standard library (and
`mll_index.errors`) — no numpy, no text runtime, no HTTP library to install.

    >>> from mll_index.service.client import select_remote
    >>> answer = select_remote("http://127.0.0.1:8000", ["tiger", "lion"], k=2)
    >>> answer["classes"][0]["models"]      # as `mll-index select` prints; answer["index_version"] too
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

from mll_index.errors import EndpointError, InputError

DEFAULT_TIMEOUT_S = 120.0


def _request(url: str, path: str, body: bytes | None, *, content_type: str = "application/json",
             api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
    """An open HTTP response for POST (body given) or GET; service errors raised as one-line MLLIndexErrors."""
    if not url.startswith(("http://", "https://")):
        raise InputError(f"--server {url}: give an http:// or https:// URL")
    request = urllib.request.Request(url.rstrip("/") + path, data=body, method="POST" if body is not None else "GET")
    request.add_header("Accept", "application/json")
    if body is not None:
        request.add_header("Content-Type", content_type)
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - the scheme is checked above
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read().decode("utf-8", "replace"))
            message = detail.get("error") or exc.reason
        except (ValueError, AttributeError):
            message = exc.reason
        # The service's 4xx is the caller's mistake, as a local InputError would be.
        kind = InputError if 400 <= exc.code < 500 else EndpointError
        raise kind(f"{url}: {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EndpointError(f"{url}: no selection service answers there ({reason})") from None


def _api_key(api_key: str | None) -> str | None:
    return api_key if api_key is not None else (os.environ.get("MLL_INDEX_API_KEY") or None)


def select_remote(url: str, task: Any, *, k: int = 1, alpha: float = 0.7, nodes: int = 5, mode: str = "auto",
                  domain: str | None = None, explain: bool = False, ranking: int = 100, labels: str = "auto",
                  rule: str = "auto", api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Select models for one task on a running service (`mll-index serve`).

    Args:
        url: the service's base URL, e.g. "http://127.0.0.1:8000".
        task: a list of class names, or the task object `mll-index select --task` reads
            ({"name", "classes": [name | {"name", "captions"}], "domain", "description"}).
        k, alpha, nodes, mode, domain, explain, ranking, labels, rule: as the options of `mll-index select`
            (ranking 0: every model; labels and rule sent only when not "auto", so an older service still answers).
        api_key: the service's bearer token [default: $MLL_INDEX_API_KEY, if set].
    Returns:
        the selection as `mll-index select` prints it, plus "index_version": the index version it came from.
    Raises:
        InputError: the service refused the request (its message names the field).
        EndpointError: no service answers at `url`, or it failed.
    """
    request = {"task": task, "k": k, "alpha": alpha, "nodes": nodes, "mode": mode, "domain": domain,
               "explain": explain, "ranking": ranking}
    request |= {name: value for name, value in (("labels", labels), ("rule", rule)) if value != "auto"}
    body = json.dumps(request).encode()
    with _request(url, "/v1/select", body, api_key=_api_key(api_key), timeout=timeout) as response:
        return json.loads(response.read())


def select_batch_remote(url: str, tasks: Sequence[Any], *, k: int = 1, alpha: float = 0.7, nodes: int = 5,
                        mode: str = "auto", domain: str | None = None, explain: bool = False, ranking: int = 100,
                        labels: str = "auto", rule: str = "auto", api_key: str | None = None,
                        timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[dict[str, Any]]:
    """Select for many tasks on a running service: one selection per task, in order, as they stream in.

    Raises EndpointError when the stream ends with an error line (the service's time limit).
    """
    from urllib.parse import urlencode

    query = {"k": k, "alpha": alpha, "nodes": nodes, "mode": mode, "explain": str(explain).lower(), "ranking": ranking}
    if domain:
        query["domain"] = domain
    query |= {name: value for name, value in (("labels", labels), ("rule", rule)) if value != "auto"}
    body = "".join(json.dumps(t) + "\n" for t in tasks).encode()
    with _request(url, "/v1/select/batch?" + urlencode(query), body, content_type="application/x-ndjson",
                  api_key=_api_key(api_key), timeout=timeout) as response:
        for line in response:
            if line.strip():
                record = json.loads(line)
                if "error" in record:
                    raise EndpointError(f"{url}: {record['error']}")
                yield record


def read_task_json(path: Any) -> Any:
    """A task file as JSON to send: JSON as written, or plain text (one class name per line) as
    {"name": the file's stem, "classes": [...]} — what `select --task` reads locally."""
    from pathlib import Path

    from mll_index.core.userfiles import parse_user_json, read_user_text

    text = read_user_text(Path(path))
    if text.lstrip().startswith(("{", "[")):
        return parse_user_json(text, str(path), "task file")
    return {"name": Path(path).stem, "classes": [line for line in text.splitlines() if line.strip()]}


def remote_select(url: str, names: list[str] | None, task_file: Any, batch: Any, names_given: bool,
                  **options: Any) -> tuple[str, list[str]]:
    """What `mll-index select --server URL` prints (stdout text) and warns (stderr lines).

    One task (class names, or a task file) gives the indented JSON the local select prints; a
    batch file (JSONL of tasks) gives one JSON line per task. "index_version" is left out, so
    the output is the local one's.
    """
    from pathlib import Path

    if batch is not None:
        if names_given or task_file:
            raise InputError("--batch takes the tasks from its file; give no class names, --file or --task")
        from mll_index.core.userfiles import parse_user_json, read_user_text
        from mll_index.selection.task import batch_named

        tasks = []
        for number, line in enumerate(read_user_text(Path(batch)).split("\n"), 1):
            if line.strip():   # numbered as the local batch numbers its lines, and named alike
                tasks.append(batch_named(parse_user_json(line, f"{batch}: line {number}", "task"), f"{batch}:{number}"))
        if not tasks:
            raise InputError(f"{batch}: no tasks")
        selections = list(select_batch_remote(url, tasks, **options))
    elif task_file is not None:
        if names_given:
            raise InputError("give the task as class names, --file or --task, not several")
        selections = [select_remote(url, read_task_json(task_file), **options)]
    else:
        selections = [select_remote(url, names, **options)]
    for s in selections:
        s.pop("index_version", None)
    from mll_index.selection.answer import answer_warning_lines

    warnings = [line for s in selections for line in answer_warning_lines(s)]
    if batch is not None:
        return "".join(json.dumps(s) + "\n" for s in selections), warnings
    return json.dumps(selections[0], indent=1) + "\n", warnings
