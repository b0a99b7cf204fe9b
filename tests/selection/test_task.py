"""Tasks: the overrides `select --domain` and `--images` give every task."""

from __future__ import annotations

from pathlib import Path

from mll_index.selection.task import make_task, task_from_json, with_overrides


def test_overrides_win_over_each_tasks_own() -> None:
    plain = make_task(["cat", "dog"], "pets")
    own = task_from_json({"name": "own", "classes": ["cat", "dog"], "domain": "photo", "probe_images": "probes"},
                         "tasks.jsonl:2")
    got = with_overrides([plain, own], domain="sketch", probe_images=Path("imgs"))
    assert [t.domain for t in got] == ["sketch", "sketch"]
    assert [t.probe_images for t in got] == [("imgs",), ("imgs",)]
    assert [t.name for t in got] == ["pets", "own"] and got[1].where == "tasks.jsonl:2"
    assert got[1].classes == own.classes
    only_domain = with_overrides([own], domain="sketch")[0]
    assert only_domain.domain == "sketch" and only_domain.probe_images == ("probes",)
    only_images = with_overrides([own], probe_images="other")[0]
    assert only_images.domain == "photo" and only_images.probe_images == ("other",)


def test_no_override_changes_nothing() -> None:
    tasks = [make_task(["cat", "dog"], "pets", domain="photo")]
    assert with_overrides(tasks) == tasks
    assert with_overrides(tasks, domain="", probe_images=None) == tasks
    assert with_overrides([]) == []
