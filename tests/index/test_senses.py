"""Tests of mll_index.index.senses: WordNet's sense-tagged counts read from the installed WordNet folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from mll_index.errors import ModelLoadError
from mll_index.index.senses import SenseIndex, sense_index, sense_key_lemma

DOG, DOG_MAN, PERSON = "n02084071", "n10023039", "n00007846"


def test_counts_say_which_sense_is_meant() -> None:
    counts = sense_index().counts("dog")
    assert counts[DOG] == 42 and counts[DOG_MAN] == 0 and len(counts) == 7
    senses = {s.wnid: s for s in sense_index().noun_senses("Dog")}
    assert senses[DOG].sense_number == 1 and senses[DOG].count == 42


def test_lemmas_are_looked_up_as_sense_keys_spell_them() -> None:
    assert sense_key_lemma("Golden  retriever") == "golden_retriever"
    assert [s.wnid for s in sense_index().noun_senses("golden retriever")] == ["n02099601"]
    assert sense_index().counts("person")[PERSON] > 1000
    assert sense_index().noun_senses("qwzx") == []
    assert sense_index().noun_senses("zythum") == []         # sorts after every noun key


def test_the_first_and_last_keys_of_the_file_are_found(tmp_path: Path) -> None:
    (tmp_path / "index.sense").write_text("aa%1:06:00:: 00000001 1 3\nab%2:30:00:: 00000002 1 0\n"
                                          "zz%1:06:00:: 00000003 2 5\nzz%1:06:01:: 00000004 1 0\n")
    senses = SenseIndex(tmp_path)
    assert senses.counts("aa") == {"n00000001": 3}
    assert senses.counts("ab") == {}                         # a verb sense only
    assert senses.counts("zz") == {"n00000003": 5, "n00000004": 0}
    assert senses.counts("a") == {} and senses.counts("zzz") == {}


@pytest.mark.parametrize("word, bases", [("mice", ["mouse"]), ("trousers", ["trouser"]), ("cherries", ["cherry", "cherrie"]),
                                          ("boxes", ["box", "boxe"]), ("dress", []), ("glasses", ["glass", "glasse"])])
def test_plural_bases(word: str, bases: list[str]) -> None:
    assert sense_index().plural_bases(word)[: len(bases)] == bases


def test_a_missing_sense_index_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"index.sense not found: install the Debian package wordnet-sense-index"):
        SenseIndex(tmp_path)
    (tmp_path / "index.sense").write_text("")
    with pytest.raises(ModelLoadError, match="is empty"):
        SenseIndex(tmp_path)
