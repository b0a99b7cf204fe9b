"""Selection settings: one checked record, its one-line errors, and the keyword shorthand."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mll_index.errors import InputError
from mll_index.selection.selector import open_selector, prepare_tasks, select_batch, select_models, select_prepared
from mll_index.selection.settings import SelectionSettings
from mll_index.selection.task import make_task


@pytest.mark.parametrize("changes, message", [
    ({"k": 0}, "k must be an integer of at least 1, got 0"), ({"k": 1.5}, "k must be"),
    ({"alpha": 1.5}, r"alpha must be in \[0, 1\], got 1.5"), ({"n_nodes": 0}, "nodes per class"),
    ({"mode": "magic"}, r"unknown selection mode 'magic'; modes: \['auto', 'restricted', 'counts'\]"),
    ({"ranking_size": 0}, "ranking size")])
def test_bad_settings_are_one_line(changes: dict, message: str) -> None:  # type: ignore[type-arg]
    for make in (lambda: SelectionSettings(**changes), lambda: SelectionSettings().with_(**changes),
                 lambda: replace(SelectionSettings(), **changes)):
        with pytest.raises(InputError, match=message) as err:
            make()
        assert "\n" not in str(err.value)


def test_unknown_setting_lists_the_fields() -> None:
    with pytest.raises(InputError, match=r"unknown selection setting\(s\) \['kk'\]; settings: \['k', 'alpha'"):
        SelectionSettings().with_(kk=3)


def test_settings_record_equals_keywords_and_sweeps_reuse_one_preparation(world_index: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    selector = open_selector(world_index, embedder)
    tasks = [make_task(["tiger", "lion", "banana"], "a"), make_task(["cow", "pig"], "b")]
    settings = SelectionSettings(k=2, alpha=0.6, mode="counts", ranking_size=3)
    by_record = select_batch(selector, tasks, settings)
    assert by_record == select_batch(selector, tasks, k=2, alpha=0.6, mode="counts", ranking_size=3)
    assert by_record[0] == select_models(selector, tasks[0], settings.with_(explain=False))
    prepared = prepare_tasks(selector, tasks, settings)
    sweep = [settings.with_(k=k, mode=m) for k in (1, 2) for m in ("restricted", "counts")]
    answers = [select_prepared(selector, prepared, s) for s in sweep]
    assert answers[3] == by_record
    assert all(a[0].k == s.k and a[0].mode == s.mode for a, s in zip(answers, sweep))
