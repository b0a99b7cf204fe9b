"""The prompt check of selection (does a model's CLIP tokenizer cut a class name, or make two classes'
prompts identical?), remembered per (context length, prompt name) on disk.

`select` warns when a chosen model's tokenizer would cut a class name or merge two classes'
prompts (`selection.answer_warnings.prompt_warnings`). Tokenizing the prompts needs CLIP's BPE merges
(0.2 s to read) and ftfy, on every cold CLI call. What the check needs of one name, though, is two
facts that depend on nothing but the name, the context length, the templates and the vocabulary:
whether the name is cut, and a digest of its prompts' token rows (two classes read alike exactly
when their digests are equal). Those are kept in one SQLite file beside the embedding cache, so a
name checked once is never tokenized again by any process; the BPE merges load only on a miss.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from mll_index.models.zeroshot import PromptCheck, check_prompt_rows, clip_token_rows, zero_shot_templates

_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _vocabulary_tag() -> str:
    """Names the tokenizer the facts were computed with: open_clip's version (its vocabulary file)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"open_clip {version('open_clip_torch')}"
    except PackageNotFoundError:
        return "open_clip (unknown version)"


def _key(length: int, templates: Sequence[str], name: str) -> bytes:
    # surrogatepass: a name read from undecodable bytes still gets a key.
    text = "\x00".join([_vocabulary_tag(), str(length), *templates, name])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@lru_cache(maxsize=4)
def _db(path: str) -> sqlite3.Connection | None:
    """The facts' SQLite file (None where it cannot be opened: the check then runs uncached)."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS name_check (key BLOB PRIMARY KEY, cut INTEGER NOT NULL, "
                   "digest BLOB NOT NULL)")
        return db
    except (OSError, sqlite3.Error):
        return None


def default_path() -> Path:
    from mll_index.core.paths import cache_dir

    return cache_dir() / "prompt_checks.sqlite"


def _fresh_facts(written: Sequence[str], length: int, templates: list[str]) -> list[tuple[bool, bytes]] | None:
    """(cut, digest) of each prompt name, tokenized now; None without open_clip."""
    if clip_token_rows([], length) is None:
        return None
    out = []
    for name in written:
        cut = bool(check_prompt_rows(lambda texts: clip_token_rows(texts, length), [name], [name], templates).cut)
        rows = clip_token_rows([t.format(name=name) for t in templates], length)
        out.append((cut, hashlib.sha256(np.ascontiguousarray(rows).tobytes()).digest()))
    return out


def check_prompts_cached(class_names: Sequence[str], written: Sequence[str], length: int,
                         path: Path | None = None) -> PromptCheck | None:
    """What `zeroshot.check_prompt_rows` reports for CLIP's default tokenizer at `length` tokens,
    from facts kept per prompt name in `path` (default: <cache>/prompt_checks.sqlite); only the
    names not seen before are tokenized. None where open_clip is not installed.

    Args:
        class_names: the names reported; written: the names written into the prompts, one per class.
        length: the tokenizer's context length.
    """
    templates = zero_shot_templates()
    keys = [_key(length, templates, w) for w in written]
    db = _db(str(path or default_path()))
    known: dict[bytes, tuple[bool, bytes]] = {}
    if db is not None:
        with _LOCK:
            try:
                for i in range(0, len(keys), 500):
                    chunk = keys[i:i + 500]
                    rows = db.execute(f"SELECT key, cut, digest FROM name_check WHERE key IN "
                                      f"({','.join('?' * len(chunk))})", chunk).fetchall()
                    known.update({k: (bool(c), d) for k, c, d in rows})
            except sqlite3.Error:
                known = {}
    missing = [i for i, k in enumerate(keys) if k not in known]
    if missing:
        fresh = _fresh_facts([written[i] for i in missing], length, templates)
        if fresh is None:
            return None
        new = {keys[i]: fact for i, fact in zip(missing, fresh)}
        known.update(new)
        if db is not None:
            with _LOCK:
                try:
                    with db:
                        db.executemany("INSERT OR REPLACE INTO name_check VALUES (?, ?, ?)",
                                       [(k, int(c), d) for k, (c, d) in new.items()])
                except sqlite3.Error:
                    pass    # a read-only or busy cache: the answer stands, it is just not kept
    groups: dict[bytes, list[str]] = {}
    for name, key in zip(class_names, keys):
        groups.setdefault(known[key][1], []).append(name)
    cut = tuple(name for name, key in zip(class_names, keys) if known[key][0])
    return PromptCheck(length, cut, tuple(tuple(g) for g in groups.values() if len(g) > 1))
