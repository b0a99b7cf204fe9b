"""Selection's settings as one checked record: what `select`, the service and `evaluate` pass around.

A sweep (k x alpha x mode) is a list of `SelectionSettings`; `dataclasses.replace` makes a
variant and checks it again.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from mll_index.errors import InputError
from mll_index.selection.confusion import MODES, SelectionMode

RANKING_SIZE = 100
PROBE_LIMIT = 16    # as probes.PROBE_LIMIT (not imported: settings load nothing heavy)
LabelSource = Literal["auto", "image", "published", "both"]
LABEL_SOURCES: tuple[str, ...] = ("auto", "image", "published", "both")
RuleName = Literal["auto", "calibrated", "mll"]
RULES: tuple[str, ...] = ("auto", "calibrated", "mll")


@dataclass(frozen=True)
class SelectionSettings:
    """How a task's models are chosen.

    Attributes:
        k: models per class (>= 1).
        alpha: weight of a class's own F1 against the task's other classes, in [0, 1].
        n_nodes: labeled nodes matched per class (>= 1).
        mode: "restricted", "counts" or "auto" (see `mll_index.selection.confusion`).
        explain: add each class's F1, counts and rule to the answer.
        use_domain: use the task's domain word where sample images carry domain tags.
        ranking_size: models in the task-level ranking (None: every model).
        probe: probe images used at most, of a task that gives some (0: ignore them).
        probe_models: models that encode the probe images, per sample set.
        labels: which labels rank the models: "image" (image-based), "published", "both" (merged by
            rank, see `select`), or "auto" (every source the index holds, with a warning when the
            two share few models).
        rule: how image-based labels rank a class's models: "mll" (the paper's alpha / F1 rule),
            "calibrated" (the rule `mll-index calibrate` fitted to the index's labels; refused where
            there is none), or "auto" (the calibrated rule where the index has one and the confusion
            is restricted, else the paper's; the answer's `rule` says which ran).

    Raises:
        InputError: on construction (and on `replace`), one line naming the bad value.
    """

    k: int = 1
    alpha: float = 0.7
    n_nodes: int = 5
    mode: SelectionMode = "auto"
    explain: bool = False
    use_domain: bool = True
    ranking_size: int | None = RANKING_SIZE
    probe: int = PROBE_LIMIT
    probe_models: int = 1
    labels: LabelSource = "auto"
    rule: RuleName = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise InputError(f"k must be an integer of at least 1, got {self.k!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if isinstance(self.n_nodes, bool) or not isinstance(self.n_nodes, int) or self.n_nodes < 1:
            raise InputError(f"the number of nodes per class must be at least 1, got {self.n_nodes!r}")
        if self.mode not in MODES:
            raise InputError(f"unknown selection mode {self.mode!r}; modes: {list(MODES)}")
        if self.rule not in RULES:
            raise InputError(f"unknown selection rule {self.rule!r}; rules: {list(RULES)}")
        if self.labels not in LABEL_SOURCES:
            raise InputError(f"unknown label source {self.labels!r}; sources: {list(LABEL_SOURCES)}")
        if self.ranking_size is not None and (isinstance(self.ranking_size, bool) or
                                              not isinstance(self.ranking_size, int) or self.ranking_size < 1):
            raise InputError(f"the ranking size must be at least 1 (or None for every model), "
                             f"got {self.ranking_size!r}")
        for name, least in (("probe", 0), ("probe_models", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InputError(f"{name} must be an integer of at least {least}, got {value!r}")

    def with_(self, **changes: Any) -> SelectionSettings:
        """A checked copy with these fields changed (unknown names: one line listing the fields)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise InputError(f"unknown selection setting(s) {sorted(unknown)}; "
                             f"settings: {[f.name for f in fields(self)]}")
        return replace(self, **changes) if changes else self


def settings_from(settings: SelectionSettings | None, changes: dict[str, Any]) -> SelectionSettings:
    """`settings` (default: SelectionSettings()) with keyword `changes` applied, checked once."""
    return (settings or SelectionSettings()).with_(**changes)
