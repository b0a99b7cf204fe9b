"""The semantic graph: WordNet 3.0 noun synsets, keyed by ImageNet-style wnids.

A graph holds the whole noun taxonomy (82,115 synsets: lemmas, gloss, hypernyms, a lemma
lexicon in sense order) and a node set, the subset of synsets that are the graph's nodes.
It is built once with nltk (~15 s) and persisted as one JSON file, so that queries never
load nltk. The file's two largest columns are stored flat, because every command reads the file
and Python's JSON parser spends most of its time making small lists: lemmas as one tab-joined
string per synset, split on access, and the lexicon as sorted keys with offsets into one row list
(format 2; format 1 files, with nested lists, still load).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import unicodedata
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from importlib import resources
from pathlib import Path
from typing import Any

from mll_index.core.artifacts import atomic_file, read_json
from mll_index.core.paths import cache_dir
from mll_index.errors import IndexFormatError, InputError, ModelLoadError

log = logging.getLogger(__name__)

WNID_RE = re.compile(r"^n\d{8}$")
DEBIAN_WORDNET = Path("/usr/share/wordnet")
GRAPH_FORMAT_VERSION = 2
READABLE_GRAPH_FORMATS = (1, 2)


class Lexicon(Mapping[str, list[int]]):
    """Normalised lemma -> synset rows in WordNet sense order (most frequent sense first).

    Held as three flat columns, as stored: keys, offsets (len(keys) + 1) and rows.
    """

    def __init__(self, keys: list[str], offsets: list[int], rows: list[int]) -> None:
        if len(offsets) != len(keys) + 1:
            raise ValueError("lexicon offsets must be one longer than its keys")
        self._keys, self._offsets, self._rows = keys, offsets, rows

    @classmethod
    def from_dict(cls, entries: Mapping[str, Sequence[int]]) -> Lexicon:
        keys, offsets, rows = list(entries), [0], []
        for key in keys:
            rows.extend(entries[key])
            offsets.append(len(rows))
        return cls(keys, offsets, rows)

    def to_json(self) -> dict[str, list[Any]]:
        return {"keys": self._keys, "offsets": self._offsets, "rows": self._rows}

    @cached_property
    def _position(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self._keys)}

    def __getitem__(self, key: str) -> list[int]:
        i = self._position[key]
        return self._rows[self._offsets[i]:self._offsets[i + 1]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class JoinedLemmas(Sequence[list[str]]):
    """Per synset, its lemmas: stored tab-joined, split when read."""

    def __init__(self, joined: list[str]) -> None:
        self._joined = joined

    @classmethod
    def from_lists(cls, lemmas: Sequence[Sequence[str]]) -> JoinedLemmas:
        return cls(["\t".join(names) for names in lemmas])

    def to_json(self) -> list[str]:
        return self._joined

    def __getitem__(self, row):  # type: ignore[no-untyped-def, override]
        if isinstance(row, slice):
            return [names.split("\t") for names in self._joined[row]]
        return self._joined[row].split("\t")

    def __len__(self) -> int:
        return len(self._joined)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == list(b) for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]


def wnid_of(offset: int) -> str:
    """The ImageNet-style id of a noun synset: 'n' + its 8-digit WordNet 3.0 offset."""
    return f"n{offset:08d}"


def normalize_name(name: str) -> str:
    """Fold a class name or lemma for exact lookup: accents dropped, lower case, '_' and '-' as spaces."""
    folded = unicodedata.normalize("NFKD", name)
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return " ".join(folded.replace("_", " ").replace("-", " ").lower().split())


def prepare_wordnet(source: Path = DEBIAN_WORDNET, dest: Path | None = None) -> Path:
    """Lay WordNet 3.0 out where nltk reads it; returns the nltk data folder.

    nltk only reads corpora inside its data folders and needs a `lexnames` file that
    Debian's `wordnet-base` lacks, so the dictionary files are copied into
    `<cache>/nltk_data/corpora/wordnet` with the package's copy of `lexnames`.
    """
    dest = dest or cache_dir() / "nltk_data"
    target = dest / "corpora" / "wordnet"
    if (target / "data.noun").is_file() and (target / "lexnames").is_file():
        return dest
    if not (Path(source) / "data.noun").is_file():
        raise ModelLoadError(
            f"WordNet 3.0 not found in {source}: install the Debian packages wordnet-base and "
            "wordnet-sense-index (or point --wordnet at a folder holding data.noun and index.noun)"
        )
    tmp = target.with_name("wordnet.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for file in Path(source).iterdir():
        if file.is_file():
            shutil.copy2(file, tmp / file.name)
    lexnames = resources.files("mll_index").joinpath("data/wordnet_lexnames").read_text()
    (tmp / "lexnames").write_text(lexnames)
    shutil.rmtree(target, ignore_errors=True)
    os.rename(tmp, target)
    return dest


def _load_wordnet(source: Path | None = None) -> Any:
    """nltk's WordNet reader over the prepared data (imported here: nltk is slow to load)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    data = prepare_wordnet(source) if source else prepare_wordnet()
    # nltk refuses to read corpora outside its data path.
    if str(data) not in nltk.data.path:
        nltk.data.path.insert(0, str(data))
    with warnings.catch_warnings():
        # Debian's WordNet 3.0 has no Open Multilingual Wordnet data; only English lemmas are read.
        warnings.filterwarnings("ignore", message="The multilingual functions are not available")
        reader = WordNetCorpusReader(str(data / "corpora" / "wordnet"), None)
    if reader.get_version() != "3.0":
        raise ModelLoadError(f"{data}: WordNet {reader.get_version()} found, wnids need WordNet 3.0")
    return reader


@dataclass(frozen=True)
class NodeSet:
    """How the graph's nodes were chosen: a named recipe, an explicit wnid list, or an image folder."""

    kind: str  # "recipe" | "wnids" | "folder"
    value: str  # recipe name, "<n wnids>", or folder path
    wnids: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}


def node_set_recipes() -> dict[str, dict[str, Any]]:
    """The named node-set recipes shipped with the package (data/node_sets.json)."""
    text = resources.files("mll_index").joinpath("data/node_sets.json").read_text()
    return json.loads(text)


def recipe_node_set(name: str = "visual") -> NodeSet:
    """A named recipe; unknown names list the valid ones."""
    recipes = node_set_recipes()
    if name not in recipes:
        raise InputError(f"unknown node set {name!r}; available: {sorted(recipes)}")
    return NodeSet("recipe", name)


def wnid_node_set(wnids: Iterable[str]) -> NodeSet:
    """An explicit list of wnids; malformed ids are an error naming them."""
    ids = tuple(dict.fromkeys(w.strip() for w in wnids if w.strip()))
    bad = [w for w in ids if not WNID_RE.match(w)]
    if bad:
        raise InputError(f"not wnids (expected n + 8 digits): {bad[:5]}")
    if not ids:
        raise InputError("the wnid list is empty")
    return NodeSet("wnids", f"{len(ids)} wnids", ids)


def folder_node_set(root: Path) -> NodeSet:
    """The wnid-named sub-folders of an ImageFolder sample dataset (`root/<wnid>/*.jpg`)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    ids, skipped = [], []
    for child in sorted(root.iterdir()):
        if child.is_dir():
            (ids if WNID_RE.match(child.name) else skipped).append(child.name)
    if skipped:
        log.warning("%s: skipped %d folders not named by a wnid: %s", root, len(skipped), skipped[:5])
    if not ids:
        raise InputError(f"{root}: no sub-folder is named by a wnid (like n01440764)")
    return NodeSet("folder", str(root), tuple(ids))



class Hyponyms:
    """Each taxonomy row's direct hyponyms, as lists of rows in ascending order.

    Kept as one array of children sorted by parent with an offset per row: inverting 82,000
    hypernym lists into as many Python lists took 70 ms of a 0.35 s `match`, for the few rows a
    selection reads.
    """

    def __init__(self, hypernyms: Sequence[Sequence[int]]) -> None:
        import numpy as np

        counts = np.fromiter(map(len, hypernyms), np.int64, len(hypernyms))
        parents = np.fromiter(chain.from_iterable(hypernyms), np.int64, int(counts.sum()))
        children = np.repeat(np.arange(len(hypernyms), dtype=np.int64), counts)
        self._children = children[np.argsort(parents, kind="stable")]
        self._offsets = np.zeros(len(hypernyms) + 1, np.int64)
        np.cumsum(np.bincount(parents, minlength=len(hypernyms)), out=self._offsets[1:])

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, row: int) -> list[int]:
        return self._children[self._offsets[row]:self._offsets[row + 1]].tolist()

    def count(self, row: int) -> int:
        """How many direct hyponyms row has."""
        return int(self._offsets[row + 1] - self._offsets[row])


@dataclass
class Graph:
    """The WordNet noun taxonomy and the node set over it.

    Synsets are addressed by row (0..n_synsets-1) or by wnid. `nodes` lists the node set's
    rows in a fixed order: row i of a node index is node `nodes[i]`.
    """

    wnids: list[str]
    synsets: list[str]
    lemmas: Sequence[list[str]]
    glosses: list[str]
    lexnames: list[str]
    hypernyms: list[list[int]]
    lexicon: Mapping[str, list[int]]
    instances: list[int]
    nodes: list[int]
    node_set: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def row_of(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.wnids)}

    @cached_property
    def hyponyms(self) -> Hyponyms:
        """Row -> its direct hyponyms' rows, ascending (the hypernym lists inverted)."""
        return Hyponyms(self.hypernyms)

    @cached_property
    def node_position(self) -> dict[int, int]:
        """Row of the taxonomy -> position in the node set."""
        return {row: i for i, row in enumerate(self.nodes)}

    @property
    def node_wnids(self) -> list[str]:
        return [self.wnids[r] for r in self.nodes]

    def row(self, wnid: str) -> int:
        """The taxonomy row of a wnid; unknown ids are an InputError."""
        try:
            return self.row_of[wnid]
        except KeyError:
            hint = "" if WNID_RE.match(wnid) else " (a wnid is n + 8 digits, like n01440764)"
            raise InputError(f"unknown wnid {wnid!r}: not a WordNet 3.0 noun synset{hint}") from None

    def hypernym_path(self, wnid: str) -> list[str]:
        """wnids from the root (entity) down to `wnid`, following the first hypernym."""
        path, row = [], self.row(wnid)
        while True:
            path.append(self.wnids[row])
            if not self.hypernyms[row]:
                return path[::-1]
            row = self.hypernyms[row][0]

    def ancestors(self, wnid: str) -> set[str]:
        """wnids of every hypernym of `wnid`, through all hypernym paths (not `wnid` itself)."""
        seen: set[int] = set()
        stack = list(self.hypernyms[self.row(wnid)])
        while stack:
            row = stack.pop()
            if row not in seen:
                seen.add(row)
                stack.extend(self.hypernyms[row])
        return {self.wnids[r] for r in seen}

    def children(self, wnid: str) -> list[str]:
        """wnids of the direct hyponyms of `wnid` in the whole taxonomy."""
        return [self.wnids[c] for c in self.hyponyms[self.row(wnid)]]

    def describe(self, wnid: str) -> dict[str, Any]:
        """A node as plain data: wnid, synset, lemmas, gloss, hypernym path, children, in node set."""
        row = self.row(wnid)
        return {
            "wnid": wnid,
            "synset": self.synsets[row],
            "lemmas": self.lemmas[row],
            "gloss": self.glosses[row],
            "lexname": self.lexnames[row],
            "hypernym_path": [self.synsets[self.row_of[w]] for w in self.hypernym_path(wnid)],
            "children": [self.synsets[c] for c in self.hyponyms[row]],
            "in_node_set": row in self.node_position,
        }

    def lookup(self, name: str, nodes_only: bool = True) -> list[int]:
        """Rows whose lemmas equal `name` (after normalize_name), in WordNet sense order."""
        rows = self.lexicon.get(normalize_name(name), [])
        if nodes_only:
            rows = [r for r in rows if r in self.node_position]
        return rows

    def subgraph(self, node_rows: Sequence[int], node_set: dict[str, Any]) -> Graph:
        """The same taxonomy with another node set."""
        return Graph(self.wnids, self.synsets, self.lemmas, self.glosses, self.lexnames, self.hypernyms,
                     self.lexicon, self.instances, sorted(set(node_rows)), node_set)


def _descendants(graph: Graph, roots: Iterable[int]) -> set[int]:
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        row = stack.pop()
        if row not in seen:
            seen.add(row)
            stack.extend(graph.hyponyms[row])
    return seen


def build_taxonomy(wordnet: Path | None = None) -> Graph:
    """Read every WordNet 3.0 noun synset with nltk into a Graph with an empty node set."""
    wn = _load_wordnet(wordnet)
    synsets = list(wn.all_synsets("n"))
    row_of = {s.offset(): i for i, s in enumerate(synsets)}
    lexicon: Mapping[str, list[int]] = {}
    for name in wn.all_lemma_names("n"):
        rows = [row_of[s.offset()] for s in wn.synsets(name, "n")]
        lexicon.setdefault(normalize_name(name), [])
        for r in rows:
            if r not in lexicon[normalize_name(name)]:
                lexicon[normalize_name(name)].append(r)
    return Graph(
        wnids=[wnid_of(s.offset()) for s in synsets],
        synsets=[s.name() for s in synsets],
        lemmas=[[lemma.replace("_", " ") for lemma in s.lemma_names()] for s in synsets],
        glosses=[s.definition() for s in synsets],
        lexnames=[s.lexname() for s in synsets],
        hypernyms=[[row_of[h.offset()] for h in s.hypernyms() + s.instance_hypernyms()] for s in synsets],
        lexicon=Lexicon.from_dict(lexicon),
        # Instance synsets (a named city, a named person) have instance hypernyms only.
        instances=[i for i, s in enumerate(synsets) if s.instance_hypernyms() and not s.hypernyms()],
        nodes=[],
    )


def resolve_node_set(taxonomy: Graph, node_set: NodeSet) -> Graph:
    """Apply a node set to a taxonomy; unknown wnids are an InputError naming them."""
    if node_set.kind == "recipe":
        recipe = node_set_recipes()[node_set.value]
        by_name = {s: i for i, s in enumerate(taxonomy.synsets)}
        rows = _descendants(taxonomy, [by_name[s] for s in recipe["include"]])
        rows -= _descendants(taxonomy, [by_name[s] for s in recipe.get("exclude", [])])
        if not recipe.get("instances", True):
            rows -= set(taxonomy.instances)
    else:
        unknown = [w for w in node_set.wnids if w not in taxonomy.row_of]
        if unknown:
            where = f" (folders of {node_set.value})" if node_set.kind == "folder" else ""
            raise InputError(f"unknown wnids{where}: {unknown[:5]}: not WordNet 3.0 noun synsets")
        rows = {taxonomy.row_of[w] for w in node_set.wnids}
    return taxonomy.subgraph(sorted(rows), node_set.describe())


def load_taxonomy(wordnet: Path | None = None) -> Graph:
    """The WordNet noun taxonomy, read with nltk once and then from `<cache>/wordnet_taxonomy.json`."""
    cached = cache_dir() / "wordnet_taxonomy.json"
    if wordnet is None and cached.is_file():
        try:
            return load_graph(cached)
        except IndexFormatError as exc:
            log.warning("rebuilding the cached taxonomy: %s", exc)
    taxonomy = build_taxonomy(wordnet)
    if wordnet is None:
        save_graph(taxonomy, cached)
    return taxonomy


def build_graph(node_set: NodeSet | None = None, wordnet: Path | None = None) -> Graph:
    """Build the graph for a node set (default: the `visual` recipe) from WordNet 3.0."""
    return resolve_node_set(load_taxonomy(wordnet), node_set or recipe_node_set("visual"))


def save_graph(graph: Graph, path: Path, atomic: bool = True) -> None:
    """Persist a graph as one JSON file (columnar, compact: 2.5x faster to write than indented).

    Written through a temporary file and an fsync, unless `atomic` is False: for a file inside
    a directory that is itself swapped in whole (an index), where the swap is the commit.
    """
    data = {
        "graph_format_version": GRAPH_FORMAT_VERSION,
        "wordnet": "3.0",
        "node_set": graph.node_set,
        "wnids": graph.wnids,
        "synsets": graph.synsets,
        "lemmas": (graph.lemmas if isinstance(graph.lemmas, JoinedLemmas)
                   else JoinedLemmas.from_lists(graph.lemmas)).to_json(),
        "glosses": graph.glosses,
        "lexnames": graph.lexnames,
        "hypernyms": graph.hypernyms,
        "lexicon": (graph.lexicon if isinstance(graph.lexicon, Lexicon) else Lexicon.from_dict(graph.lexicon)).to_json(),
        "instances": graph.instances,
        "nodes": graph.nodes,
    }
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"
    if not atomic:
        Path(path).write_text(text, encoding="utf-8")
        return
    with atomic_file(Path(path)) as handle:
        handle.write(text)


def load_graph(path: Path) -> Graph:
    """Load a graph saved by save_graph; a wrong or damaged file is an IndexFormatError naming it."""
    data = read_json(Path(path))
    try:
        version = data["graph_format_version"]
        if version not in READABLE_GRAPH_FORMATS:
            raise IndexFormatError(f"{path}: graph format {version}, expected one of {READABLE_GRAPH_FORMATS}")
        if version == 1:
            lemmas: Sequence[list[str]] = data["lemmas"]
            lexicon: Mapping[str, list[int]] = Lexicon.from_dict(data["lexicon"])
        else:
            lemmas = JoinedLemmas(data["lemmas"])
            lexicon = Lexicon(data["lexicon"]["keys"], data["lexicon"]["offsets"], data["lexicon"]["rows"])
        graph = Graph(data["wnids"], data["synsets"], lemmas, data["glosses"],
                      data["lexnames"], data["hypernyms"], lexicon, data["instances"], data["nodes"],
                      data["node_set"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{path}: not a graph file (missing {exc})") from None
    if not (len(graph.wnids) == len(graph.synsets) == len(graph.lemmas) == len(graph.glosses) == len(graph.lexnames) == len(graph.hypernyms)):
        raise IndexFormatError(f"{path}: graph columns differ in length")
    return graph
