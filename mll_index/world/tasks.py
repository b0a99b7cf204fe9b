"""Target tasks of the emoji world: class names as a user writes them, with ground truth.

A task file is JSON: `{"tasks": [{"name", "description", "domains": [...], "classes":
[{"name": "hot dog", "wnid": "n07697537"}, ...]}]}`. The wnid is the ground truth that ties a
class to the world's images; selection never sees it, only the class name. The shipped
tasks are `data/emoji_tasks.json`; a user adds tasks with a file of the same shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mll_index.core.userfiles import read_user_json
from mll_index.errors import InputError

TASK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class TaskClass:
    name: str
    wnid: str


@dataclass(frozen=True)
class TaskSpec:
    """A target task: its classes and the domains its test images are drawn from."""

    name: str
    description: str
    domains: tuple[str, ...]
    classes: tuple[TaskClass, ...]

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]


def tasks_path() -> Path:
    return Path(str(resources.files("mll_index").joinpath("data/emoji_tasks.json")))


def load_task_specs(path: Path | None = None, known_domains: set[str] | None = None,
                    known_wnids: set[str] | None = None) -> list[TaskSpec]:
    """Read and check a task file.

    Raises:
        InputError: naming the file and task: a bad name, fewer than 2 classes, a duplicate
            class name or wnid, an unknown domain or a wnid that is not a concept of the world.
    """
    path = Path(path) if path else tasks_path()
    data = read_user_json(path, "task file")
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        raise InputError(f'{path}: a task file is a JSON object with a "tasks" list')
    specs: list[TaskSpec] = []
    names: set[str] = set()
    for i, raw in enumerate(data["tasks"], 1):
        if not isinstance(raw, dict):
            raise InputError(f"{path}: task #{i} is not a JSON object")
        name = raw.get("name")
        where = f"{path}: task {name!r}" if isinstance(name, str) else f"{path}: task #{i}"
        if not isinstance(name, str) or not TASK_NAME_RE.match(name):
            raise InputError(f"{where}: a task name is 1-64 characters of a-z, 0-9, '-' and '_'")
        if name in names:
            raise InputError(f"{where}: duplicate task name")
        names.add(name)
        domains = raw.get("domains")
        if not isinstance(domains, list) or not domains or not all(isinstance(d, str) for d in domains):
            raise InputError(f"{where}: 'domains' must be a non-empty list of domain names")
        if known_domains is not None and set(domains) - known_domains:
            raise InputError(f"{where}: unknown domain(s) {sorted(set(domains) - known_domains)}; "
                             f"domains: {sorted(known_domains)}")
        classes = raw.get("classes")
        if not isinstance(classes, list) or len(classes) < 2:
            raise InputError(f"{where}: a task needs at least 2 classes")
        parsed: list[TaskClass] = []
        for c in classes:
            if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not isinstance(c.get("wnid"), str):
                raise InputError(f"{where}: every class is an object with a 'name' and a 'wnid', not {c!r}")
            cname = " ".join(c["name"].split())
            if not cname or "/" in cname or cname.startswith("."):
                raise InputError(f"{where}: class name {c['name']!r} cannot name a folder")
            if known_wnids is not None and c["wnid"] not in known_wnids:
                raise InputError(f"{where}: class {cname!r}: wnid {c['wnid']} is not a concept of the emoji world")
            parsed.append(TaskClass(cname, c["wnid"]))
        for attr in ("name", "wnid"):
            values = [getattr(c, attr) for c in parsed]
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise InputError(f"{where}: duplicate class {attr}(s) {dupes}")
        specs.append(TaskSpec(name=name, description=str(raw.get("description", "")), domains=tuple(domains),
                              classes=tuple(parsed)))
    return specs
