"""Checking a whole index: a flipped byte in any file, or a deleted label manifest, is named by path;
select never changes mode over a label it cannot use."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import IndexFormatError, InputError
from mll_index.index.node_index import add_nodes
from mll_index.published.store import import_published
from mll_index.selection.selector import open_selector, select_models
from mll_index.selection.task import make_task
from mll_index.verify import check_index
from tests.conftest import GOLDFISH, LAPTOP, PIZZA, REPO, TENCH, TIGER, run_cli
from tests.fakelabels import fake_label

FIRST = [TENCH, GOLDFISH, LAPTOP, TIGER, PIZZA]
TABBY = "n02123045"
MODEL = "org/vit-a"             # a model id with a character that is encoded in its folder name
FOLDER = "labels/org%2Fvit-a"


@pytest.fixture(scope="module")
def labeled(tmp_path_factory: pytest.TempPathFactory, index_dir: Path, embedder) -> Path:  # type: ignore[no-untyped-def]
    """A small index holding one of every kind of file: two node segments, two model labels and their
    sample table, a label matrix of two shards and a log, published labels. Tests copy it."""
    root = tmp_path_factory.mktemp("verify")
    index = root / "index"
    shutil.copytree(index_dir, index)
    add_nodes(index, [TABBY], embedder)
    fake_label(index, MODEL, FIRST, seed=1)
    fake_label(index, "rn", FIRST, seed=2)
    results = root / "results.csv"
    results.write_text("name,pretrained,Dogs,Food\nA,x,0.9,0.2\nB,y,0.3,0.8\n")
    names = root / "names.json"
    names.write_text(json.dumps({"Dogs": ["golden retriever", "pomeranian"], "Food": ["pizza", "apple pie"]}))
    import_published(index, results, [names], embedder=embedder)
    return index


@pytest.fixture()
def copy(labeled: Path, tmp_path: Path) -> Path:
    target = tmp_path / "index"
    shutil.copytree(labeled, target)
    return target


def flip_byte(file: Path) -> None:
    """Invert the bits of the byte in the middle of `file`."""
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def test_a_sound_index_has_no_problem(labeled: Path) -> None:
    assert check_index(labeled, checksums=True) == []
    assert check_index(labeled) == []


KINDS = ["manifest.json", "graph.json", "nodes.jsonl", "node_vectors.npy", "nodes-000001.jsonl",
         "node_vectors-000001.npy",
         *(f"{FOLDER}/{name}" for name in ["manifest.json", "counts.npy", "image_embeddings.npy", "topk_nodes.npy",
                                            "node_embeddings.npy", "topk_logits.npy", "true_logit.npy"]),
         "labels/samples-fake10.json",
         "labels/matrix/manifest.json", "labels/matrix/log-*.jsonl", "labels/matrix/shard-000001/manifest.json",
         "labels/matrix/shard-000001/counts.npy", "labels/matrix/shard-000000/rows.npy",
         "labels/matrix/shard-000000/cols.npy",
         *(f"published/{name}" for name in ["manifest.json", "models.json", "datasets.json", "classes.json",
                                            "class_vectors.npy", "accuracy.npy"])]


@pytest.mark.parametrize("kind", KINDS)
def test_a_flipped_byte_is_named(copy: Path, kind: str) -> None:
    [target] = copy.glob(kind)
    flip_byte(target)
    problems = check_index(copy, checksums=True)
    assert problems and any(p.startswith(str(target)) for p in problems), problems


def test_the_last_log_line_damaged_is_named(copy: Path) -> None:
    [log] = copy.glob("labels/matrix/log-*.jsonl")
    lines = log.read_bytes().split(b"\n")
    lines[-2] = lines[-2][:-3] + b"\xff\n"[:1] + lines[-2][-2:]     # readers skip it as if torn
    log.write_bytes(b"\n".join(lines))
    assert any(str(log) in p and "last line" in p for p in check_index(copy))


def test_a_changed_digit_in_a_label_manifest_is_named(copy: Path) -> None:
    manifest = copy / FOLDER / "manifest.json"
    text = manifest.read_text()
    assert '"top_k": 5,' in text
    manifest.write_text(text.replace('"top_k": 5,', '"top_k": 4,'))        # still valid JSON, same size
    problems = check_index(copy)
    assert any(p.startswith(f"{manifest}: its content differs from its own checksum") and "org/vit-a" in p
               for p in problems), problems


def test_a_changed_matrix_entry_is_named(copy: Path) -> None:
    [log] = copy.glob("labels/matrix/log-*.jsonl")
    log.write_text(log.read_text().replace('"arch":"fake"', '"arch":"faux"', 1))
    assert any("differs from its label folder" in p and MODEL in p for p in check_index(copy))


def test_a_deleted_label_manifest_is_named_and_select_refuses_to_change_mode(copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    (copy / FOLDER / "manifest.json").unlink()
    problems = check_index(copy)                      # without checksums too: info names it
    assert any(str(copy / FOLDER / "manifest.json") in p and "mll-index label --model org/vit-a" in p
               for p in problems), problems
    sel = open_selector(copy, embedder)
    task = make_task(["tench", "laptop"])
    for mode in ("restricted", "auto"):
        with pytest.raises(InputError, match=r"label of model 'org/vit-a' cannot be used .*manifest.json"):
            select_models(sel, task, mode=mode)
    chosen = select_models(sel, task, mode="counts")   # the counts mode reads the label matrix, and says so
    assert chosen.to_dict() and sel.store is not None and list(sel.store.damaged) == [MODEL]


def test_info_on_damage_and_on_folders_that_are_no_index(copy: Path, tmp_path: Path) -> None:
    sound = run_cli("info", "--verify", "--index", str(copy))
    assert sound.returncode == 0 and json.loads(sound.stdout)["label_matrix"]["models"] == 2
    flip_byte(copy / FOLDER / "counts.npy")
    flipped = run_cli("info", "--verify", "--index", str(copy))
    assert flipped.returncode == 1 and "Traceback" not in flipped.stderr
    assert f"{copy / FOLDER / 'counts.npy'}: checksum differs" in flipped.stderr
    assert json.loads(flipped.stdout)["counts"]                 # the node index is still shown
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, shown in ((str(empty), str(empty)), ("/", "/"), ("", str(REPO))):     # "": the current folder
        out = run_cli("info", "--index", folder)
        assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
        assert f"{shown} is not an mll-index index (no manifest.json)" in out.stderr


def test_cli_select_with_a_deleted_label_manifest(copy: Path) -> None:
    (copy / FOLDER / "manifest.json").unlink()
    refused = run_cli("select", "tench", "laptop", "--index", str(copy), "--mode", "restricted")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "'org/vit-a'" in refused.stderr and "mll-index label --model org/vit-a" in refused.stderr
    counts = run_cli("select", "tench", "laptop", "--index", str(copy), "--mode", "counts")
    assert counts.returncode == 0, counts.stderr
    assert "label folder of 'org/vit-a' cannot be used" in counts.stderr and json.loads(counts.stdout)["classes"]


def test_not_an_index_in_process(tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError, match="is not an mll-index index"):
        check_index(tmp_path)


# The findings (29, "Why" item 3): damage that parses, so only a checksum of the content names it.

@pytest.fixture()
def compacted(world_index: Path, tmp_path: Path) -> Path:
    """A copy of the world index with its top-nodes table written (what `labels compact` leaves)."""
    from mll_index.labels.topk_table import write_topk_tables

    target = tmp_path / "world"
    shutil.copytree(world_index, target)
    write_topk_tables(target)
    return target


def _answer(index: Path, task, **settings):  # type: ignore[no-untyped-def]
    return select_models(open_selector(index), task, k=1, **settings).to_dict()


def _refused_or_same(index: Path, before: dict, task, match: str, **settings) -> None:  # type: ignore[no-untyped-def]
    """select refuses with one clear line naming `match`: never an answer that silently differs."""
    with pytest.raises((IndexFormatError, InputError), match=match) as caught:
        after = _answer(index, task, **settings)
        assert after == before          # not reached where it refuses, as it must
    assert "\n" not in str(caught.value)


def test_top_nodes_overwritten_with_random_ids_are_named_and_refused(compacted: Path) -> None:
    task = make_task(["tiger", "lion", "banana"])
    before = _answer(compacted, task, mode="restricted")
    [table] = compacted.glob("labels/samples-*.topk")
    nodes = np.load(table / "topk_nodes.npy", mmap_mode="r+")
    rng = np.random.default_rng(0)
    third = nodes.shape[1] // 3
    nodes[:, :third] = rng.integers(0, nodes.max() + 1, size=nodes[:, :third].shape)
    nodes.flush()
    del nodes
    problems = check_index(compacted, checksums=True)
    assert f"{table / 'topk_nodes.npy'}: checksum differs from the manifest (corrupt)" in problems[0], problems
    _refused_or_same(compacted, before, task, "topk_nodes.npy: checksum differs.*labels compact", mode="restricted")


@pytest.mark.parametrize("signed", [True, False])
def test_a_reversed_models_list_of_the_top_nodes_table_is_named_and_refused(compacted: Path, signed: bool) -> None:
    from mll_index.verify import unchecked_parts

    task = make_task(["tiger", "lion", "banana"])
    before = _answer(compacted, task, mode="restricted")
    [table] = compacted.glob("labels/samples-*.topk")
    manifest = json.loads((table / "manifest.json").read_text())
    manifest["models"].reverse()
    if not signed:                  # a table written before it carried its own checksum
        del manifest["manifest_sha256"]
    (table / "manifest.json").write_text(json.dumps(manifest))
    problems = check_index(compacted)
    assert problems and all(p.startswith(str(table / "manifest.json")) for p in problems), problems
    _refused_or_same(compacted, before, task, "manifest.json: its (content|models)", mode="restricted")
    assert any("top-nodes table" in line for line in unchecked_parts(compacted)) == (not signed)


def test_renamed_sample_paths_are_named_and_a_domain_select_refuses(compacted: Path) -> None:
    task = make_task(["tiger", "lion"], domain="noto")
    before = _answer(compacted, task, mode="restricted")
    assert before["domain_images"]
    [table] = compacted.glob("labels/samples-*.json")
    data = json.loads(table.read_text())
    for image in data["images"]:            # the domain tag gone from every file name: it reads as untagged
        image["path"] = image["path"].replace("noto-", "n0to_")
    table.write_text(json.dumps(data))
    problems = check_index(compacted)
    assert any(p.startswith(f"{table}: its content differs from its checksum") for p in problems), problems
    _refused_or_same(compacted, before, task, "samples-.*json: its content differs", mode="restricted")


def test_an_old_sample_table_opens_and_is_listed_as_unchecked(compacted: Path) -> None:
    from mll_index.verify import unchecked_parts

    [table] = compacted.glob("labels/samples-*.json")
    assert unchecked_parts(compacted) == []
    data = json.loads(table.read_text())
    del data["sha256"], data["format_version"]
    table.write_text(json.dumps(data))
    assert check_index(compacted, checksums=True) == []
    assert _answer(compacted, make_task(["tiger", "lion"]), mode="restricted")["classes"]
    assert [line.split(":")[0] for line in unchecked_parts(compacted)] == [str(table)]


def _published_task():  # type: ignore[no-untyped-def]
    return make_task(["golden retriever", "pizza"])


def test_changed_published_rule_weights_are_named_and_refused(copy: Path) -> None:
    before = _answer(copy, _published_task(), labels="published")
    manifest_path = copy / "published" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["rule"]["neighbour_weight"], manifest["rule"]["text_weight"] = 0.9, 0.0
    manifest_path.write_text(json.dumps(manifest))
    problems = check_index(copy)
    assert problems == [f"{manifest_path}: its content differs from its own checksum (changed or corrupt)"], problems
    _refused_or_same(copy, before, _published_task(), "published/manifest.json: its content differs.*import",
                     labels="published")


def test_old_published_labels_open_and_are_listed_as_unchecked(copy: Path) -> None:
    from mll_index.verify import unchecked_parts

    manifest_path = copy / "published" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["manifest_sha256"]
    manifest_path.write_text(json.dumps(manifest))
    assert check_index(copy, checksums=True) == []
    assert _answer(copy, _published_task(), labels="published")["classes"]
    assert any(line.startswith(f"{manifest_path}: published labels without") for line in unchecked_parts(copy))


def test_a_deleted_published_manifest_is_named(copy: Path) -> None:
    from mll_index.published.store import unusable_published

    manifest = copy / "published" / "manifest.json"
    assert unusable_published(copy) is None
    manifest.unlink()
    assert any(p.startswith(str(manifest)) for p in check_index(copy)), check_index(copy)
    why = unusable_published(copy)
    assert why is not None and why.startswith(f"{manifest}: missing") and "published import" in why
    with pytest.raises(InputError, match="manifest.json: missing"):     # asked for by name: refused, never replaced
        _answer(copy, _published_task(), labels="published")
