"""Match class names to graph nodes: the one scoring rule behind `mll-index match` and selection.

A class name is read as users write it (`read_class_name`): underscores and hyphens as
spaces, a parenthesised sense kept apart (`bat (animal)`, `salmon (food)`, `cooler (for
food)`), names after a slash as other names of the class, plurals and one-word/two-word
spellings folded. Its lemma hits are the graph nodes that have the whole name, a spelling of
it, or a run of its words (the head noun of `horse carriage`, `crane` in `crane bird`) as a
lemma. Every node of the index then scores (`Matcher.node_scores`)

    cosine(class captions, node captions) + lexname prior(node)
        + for a lemma hit, times the share of the name's words the lemma covers:
              kind bonus (exact, spelling variant, head noun, other part)
            + sense weight * the sense's share of WordNet's tagged uses of the lemma
            + hyponym weight * ln(1 + the sense's hyponyms)
            + parent weight * cosine(class captions, the sense's nearest hypernym node)
        + evidence weight * share of the name's other words found in the node's lemmas,
          gloss or hypernyms' lemmas ("horse" for carriage.n.02)
        + is-a weight if the parenthesised sense names a hypernym or the lexicographer
          file ("animal" for bat.n.01, "food" for salmon.n.03)
        - negated weight * share of ruled-out words found ("pin (non jewelry)")

and a head-noun hit lends its bonus to the nodes below it among the class's nearest, where
the whole name is no lemma ("stop sign" reaches street_sign.n.01 through sign.n.02). The
sense share makes the everyday sense win (dog.n.01 has 42 tagged uses, the man 0) unless
the name says otherwise; the constants, and how each was chosen, are in
data/match_settings.json.

Methods (compared in bench/match_lvis.py and bench/match_imagenet.py):
    lemma     exact lemma lookup (the name and its spelling variants), WordNet sense order (no embedding);
    name      cosine of the bare name's embedding to the node embeddings;
    captions  cosine of the class's expanded captions (pooled) to the node embeddings;
    combined  the full score above (the default).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from importlib import resources
from typing import Any, Literal

import numpy as np

from mll_index.core.userfiles import normalize_class_name
from mll_index.errors import InputError
from mll_index.index.captions import CaptionExpander, clean_class_names
from mll_index.index.embed import EmbeddingCache, TextEmbedder, embed_classes
from mll_index.index.graph import normalize_name
from mll_index.index.node_index import NodeIndex
from mll_index.index.senses import SenseIndex, sense_index, sense_key_lemma

MatchMethod = Literal["lemma", "name", "captions", "combined"]
METHODS: tuple[str, ...] = ("lemma", "name", "captions", "combined")
HitKind = Literal["exact", "variant", "head", "part"]
HIT_KINDS: tuple[str, ...] = ("exact", "variant", "head", "part")
# A class whose best node scores below this is reported as a weak match (`select` and `match`; see is_weak).
LOW_CONFIDENCE = 0.45
MAX_WORDS = 8  # runs of words are looked up for names of at most this many words (longer ones: whole name only)

# Words that say how a name is meant, not what it names ("type of shoe", "for the kitchen").
STOP_WORDS = frozenset("""
a an the of for on in at to with without and or by from as into onto over under near off out up
its it this that these those some any other type types kind kinds sort sorts style like used use such e g i
""".split())
# A name of these words alone names nothing and is refused. Spatial words are not among them:
# "near", "far", "on", "off", "up" are class names of real benchmarks (KITTI's distances, switch states).
FUNCTION_WORDS = frozenset("a an the of for to with without and or by from as its this that these those some any".split())
NEGATIONS = frozenset({"non", "not", "no"})
PURPOSE_WORDS = frozenset({"for", "on", "at", "in", "of", "used"})  # '(for food)' says what it is for, not what it is
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_PARENS = re.compile(r"\(([^()]*)\)")


@dataclass(frozen=True)
class Match:
    """One node matched to a class: its position in the node index, wnid, synset, score, and
    whether the class name (or a spelling of it: plural, joined, split) is a lemma of the node."""

    node: int
    wnid: str
    synset: str
    score: float
    lemma_match: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=1)
def match_settings() -> dict[str, Any]:
    """The scoring constants of the combined method (data/match_settings.json)."""
    return json.loads(resources.files("mll_index").joinpath("data/match_settings.json").read_text())


# ---------------------------------------------------------------------------------------
# Reading a class name


@dataclass(frozen=True)
class ClassName:
    """A class name read for matching.

    text: the name as given, whitespace folded (what is embedded and reported);
    words: the words of the name without its parenthesised sense, folded like lemmas
        ('Bat_(animal)' → ('bat',));
    sense_words: the content words of the parenthesised sense or of what follows a comma
        (('animal',)); purpose: the sense says what the thing is used for or where ('cooler (for food)'),
        so its words are not the thing's category;
    negated_words: the words a parenthesised sense rules out ('pin (non jewelry)' → ('jewelry',));
    alternatives: other names of the class, after a slash ('baluster / handrail' → (('handrail',),)).
    """

    text: str
    words: tuple[str, ...]
    sense_words: tuple[str, ...] = ()
    negated_words: tuple[str, ...] = ()
    purpose: bool = False
    alternatives: tuple[tuple[str, ...], ...] = ()

    @property
    def category_words(self) -> tuple[str, ...]:
        """Words naming the thing's category: the parenthesised sense ('salmon (food)'); for a sense
        that says what the thing is for ('cooler (for food)', 'knocker (on a door)'), 'artifact':
        a thing made for a use."""
        return ("artifact",) if self.purpose else self.sense_words

    @property
    def base(self) -> str:
        """The words as one lexicon key ('shower head')."""
        return " ".join(self.words)


def _fold(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return folded.replace("\u2019", "'").lower()


def _words(text: str) -> list[str]:
    return _WORD.findall(_fold(text))


def _content(words: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The words that carry meaning (stop words dropped), and those after a negation ('non jewelry')."""
    kept: list[str] = []
    negated: list[str] = []
    target = kept
    for w in words:
        if w in NEGATIONS:
            target = negated
        elif w not in STOP_WORDS:
            target.append(w)
    return tuple(kept), tuple(negated)


# A selection reads each class name at several steps, and a service sees the same names again and
# again: the reading (a pure function of the text) is kept for the most recent names.
@lru_cache(maxsize=1 << 14)
def read_class_name(name: str, position: int | None = None) -> ClassName:
    """Read a class name ('bat_(animal)', 'Golden Retrievers', 'shower-head').

    The name is first normalised as every class name is (`userfiles.normalize_class_name`: NFKC,
    invisible characters removed, whitespace collapsed).

    Args:
        position: the name's line or position, for the error message.
    Raises:
        InputError: when the name holds no word but stop words and punctuation ('of the', '???'),
            is empty once cleaned, or is not valid text.
    """
    where = f"class name {position}" if position is not None else "class name"
    text = " ".join(normalize_class_name(name, where).replace("_", " ").split())
    senses = _PARENS.findall(text)
    base = _PARENS.sub(" ", text)
    if "," in base:        # 'crane, bird': what follows the comma says which crane
        base, _, rest = base.partition(",")
        senses.append(rest)
    base, *others = base.split("/")   # 'baluster / handrail': two names for one class
    alternatives = tuple(w for w in (tuple(_words(o)) for o in others) if any(x not in STOP_WORDS for x in w))
    words = tuple(_words(base))
    sense_words: list[str] = []
    negated_words: list[str] = []
    purpose = False
    for sense in senses:
        said = _words(sense)
        purpose = purpose or bool(said and said[0] in PURPOSE_WORDS)
        kept, negated = _content(said)
        sense_words += kept
        negated_words += negated
    if not any(w not in STOP_WORDS for w in words) and alternatives:
        words, alternatives = alternatives[0], alternatives[1:]
    if not any(w not in STOP_WORDS for w in words):
        if sense_words:
            words, sense_words = tuple(sense_words), []   # '(animal)': the parenthesis is the name
        elif not any(w not in FUNCTION_WORDS for w in words):
            raise InputError(f"{where} ({text!r}) has no word to match: only stop words or punctuation")
    return ClassName(text, words, tuple(sense_words), tuple(negated_words), purpose, alternatives)


# ---------------------------------------------------------------------------------------
# Lemma hits


@dataclass(frozen=True)
class LemmaHit:
    """A node that has the name, a variant of it, or a run of its words as a lemma.

    kind: exact (the name itself), variant (a plural, joined or split spelling), head (a run
    of words ending the name: 'carriage' in 'horse carriage'), part (another run: 'crane' in
    'crane bird'); coverage: the share of the name's content words the lemma covers;
    count, total: the sense's tagged uses in WordNet, and those of all the lemma's noun senses;
    sense_number: WordNet's sense number of the lemma (1 = first); evidence: the share of the
    name's other words and parenthesised sense found among the node's words (its lemmas, gloss
    and hypernyms' lemmas); is_a: the parenthesised sense names a hypernym of the node or its
    lexicographer file ('drum (musical instrument)': drum.n.01 is a musical instrument;
    'salmon (food)': salmon.n.03 is in noun.food); negated: the share of ruled-out words found.
    """

    position: int
    row: int
    kind: HitKind
    coverage: float
    count: int
    total: int
    sense_number: int
    evidence: float
    is_a: bool = False
    negated: float = 0.0


def _stem(word: str) -> str:
    """A crude singular for comparing words (both sides are stemmed alike): 'horses' → 'horse'."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


@dataclass
class Matcher:
    """The combined score over one node index; holds what is computed once per index.

    Open one per index (`matcher_for`) and keep it: selection does, `match_names` makes one
    per call. The per-name work (lexicon and sense look-ups) is cached by class name.
    """

    index: NodeIndex
    settings: dict[str, Any] = field(default_factory=match_settings)
    senses: SenseIndex = field(default_factory=sense_index)
    _hit_cache: dict[ClassName, tuple[LemmaHit, ...]] = field(default_factory=dict, repr=False)
    _node_words: dict[int, frozenset[str]] = field(default_factory=dict, repr=False)
    _lemma_word_cache: dict[int, frozenset[str]] = field(default_factory=dict, repr=False)
    _ancestors: dict[int, frozenset[int]] = field(default_factory=dict, repr=False)
    _parents: dict[int, tuple[int, ...]] = field(default_factory=dict, repr=False)

    @cached_property
    def prior(self) -> np.ndarray:
        """(n_nodes,) float32 additive prior by lexicographer file (noun.person, noun.act, ...)."""
        table = self.settings["lexname_prior"]
        g = self.index.graph
        names, which = np.unique(np.array(g.lexnames)[np.asarray(g.nodes, np.int64)], return_inverse=True)
        return np.array([table.get(str(n), 0.0) for n in names], np.float32)[which]

    @cached_property
    def _apostrophes(self) -> dict[str, list[str]]:
        """Lexicon keys with an apostrophe by their letters alone ('jackolantern' → ["jack o' lantern"])."""
        out: dict[str, list[str]] = {}
        for key in self.index.graph.lexicon:
            if "'" in key:
                out.setdefault(key.replace(" ", "").replace("'", ""), []).append(key)
        return out

    def _is_a(self, row: int, category: tuple[str, ...]) -> bool:
        """Whether the category words name the row's lexicographer file, or (the whole phrase, or its
        last word) a lemma of one of its hypernyms."""
        if not category:
            return False
        g = self.index.graph
        if g.lexnames[row].partition(".")[2] in category:
            return True
        wanted = {" ".join(_stem(w) for w in category), _stem(category[-1])}
        return any(" ".join(_stem(w) for w in _words(lemma)) in wanted
                   for r in self.ancestors_of(row) for lemma in g.lemmas[r])

    def _lemma_words(self, row: int) -> frozenset[str]:
        cached = self._lemma_word_cache.get(row)
        if cached is None:
            cached = frozenset(_stem(w) for w in _words(" ".join(self.index.graph.lemmas[row])))
            self._lemma_word_cache[row] = cached
        return cached

    def words_of(self, row: int) -> frozenset[str]:
        """Stemmed words of a taxonomy row's lemmas and gloss and of all its hypernyms' lemmas."""
        cached = self._node_words.get(row)
        if cached is None:
            words = set(_stem(w) for w in _words(self.index.graph.glosses[row])) | self._lemma_words(row)
            for r in self.ancestors_of(row):
                words |= self._lemma_words(r)
            cached = self._node_words[row] = frozenset(words)
        return cached

    def _keys(self, words: Sequence[str]) -> list[tuple[str, bool]]:
        """Lexicon keys a run of words may stand for: (key, is a variant), the literal spelling first."""
        g = self.index.graph
        literal = " ".join(words)
        forms = [literal]
        forms += [" ".join([*words[:-1], base]) for base in self.senses.plural_bases(words[-1])]
        out: list[tuple[str, bool]] = []
        for i, form in enumerate(forms):
            if form in g.lexicon:
                out.append((form, i > 0))
                if " " not in form and "'" not in form:
                    continue    # a one-word lemma: WordNet lists its split spellings with it
            # Joined and split spellings: 'shower head' / 'showerhead', 'crockpot' / 'crock pot',
            # 'jack o lantern' / "jack-o'-lantern".
            parts = form.split()
            spellings = ["".join(parts)] + [" ".join([*parts[:j], parts[j] + parts[j + 1], *parts[j + 2:]])
                                            for j in range(len(parts) - 1)] if len(parts) > 1 else []
            if len(parts) == 1:
                spellings += [f"{form[:j]} {form[j:]}" for j in range(2, len(form) - 1)]
            out += [(key, True) for key in spellings if key != form and key in g.lexicon]
            out += [(key, True) for key in self._apostrophes.get(form.replace(" ", "").replace("'", ""), [])]
        return list(dict.fromkeys(out))

    def _sense_counts(self, key: str, rows: Sequence[int]) -> tuple[dict[int, int], int, dict[int, int]]:
        """Per row the lemma's tagged uses in that sense, their total over all its noun senses, and
        per row WordNet's sense number."""
        g = self.index.graph
        surfaces = {sense_key_lemma(lemma) for r in rows for lemma in g.lemmas[r] if normalize_name(lemma) == key}
        counts: dict[str, int] = {}
        numbers: dict[str, int] = {}
        for surface in surfaces or {sense_key_lemma(key)}:
            for s in self.senses.noun_senses(surface):
                counts[s.wnid] = counts.get(s.wnid, 0) + s.count
                numbers[s.wnid] = min(numbers.get(s.wnid, s.sense_number), s.sense_number)
        number = {r: numbers.get(g.wnids[r], rank + 1) for rank, r in enumerate(rows)}
        return {r: counts.get(g.wnids[r], 0) for r in rows}, sum(counts.values()), number

    def lemma_hits(self, name: ClassName) -> list[LemmaHit]:
        """The name's lemma hits among the index's nodes, at most one per node (its best kind)."""
        return list(self._hits(name))

    def _hits(self, name: ClassName) -> tuple[LemmaHit, ...]:
        cached = self._hit_cache.get(name)
        if cached is None:
            cached = self._hit_cache[name] = self._find_hits(name)
        return cached

    def _find_hits(self, name: ClassName) -> tuple[LemmaHit, ...]:
        best: dict[int, tuple[int, LemmaHit]] = {}
        ruled_out = {_stem(w) for w in name.negated_words}
        for words in (name.words, *name.alternatives):
            for hit in self._word_hits(words, name, ruled_out):
                rank = HIT_KINDS.index(hit.kind)
                p = hit.position
                if p not in best or (rank, -hit.coverage) < (best[p][0], -best[p][1].coverage):
                    best[p] = (rank, hit)
        return tuple(h for _, h in best.values())

    def _word_hits(self, words: tuple[str, ...], name: ClassName, ruled_out: set[str]) -> list[LemmaHit]:
        """Hits of one spelling of the name: the whole, then every run of its words."""
        g = self.index.graph
        pos = g.node_position
        content = [w for w in words if w not in STOP_WORDS]
        n = len(words)
        spans = [(0, n)]
        if 1 < n <= MAX_WORDS:
            spans += [(i, j) for i in range(n) for j in range(i + 1, n + 1) if (i, j) != (0, n)]
        out = []
        for i, j in spans:
            run = words[i:j]
            if run[0] in STOP_WORDS or run[-1] in STOP_WORDS:
                continue
            whole = (i, j) == (0, n)
            covered = sum(w not in STOP_WORDS for w in run) / max(len(content), 1)
            others = [] if whole else [w for w in content if w not in run]
            context = {_stem(w) for w in [*others, *name.sense_words]}
            for key, variant in self._keys(run):
                rows = g.lexicon[key]
                count, total, number = self._sense_counts(key, rows)
                kind = ("variant" if variant else "exact") if whole else ("head" if j == n else "part")
                for r in rows:
                    p = pos.get(r)
                    if p is None:
                        continue
                    words_r = self.words_of(r)
                    evidence = len(context & words_r) / len(context) if context else 0.0
                    negated = len(ruled_out & words_r) / len(ruled_out) if ruled_out else 0.0
                    out.append(LemmaHit(p, r, kind, covered, count[r], total, number[r], evidence,
                                        self._is_a(r, name.category_words), negated))
        return out

    def ancestors_of(self, row: int) -> frozenset[int]:
        """Taxonomy rows of every hypernym of `row`, through all paths (not `row` itself)."""
        cached = self._ancestors.get(row)
        if cached is None:
            g = self.index.graph
            seen: set[int] = set()
            stack = list(g.hypernyms[row])
            while stack:
                r = stack.pop()
                if r not in seen:
                    seen.add(r)
                    stack.extend(g.hypernyms[r])
            cached = self._ancestors[row] = frozenset(seen)
        return cached

    def parent_positions(self, row: int) -> tuple[int, ...]:
        """Node positions of a row's nearest hypernyms in the index (its parents, or the nearest
        ancestors that are nodes); () for a row with no ancestor in the index."""
        cached = self._parents.get(row)
        if cached is None:
            g = self.index.graph
            pos = g.node_position
            found: list[int] = []
            frontier, seen = list(g.hypernyms[row]), set()
            while frontier and not found:
                seen.update(frontier)
                found = [pos[r] for r in frontier if r in pos]
                frontier = [h for r in frontier for h in g.hypernyms[r] if h not in seen]
            cached = self._parents[row] = tuple(found)
        return cached

    def hit_bonus(self, hit: LemmaHit, parent_cosine: float) -> float:
        """What a lemma hit adds to the node's cosine (see the module docstring).

        Args:
            parent_cosine: the class's cosine to the node's nearest hypernym in the index.
        """
        s = self.settings
        share = hit.count / (hit.total + s["sense_damping"])
        kinds = float(np.log1p(self.index.graph.hyponyms.count(hit.row)))
        # What the lemma says about the sense counts as much as the lemma covers of the name.
        return (hit.coverage * (s["kind_bonus"][hit.kind] + s["sense_weight"] * share + s["hyponym_weight"] * kinds
                                + s["parent_weight"] * parent_cosine)
                + s["evidence_weight"] * hit.evidence + s["is_a_weight"] * hit.is_a
                - s["negated_weight"] * hit.negated)

    def node_scores(self, queries: np.ndarray, names: Sequence[ClassName]) -> np.ndarray:
        """The combined score of every node for each class.

        A head hit ('carriage' in 'horse carriage') also lends its bonus to the nodes below it
        among the class's `candidates` nearest nodes: a kind of carriage is still a carriage,
        and the name's other words may say which kind.

        Args:
            queries: (n_q, d) float32 unit class embeddings from the index's embedder (`embed_classes`).
            names: the n_q classes, read by `read_class_name`.
        Returns:
            (n_q, n_nodes) float32; column i is node i of the index.
        """
        queries = np.asarray(queries, np.float32)
        cosine = queries @ np.asarray(self.index.vectors).T
        scores = cosine + self.prior
        depth = min(int(self.settings["candidates"]), scores.shape[1] - 1)
        nodes = self.index.graph.nodes
        for q, name in enumerate(names):
            hits = self._hits(name)
            if not hits:
                continue
            bonus = np.zeros(len(hits), np.float32)
            for i, hit in enumerate(hits):
                parents = self.parent_positions(hit.row)
                # A node with no hypernym in the index (a root of the node set) is its own category.
                parent = float(cosine[q, list(parents)].max()) if parents else float(cosine[q, hit.position])
                bonus[i] = self.hit_bonus(hit, parent)
            # Lent only where the whole name is no lemma: 'Christmas tree' is its own node, not a tree.
            exact = any(hit.kind in ("exact", "variant") for hit in hits)
            heads = {} if exact else {hit.row: float(b) for hit, b in zip(hits, bonus) if hit.kind == "head"}
            if heads and depth > 0:
                lent: dict[int, float] = {}
                for p in np.argpartition(-scores[q], depth)[:depth]:
                    above = self.ancestors_of(nodes[p]) & heads.keys()
                    if above:
                        lent[int(p)] = max(heads[r] for r in above)
                for p, b in lent.items():
                    scores[q, p] += b
            for hit, b in zip(hits, bonus):
                scores[q, hit.position] += b
        return scores


def matcher_for(index: NodeIndex) -> Matcher:
    """A Matcher over an index with the shipped settings."""
    return Matcher(index)


# ---------------------------------------------------------------------------------------
# Top-k matches


def read_class_names(names: Sequence[str], *, unique: bool = False) -> list[ClassName]:
    """Check and read user class names; duplicates are allowed unless `unique`.

    Raises:
        InputError: an empty, over-long or stop-word-only name (naming its position), or a repeated one when `unique`.
    """
    cleaned = clean_class_names(names, unique=unique)
    return [read_class_name(name, i) for i, name in enumerate(cleaned, 1)]


def _to_matches(index: NodeIndex, positions: Sequence[int], scores: Sequence[float],
                lemma_nodes: set[int]) -> list[Match]:
    g = index.graph
    return [Match(int(p), g.wnids[g.nodes[p]], g.synsets[g.nodes[p]], round(float(s), 4), int(p) in lemma_nodes)
            for p, s in zip(positions, scores) if p >= 0]


def top_nodes(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k highest scores of each row, best first, ties to the lower position.

    Args:
        scores: (n_q, n) float32, from `Matcher.node_scores`; left as it was.
    Returns:
        positions (n_q, min(k, n)) int64 and their scores (n_q, min(k, n)) float32.
    """
    n_q, n = scores.shape
    k = min(k, n)
    if k > 16:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (n_q, 1))
        picked = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -picked), axis=1)
        positions = np.take_along_axis(part, order, axis=1).astype(np.int64)
        return positions, np.take_along_axis(scores, positions, axis=1)
    # For the few that matching asks for, k passes of argmax (the first of equal maxima) beat a
    # partition of every row several times over.
    rows = np.arange(n_q)
    positions = np.empty((n_q, k), np.int64)
    values = np.empty((n_q, k), scores.dtype)
    for i in range(k):
        j = scores.argmax(axis=1)
        positions[:, i], values[:, i] = j, scores[rows, j]
        scores[rows, j] = -np.inf
    scores[rows[:, None], positions] = values
    return positions, values


def match_names(index: NodeIndex, names: Sequence[str], embedder: TextEmbedder | None = None, *, k: int = 5,
                method: MatchMethod = "combined", expander: CaptionExpander | None = None,
                cache: EmbeddingCache | None = None, matcher: Matcher | None = None) -> list[list[Match]]:
    """Top-k nodes for each class name, best first.

    Args:
        index: the node index; `embedder` must be the one it was built with (not needed for `lemma`).
        names: class names as users type them; a name may repeat (each distinct name is matched once).
        k: matches per name (fewer where the method finds fewer, e.g. `lemma`).
        matcher: a Matcher over `index` to reuse across calls.
    Returns:
        one list of Match per name, in input order.
    Raises:
        InputError: an unknown method, k < 1, an empty name or one of stop words only.
    """
    if method not in METHODS:
        raise InputError(f"unknown match method {method!r}; available: {list(METHODS)}")
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    read = read_class_names(names)
    distinct = list(dict.fromkeys(read))
    row = {c: i for i, c in enumerate(distinct)}
    matcher = matcher or Matcher(index)
    if method == "lemma":
        per_name = []
        for c in distinct:
            hits = sorted((h for h in matcher.lemma_hits(c) if h.kind in ("exact", "variant")),
                          key=lambda h: (HIT_KINDS.index(h.kind), h.sense_number))[:k]
            per_name.append(_to_matches(index, [h.position for h in hits], [1.0 / (i + 1) for i in range(len(hits))],
                                        {h.position for h in hits}))
        return [per_name[row[c]] for c in read]
    if embedder is None:
        raise InputError(f"match method {method!r} needs the index's text embedder")
    index.check_embedder(embedder)
    queries = embed_classes([c.text for c in distinct], embedder, expander=expander, cache=cache,
                            bare=(method == "name"))
    if method in ("name", "captions"):
        scores, positions = index.search(queries, k)
        per_name = [_to_matches(index, p, s, set()) for p, s in zip(positions, scores)]
    else:
        per_name = []
        for start in range(0, len(distinct), 256):     # bounded memory: 256 x n_nodes scores at a time
            block = distinct[start:start + 256]
            scores = matcher.node_scores(queries[start:start + 256], block)
            for c, top, best in zip(block, *top_nodes(scores, k)):
                lemma_nodes = {h.position for h in matcher.lemma_hits(c) if h.kind in ("exact", "variant")}
                per_name.append(_to_matches(index, top, best, lemma_nodes))
    return [per_name[row[c]] for c in read]


def is_weak(matcher: Matcher, name: str, best_score: float | None) -> bool:
    """Whether a class's match is too weak to trust: no match, a best score below LOW_CONFIDENCE,
    or a name none of whose words is a WordNet lemma (its match rests on the embedding alone, which
    finds some node for any string: 'qwzx blorf', a name in another script)."""
    return best_score is None or best_score < LOW_CONFIDENCE or not matcher.lemma_hits(read_class_name(name))
