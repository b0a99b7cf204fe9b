"""The prompt check kept per name on disk gives what the check on the token rows gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mll_index.models import prompt_checks as P
from mll_index.models.zeroshot import check_prompt_rows, clip_token_rows


def test_cached_prompt_check_equals_the_direct_check_and_tokenizes_once(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    names = ["Red fox", "red  fox", "grey wolf", "a very long name of a striped sea creature near the reef",
             "🍎 apple", "Café crème"]
    store = tmp_path / "checks.sqlite"
    for length in (77, 16, 8):
        direct = check_prompt_rows(lambda texts: clip_token_rows(texts, length), names, names)  # noqa: B023
        cached = P.check_prompts_cached(names, names, length, store)
        assert cached == direct
    assert not P.check_prompts_cached(names[:1], names[:1], 77, store).cut
    # Seen names are read back, never tokenized again (a cold CLI loads no BPE merges for them).
    calls = []
    real = P._fresh_facts
    monkeypatch.setattr(P, "_fresh_facts", lambda *a: calls.append(a[0]) or real(*a))
    again = P.check_prompts_cached(names, names, 8, store)
    assert calls == [] and again == check_prompt_rows(lambda t: clip_token_rows(t, 8), names, names)
    P.check_prompts_cached(["bran new name"], ["bran new name"], 8, store)
    assert calls == [["bran new name"]]
