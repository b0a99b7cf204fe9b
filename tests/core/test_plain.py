"""core.plain gives what dataclasses.asdict gives, without sharing a container with the original."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mll_index.core.plain import plain


@dataclass(frozen=True)
class Leaf:
    name: str
    score: float | None = None


@dataclass
class Tree:
    leaves: tuple[Leaf, ...]
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] | None = None


def test_plain_equals_asdict_and_copies_containers() -> None:
    tree = Tree((Leaf("a", 0.5), Leaf("b")), ["x"], {"k": [Leaf("c", 1.0)], "n": None, "s": {1, 2}})
    got = plain(tree)
    assert got == asdict(tree)
    assert isinstance(got["leaves"], tuple) and got["leaves"][0] == {"name": "a", "score": 0.5}
    got["notes"].append("y")
    got["extra"]["s"].add(3)
    assert tree.notes == ["x"] and tree.extra is not None and tree.extra["s"] == {1, 2}
