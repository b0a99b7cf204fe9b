"""The warnings of a selection: the chosen models' prompt problems and the probe images'.

Recomputed wherever the chosen models change (`answer.complete_selection`), so each is a function
of the task, the classes chosen and the selector's labels alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mll_index.selection.task import Task

# The selector and its ClassSelection are read by duck type (`sel.store`, `sel.published`, `c.models`):
# this module sits below selector.py, which calls it.
Selector = Any
ClassSelection = Any


# How every prompt_warnings line ends (answer.complete_selection recomputes those lines only).
PROMPT_WARNING_TAIL = " (reuse refuses them unless --force; shorten or rename those classes)"


def selection_warnings(sel: Selector, task: Task, classes: Sequence[ClassSelection],
                       probe: dict[str, Any] | None) -> tuple[str, ...]:
    """A selection's warnings: the chosen models' prompt problems (`prompt_warnings`), then the
    probe images' (`probe`: the selection's probe summary): ignored outside the restricted mode,
    or some files unreadable. Recomputed wherever the chosen models change (answer.complete_selection)."""
    return prompt_warnings(sel, task, classes) + probe_warnings(task, probe)


def probe_warnings(task: Task, probe: dict[str, Any] | None) -> tuple[str, ...]:
    """The probe images' warnings (`probe`: the selection's probe summary): ignored outside the
    restricted mode, or some files unreadable."""
    from mll_index.selection.probes import skipped_warning

    warnings: tuple[str, ...] = ()
    if probe is not None and "ignored" in probe:
        warnings += (f"task {task.name!r}: {probe['ignored']}; the probe images were not used",)
    skipped = skipped_warning(probe.get("skipped") or []) if probe is not None else None
    if skipped:
        warnings += (f"task {task.name!r}: {skipped}",)
    return warnings


def prompt_warnings(sel: Selector, task: Task, classes: Sequence[ClassSelection]) -> tuple[str, ...]:
    """One line per context length among the chosen models whose tokenizer cuts a class name or
    makes two classes' prompts identical (the prompts `reuse` writes: see zeroshot.prompt_names).

    Read from the models' configs and CLIP's vocabulary, without torch; models with another
    tokenizer than open_clip's default are not checked here (`reuse` checks every model).
    """
    from mll_index.models.prompt_checks import check_prompts_cached
    from mll_index.models.zeroshot import lemma_of, prompt_names, zero_shot_templates

    entries = dict(sel.store.entries) if sel.store is not None else {}
    if sel.published is not None:
        entries = {m["id"]: m for m in sel.published.models} | entries
    by_length: dict[int, list[str]] = {}
    for model in dict.fromkeys(m.model for c in classes for m in c.models):
        length = text_context_of(entries.get(model))
        if length is not None:
            by_length.setdefault(length, []).append(model)
    if not by_length:
        return ()
    names = list(task.classes)
    written = prompt_names(names, {c.name: lemma_of(c.nodes[0].synset) for c in classes if c.nodes})
    longest = max(len(t.format(name=w).lower().encode("utf-8")) for w in written for t in zero_shot_templates())
    plain = all(w.isascii() for w in written) and len({" ".join(w.lower().split()) for w in written}) == len(written)
    out = []
    for length, models in sorted(by_length.items()):
        if plain and longest + 2 < length:
            continue    # a CLIP token covers at least one byte: nothing can be cut, and no two names read alike
        check = check_prompts_cached(names, written, length)   # facts per name, kept in <cache>/prompt_checks.sqlite
        if check is None:
            return ()   # open_clip is not installed: reuse cannot run either
        if check.ok:
            continue
        parts = [f"classes {list(g)} get identical prompts" for g in check.identical]
        if check.cut:
            parts.append(f"the name of {list(check.cut)[:5]}{' and others' if len(check.cut) > 5 else ''} is cut")
        shown = f"{models[:5]}{' and others' if len(models) > 5 else ''}"
        out.append(f"task {task.name!r}: model(s) {shown} read at most {length} tokens: " + "; ".join(parts) +
                   PROMPT_WARNING_TAIL)
    return tuple(out)


def text_context_of(entry: dict[str, Any] | None) -> int | None:
    """The context length of a labeled model's default CLIP tokenizer (None: unknown or another tokenizer)."""
    from mll_index.models.zeroshot import text_context

    return text_context(entry) if entry else None
