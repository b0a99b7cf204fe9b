"""Reading published tables of LOVM's shape (one row per model and dataset), dataset texts, and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import InputError
from mll_index.published.table import read_dataset_texts, read_results

# LOVM's eval_table.csv: a pandas index column with no name, then one row per model and dataset.
LOVM_HEADER = ",task,dataset,model_fullname,model,pretrained,mean_per_class_recall,acc1,acc5\n"
LOVM_ROWS = [
    "0,zeroshot_classification,cars,ViT-B-32 laion2b_e16,ViT-B-32,laion2b_e16,0.84,0.843,0.99\n",
    "1,zeroshot_classification,cars,RN50 openai,RN50,openai,0.55,0.553,0.9\n",
    "2,zeroshot_classification,imagenet1k,ViT-B-32 laion2b_e16,ViT-B-32,laion2b_e16,0.65,0.656,0.9\n",
    "3,zeroshot_classification,imagenet1k,RN50 openai,RN50,openai,0.59,0.598,0.8\n",
    "4,zeroshot_classification,mnist,RN50 openai,RN50,openai,0.59,0.58,0.8\n",
]


def _write(tmp_path: Path, text: str, name: str = "eval_table.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_lovm_table_reads_with_open_clip_ids(tmp_path: Path) -> None:
    table = read_results(_write(tmp_path, LOVM_HEADER + "".join(LOVM_ROWS)))
    assert table.shape == "long" and table.scale == "fraction"
    assert [m["id"] for m in table.models] == ["ViT-B-32-laion2b_e16", "RN50-openai"]
    assert table.datasets == ["cars", "imagenet1k", "mnist"]
    assert table.accuracy[0] == pytest.approx([0.843, 0.656, np.nan], nan_ok=True)
    assert table.models[1]["imagenet_acc"] == pytest.approx(0.598) and table.models[1]["arch"] == "RN50"


def test_model_fullname_alone_gives_the_same_ids(tmp_path: Path) -> None:
    rows = "dataset,model_fullname,acc1\ncars,ViT-B-32 laion2b_e16,84.3\ncars,RN50 openai,55.3\n"
    table = read_results(_write(tmp_path, rows))
    assert [m["id"] for m in table.models] == ["ViT-B-32-laion2b_e16", "RN50-openai"]
    assert table.scale == "percent" and table.accuracy[:, 0] == pytest.approx([0.843, 0.553])


@pytest.mark.parametrize("text, message", [
    ("dataset,model_fullname,top1\ncars,RN50 openai,0.5\n", "needs an 'acc1' column"),
    ("dataset,arch,acc1\ncars,RN50,0.5\n", "needs a 'model' (with 'pretrained') or a 'model_fullname' column"),
    ("model,acc1\nRN50,0.5\n", "a results table needs a 'name' column"),
])
def test_a_table_without_the_expected_columns_is_refused_naming_the_column(tmp_path: Path, text: str,
                                                                           message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: .*{re.escape(message)}") as err:
        read_results(path)
    assert "\n" not in str(err.value)


def test_a_dataset_named_twice_is_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, LOVM_HEADER + "".join(LOVM_ROWS) + LOVM_ROWS[1].replace("1,", "5,", 1))
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: line 7: dataset 'cars' named twice for model "
                                         r"'RN50-openai' \(first at line 3\)$"):
        read_results(path)
    header = _write(tmp_path, ",dataset,dataset,model_fullname,acc1\n0,cars,cars,RN50 openai,0.5\n", "header.csv")
    with pytest.raises(InputError, match=r"header.csv: line 1: column\(s\) \['dataset'\] appear twice in the header$"):
        read_results(header)
    ragged = _write(tmp_path, LOVM_HEADER + LOVM_ROWS[0].rstrip("\n") + ",extra\n", "ragged.csv")
    with pytest.raises(InputError, match=r"ragged.csv: line 2: 10 cells, the header has 9 columns$"):
        read_results(ragged)
    wide = _write(tmp_path, "name,pretrained,Cars,Cars\nRN50,openai,0.5,0.6\n", "wide.csv")
    with pytest.raises(InputError, match=r"column\(s\) \['Cars'\] appear twice in the header"):
        read_results(wide)


def test_a_bad_figure_in_a_lovm_table_names_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, LOVM_HEADER + LOVM_ROWS[0].replace("0.843", "n/a"))
    with pytest.raises(InputError, match=r"line 2, column 'acc1': 'n/a' is not a number"):
        read_results(path)


def test_dataset_texts(tmp_path: Path) -> None:
    good = _write(tmp_path, json.dumps({"cars": "photograph/picture", "pcam": " medical  images "}), "d.json")
    assert read_dataset_texts(good, "domains file") == {"cars": "photograph/picture", "pcam": "medical images"}
    # LOVM's own dataset_domains.json lacks a comma between two entries: read, said in one warning.
    lovm = _write(tmp_path, '{\n "cars": "photograph"\n "pcam": "medical"\n}\n', "lovm.json")
    assert read_dataset_texts(lovm, "domains file") == {"cars": "photograph", "pcam": "medical"}
    # Other invalid JSON is refused in one line naming the line.
    broken = _write(tmp_path, '{\n "cars": "photograph",\n "pcam": medical\n}\n', "broken.json")
    with pytest.raises(InputError, match=r"broken.json: not a readable domains file .*line 3"):
        read_dataset_texts(broken, "domains file")
    wrong = _write(tmp_path, json.dumps({"cars": ["photograph"]}), "wrong.json")
    with pytest.raises(InputError, match=r"wrong.json: a domains file maps dataset names to one text each"):
        read_dataset_texts(wrong, "domains file")


@pytest.mark.parametrize("cells, message", [
    ("-5,1", r"column 'params \(M\)' of model 'A-x': '-5' must be a finite number >= 0"),
    ("10,nan", r"column 'FLOPs \(B\)' of model 'A-x': 'nan' must be a finite number >= 0"),
    ("10,-inf", r"column 'FLOPs \(B\)' of model 'A-x': '-inf' must be a finite number >= 0"),
    ("ten,1", r"column 'params \(M\)' of model 'A-x': 'ten' is not a number"),
])
def test_a_cost_below_zero_or_not_finite_is_refused_naming_line_column_and_model(tmp_path: Path, cells: str,
                                                                                 message: str) -> None:
    path = tmp_path / "results.csv"
    path.write_text(f"name,pretrained,params (M),FLOPs (B),ImageNet 1k\nA,x,{cells},0.6\nB,y,10,2,0.7\n")
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: line 2: {message}"):
        read_results(path)
    path.write_text("name,pretrained,params (M),FLOPs (B),ImageNet 1k\nA,x,,,0.6\nB,y,10,2,nan\n")
    with pytest.raises(InputError, match="line 3, column 'ImageNet 1k': 'nan' is not a number"):
        read_results(path)
