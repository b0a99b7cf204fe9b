"""Index recipes: the JSON files (like indexes/default.json) that give `mll-index build` its options.

A recipe is a JSON object of build options under their option names ("node_set", "embedder",
"search", "expander", ...) and an optional "description"; the command line's options win over it.
"""

from __future__ import annotations

from pathlib import Path

from mll_index.core.userfiles import read_user_json
from mll_index.errors import InputError

RECIPE_KEYS = frozenset({"node_set", "wnids", "folder", "embedder", "search", "expander", "llm_url", "llm_model",
                         "caption_file"})
"""The build options a recipe may give (besides its "description")."""

PATH_KEYS = frozenset({"folder", "caption_file"})
"""The recipe keys whose values are paths."""


def read_recipe(path: Path) -> dict[str, object]:
    """The build options a recipe file gives, under their option names.

    The file is read as `userfiles.read_user_json` reads. Its "description" is left out; the values
    of "folder" and "caption_file" (strings) become Paths; the others are returned as the file has them.

    Args:
        path: the recipe file (indexes/<name>.json).
    Returns:
        {option name: value} for each option the recipe gives, in the file's order.
    Raises:
        InputError: naming the file: unreadable or not JSON, not a JSON object, a key that is no
            build option (the valid ones listed), or a "folder" or "caption_file" that is no string.
    """
    data = read_user_json(Path(path), "recipe file")
    if not isinstance(data, dict):
        raise InputError(f"{path}: a recipe is a JSON object of build options, got {type(data).__name__}")
    unknown = sorted(set(data) - RECIPE_KEYS - {"description"})
    if unknown:
        raise InputError(f"{path}: unknown keys {unknown}; valid: {sorted(RECIPE_KEYS)}")
    for key in sorted(PATH_KEYS & set(data)):
        if not isinstance(data[key], str):
            raise InputError(f"{path}: {key!r} must be a string (a path), got {type(data[key]).__name__}")
    return {key: Path(value) if key in PATH_KEYS else value for key, value in data.items() if key != "description"}
