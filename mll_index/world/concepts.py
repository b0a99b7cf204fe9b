"""The concepts of the emoji world: emoji mapped by hand to WordNet 3.0 noun synsets.

The mapping is `data/emoji_wnids.tsv`, a reviewable table (emoji, its name, the synset, how
the match was made, whether a person checked it). Only concrete concepts with one right
synset are in it; everything downstream (sample folders named by wnid, task ground truth)
rests on it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mll_index.errors import InputError

MAPPING_FIELDS = ("unified", "emoji", "name", "category", "wnid", "synset", "lemma", "method", "checked")
METHODS = ("lemma-first-sense", "lemma-other-sense", "renamed", "manual")


@dataclass(frozen=True)
class EmojiConcept:
    """One emoji and its synset. `unified` is the code point(s) in hex, e.g. `1F415`."""

    unified: str
    emoji: str
    name: str
    category: str
    wnid: str
    synset: str
    lemma: str
    method: str
    checked: bool


def mapping_path() -> Path:
    return Path(str(resources.files("mll_index").joinpath("data/emoji_wnids.tsv")))


def load_concepts(path: Path | None = None) -> list[EmojiConcept]:
    """Read the emoji→synset mapping, in file order.

    Raises:
        InputError: a missing column, a malformed wnid, an unknown method or a wnid used twice,
            naming the file and line.
    """
    path = Path(path) if path else mapping_path()
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            missing = [f for f in MAPPING_FIELDS if f not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path}: missing column(s) {missing}; expected {list(MAPPING_FIELDS)}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable mapping file ({exc})") from None
    concepts: list[EmojiConcept] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        wnid = (row["wnid"] or "").strip()
        if len(wnid) != 9 or wnid[0] != "n" or not wnid[1:].isdigit():
            raise InputError(f"{path}:{line}: malformed wnid {wnid!r} (expected n + 8 digits)")
        if wnid in seen:
            raise InputError(f"{path}:{line}: wnid {wnid} is already used on line {seen[wnid]}")
        if row["method"] not in METHODS:
            raise InputError(f"{path}:{line}: unknown method {row['method']!r}; valid: {list(METHODS)}")
        seen[wnid] = line
        concepts.append(EmojiConcept(
            unified=row["unified"].strip().upper(), emoji=row["emoji"], name=row["name"].strip(),
            category=row["category"].strip(), wnid=wnid, synset=row["synset"].strip(),
            lemma=row["lemma"].strip(), method=row["method"], checked=(row["checked"] or "").strip() == "yes"))
    return concepts
