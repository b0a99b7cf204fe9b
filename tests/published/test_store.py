"""Published results as labels: reading tables, importing into an index, scoring by matched benchmark classes."""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import InputError
from mll_index.index.embed import embed_classes
from mll_index.published.store import has_published, import_published, open_published, published_scores
from mll_index.published.table import read_classnames, read_results

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


def _table(tmp_path: Path, rows: str, name: str = "table.csv") -> Path:
    path = tmp_path / name
    path.write_text("name,pretrained,Dogs,Country\n" + rows)
    return path


def test_a_percent_table_stays_percent_below_one(tmp_path: Path) -> None:
    # RN50 at 0.9% on the country column must not read as 90%: the table has figures above 1, so
    # every figure of it is a percentage, also in a column where every model scored below 1%.
    table = read_results(_table(tmp_path, "RN50,openai,45.5,0.9\nViT,laion,80,0.5\n"))
    assert table.scale == "percent"
    assert table.accuracy == pytest.approx(np.array([[0.455, 0.009], [0.80, 0.005]]))
    fractions = read_results(_table(tmp_path, "RN50,openai,0.455,0.009\nViT,laion,0.8,1\n", "fractions.csv"))
    assert fractions.scale == "fraction" and fractions.accuracy == pytest.approx(np.array([[0.455, 0.009], [0.8, 1]]))
    forced = read_results(_table(tmp_path, "RN50,openai,0.9,0.5\n", "forced.csv"), scale="percent")
    assert forced.scale == "percent" and forced.accuracy == pytest.approx(np.array([[0.009, 0.005]]))


@pytest.mark.parametrize("rows, scale, message", [
    ("A,x,45,150\n", "auto", "column 'Country': figures from 150 to 150; accuracies are fractions in [0, 1] or "
                             "percentages in [0, 100]"),
    ("A,x,0.5,-0.1\nB,y,0.2,0.3\n", "auto", "column 'Country': figures from -0.1 to 0.3"),
    ("A,x,0.5,45\n", "fraction", "column 'Country': figure 45 is above 1, but the table was said to hold fractions"),
])
def test_figures_out_of_range_name_the_column(tmp_path: Path, rows: str, scale: str, message: str) -> None:
    path = _table(tmp_path, rows)
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: {re.escape(message)}"):
        read_results(path, scale=scale)  # type: ignore[arg-type]


def test_a_table_and_class_lists_with_a_bom_read_like_plain_ones(tmp_path: Path) -> None:
    results, names, _ = _files(tmp_path)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(codecs.BOM_UTF8 + results.read_text().replace("\n", "\r\n").encode())
    assert read_results(bom).models == read_results(results).models
    folder = tmp_path / "lists"
    folder.mkdir()
    (folder / "cars.txt").write_bytes(codecs.BOM_UTF8 + "sedan\r\n\r\nｃｏｎｖｅｒｔｉｂｌｅ\r\n".encode())
    assert read_classnames([folder]) == {"cars": ["sedan", "convertible"]}


def test_an_empty_name_in_a_benchmark_list_is_left_out_and_said(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """CLIP_benchmark's CLEVR distance list holds an empty name: the list still imports, without it."""
    lists = tmp_path / "classnames.json"
    lists.write_text(json.dumps({"clevr_distance": ["very nearby", "nearby", "", "distant"], "cars": ["sedan"]}))
    with caplog.at_level("WARNING"):
        assert read_classnames([lists]) == {"clevr_distance": ["very nearby", "nearby", "distant"], "cars": ["sedan"]}
    assert "'clevr_distance'" in caplog.text and "position 3" in caplog.text


def test_import_and_score(tmp_path: Path, index_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    results, names, mapping = _files(tmp_path)
    summary = import_published(index_copy, results, [names], mapping=mapping, embedder=embedder)
    assert summary["datasets"] == ["Dogs", "Food"] and set(summary["left_out"]) == {"ImageNet 1k", "Extra"}
    assert has_published(index_copy)
    pub = open_published(index_copy)
    assert summary["scale"] == "fraction" and pub.manifest["scale"] == "fraction"
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

    from mll_index.selection.selector import open_selector, select_models
    from mll_index.selection.task import make_task

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
    mixed = select_models(open_selector(mixed_index, embedder), make_task(["tiger", "pizza"]), k=2, labels="both")
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
    assert json.loads(done.stdout)["datasets"] == ["Dogs", "Food"] and json.loads(done.stdout)["scale"] == "fraction"
    selected = run_cli("select", "golden retriever", "pizza", "--index", str(index_copy))
    assert selected.returncode == 0, selected.stderr
    assert json.loads(selected.stdout)["labels"] == "published"
    assert json.loads(selected.stdout)["predicted_accuracy"] is None
    image_only = run_cli("select", "golden retriever", "pizza", "--index", str(index_copy), "--labels", "image")
    assert image_only.returncode == 1 and "no image-based labels" in image_only.stderr
    assert len(image_only.stderr.strip().splitlines()) == 1
    bad = run_cli("published", "import", "--index", str(index_copy), "--results", str(tmp_path / "none.csv"),
                  "--classnames", str(names))
    assert bad.returncode == 1 and "no such file" in bad.stderr and "Traceback" not in bad.stderr


def test_published_labels_survive_a_rebuild_with_the_same_embedder(tmp_path: Path, index_copy: Path, small_graph,
                                                                   embedder) -> None:  # type: ignore[no-untyped-def]
    from mll_index.index.node_index import build_index

    results, names, mapping = _files(tmp_path)
    import_published(index_copy, results, [names], mapping=mapping, embedder=embedder)
    build_index(index_copy, small_graph, embedder)
    assert open_published(index_copy).class_names[0] == "golden retriever"


# LOVM's shape: a pandas index column, one row per model and dataset; "nolist" has no class names.
LOVM_TABLE = ",task,dataset,model_fullname,model,pretrained,acc1\n" + "".join(
    f"{i},zeroshot_classification,{d},{m} {p},{m},{p},{a}\n" for i, (d, m, p, a) in enumerate([
        ("dogs", "A", "x", 0.90), ("dogs", "B", "y", 0.30), ("dogs", "C", "z", 0.60),
        ("food", "A", "x", 0.20), ("food", "B", "y", 0.80), ("food", "C", "z", 0.60),
        ("nolist", "A", "x", 0.40), ("nolist", "B", "y", 0.45), ("nolist", "C", "z", 0.50)]))


def _lovm_files(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    results = tmp_path / "eval_table.csv"
    results.write_text(LOVM_TABLE)
    names = tmp_path / "classnames"
    names.mkdir()
    (names / "dogs.txt").write_text("golden retriever\npomeranian\n")
    (names / "food.txt").write_text("pizza\napple pie\n")
    domains = tmp_path / "dataset_domains.json"
    domains.write_text(json.dumps({"dogs": "photograph/picture", "food": "food photographs", "nolist": "x"}))
    tasks = tmp_path / "dataset_tasks.json"
    tasks.write_text(json.dumps({"dogs": "dog breed classification", "food": "food classification"}))
    return results, names, domains, tasks


def test_import_a_lovm_table_with_domains_and_descriptions(tmp_path: Path, index_copy: Path, embedder,
                                                           caplog) -> None:  # type: ignore[no-untyped-def]
    results, names, domains, tasks = _lovm_files(tmp_path)
    with caplog.at_level("WARNING"):
        summary = import_published(index_copy, results, [names], domains=domains, descriptions=tasks,
                                   embedder=embedder)
    assert summary["datasets"] == ["dogs", "food"] and summary["left_out"] == ["nolist"]
    assert "dataset 'nolist' has no class-name list" in caplog.text
    assert summary["with_domain"] == ["dogs", "food"] and summary["with_description"] == ["dogs", "food"]
    # Two datasets are too few to choose the weights on: the defaults stay, and say so.
    assert summary["rule"]["chosen_by"].startswith("default")
    pub = open_published(index_copy)
    assert pub.model_ids == ["A-x", "B-y", "C-z"] and pub.datasets[1]["description"] == "food classification"
    assert set(pub.text_vectors) == {"domain", "description"} and pub.text_vectors["domain"].shape[0] == 2


def test_select_says_when_published_labels_fall_back(tmp_path: Path, index_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from mll_index.selection.selector import open_selector, select_models
    from mll_index.selection.task import make_task

    results, names, domains, tasks = _lovm_files(tmp_path)
    import_published(index_copy, results, [names], domains=domains, descriptions=tasks, embedder=embedder)
    sel = open_selector(index_copy, embedder)
    clear = select_models(sel, make_task(["golden retriever", "pizza"]), alpha=1.0, explain=True).to_dict()
    assert [c["models"][0]["model"] for c in clear["classes"]] == ["A-x", "B-y"]
    assert clear["published"]["fallback"] is False and clear["published"]["fallback_classes"] == {}
    assert set(clear["published"]["neighbours"]) == {"dogs", "food"}
    assert "general strength" in clear["classes"][0]["explain"]["published_rule"]
    # Names like no benchmark class: general strength (mean z-score: C, steady on both), said per class.
    vague = select_models(sel, make_task(["tax law", "quantum chromodynamics"])).to_dict()
    assert vague["published"]["fallback"] is True and vague["published"]["strength"] == "mean z-score"
    assert all("no benchmark dataset resembles it" in r for r in vague["published"]["fallback_classes"].values())
    assert vague["ranking"][0]["model"] == "C-z"


def test_a_tasks_domain_and_description_count(tmp_path: Path, index_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from mll_index.selection.selector import open_selector, select_models
    from mll_index.selection.task import make_task

    results, names, domains, tasks = _lovm_files(tmp_path)
    import_published(index_copy, results, [names], domains=domains, descriptions=tasks, embedder=embedder)
    sel = open_selector(index_copy, embedder)
    plain = select_models(sel, make_task(["bagel", "pretzel"]))
    described = select_models(sel, make_task(["bagel", "pretzel"], domain="photograph/picture",
                                             description="dog breed classification"))
    # The weights are listed as `neighbours` where they entered the scores, else as `nearest_datasets`.
    near, near_described = ({**s.published["neighbours"], **s.published.get("nearest_datasets", {})}  # type: ignore[index]
                            for s in (plain, described))
    assert near["food"] > near.get("dogs", 0)
    assert near_described["dogs"] > near.get("dogs", 0)
    assert (plain.published["neighbours"] == {}) == (  # type: ignore[index]
        sel.published.rule.neighbour_weight == 0 or plain.published["fallback"])  # type: ignore[index, union-attr]


def test_published_cli_reads_lovm_files(tmp_path: Path, index_copy: Path) -> None:
    from tests.conftest import run_cli

    results, names, domains, tasks = _lovm_files(tmp_path)
    done = run_cli("published", "import", "--index", str(index_copy), "--results", str(results),
                   "--classnames", str(names), "--domains", str(domains), "--descriptions", str(tasks))
    assert done.returncode == 0, done.stderr
    assert "dataset 'nolist' has no class-name list" in done.stderr and json.loads(done.stdout)["left_out"] == ["nolist"]
    task = tmp_path / "task.json"
    task.write_text(json.dumps({"classes": ["golden retriever", "pizza"], "domain": "photograph/picture",
                                "description": "dog breed classification"}))
    selected = run_cli("select", "--task", str(task), "--index", str(index_copy))
    assert selected.returncode == 0, selected.stderr
    assert json.loads(selected.stdout)["published"]["fallback"] is False
    # LOVM's own dataset_domains.json lacks a comma between two entries: read, with one warning line.
    lovm_like = tmp_path / "dataset_domains.json"
    lovm_like.write_text('{\n "dogs": "photograph/picture"\n "food": "food photographs"\n}\n')
    repaired = run_cli("published", "import", "--index", str(index_copy), "--results", str(results),
                       "--classnames", str(names), "--domains", str(lovm_like))
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(repaired.stdout)["with_domain"] == ["dogs", "food"]
    said = [line for line in repaired.stderr.splitlines() if "missing comma" in line]
    assert len(said) == 1 and "dataset_domains.json" in said[0] and "line(s) 2" in said[0]
    # Any other invalid JSON stays an error naming the file and line.
    broken = tmp_path / "broken.json"
    broken.write_text('{\n "dogs": "photograph",\n "food": food\n}\n')
    bad = run_cli("published", "import", "--index", str(index_copy), "--results", str(results),
                  "--classnames", str(names), "--domains", str(broken))
    assert bad.returncode == 1 and "broken.json" in bad.stderr and "line 3" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_stray_class_name_list_no_column_uses_does_not_stop_the_import(tmp_path: Path, index_copy: Path, embedder,
                                                                         caplog) -> None:  # type: ignore[no-untyped-def]
    results, names, _, _ = _lovm_files(tmp_path)
    (names / "empty.txt").write_text("")
    with caplog.at_level("WARNING"):
        summary = import_published(index_copy, results, [names], embedder=embedder)
    assert summary["datasets"] == ["dogs", "food"]
    assert "empty.txt" in caplog.text and "no results column uses it" in caplog.text
    # A list the table does use must be sound.
    (names / "dogs.txt").write_text("\n")
    with pytest.raises(InputError, match="dogs.txt"):
        import_published(index_copy, results, [names], embedder=embedder)


def _mixed_index(tmp_path: Path, world_index: Path, embedder) -> Path:  # type: ignore[no-untyped-def]
    import shutil

    tmp_path.mkdir(exist_ok=True)
    results, names, mapping = _files(tmp_path)
    mixed = tmp_path / "mixed"
    shutil.copytree(world_index, mixed)
    import_published(mixed, results, [names], mapping=mapping, embedder=embedder)
    return mixed


def test_labels_choose_the_source_and_auto_keeps_to_the_hubs_labels_when_the_sources_share_no_model(
        tmp_path: Path, world_index: Path, index_copy: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from mll_index.selection.selector import open_selector, select_models
    from mll_index.selection.task import make_task

    sel = open_selector(_mixed_index(tmp_path / "m", world_index, embedder), embedder)
    task = make_task(["tiger", "pizza"])
    # The published table ranks other models than the index's hub: auto takes the hub's image-based labels and says so.
    auto = select_models(sel, task)
    assert auto.labels == "image" and len(auto.warnings) == 1
    assert "image-based labels only" in auto.warnings[0] and "0 of them" in auto.warnings[0]
    assert "--labels published" in auto.warnings[0]
    image = select_models(sel, task, labels="image")
    assert image.labels == "image" and not image.warnings and {m.model for m in image.ranking} == set(sel.store.model_ids)
    published = select_models(sel, task, labels="published")
    assert published.labels == "published" and published.mode == "published"
    assert {m.model for m in published.ranking} == {"A-x", "B-y"}
    both = select_models(sel, task, labels="both")    # asked for: merged without the warning
    assert both.labels == "both" and not both.warnings
    results, names, mapping = _files(tmp_path)
    import_published(index_copy, results, [names], mapping=mapping, embedder=embedder)
    with pytest.raises(InputError, match="no image-based labels"):
        select_models(open_selector(index_copy, embedder), task, labels="image")
    with pytest.raises(InputError, match="unknown label source 'mine'"):
        select_models(sel, task, labels="mine")


def test_a_tie_in_the_rank_merge_goes_to_the_model_that_leads_its_source_more_clearly() -> None:
    from mll_index.selection.merge import merge_by_rank

    # Each source's best model ranks 1.0; "clear" stands far above its source's others, "close" barely.
    close = (["close", "b", "c"], np.array([[0.51], [0.50], [0.49]]))
    clear = (["clear", "e", "f"], np.array([[0.90], [0.10], [0.10]]))
    for parts in ([close, clear], [clear, close]):
        ids, scores = merge_by_rank(parts)
        assert ids[int(np.argmax(scores[:, 0]))] == "clear"
        assert round(float(scores[:, 0].max()), 4) == 1.0


def test_published_answers_from_a_table_too_small_say_why_there_is_no_predicted_accuracy(tmp_path: Path, index_copy: Path,
                                                                   embedder) -> None:  # type: ignore[no-untyped-def]
    from mll_index.selection.answer import answer_task
    from mll_index.selection.selector import open_selector
    from mll_index.selection.task import make_task

    results, names, mapping = _files(tmp_path)
    import_published(index_copy, results, [names], mapping=mapping, embedder=embedder)
    answer = answer_task(open_selector(index_copy, embedder), make_task(["golden retriever", "pizza"]))
    assert answer["mode"] == "published" and answer["labels"] == "published"
    assert answer["predicted_accuracy"] is None and all(c["predicted_accuracy"] is None for c in answer["classes"])
    # Two models: too few to calibrate a prediction on; one line says so.
    about = answer["predicted_accuracy_about"]
    assert "at least 5" in about and "\n" not in about and "predicted_accuracy" not in answer["ranking"][0]


def test_a_published_class_whose_name_is_no_word_is_low_confidence_and_falls_back(
        tmp_path: Path, index_copy: Path, world_index: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from mll_index.selection.selector import open_selector, select_models
    from mll_index.selection.task import make_task

    results, names, mapping = _files(tmp_path)
    import_published(index_copy, results, [names], mapping=mapping, embedder=embedder)
    task = make_task(["zzkk vvmp", "golden retriever"])
    only = select_models(open_selector(index_copy, embedder), task).to_dict()
    gibberish, known = only["classes"]
    assert gibberish["low_confidence"] is True and known["low_confidence"] is False
    assert "zzkk vvmp" in only["published"]["fallback_classes"]
    assert "golden retriever" not in only["published"]["fallback_classes"]
    mixed = select_models(open_selector(_mixed_index(tmp_path / "m", world_index, embedder), embedder), task,
                          labels="both").to_dict()
    assert mixed["classes"][0]["low_confidence"] is True


def test_the_rule_falls_back_for_a_class_whose_name_is_no_word_however_similar() -> None:
    from mll_index.published.rule import PublishedRule, rank_task

    z = np.array([[1.0, -1.0], [-1.0, 1.0]])                # model 0 leads dataset a, model 1 dataset b
    similarity = np.array([[0.9, 0.2], [0.9, 0.2]])         # both classes look like dataset a (0.9 >= 0.45)
    ranking = rank_task(z, ["a", "b"], np.array([True, True]), similarity, None, PublishedRule(), ["m0", "m1"],
                        unknown=[True, False])
    assert ranking.reasons[1] is None
    assert ranking.reasons[0] is not None and "WordNet lemma" in ranking.reasons[0]
    assert ranking.scores[0, 0] == ranking.scores[1, 0]    # general strength: the mean z-score ties them


EUROSAT = ["annual crop land", "forest", "brushland or shrubland", "highway or road",
           "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
           "residential buildings or homes or apartments", "river", "lake or sea"]
DIGITS = [str(d) for d in range(10)]
TEXTURES = ["banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked", "crosshatched",
            "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy", "grid", "grooved",
            "honeycombed", "interlaced", "knitted", "lacelike", "lined", "marbled", "matted", "meshed", "paisley",
            "perforated", "pitted", "pleated", "polka-dotted", "porous", "potholed", "scaly", "smeared", "spiralled",
            "sprinkled", "stained", "stratified", "striped", "studded", "swirly", "veined", "waffled", "woven",
            "wrinkled", "zigzagged"]


def test_a_task_that_is_a_dataset_of_the_table_is_ranked_by_its_column(tmp_path: Path, index_copy: Path,
                                                                        embedder) -> None:  # type: ignore[no-untyped-def]
    from mll_index.selection.answer import answer_task
    from mll_index.selection.selector import open_selector
    from mll_index.selection.task import make_task

    # Model A leads ImageNet (general strength); each other dataset has its own winner.
    results = tmp_path / "results.csv"
    results.write_text("name,pretrained,ImageNet 1k,EuroSAT,MNIST,Describable Textures,Pets\n"
                       "A,x,0.80,0.40,0.50,0.50,0.90\nB,y,0.70,0.75,0.40,0.45,0.80\nC,z,0.60,0.50,0.90,0.40,0.70\n"
                       "D,w,0.50,0.45,0.45,0.70,0.60\nE,v,0.40,0.30,0.30,0.30,0.50\n")
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"eurosat": EUROSAT, "mnist": DIGITS, "dtd": TEXTURES,
                                 "imagenet1k": ["tiger", "goldfish", "pizza", "sports car", "golden retriever"],
                                 "pets": ["Abyssinian", "beagle", "Birman", "pug", "Siamese"]}))
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"datasets": {"ImageNet 1k": {"classnames": "imagenet1k"},
                                                "EuroSAT": {"classnames": "eurosat"}, "MNIST": {"classnames": "mnist"},
                                                "Describable Textures": {"classnames": "DTD"},
                                                "Pets": {"classnames": ["oxford_pets", "pets"]}}}))
    summary = import_published(index_copy, results, [names], mapping=mapping, embedder=embedder)
    assert summary["left_out"] == [] and summary["rule"]["same_dataset"] >= 0.9   # "DTD" found the list "dtd"
    sel = open_selector(index_copy, embedder)
    for classes, dataset, winner in ((EUROSAT, "EuroSAT", "B-y"), (DIGITS, "MNIST", "C-z"),
                                     (TEXTURES, "Describable Textures", "D-w")):
        answer = answer_task(sel, make_task(classes, name=dataset))
        pub = answer["published"]
        assert answer["ranking"][0]["model"] == winner, dataset
        assert pub["same_dataset"]["dataset"] == dataset and pub["same_dataset"]["used"]
        assert pub["ranked_by"].startswith(f"ranked by {dataset}'s column") and pub["neighbours"] == {}
        assert not any(c["low_confidence"] for c in answer["classes"])   # exact names: no weak-match warning
        # The task is the dataset: each model's accuracy is the table's figure there, read, not predicted.
        column = {"EuroSAT": 1, "MNIST": 2, "Describable Textures": 3}[dataset]
        rows = results.read_text().splitlines()[1:]
        figures = {f"{r.split(',')[0]}-{r.split(',')[1]}": float(r.split(",")[2 + column]) for r in rows}
        for entry in answer["ranking"]:
            assert entry["predicted_accuracy"] == {"estimate": figures[entry["model"]], "low": figures[entry["model"]],
                                                   "high": figures[entry["model"]]}
        assert answer["predicted_accuracy"]["estimate"] == figures[winner] and "read, not predicted" in \
            answer["predicted_accuracy_about"]
    # Three of EuroSAT's ten classes are not EuroSAT: the task is ranked by the rule, and the answer says why not.
    part = answer_task(sel, make_task(EUROSAT[:3]))
    assert not part["published"]["same_dataset"]["used"]
    predicted = [m["predicted_accuracy"] for m in part["ranking"]]
    assert len(predicted) == 5 and all(0 <= p["low"] <= p["estimate"] <= p["high"] <= 1 for p in predicted)
    assert part["predicted_accuracy"] == part["classes"][0]["predicted_accuracy"] == predicted[0]
    assert "was not used" in part["published"]["ranked_by"] and "< " in part["published"]["ranked_by"]


def test_a_published_folder_without_its_manifest_is_a_warning_under_auto_and_refused_when_asked_for(
        tmp_path: Path, world_index: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from mll_index.selection.selector import open_selector, select_models
    from mll_index.selection.task import make_task

    index = _mixed_index(tmp_path / "m", world_index, embedder)
    (index / "published" / "manifest.json").unlink()
    sel = open_selector(index, embedder)
    auto = select_models(sel, make_task(["tiger", "pizza"]))
    assert auto.labels == "image"
    assert any("published labels not used" in w and "manifest.json: missing" in w for w in auto.warnings)
    for labels in ("published", "both"):
        with pytest.raises(InputError, match="manifest.json: missing"):
            select_models(sel, make_task(["tiger", "pizza"]), labels=labels)


def test_info_lists_the_labeled_models_and_the_published_labels(tmp_path: Path, world_index: Path,
                                                                 embedder) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import run_cli

    from mll_index.selection.selector import open_selector

    index = _mixed_index(tmp_path / "m", world_index, embedder)
    done = run_cli("info", "--index", str(index))
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["labeled_models"]["ids"] == sorted(open_selector(index, embedder).store.model_ids)
    assert info["labeled_models"]["count"] == len(info["labeled_models"]["ids"])
    assert info["published_labels"]["models"] == 2 and info["published_labels"]["datasets"] == ["Dogs", "Food"]
    assert "neighbour_weight" in info["published_labels"]["rule"]
