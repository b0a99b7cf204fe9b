"""Index recipes: the options a recipe file gives `mll-index build`, and the files refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mll_index.errors import InputError
from mll_index.index.recipe import RECIPE_KEYS, read_recipe
from tests.conftest import REPO


def test_the_default_recipe() -> None:
    assert read_recipe(REPO / "indexes" / "default.json") == {"node_set": "visual", "embedder": "minilm",
                                                               "expander": "wordnet", "search": "flat"}


def test_paths_become_paths_and_the_description_is_left_out(tmp_path: Path) -> None:
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"description": "d", "folder": "samples", "caption_file": "caps.json",
                                  "wnids": None, "llm_url": "http://x"}))
    got = read_recipe(recipe)
    assert got == {"folder": Path("samples"), "caption_file": Path("caps.json"), "wnids": None, "llm_url": "http://x"}
    assert set(got) <= RECIPE_KEYS


def test_unknown_keys_are_refused_naming_the_file_and_the_keys(tmp_path: Path) -> None:
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"node_set": "visual", "colour": "blue", "llm_key_env": "K"}))
    with pytest.raises(InputError) as info:
        read_recipe(recipe)
    assert str(info.value) == (f"{recipe}: unknown keys ['colour', 'llm_key_env']; valid: "
                               "['caption_file', 'embedder', 'expander', 'folder', 'llm_model', 'llm_url', "
                               "'node_set', 'search', 'wnids']")


@pytest.mark.parametrize("text,why", [("[]", "got list"), ('"visual"', "got str"), ("3", "got int"),
                                      ('{"folder": 3}', "'folder' must be a string (a path), got int"),
                                      ('{"caption_file": null}', "'caption_file' must be a string (a path), got NoneType"),
                                      ("{", "r.json"), (None, "r.json")])
def test_a_file_that_is_no_recipe_is_refused_naming_it(tmp_path: Path, text: str | None, why: str) -> None:
    recipe = tmp_path / "r.json"
    if text is not None:
        recipe.write_text(text)
    with pytest.raises(InputError, match=re.escape(str(recipe))) as info:
        read_recipe(recipe)
    assert why in str(info.value)
