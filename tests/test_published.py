"""Published results as labels: reading tables, importing into an index, scoring by matched benchmark classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import InputError
from mll_index.published import (has_published, import_published, open_published, published_scores, read_classnames,
                                 read_results)
from mll_index.embed import embed_classes

HEADER = "name,pretrained,params (M),FLOPs (B),Average perf. on 38 datasets,ImageNet 1k,Dogs,Food,Extra\n"


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    results = tmp_path / "results.csv"
    results.write_text(HEADER + "A,x,10,1,0.5,0.60,0.90,0.20,0.5\n" + "B,y,20,2,0.5,0.70,0.30,0.80,\n")
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"dogs": ["golden retriever", "pomeranian"], "food": ["pizza", "apple_pie"]}))
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"datasets": {"Dogs": {"classnames": "dogs"}, "Food": {"classnames": "food"}}}))
    return results, names, mapping


def test_read_results_and_errors(tmp_path: Path) -> None:
    results, _, _ = _files(tmp_path)
    table = read_results(results)
    assert [m["id"] for m in table.models] == ["A-x", "B-y"]
    assert table.models[1]["imagenet_acc"] == pytest.approx(0.70) and table.models[0]["params_m"] == 10
    assert np.isnan(table.accuracy[1, table.datasets.index("Extra")])
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "A,x,10,1,0.5,0.6,high,0.2,0.5\n")
    with pytest.raises(InputError, match="column 'Dogs': 'high' is not a number"):
        read_results(bad)
    with pytest.raises(InputError, match="no such file"):
        read_results(tmp_path / "none.csv")
    folder = tmp_path / "lists"
    folder.mkdir()
    (folder / "cars.txt").write_text("sedan\n\nconvertible\n")
    assert read_classnames([folder]) == {"cars": ["sedan", "convertible"]}


def test_import_and_score(tmp_path: Path, index_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    results, names, mapping = _files(tmp_path)
    summary = import_published(index_copy, results, [names], mapping=mapping, embedder=embedder)
    assert summary["datasets"] == ["Dogs", "Food"] and set(summary["left_out"]) == {"ImageNet 1k", "Extra"}
    assert has_published(index_copy)
    pub = open_published(index_copy)
    assert pub.class_names == ["golden retriever", "pomeranian", "pizza", "apple pie"]
    queries = embed_classes(["golden retriever", "pizza"], embedder)
    scores, matches = published_scores(pub, queries, n=1)
    assert matches[0][0].name == "golden retriever" and matches[1][0].dataset == "Food"
    # n = 1: a class's score is the model's accuracy on its one matched dataset.
    assert scores[:, 0] == pytest.approx([0.90, 0.30]) and scores[:, 1] == pytest.approx([0.20, 0.80])
    hidden, hidden_matches = published_scores(pub, queries, n=1, hidden=["Dogs"])
    assert hidden_matches[0][0].dataset == "Food"
    with pytest.raises(InputError, match="every benchmark dataset is hidden"):
        published_scores(pub, queries, hidden=["Dogs", "Food"])


def test_select_with_published_labels_only_and_mixed(tmp_path: Path, index_copy: Path, world_index: Path,
                                                    embedder) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from mll_index.select import make_task, open_selector, select_models

    results, names, mapping = _files(tmp_path)
    import_published(index_copy, results, [names], mapping=mapping, embedder=embedder)
    only = select_models(open_selector(index_copy, embedder), make_task(["golden retriever", "pizza"]), explain=True)
    assert only.labels == "published"
    assert [c.models[0].model for c in only.classes] == ["A-x", "B-y"]   # A is the dog model, B the food model
    assert only.classes[0].benchmark[0].name == "golden retriever" and not only.classes[0].nodes
    assert "published_rule" in only.classes[0].explain

    mixed_index = tmp_path / "mixed"
    shutil.copytree(world_index, mixed_index)
    import_published(mixed_index, results, [names], mapping=mapping, embedder=embedder)
    mixed = select_models(open_selector(mixed_index, embedder), make_task(["tiger", "pizza"]), k=2)
    assert mixed.labels == "both"
    ranked = {m.model for m in mixed.ranking}
    assert {"A-x", "B-y"} <= ranked and len(ranked) == 2 + len(open_selector(world_index, embedder).store.model_ids)
    assert all(0.0 <= m.score <= 1.0 for m in mixed.ranking)


def test_published_cli(tmp_path: Path, index_copy: Path) -> None:
    from tests.conftest import run_cli

    results, names, mapping = _files(tmp_path)
    done = run_cli("published", "import", "--index", str(index_copy), "--results", str(results),
                   "--classnames", str(names), "--mapping", str(mapping))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["datasets"] == ["Dogs", "Food"]
    selected = run_cli("select", "golden retriever", "pizza", "--index", str(index_copy))
    assert selected.returncode == 0, selected.stderr
    assert json.loads(selected.stdout)["labels"] == "published"
    bad = run_cli("published", "import", "--index", str(index_copy), "--results", str(tmp_path / "none.csv"),
                  "--classnames", str(names))
    assert bad.returncode == 1 and "no such file" in bad.stderr and "Traceback" not in bad.stderr


def test_published_labels_survive_a_rebuild_with_the_same_embedder(tmp_path: Path, index_copy: Path, small_graph,
                                                                   embedder) -> None:  # type: ignore[no-untyped-def]
    from mll_index.index import build_index

    results, names, mapping = _files(tmp_path)
    import_published(index_copy, results, [names], mapping=mapping, embedder=embedder)
    build_index(index_copy, small_graph, embedder)
    assert open_published(index_copy).class_names[0] == "golden retriever"
