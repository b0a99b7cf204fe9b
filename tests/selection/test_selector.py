"""Model selection from labels: tasks, matching to labeled nodes, confusion, F1, smoothing, top-k, batch, CLI."""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import InputError
from mll_index.labels.folders import load_label, read_sample_table
from mll_index.labels.store import open_labels
from mll_index.selection.confusion import class_f1, node_confusion, smooth_scores
from mll_index.selection.selector import open_selector, select_batch, select_models
from mll_index.selection.task import make_task, read_batch_file, read_task_file, task_from_json
from tests.conftest import run_cli

TIGER, LION = "n02129604", "n02129165"


@pytest.fixture(scope="module")
def selector(world_index: Path, embedder):  # type: ignore[no-untyped-def]
    return open_selector(world_index, embedder)


@pytest.mark.parametrize("classes, message", [
    ([], "at least 2 classes"), (["dog"], "at least 2 classes"), (["dog", "cat", "dog"], "duplicate"),
    (["dog", "  "], "empty")])
def test_bad_tasks(classes: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        make_task(classes)


def test_task_formats(tmp_path: Path) -> None:
    assert task_from_json(["cow", "pig"]).classes == ("cow", "pig")
    t = task_from_json({"name": "farm", "classes": ["cow", {"name": "pig", "captions": ["a pink farm animal"]}],
                        "domain": "sketch"})
    assert t.name == "farm" and t.captions == {"pig": ("a pink farm animal",)} and t.domain == "sketch"
    with pytest.raises(InputError, match="not one of its classes"):
        make_task(["cow", "pig"], captions={"hen": ["x"]})
    text = tmp_path / "farm.txt"
    text.write_text("cow\npig\n\n")
    assert read_task_file(text).classes == ("cow", "pig") and read_task_file(text).name == "farm"
    bad = tmp_path / "bad.json"
    bad.write_text('{"classes": [1, 2]}')
    with pytest.raises(InputError, match="a class is a name"):
        read_task_file(bad)


def test_task_files_with_a_bom_invisible_characters_or_deep_nesting(tmp_path: Path) -> None:
    task = tmp_path / "farm.json"
    task.write_bytes(codecs.BOM_UTF8 + b'{"name": "farm",\r\n "classes": ["cow", "pig"], "domain": "sketch"}\r\n')
    assert read_task_file(task) == make_task(["cow", "pig"], "farm", domain="sketch")
    task.write_text('{"classes": ["cow", "\\u200b"]}')
    with pytest.raises(InputError, match=rf"^{re.escape(str(task))}: class 2 holds only invisible characters$"):
        read_task_file(task)
    assert task_from_json(["c\u200bow", "ｐｉｇ"]).classes == ("cow", "pig")
    task.write_text("[" * 200_000)
    with pytest.raises(InputError, match=rf"^{re.escape(str(task))}: not a readable JSON task file \(nested deeper"):
        read_task_file(task)
    batch = tmp_path / "tasks.jsonl"
    batch.write_bytes(codecs.BOM_UTF8 + b'["cow", "pig"]\r\n\r\n{"classes": ["cow", "cow"]}\r\n')
    with pytest.raises(InputError, match=rf"^{re.escape(str(batch))}:3: duplicate class name 'cow'"):
        read_batch_file(batch)


def test_no_labels_is_a_clear_error(index_dir: Path) -> None:
    with pytest.raises(InputError, match="no model is labeled"):
        open_labels(index_dir)


def test_restricted_confusion_matches_brute_force(world_index: Path, selector) -> None:  # type: ignore[no-untyped-def]
    store = selector.store
    pos = store.node_position
    nodes = np.array(sorted(pos[w] for w in (TIGER, LION, store.node_wnids[0])), np.int64)
    conf = node_confusion(store, nodes, "restricted")
    for i, model in enumerate(store.model_ids):
        label = load_label(world_index, model)
        table = read_sample_table(world_index, label.manifest["samples"])
        wanted = [store.node_wnids[j] for j in nodes]
        rows = [r for r, w in enumerate(table.wnids) if w in wanted]
        node_emb = np.array([label.node_embeddings[table.node_wnids.index(w)] for w in wanted], np.float32)
        pred = (np.asarray(label.image_embeddings[rows], np.float32) @ node_emb.T).argmax(1)
        true = np.array([wanted.index(table.wnids[r]) for r in rows])
        for s in range(len(nodes)):
            assert conf[i, s, 0] == ((pred == s) & (true == s)).sum()
            assert conf[i, s, 1] == ((pred == s) & (true != s)).sum()
            assert conf[i, s, 2] == ((pred != s) & (true == s)).sum()
    counts = node_confusion(store, nodes, "counts")
    for i, model in enumerate(store.model_ids):      # the label matrix holds each folder's own counts
        label = load_label(world_index, model)
        table = read_sample_table(world_index, label.manifest["samples"])
        own = [table.node_wnids.index(store.node_wnids[j]) for j in nodes]
        assert np.array_equal(counts[i], label.counts[own, 1:4])
    with pytest.raises(InputError, match="unknown selection mode"):
        node_confusion(store, nodes, "magic")  # type: ignore[arg-type]


def test_domain_word_keeps_only_that_domain_s_images(selector) -> None:  # type: ignore[no-untyped-def]
    store = selector.store
    pos = store.node_position
    nodes = np.array(sorted(pos[w] for w in (TIGER, LION)), np.int64)
    everything = node_confusion(store, nodes, "restricted")
    noto = node_confusion(store, nodes, "restricted", domain="noto")
    lab = store.image_labels(0)
    in_set = np.zeros(len(store.node_wnids), bool)
    in_set[nodes] = True
    rows = lab.images_of(in_set)
    per_domain = int((lab.domains[rows] == "noto").sum())
    assert 0 < per_domain < len(rows)
    assert noto[0, :, [0, 2]].sum() == per_domain            # TP + FN: every noto image once
    assert everything[0, :, [0, 2]].sum() == len(rows)
    assert np.array_equal(node_confusion(store, nodes, "restricted", domain="watercolour"), everything)
    s = select_models(selector, make_task(["tiger", "lion"], domain="noto"))
    assert s.domain_images and not select_models(selector, make_task(["tiger", "lion"])).domain_images


def test_f1_and_smoothing_by_hand() -> None:
    confusion = np.array([[[8, 2, 2], [1, 0, 9]]], float)          # 1 model, 2 nodes: TP, FP, FN
    weights = np.array([[1.0, 0.0], [0.5, 0.5]])                     # class 0 = node 0; class 1 = both, half
    f1 = class_f1(confusion, weights)
    assert f1[0, 0] == pytest.approx(16 / 20)
    assert f1[0, 1] == pytest.approx(2 * 4.5 / (2 * 4.5 + 1 + 5.5))
    smoothed = smooth_scores(np.array([[0.8, 0.2, 0.5]]), 0.7)
    assert smoothed[0, 0] == pytest.approx(0.7 * 0.8 + 0.3 * 0.35)
    assert np.allclose(smooth_scores(f1, 1.0), f1)


def test_selection_answers_per_class(selector) -> None:  # type: ignore[no-untyped-def]
    s = select_models(selector, make_task(["tiger", "lion", "banana"]), k=2)
    assert s.class_names == ["tiger", "lion", "banana"]
    assert s.classes[0].nodes[0].wnid == TIGER and s.classes[1].nodes[0].wnid == LION
    for c in s.classes:
        assert 1 <= len(c.nodes) <= 5 and len(c.models) == 2
        assert [m.score for m in c.models] == sorted((m.score for m in c.models), reverse=True)
        assert c.explain is None and not c.low_confidence
    assert sorted(m.model for m in s.ranking) == sorted(selector.store.model_ids)
    assert [m.score for m in s.ranking] == sorted((m.score for m in s.ranking), reverse=True)
    explained = select_models(selector, make_task(["tiger", "lion"]), explain=True)
    assert "F1" in explained.classes[0].explain["rule"]


def test_unlabeled_best_match_reaches_labeled_relatives(selector) -> None:  # type: ignore[no-untyped-def]
    # "big cat" is a graph node with no images; its labeled hyponyms are tiger and lion.
    s = select_models(selector, make_task(["big cat", "banana"]))
    nodes = {m.wnid: m.via for m in s.classes[0].nodes}
    assert TIGER in nodes and LION in nodes
    assert nodes[TIGER].startswith("hyponym:big_cat")


def test_weak_matches_are_reported(selector) -> None:  # type: ignore[no-untyped-def]
    s = select_models(selector, make_task(["qwzx blorf vrrk", "tiger"]))
    assert s.classes[0].low_confidence and not s.classes[1].low_confidence


def test_a_match_lent_by_a_node_the_name_does_not_name_is_weak(selector) -> None:  # type: ignore[no-untyped-def]
    from mll_index.index.match import is_weak
    from mll_index.selection.labeled_nodes import NodeMatch, lent_blindly

    # "ungulate" is a lemma of ungulate.n.01, but its best labeled node (horse) got its score from
    # odd-toed_ungulate.n.01, which matched on the embedding alone: the score is high, the evidence weak.
    s = select_models(selector, make_task(["ungulate", "big cat", "tiger"]))
    ungulate, big_cat, tiger = s.classes
    assert ungulate.nodes[0].via == "hyponym:odd-toed_ungulate.n.01"
    assert not is_weak(selector.matcher, "ungulate", ungulate.nodes[0].score)
    assert ungulate.low_confidence
    # Lent by the node the name names, or not lent at all: as strong as the score says.
    assert big_cat.nodes[0].via == "hyponym:big_cat.n.01" and not big_cat.low_confidence
    assert tiger.nodes[0].via == "direct" and not tiger.low_confidence
    stork = NodeMatch("n00000000", "violin.n.01", 0.4514, "hyponym:stradivarius.n.01")
    assert lent_blindly(selector.matcher, "stork", stork)
    assert not lent_blindly(selector.matcher, "big cats", NodeMatch("n0", "lion.n.01", 1.2, "hyponym:big_cat.n.01"))


LONG = [f"striped sea creature seen swimming slowly near the old coral reef late in the quiet {t}"
        for t in ("morning", "evening")]


def test_prompts_the_models_cannot_read_apart_are_warned(selector) -> None:  # type: ignore[no-untyped-def]
    # The world's models read 16 tokens: each name alone is 16 tokens, so every prompt of the two is cut
    # before the last word, the only one that differs.
    s = select_models(selector, make_task([*LONG, "tiger"]), k=2)
    assert len(s.warnings) == 1
    line = s.warnings[0]
    assert "16 tokens" in line and f"classes {LONG}" in line and "identical prompts" in line and "\n" not in line
    assert all(m.model in line for c in s.classes for m in c.models)
    assert s.to_dict()["warnings"] == [line]
    assert select_models(selector, make_task(["tiger", "lion"])).warnings == ()


def test_select_cli_warns_about_identical_prompts(world_index: Path) -> None:
    done = run_cli("select", *LONG, "--index", str(world_index))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["warnings"]
    warned = [line for line in done.stderr.splitlines() if "identical prompts" in line]
    assert len(warned) == 1 and warned[0].startswith("mll-index: warning: ")


def test_batch_equals_one_by_one(selector) -> None:  # type: ignore[no-untyped-def]
    tasks = [make_task(["tiger", "lion"], "a"), make_task(["banana", "apple", "tiger"], "b"),
             make_task(["cow", "pig"], "c", captions={"pig": ["a pink farm animal with a curly tail"]})]
    batch = select_batch(selector, tasks, k=2, mode="counts")
    for task, got in zip(tasks, batch):
        assert got == select_models(selector, task, k=2, mode="counts")
    for bad in ({"k": 0}, {"alpha": 1.5}, {"n_nodes": 0}, {"mode": "x"}):
        with pytest.raises(InputError):
            select_batch(selector, tasks, **bad)  # type: ignore[arg-type]


def test_select_cli(world_index: Path, tmp_path: Path) -> None:
    done = run_cli("select", "tiger", "lion", "--index", str(world_index), "-k", "2", "--explain")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert [c["name"] for c in answer["classes"]] == ["tiger", "lion"] and "explain" in answer["classes"][0]
    batch = tmp_path / "tasks.jsonl"
    batch.write_text('["tiger", "lion"]\n{"name": "fruit", "classes": ["banana", "apple"]}\n')
    out = tmp_path / "out.jsonl"
    done = run_cli("select", "--batch", str(batch), "--index", str(world_index), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["task"] for line in out.read_text().splitlines()] == [f"{batch}:1", "fruit"]
    weak = run_cli("select", "qwzx blorf vrrk", "tiger", "--index", str(world_index))
    assert weak.returncode == 0 and "matches no labeled node well" in weak.stderr
    for args, message in ((["tiger"], "at least 2 classes"), (["tiger", "tiger"], "duplicate"),
                          (["--batch", str(tmp_path / "none.jsonl")], "no such file")):
        bad = run_cli("select", *args, "--index", str(world_index))
        assert bad.returncode == 1 and message in bad.stderr and "Traceback" not in bad.stderr


def test_a_batch_with_bad_lines_is_refused_whole_or_answered_without_them(world_index: Path, tmp_path: Path) -> None:
    """By default one bad line refuses the file (file:line) before any output; --skip-bad answers the
    rest in file order and names each line it left out."""
    batch = tmp_path / "tasks.jsonl"
    batch.write_text('{"name": "a", "classes": ["tiger", "lion"]}\n["of the", "cat"]\nnot json\n'
                     '{"name": "b", "classes": ["cow", "pig"]}\n["cow", "horse"]\n')
    out = tmp_path / "out.jsonl"
    refused = run_cli("select", "--batch", str(batch), "--index", str(world_index), "-o", str(out))
    assert refused.returncode == 1 and f"{batch}:2" in refused.stderr and "Traceback" not in refused.stderr
    assert not out.exists()
    done = run_cli("select", "--batch", str(batch), "--skip-bad", "--index", str(world_index), "-o", str(out))
    assert done.returncode == 0, done.stderr
    # An unnamed task is called by its line, so that a batch's answers can be told apart.
    assert [json.loads(line)["task"] for line in out.read_text().splitlines()] == ["a", "b", f"{batch}:5"]
    skipped = [line for line in done.stderr.splitlines() if line.startswith("mll-index: skipped ")]
    assert [line.split()[2] for line in skipped[:2]] == [f"{batch}:2:", f"{batch}:3:"]
    assert "skipped 2 of 5 task lines" in done.stderr
    none_good = tmp_path / "bad.jsonl"
    none_good.write_text("nope\n")
    for args, message in ((["--batch", str(none_good), "--skip-bad"], "no tasks"), (["tiger", "lion", "--skip-bad"],
                                                                                  "--skip-bad is for --batch")):
        bad = run_cli("select", *args, "--index", str(world_index))
        assert bad.returncode == 1 and message in bad.stderr and "Traceback" not in bad.stderr


# ---------------------------------------------------------------------------------------
# A hub with counts only (the label matrix, no image-level labels)


@pytest.fixture(scope="module")
def counts_hub(tmp_path_factory, index_dir: Path, embedder):  # type: ignore[no-untyped-def]
    import shutil

    from mll_index.index.node_index import load_index
    from mll_index.labels.matrix import append_labels

    path = tmp_path_factory.mktemp("counts-hub") / "index"
    shutil.copytree(index_dir, path)
    wnids = load_index(path).graph.node_wnids
    rng = np.random.default_rng(3)
    tp = rng.integers(0, 11, (len(wnids), 6))
    counts = np.stack([tp, rng.integers(0, 6, tp.shape), 10 - tp], axis=-1)
    append_labels(path, wnids, [(f"model-{j}", {"id": f"model-{j}", "imagenet_acc": j / 10}) for j in range(6)], counts)
    return path, open_selector(path, embedder)


def test_counts_only_hub_selects_in_counts_mode_by_brute_force(counts_hub) -> None:  # type: ignore[no-untyped-def]
    path, sel = counts_hub
    task = make_task(["golden retriever", "tench", "laptop"])
    s = select_models(sel, task, k=2, alpha=0.6)
    assert s.mode == "counts" and s.labels == "image"
    dense = sel.store.matrix.dense()                                   # (n_nodes, n_models, 3)
    pos = sel.store.node_position
    f1 = np.zeros((6, 3))
    for c, cls in enumerate(s.classes):
        tp = fp = fn = np.zeros(6)
        for m in cls.nodes:
            w = max(m.score, 0.0)
            tp, fp, fn = tp + w * dense[pos[m.wnid], :, 0], fp + w * dense[pos[m.wnid], :, 1], fn + w * dense[pos[m.wnid], :, 2]
        f1[:, c] = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12), 0)
    scores = 0.6 * f1 + 0.4 * (f1.sum(1, keepdims=True) - f1) / 2
    for c, cls in enumerate(s.classes):
        best = np.argsort(-scores[:, c], kind="stable")[:2]
        assert [m.model for m in cls.models] == [sel.store.model_ids[i] for i in best]
        assert np.allclose([m.score for m in cls.models], scores[best, c], atol=1e-4)
    with pytest.raises(InputError, match="image-level labels"):
        select_models(sel, task, mode="restricted")
    assert len(select_models(sel, task, ranking_size=2).ranking) == 2
    assert len(select_models(sel, task, ranking_size=None).ranking) == 6


def test_a_model_added_later_joins_the_selection(counts_hub, tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from mll_index.labels.matrix import append_labels

    path, _ = counts_hub
    copy = tmp_path / "index"
    shutil.copytree(path, copy)
    sel = open_selector(copy, embedder)
    wnids = sel.store.node_wnids
    perfect = np.stack([np.full(len(wnids), 10), np.zeros(len(wnids)), np.zeros(len(wnids))], -1)[:, None, :]
    append_labels(copy, wnids, [("perfect", {"id": "perfect"})], perfect.astype(int))
    s = select_models(open_selector(copy, embedder), make_task(["golden retriever", "tench"]))
    assert all(c.models[0].model == "perfect" for c in s.classes)


def test_the_api_opens_the_clis_default_index_and_takes_a_list_of_names(world_index: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from mll_index.errors import InputError
    from mll_index.selection.selector import open_selector, select_models
    from mll_index.selection.task import make_task

    home = tmp_path / "home"
    home.mkdir()
    (home / "default").symlink_to(world_index, target_is_directory=True)
    monkeypatch.setenv("MLL_INDEX_HOME", str(home))
    sel = open_selector()                                  # as the CLI: $MLL_INDEX_HOME/default
    listed = select_models(sel, ["tiger", "lion"])
    assert listed.to_dict() == select_models(sel, make_task(["tiger", "lion"])).to_dict()
    for bad in ("tiger", [1, 2], None):
        with pytest.raises(InputError, match="a task is a Task"):
            select_models(sel, bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="at least 2 classes"):
        select_models(sel, ["tiger"])
