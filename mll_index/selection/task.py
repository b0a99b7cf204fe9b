"""Tasks: a user's class names, with optional captions, a domain word and a description.

Read from class names, a task file (JSON or one name per line) or a JSON-lines batch file; every
reader checks the task once (`make_task`) and names the file and line of a mistake.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mll_index.core.userfiles import names_from_text, normalize_class_name, parse_user_json, read_user_text
from mll_index.errors import InputError
from mll_index.index.captions import clean_class_names
from mll_index.index.match import read_class_names


@dataclass(frozen=True)
class Task:
    """A user's task: class names, optionally captions per class, a domain word and a description.

    The domain word restricts the restricted confusion to the sample images of that domain
    (where the sample set tags its images); the description is kept in the output. Probe images
    (folders or files of a few unlabeled images of the task) weight the sample images by their
    likeness to them (mll_index.selection.probes). `where` is where the task was read ("tasks.jsonl:3", a
    task file; "" when given directly), for the messages of errors found while selecting for it.
    """

    classes: tuple[str, ...]
    name: str = "task"
    captions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    domain: str | None = None
    description: str | None = None
    probe_images: tuple[str, ...] = ()
    where: str = field(default="", compare=False)


def make_task(classes: Sequence[str], name: str = "task", captions: dict[str, Sequence[str]] | None = None,
              domain: str | None = None, description: str | None = None,
              probe_images: Sequence[str | Path] = ()) -> Task:
    """A checked Task. Raises InputError for no class, one class, duplicate names or a name of stop words only."""
    cleaned = clean_class_names(list(classes))
    read_class_names(cleaned)
    if len(cleaned) < 2:
        raise InputError(f"task {name!r}: a task needs at least 2 classes, got {len(cleaned)} ({cleaned})")
    caps = {}
    for cls, values in (captions or {}).items():
        if cls not in cleaned:
            raise InputError(f"task {name!r}: captions given for {cls!r}, which is not one of its classes")
        if not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise InputError(f"task {name!r}: captions of {cls!r} must be a non-empty list of strings")
        caps[cls] = tuple(values)
    return Task(tuple(cleaned), name, caps, domain, description, tuple(str(p) for p in probe_images))


def task_from_json(data: Any, where: str = "task", base: Path | None = None) -> Task:
    """A Task from JSON: a list of class names, or {"name", "classes": [name | {"name", "captions"}],
    "domain", "description", "probe_images": folder or [folder or file, ...]}.

    Args:
        where: the file (and line, for a batch file) for messages ("tasks.jsonl:3"); kept as `Task.where`.
        base: the folder relative `probe_images` paths are read from (a task file's own folder, as
            hub files do); None keeps them as given (relative to the current folder).
    Raises:
        InputError: naming `where` (and the class): a malformed task, or a class name empty once
            cleaned (`userfiles.normalize_class_name`).
    """
    if isinstance(data, list):
        data = {"classes": data}
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
        raise InputError(f'{where}: a task is a list of class names or an object with a "classes" list')
    names, captions = [], {}
    for i, c in enumerate(data["classes"], 1):
        if isinstance(c, str):
            names.append(normalize_class_name(c, f"{where}: class {i}"))
        elif isinstance(c, dict) and isinstance(c.get("name"), str):
            names.append(normalize_class_name(c["name"], f"{where}: class {i}"))
            if c.get("captions") is not None:
                captions[names[-1]] = c["captions"]
        else:
            shown = repr(c) if not isinstance(c, (list, dict)) else f"a JSON {'list' if isinstance(c, list) else 'object'}"
            raise InputError(f"{where}: class {i}: a class is a name or an object with a 'name', not {shown[:80]}")
    for key in ("name", "domain", "description"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise InputError(f"{where}: {key!r} must be a string")
    probes = data.get("probe_images") or []
    probes = [probes] if isinstance(probes, str) else probes
    if not isinstance(probes, list) or not all(isinstance(p, str) and p for p in probes):
        raise InputError(f"{where}: 'probe_images' must be a folder or a list of folders and image files")
    if base is not None:
        probes = [str((Path(base) / Path(p).expanduser()).absolute()) for p in probes]
    try:
        task = make_task(names, data.get("name") or "task", captions, data.get("domain"), data.get("description"),
                         probes)
    except InputError as exc:
        if where == "task":
            raise
        raise InputError(f"{where}: {exc}") from None
    return replace(task, where=where)


def batch_named(data: Any, where: str) -> Any:
    """A batch line's task JSON with `where` ("tasks.jsonl:3") as its name when it has none; other JSON as it is
    (task_from_json refuses it)."""
    if isinstance(data, list):
        return {"name": where, "classes": data}
    if isinstance(data, dict) and not data.get("name"):
        return {**data, "name": where}
    return data


def read_task_file(path: Path) -> Task:
    """A task from a file: JSON (see task_from_json) or plain text, one class name per line (blank lines skipped).

    The file is read as `userfiles.read_user_text` reads (a byte-order mark, UTF-16, CR LF); it is
    JSON when its first character is '{' or '['. Relative `probe_images` paths are read from the
    file's folder.

    Raises:
        InputError: naming the file (and line): unreadable text, invalid JSON, a malformed task.
    """
    text = read_user_text(path)
    if text.lstrip().startswith(("{", "[")):
        return task_from_json(parse_user_json(text, str(path), "JSON task file"), str(path), Path(path).parent)
    names = names_from_text(text, str(path), skip_blank=True)
    try:
        return replace(make_task(names, Path(path).stem), where=str(path))
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def read_batch_file(path: Path, *, skip_bad: bool = False) -> list[Task]:
    """Tasks from a JSON-lines file, one task (see task_from_json) per line; blank lines are skipped.
    Relative `probe_images` paths are read from the file's folder.

    Args:
        skip_bad: leave out the lines that are not a task instead of refusing the file
            (`read_batch_lines` also returns which they were, and why).
    Raises:
        InputError: naming the file and line ("tasks.jsonl:3"): unreadable text, a line that is not
            JSON or not a task (unless `skip_bad`), or no task at all.
    """
    return read_batch_lines(path, skip_bad=skip_bad)[0]


def read_batch_lines(path: Path, *, skip_bad: bool = False) -> tuple[list[Task], list[str]]:
    """`read_batch_file`'s tasks, and with `skip_bad` the one-line reason of each line left out
    ("tasks.jsonl:3: ...", in file order). Every line is read before anything is answered, so a
    refused file writes no output.

    Raises:
        InputError: as read_batch_file; with `skip_bad`, also when no line at all is a task.
    """
    tasks, bad = [], []
    for number, line in enumerate(read_user_text(path).split("\n"), 1):
        if line.strip():
            where = f"{path}:{number}"
            try:
                data = parse_user_json(line, where, "JSON task line")
                # An unnamed task of a batch is called by its line ("tasks.jsonl:3"), so that its answer can be
                # told from the others'; `select --server --batch` names the tasks it sends the same way.
                tasks.append(task_from_json(batch_named(data, where), where, Path(path).parent))
            except InputError as exc:
                if not skip_bad:
                    raise
                bad.append(str(exc) if str(exc).startswith(where) else f"{where}: {exc}")
    if not tasks:
        raise InputError(f"{path}: no tasks" + (f" ({len(bad)} line(s) refused, the first: {bad[0]})" if bad else ""))
    return tasks, bad


def with_overrides(tasks: Sequence[Task], domain: str | None = None,
                   probe_images: str | Path | None = None) -> list[Task]:
    """The tasks with a domain word and a probe-image folder given for all of them (`select --domain`,
    `--images`), which win over each task's own; an empty or None value changes nothing.

    Args:
        domain: replaces every task's domain; probe_images: a folder or image file that replaces
            every task's probe images (kept as given, not made relative to a task file).
    Returns:
        The tasks in order (their `where` kept), changed where an override is given.
    """
    if not (domain or probe_images):
        return list(tasks)
    return [replace(t, domain=domain or t.domain, probe_images=(str(probe_images),) if probe_images else t.probe_images)
            for t in tasks]
