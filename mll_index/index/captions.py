"""Caption expanders: a class name or a graph node becomes a few descriptive captions.

Three expanders share one Protocol:
    wordnet  offline default: prompt templates, WordNet lemmas, gloss and hypernym;
    llm      any OpenAI-compatible chat endpoint, answers cached on disk;
    file     a user's JSON file {class name or wnid: [captions]}, the form of the paper's GPT captions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mll_index.core.userfiles import check_name_count, normalize_class_name, read_user_json
from mll_index.errors import EndpointError, InputError
from mll_index.index.graph import Graph, normalize_name

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 200
# A bullet or a number with '.' or ')' and a space: a list marker, not part of the caption.
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")


@dataclass(frozen=True)
class Concept:
    """What an expander describes: a user's class name, or a graph node (with its WordNet facts)."""

    name: str
    wnid: str = ""
    lemmas: tuple[str, ...] = ()
    gloss: str = ""
    hypernym: str = ""


@lru_cache(maxsize=1)
def templates() -> dict[str, Any]:
    """The caption templates shipped in data/caption_templates.json."""
    return json.loads(resources.files("mll_index").joinpath("data/caption_templates.json").read_text())


def clean_class_names(names: Sequence[str], *, unique: bool = True) -> list[str]:
    """Check user class names and normalise them (`userfiles.normalize_class_name`: NFKC, invisible
    characters removed, whitespace collapsed); names empty once cleaned, over-long or not valid text,
    and more than `userfiles.MAX_NAMES` names, are an InputError naming the position, and so are
    duplicates when `unique` (a task's classes must differ; a list of names to match may repeat)."""
    check_name_count(names)
    cleaned, seen = [], {}
    for i, raw in enumerate(names, 1):
        name = normalize_class_name(raw, f"class name {i}")
        if len(name) > MAX_NAME_CHARS:
            raise InputError(f"class name {i} is {len(name)} characters long (at most {MAX_NAME_CHARS}): {name[:40]!r}...")
        key = normalize_name(name)
        if unique and key in seen:
            raise InputError(f"duplicate class name {name!r} (entries {seen[key]} and {i})")
        seen.setdefault(key, i)
        cleaned.append(name)
    return cleaned


def node_concept(graph: Graph, row: int) -> Concept:
    """The Concept of a taxonomy row (lemmas, gloss and first hypernym's lemma)."""
    parents = graph.hypernyms[row]
    return Concept(
        name=graph.lemmas[row][0],
        wnid=graph.wnids[row],
        lemmas=tuple(graph.lemmas[row]),
        gloss=graph.glosses[row],
        hypernym=graph.lemmas[parents[0]][0] if parents else "",
    )


@runtime_checkable
class CaptionExpander(Protocol):
    """Turns concepts into captions; `expander_id` names the expander and its settings."""

    expander_id: str

    def expand(self, concepts: Sequence[Concept]) -> list[list[str]]:
        """One non-empty list of captions per concept, in order."""
        ...


class WordNetExpander:
    """Offline captions from templates and WordNet facts.

    A node gets its lemmas, a photo template, its gloss and its hypernym. A class name gets
    the name and a photo template only: adding the glosses of every WordNet sense of an
    ambiguous name blurs it toward the wrong senses (measured in bench/match_imagenet.py).
    """

    expander_id = "wordnet-v1"

    def expand(self, concepts: Sequence[Concept]) -> list[list[str]]:
        t = templates()
        out = []
        for c in concepts:
            if c.wnid:
                fields = {"lemmas": ", ".join(c.lemmas[:3]), "lemma": c.name, "gloss": c.gloss,
                          "hypernym": c.hypernym or "thing"}
                out.append([s.format(**fields) for s in t["node"]])
            else:
                out.append([s.format(name=c.name) for s in t["class"]])
        return out


class FileExpander:
    """Captions read from a JSON file {key: [captions]}; keys are class names or wnids.

    A concept missing from the file falls back to `fallback` (WordNet by default), so that
    the paper's GPT captions for a few classes can be used beside the offline ones.
    """

    def __init__(self, path: Path, fallback: CaptionExpander | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: caption file not found")
        data = read_user_json(self.path, "caption file")
        if not isinstance(data, dict) or not all(
            isinstance(v, list) and v and all(isinstance(s, str) and s.strip() for s in v) for v in data.values()
        ):
            raise InputError(f"{self.path}: expected a JSON object {{class name: [non-empty caption strings]}}")
        # Keys are read as class names are, so a key typed with a byte-order mark or a zero-width
        # character still finds its class.
        self._captions = {k if k.startswith("n") and k[1:].isdigit()
                          else normalize_name(normalize_class_name(k, f"{self.path}: key {k[:40]!r}")): v
                          for k, v in data.items()}
        self._fallback = fallback or WordNetExpander()
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        self.expander_id = f"file:{self.path.name}#{digest}+{self._fallback.expander_id}"

    def expand(self, concepts: Sequence[Concept]) -> list[list[str]]:
        out: list[list[str] | None] = []
        missing = []
        for i, c in enumerate(concepts):
            found = self._captions.get(c.wnid) if c.wnid else None
            found = found or self._captions.get(normalize_name(c.name))
            out.append(list(found) if found else None)
            if not found:
                missing.append(i)
        if missing:
            for i, caps in zip(missing, self._fallback.expand([concepts[i] for i in missing])):
                out[i] = caps
        return [o or [] for o in out]


class _CaptionCache:
    """LLM answers on disk (SQLite), keyed by endpoint, model and prompt."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=60)
        self._db.execute("CREATE TABLE IF NOT EXISTS caption (key TEXT PRIMARY KEY, captions TEXT NOT NULL)")

    def get(self, key: str) -> list[str] | None:
        with self._lock:
            row = self._db.execute("SELECT captions FROM caption WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, captions: list[str]) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO caption VALUES (?, ?)", (key, json.dumps(captions)))


def parse_caption_reply(text: str) -> list[str]:
    """Captions from a chat reply: a JSON array of strings, possibly in a code fence, else one per line."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`")
        body = body.split("\n", 1)[1] if "\n" in body else body
    start, end = body.find("["), body.rfind("]")
    if start != -1 and end > start:
        try:
            items = json.loads(body[start:end + 1])
            if isinstance(items, list):
                return [" ".join(str(s).split()) for s in items if str(s).strip()]
        except json.JSONDecodeError:
            pass
    lines = [_LIST_MARKER.sub("", line).strip() for line in body.splitlines()]
    return [line for line in lines if line]


class LLMExpander:
    """Captions from an OpenAI-compatible chat endpoint (base URL + model; key from an env variable).

    Answers are cached on disk, so each concept is asked once per (endpoint, model, prompt).
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", n: int = 5,
                 cache_path: Path | None = None, requests_per_minute: float | None = None,
                 max_retries: int = 5, backoff_s: float = 1.0) -> None:
        from mll_index.core.openai_client import OpenAIClient
        from mll_index.core.paths import cache_dir

        self._client = OpenAIClient(base_url, os.environ.get(api_key_env), max_retries=max_retries,
                                    backoff_s=backoff_s, requests_per_minute=requests_per_minute)
        self.model, self.n, self.base_url = model, n, base_url.rstrip("/")
        self._cache = _CaptionCache(cache_path or cache_dir() / "llm_captions.sqlite")
        self.expander_id = f"llm:{self.base_url}#{model}/n{n}"

    def _messages(self, c: Concept) -> list[dict[str, str]]:
        t = templates()
        context = f" It is the WordNet concept '{', '.join(c.lemmas)}': {c.gloss}." if c.gloss else ""
        return [{"role": "system", "content": t["llm_system"]},
                {"role": "user", "content": t["llm_user"].format(n=self.n, name=c.name, context=context)}]

    def expand(self, concepts: Sequence[Concept]) -> list[list[str]]:
        out = []
        for c in concepts:
            messages = self._messages(c)
            key = hashlib.sha256(json.dumps([self.expander_id, messages]).encode()).hexdigest()
            captions = self._cache.get(key)
            if captions is None:
                reply = self._client.chat(self.model, messages)
                captions = parse_caption_reply(reply)[: self.n * 2]
                if not captions:
                    raise EndpointError(f"{self.base_url}: model {self.model} gave no captions for {c.name!r}: "
                                        f"{' '.join(reply.split())[:120]!r}")
                self._cache.put(key, captions)
            # The name itself stays first: a caption-only query drifts for rare words.
            out.append([c.name, *captions])
        return out


def make_expander(spec: str, *, base_url: str | None = None, model: str | None = None,
                  api_key_env: str = "OPENAI_API_KEY", caption_file: Path | None = None) -> CaptionExpander:
    """An expander by name: ``wordnet``, ``llm`` (needs base_url and model) or ``file`` (needs caption_file)."""
    if spec == "wordnet":
        return WordNetExpander()
    if spec == "llm":
        base_url = base_url or os.environ.get("MLL_INDEX_LLM_URL")
        model = model or os.environ.get("MLL_INDEX_LLM_MODEL")
        if not base_url or not model:
            raise InputError("the llm expander needs --llm-url and --llm-model (or $MLL_INDEX_LLM_URL, $MLL_INDEX_LLM_MODEL)")
        return LLMExpander(base_url, model, api_key_env=api_key_env)
    if spec == "file":
        if caption_file is None:
            raise InputError("the file expander needs --captions FILE (JSON {class name: [captions]})")
        return FileExpander(caption_file)
    raise InputError(f"unknown expander {spec!r}; available: ['file', 'llm', 'wordnet']")
