"""The index layout: model ids map to label folders one-to-one, never onto the layout's own names,
and folders written by the older, lossy rule are still read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mll_index.core.layout import (
    MATRIX, MAX_NAME_BYTES, is_reserved, labels_dir, legacy_folder_name, model_folder_name, model_id_of_folder,
)
from mll_index.errors import IndexFormatError, InputError
from mll_index.labels.folders import label_folder, labeled_models, load_label, scan_labels
from mll_index.models.hub import load_hub
from tests.conftest import GOLDFISH, LAPTOP, TENCH
from tests.fakelabels import fake_label

WNIDS = [TENCH, GOLDFISH, LAPTOP]


@pytest.mark.parametrize("model_id", ["a/b", "a_b", "a b", "matrix", "MATRIX", ".hidden", ".", "..", "samples-x",
                                      "%41", "a~b", "ViT-B-32/laion2b_s34b_b79k", "hf-hub:timm/ViT-B-16",
                                      "模型-é", "tiny-vit-a"])
def test_round_trip(model_id: str) -> None:
    name = model_folder_name(model_id)
    assert model_id_of_folder(name) == model_id
    assert not is_reserved(name) and "/" not in name and name not in (".", "..")
    assert len(name.encode()) <= MAX_NAME_BYTES


def test_plain_ids_keep_their_name_and_lossy_pairs_part() -> None:
    assert model_folder_name("tiny-vit-a") == "tiny-vit-a"       # folders of plain ids are unchanged
    assert model_folder_name("a/b") != model_folder_name("a_b")
    assert legacy_folder_name("a/b") == legacy_folder_name("a_b") == "a_b"
    assert model_folder_name("matrix") != MATRIX


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=80))
def test_one_to_one(a: str, b: str) -> None:
    name = model_folder_name(a)
    assert model_id_of_folder(name) == (None if "~" in name else a)     # "~": cut and hashed (long ids)
    assert (name == model_folder_name(b)) == (a == b)
    assert not is_reserved(name) and len(name.encode()) <= MAX_NAME_BYTES


def test_long_ids_are_cut_and_hashed_within_the_limit() -> None:
    a, b = "x" * 300, "x" * 299 + "y"
    name_a, name_b = model_folder_name(a), model_folder_name(b)
    assert len(name_a.encode()) <= MAX_NAME_BYTES and name_a != name_b and "~" in name_a
    assert model_id_of_folder(name_a) is None                  # read from the folder's manifest instead
    wide = model_folder_name("é" * 200)                         # never cut inside a %XX escape
    assert len(wide.encode()) <= MAX_NAME_BYTES and "%" not in wide.split("~")[0][-2:]


def test_empty_id_is_refused() -> None:
    with pytest.raises(InputError, match="non-empty"):
        model_folder_name("")


def test_reserved_and_colliding_ids_are_labeled_apart(tmp_path: Path) -> None:
    index = tmp_path / "index"
    long_id = "org/" + "m" * 300
    for seed, model_id in enumerate(["a/b", "a_b", "matrix", ".hidden", long_id]):
        fake_label(index, model_id, WNIDS, seed=seed)
    assert set(labeled_models(index)) == {"a/b", "a_b", "matrix", ".hidden", long_id}
    assert load_label(index, "a/b").manifest["model"]["id"] == "a/b"
    assert load_label(index, long_id).manifest["model"]["id"] == long_id
    # The label matrix is still the matrix, holding all five models.
    from mll_index.labels.matrix import open_matrix

    assert sorted(open_matrix(index).model_ids) == sorted(labeled_models(index))
    assert all(len(p.name.encode()) <= MAX_NAME_BYTES for p in labels_dir(index).iterdir())


def test_legacy_folders_still_load_and_move_on_relabel(tmp_path: Path) -> None:
    index = tmp_path / "index"
    fake_label(index, "a/b", WNIDS, seed=1)
    # As an older version wrote it: the lossy name.
    (labels_dir(index) / "a%2Fb").rename(labels_dir(index) / "a_b")
    assert label_folder(index, "a/b").name == "a_b"
    assert labeled_models(index) == {"a/b": "fake6"}
    assert load_label(index, "a/b").model_id == "a/b"
    with pytest.raises(IndexFormatError, match="not of 'a_b'"):
        load_label(index, "a_b")                               # the folder holds a/b's label, not a_b's
    # Labeling a_b, whose folder that is now: a/b's label moves to its own folder first.
    fake_label(index, "a_b", WNIDS, seed=2)
    assert label_folder(index, "a/b").name == "a%2Fb" and label_folder(index, "a_b").name == "a_b"
    assert set(labeled_models(index)) == {"a/b", "a_b"}
    # Relabeling a model found under its old name writes the new one and drops the old.
    fake_label(index, "c:d", WNIDS, seed=3)
    (labels_dir(index) / "c%3Ad").rename(labels_dir(index) / "c_d")
    fake_label(index, "c:d", WNIDS, seed=4)
    assert not (labels_dir(index) / "c_d").exists() and label_folder(index, "c:d").name == "c%3Ad"


def test_a_renamed_folder_is_damaged_not_misread(tmp_path: Path) -> None:
    index = tmp_path / "index"
    fake_label(index, "m1", WNIDS)
    shutil.move(labels_dir(index) / "m1", labels_dir(index) / "m2")
    scan = scan_labels(index)
    assert scan.folders == {} and "names model 'm1'" in scan.damaged["m2"]


def test_hub_refuses_ids_whose_folders_collide(tmp_path: Path) -> None:
    hub = tmp_path / "hub.json"
    hub.write_text(json.dumps({"models": [{"id": "ViT-B", "arch": "ViT-B-32", "pretrained": "openai"},
                                          {"id": "a/b", "arch": "ViT-B-32", "pretrained": "openai"},
                                          {"id": "vit-b", "arch": "ViT-B-32", "pretrained": "openai"}]}))
    with pytest.raises(InputError, match=r"'vit-b'.*model #1 \('ViT-B'\)"):
        load_hub(hub, validate=False)
    hub.write_text(json.dumps({"models": [{"id": "a/b", "arch": "ViT-B-32", "pretrained": "openai"},
                                          {"id": "a_b", "arch": "ViT-B-32", "pretrained": "openai"},
                                          {"id": "matrix", "arch": "ViT-B-32", "pretrained": "openai"}]}))
    assert load_hub(hub, validate=False).ids == ("a/b", "a_b", "matrix")
