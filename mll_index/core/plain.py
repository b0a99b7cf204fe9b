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
from typing import Any

_LEAVES = frozenset((str, int, float, bool, type(None)))
_FIELDS: dict[type, tuple[str, ...] | None] = {}   # a class -> its dataclass field names (None: not a dataclass)


def _names(cls: type) -> tuple[str, ...] | None:
    if cls not in _FIELDS:
        _FIELDS[cls] = tuple(f.name for f in fields(cls)) if is_dataclass(cls) else None
    return _FIELDS[cls]


def plain(value: Any) -> Any:
    """`dataclasses.asdict` of a dataclass instance (and the same walk of anything inside one)."""
    cls = type(value)
    if cls in _LEAVES:
        return value
    names = _names(cls)
    if names is not None:
        return {name: plain(getattr(value, name)) for name in names}
    if cls is tuple or (isinstance(value, tuple) and not hasattr(value, "_fields")):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    return copy.deepcopy(value)      # as asdict: anything else (a numpy float64 among them) deep-copied
