"""Model costs: figures from the hub file, measured with torch's counter where missing, written back."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from mll_index.errors import InputError
from mll_index.models.flops import entry_model, fill_hub_flops, measure_model, model_costs
from mll_index.models.hub import HubModel, load_hub
from tests.conftest import run_cli
from tests.tinyclip import make_tiny_checkpoint, write_tiny_arch


@pytest.fixture()
def tiny_hub(tmp_path: Path) -> Path:
    config = write_tiny_arch(tmp_path, "flops-tiny-vit")
    make_tiny_checkpoint(config, tmp_path / "a.pt")
    wide = write_tiny_arch(tmp_path, "flops-tiny-wide", width=64)
    make_tiny_checkpoint(wide, tmp_path / "b.pt")
    hub = tmp_path / "hub.json"
    hub.write_text(json.dumps({"name": "tiny", "models": [
        {"id": "a", "arch": "flops-tiny-vit", "checkpoint": "a.pt", "config": config.name},
        {"id": "b", "arch": "flops-tiny-wide", "checkpoint": "b.pt", "config": wide.name},
        {"id": "c", "arch": "flops-tiny-vit", "checkpoint": "a.pt", "config": config.name, "flops_b": 7.5,
         "params_m": 1.0}]}))
    return hub


def test_measured_flops_grow_with_the_model(tiny_hub: Path) -> None:
    hub = load_hub(tiny_hub, validate=False)
    small, params = measure_model(hub.get("a"))
    wide, wide_params = measure_model(hub.get("b"))
    assert 0 < small < wide and 0 < params < wide_params
    import open_clip

    net = open_clip.create_model("flops-tiny-vit", pretrained=None)
    assert params == pytest.approx(sum(p.numel() for p in net.parameters()) / 1e6)


def test_hub_figures_win_and_missing_ones_are_written_back(tiny_hub: Path) -> None:
    costs = fill_hub_flops(tiny_hub)
    assert costs["c"].gflops == 7.5 and costs["c"].params_m == 1.0         # the file's own figures
    data = json.loads(tiny_hub.read_text())
    written = {m["id"]: m for m in data["models"]}
    assert written["a"]["flops_b"] == costs["a"].gflops > 0 and written["c"]["flops_b"] == 7.5
    again = load_hub(tiny_hub, validate=False)
    assert again.get("b").flops_b == costs["b"].gflops and not list(tiny_hub.parent.glob("*.tmp*"))


def test_a_csv_hub_gets_its_figures_too(tiny_hub: Path) -> None:
    rows = json.loads(tiny_hub.read_text())["models"][:2]
    path = tiny_hub.with_suffix(".csv")
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "arch", "checkpoint", "config"])
        writer.writeheader()
        writer.writerows(rows)
    fill_hub_flops(path)
    hub = load_hub(path, validate=False)
    assert all(m.flops_b and m.params_m for m in hub)


def test_a_model_that_cannot_be_built_is_left_out_with_a_warning(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    ghost = HubModel(id="ghost", arch="no-such-arch-anywhere", pretrained="x")
    with caplog.at_level(logging.WARNING, logger="mll_index.models.flops"):
        costs = model_costs([ghost])
    assert costs["ghost"].gflops is None and "cannot measure the FLOPs of model 'ghost'" in caplog.text
    assert entry_model({"id": "e", "arch": "x", "flops_b": 2, "params_m": None}).flops_b == 2.0


def test_builtin_hubs_are_not_rewritten() -> None:
    with pytest.raises(InputError, match="not a hub file"):
        fill_hub_flops("mll49")


def test_hub_flops_cli(tiny_hub: Path) -> None:
    done = run_cli("hub", "flops", str(tiny_hub))
    assert done.returncode == 0, done.stderr
    assert "a\t" in done.stdout and "GFLOPs" in done.stdout
    missing = run_cli("hub", "flops", str(tiny_hub.parent / "none.json"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr


def test_a_kept_entry_with_a_negative_or_nan_cost_has_no_cost() -> None:
    from mll_index.models.flops import entry_model

    # Labels written before hubs were range-checked: a budget must not take such a model for free.
    for bad in (-1, float("nan"), float("-inf"), True):
        model = entry_model({"id": "m", "arch": "RN50", "pretrained": "openai", "flops_b": bad, "params_m": bad})
        assert model.flops_b is None and model.params_m is None
    assert entry_model({"id": "m", "arch": "RN50", "pretrained": "openai", "flops_b": 4.5}).flops_b == 4.5
