"""Dataclasses as plain dicts, as `dataclasses.asdict` makes them, for the answer's hot path.

`asdict` checks every value's type through several generic paths and deep-copies what it does not
know; an answer of 20 classes (nodes, models, benchmark matches) took 3 ms of a 40 ms selection in
it. This walks the same shapes (dataclasses, tuples, lists, dicts) with each class's field names
read once, and copies only containers: the leaves of an answer are immutable (str, int, float, bool,
None), so sharing them is what a deep copy would give.
"""

from __future__ import annotations

import copy
from dataclasses import fields, is_dataclass
from functools import lru_cache
from typing import Any

_LEAVES = (str, int, float, bool, type(None))


@lru_cache(maxsize=None)
def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def plain(value: Any) -> Any:
    """`dataclasses.asdict` of a dataclass instance (and the same walk of anything inside one)."""
    if isinstance(value, _LEAVES):
        return value
    if is_dataclass(value) and not isinstance(value, type):
        return {name: plain(getattr(value, name)) for name in _names(type(value))}
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    return copy.deepcopy(value)
