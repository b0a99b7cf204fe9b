"""WordNet's sense-tagged counts and noun exceptions, read from the WordNet folder at run time.

`index.sense` (Debian package wordnet-sense-index) lists every sense key with the number of
times that sense was tagged in the SemCor texts: ``dog%1:05:00:: 02084071 1 42`` says the
noun "dog" meant synset 02084071 (the animal) 42 times, while its person senses were never
tagged. The file is sorted by sense key, so a lemma's noun senses are found by binary search
in the memory-mapped file: nothing is parsed whole or prepared, and a lookup costs a few
microseconds. `noun.exc` (wordnet-base) maps irregular plurals to their lemma (mice → mouse).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mll_index.errors import ModelLoadError

DEBIAN_WORDNET = Path("/usr/share/wordnet")
# WordNet's own detachment rules for noun plurals (morphy), tried in this order.
NOUN_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y"), ("s", ""),
)


@dataclass(frozen=True)
class SenseCount:
    """One noun sense of a lemma: the synset's wnid, its WordNet sense number (1 = first) and tag count."""

    wnid: str
    sense_number: int
    count: int


def sense_key_lemma(lemma: str) -> str:
    """A lemma as sense keys spell it: lower case, spaces as underscores ('Golden retriever' → 'golden_retriever')."""
    return "_".join(lemma.lower().split())


class SenseIndex:
    """Noun sense counts from `<folder>/index.sense` and plural exceptions from `<folder>/noun.exc`."""

    def __init__(self, folder: Path = DEBIAN_WORDNET) -> None:
        self.folder = Path(folder)
        path = self.folder / "index.sense"
        try:
            with open(path, "rb") as handle:
                self._data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise ModelLoadError(f"{path} not found: install the Debian package wordnet-sense-index "
                                 "(WordNet's sense-tagged counts)") from None
        except ValueError:  # an empty file cannot be mapped
            raise ModelLoadError(f"{path} is empty: reinstall the Debian package wordnet-sense-index") from None
        self._exceptions: dict[str, list[str]] | None = None

    def _line_at_or_after(self, key: bytes) -> int:
        """Offset of the first line whose text is >= key (lines sorted bytewise)."""
        data, lo, hi = self._data, 0, len(self._data)
        while lo < hi:
            mid = (lo + hi) // 2
            start = data.rfind(b"\n", 0, mid) + 1
            end = data.find(b"\n", start)
            end = len(data) if end < 0 else end
            if data[start:end] < key:
                lo = end + 1
            else:
                hi = start
        return lo

    def noun_senses(self, lemma: str) -> list[SenseCount]:
        """The noun senses of a lemma (any spelling case), in file order; [] for a word WordNet lacks."""
        prefix = (sense_key_lemma(lemma) + "%1:").encode("utf-8", "replace")
        data, pos, out = self._data, self._line_at_or_after(prefix), []
        while data[pos:pos + len(prefix)] == prefix:
            end = data.find(b"\n", pos)
            end = len(data) if end < 0 else end
            fields = data[pos:end].split()
            if len(fields) >= 4:
                out.append(SenseCount("n" + fields[1].decode(), int(fields[2]), int(fields[3])))
            pos = end + 1
        return out

    def counts(self, lemma: str) -> dict[str, int]:
        """wnid → tagged uses of `lemma` in that sense (senses never tagged count 0)."""
        return {s.wnid: s.count for s in self.noun_senses(lemma)}

    def plural_bases(self, word: str) -> list[str]:
        """Candidate singulars of a lower-case noun: noun.exc's irregular forms, then morphy's suffix rules.

        The candidates are not checked against the lexicon: the caller keeps those that are lemmas.
        """
        if self._exceptions is None:
            self._exceptions = _read_exceptions(self.folder / "noun.exc")
        out = list(self._exceptions.get(word, []))
        if word.endswith("ss"):       # glass, dress: not plurals
            return out
        out += [word[: -len(suffix)] + ending for suffix, ending in NOUN_SUFFIXES
                if word.endswith(suffix) and len(word) > len(suffix) + 1]
        return list(dict.fromkeys(out))


def _read_exceptions(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return out  # regular plurals still work; only irregular ones (mice, geese) need the list
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out.setdefault(parts[0].replace("_", " "), []).extend(p.replace("_", " ") for p in parts[1:])
    return out


@lru_cache(maxsize=4)
def sense_index(folder: Path = DEBIAN_WORDNET) -> SenseIndex:
    """The SenseIndex of a WordNet folder, opened once per process."""
    return SenseIndex(folder)
