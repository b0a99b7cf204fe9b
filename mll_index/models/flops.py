"""Inference cost of hub models: GFLOPs and parameters, from the hub file or measured once.

A hub entry may carry `flops_b` (GFLOPs of one image and one text through the model) and
`params_m` (millions of parameters), as open_clip's published table does. A model without them
is measured with torch's own counter (`torch.utils.flop_counter.FlopCounterMode`) on one image
of the model's input size and one tokenised prompt. The architecture alone fixes both figures,
so the model is built with open_clip's random initialisation (`pretrained=None`): no weights are
read or downloaded. A measured figure is kept in `<cache>/flops.json` by architecture and config,
so it is measured once per machine, and `fill_hub_flops` writes it into a hub file's entries.

torch counts a multiply-add as 2 FLOPs (as fvcore-based tables count 1 MAC as 1 "FLOP", a
measured figure may be twice a published one for the same network: compare like with like).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mll_index.core.artifacts import atomic_file, read_json, write_json
from mll_index.core.userfiles import number_in_range
from mll_index.errors import InputError, MLLIndexError
from mll_index.models.hub import HubModel, load_hub

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelCost:
    """One model's inference cost: GFLOPs per image (with one text), millions of parameters; None: unknown."""

    model: str
    gflops: float | None
    params_m: float | None


def _cache_path() -> Path:
    from mll_index.core.paths import cache_dir

    return cache_dir() / "flops.json"


def _arch_key(model: HubModel) -> str:
    """What fixes the cost: the architecture name and, for a custom one, its config's content."""
    config = model.config.read_bytes() if model.config is not None and model.config.is_file() else b""
    return f"{model.arch}:{hashlib.sha256(config).hexdigest()[:16]}"


def measure_model(model: HubModel) -> tuple[float, float]:
    """(GFLOPs of one image + one text forward, millions of parameters) of a hub model's architecture.

    Raises:
        ModelLoadError / InputError: the architecture cannot be built (unknown arch, bad config).
        RuntimeError: the forward pass fails.
    """
    import open_clip
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mll_index.models.hub import _register_config

    if model.config is not None:
        _register_config(model)
    net = open_clip.create_model(model.arch, pretrained=None)
    net.eval()
    size = net.visual.image_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    image = torch.zeros(1, 3, height, width)
    text = open_clip.get_tokenizer(model.arch)(["a photo of a dog."])
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net.encode_image(image)
        net.encode_text(text)
    params = sum(p.numel() for p in net.parameters())
    return counter.get_total_flops() / 1e9, params / 1e6


def model_costs(models: Sequence[HubModel], measure: bool = True) -> dict[str, ModelCost]:
    """Every model's cost: the entry's figures, else measured (once per architecture, cached).

    A model that cannot be measured gets `gflops=None` and a logged warning; callers exclude it.
    """
    cache_path = _cache_path()
    try:
        cache: dict[str, Any] = read_json(cache_path) if cache_path.is_file() else {}
    except MLLIndexError:
        cache = {}
    changed = False
    out: dict[str, ModelCost] = {}
    for model in models:
        gflops, params = model.flops_b, model.params_m
        if (gflops is None or params is None) and measure:
            key = _arch_key(model)
            if key not in cache:
                try:
                    cache[key] = list(measure_model(model))
                    changed = True
                except Exception as exc:  # noqa: BLE001 - any failure: the model is left without a figure
                    log.warning("cannot measure the FLOPs of model %r (%s): %s; it is left out of budgets",
                                model.id, model.arch, " ".join(str(exc).split())[:200])
                    cache[key] = None
            if cache.get(key):
                gflops = gflops if gflops is not None else round(cache[key][0], 4)
                params = params if params is not None else round(cache[key][1], 3)
        out[model.id] = ModelCost(model.id, gflops, params)
    if changed:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache_path, {k: v for k, v in cache.items() if v is not None})
    return out


def entry_model(entry: dict[str, Any]) -> HubModel:
    """A HubModel from the copy of its hub entry that labels keep (`describe()`'s fields)."""
    def path(value: Any) -> Path | None:
        return Path(value) if value else None

    return HubModel(id=str(entry["id"]), arch=str(entry["arch"]), pretrained=entry.get("pretrained") or None,
                    checkpoint=path(entry.get("checkpoint")), config=path(entry.get("config")),
                    # Labels written before hubs were range-checked may keep a negative or NaN cost: unknown,
                    # so a budget leaves the model out (with a warning) instead of taking it for free.
                    params_m=number_in_range("params_m", entry.get("params_m")),
                    flops_b=number_in_range("flops_b", entry.get("flops_b")))


def fill_hub_flops(source: str | Path) -> dict[str, ModelCost]:
    """Measure the models of a hub file that lack `flops_b` or `params_m` and write the figures into it.

    The file (JSON or CSV) is rewritten atomically with only those cells filled; a model that
    cannot be measured keeps its empty cells (a warning names it).

    Raises:
        InputError: the source is not a writable hub file (a built-in hub's figures are shipped).
    """
    if not Path(source).is_file():
        raise InputError(f"{source}: not a hub file (a built-in hub's figures are shipped; copy it to a file "
                         "to fill in figures)")
    hub = load_hub(source, validate=False)
    path = Path(source)
    costs = model_costs(list(hub))
    if path.suffix.lower() == ".csv":
        text = path.read_text(encoding="utf-8")
        rows = list(csv.DictReader(io.StringIO(text)))
        fields = list(rows[0].keys()) if rows else []
        fields += [f for f in ("params_m", "flops_b") if f not in fields]
        for row in rows:
            cost = costs[row["id"]]
            if not row.get("flops_b") and cost.gflops is not None:
                row["flops_b"] = f"{cost.gflops:g}"
            if not row.get("params_m") and cost.params_m is not None:
                row["params_m"] = f"{cost.params_m:g}"
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        with atomic_file(path) as handle:
            handle.write(buf.getvalue())
    else:
        data = json.loads(path.read_text(encoding="utf-8"))
        for row in data["models"]:
            cost = costs[row["id"]]
            if row.get("flops_b") is None and cost.gflops is not None:
                row["flops_b"] = cost.gflops
            if row.get("params_m") is None and cost.params_m is not None:
                row["params_m"] = cost.params_m
        write_json(path, data)
    return costs
