"""Tests of mll_index.models.hub: hub files, the built-in mll49 hub, model loading, preprocess keys.

Real open_clip with tiny architectures (random weights written by tests/tinyclip.py); no mocks.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import socket
import time
from pathlib import Path

import pytest

from mll_index.errors import InputError, ModelLoadError
from mll_index.models.hub import Hub, HubModel, builtin_hubs, group_by_preprocess, load_hub, load_model, preprocess_key

from tests.tinyclip import make_tiny_checkpoint, write_tiny_arch

MLL49_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "hubs" / "mll49.csv"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A folder with two tiny architectures (32 px and 64 px), their checkpoints, and a hub file."""
    root = tmp_path_factory.mktemp("tinyhub")
    arch32 = write_tiny_arch(root / "archs", "hubtest-tiny-vit32")
    arch64 = write_tiny_arch(root / "archs", "hubtest-tiny-vit64", image_size=64)
    ckpt32 = make_tiny_checkpoint(arch32, root / "weights" / "tiny32.pt", seed=1)
    ckpt64 = make_tiny_checkpoint(arch64, root / "weights" / "tiny64.pt", seed=2)
    hub_file = root / "hub.json"
    hub_file.write_text(json.dumps({"name": "tiny", "models": [
        {"id": "tiny32", "arch": "hubtest-tiny-vit32", "checkpoint": "weights/tiny32.pt",
         "config": "archs/hubtest-tiny-vit32.json", "params_m": 1.6, "flops_b": None, "imagenet_acc": None,
         "licence": None},
        {"id": "tiny32-again", "arch": "hubtest-tiny-vit32", "checkpoint": "weights/tiny32.pt",
         "config": "archs/hubtest-tiny-vit32.json"},
        {"id": "tiny64", "arch": "hubtest-tiny-vit64", "checkpoint": "weights/tiny64.pt",
         "config": "archs/hubtest-tiny-vit64.json"},
    ]}))
    return {"root": root, "hub": hub_file, "arch32": arch32, "arch64": arch64, "ckpt32": ckpt32, "ckpt64": ckpt64}


def write_hub(path: Path, models: list[dict]) -> Path:
    path.write_text(json.dumps({"models": models}))
    return path


# --- the built-in hub ---------------------------------------------------------------------


def test_mll49_is_builtin_and_loads_its_49_models() -> None:
    assert "mll49" in builtin_hubs()
    hub = load_hub("mll49")
    assert isinstance(hub, Hub) and hub.name == "mll49"
    assert len(hub) == 49
    assert len(set(hub.ids)) == 49
    assert all(m.id == f"{m.arch}-{m.pretrained}" and m.checkpoint is None for m in hub)
    assert hub.source and "LAMDASZ-ML/MLL" in hub.source
    assert hub.get("ViT-B-32-openai").params_m == pytest.approx(151.28)


def test_mll49_pairs_are_known_to_open_clip() -> None:
    import open_clip

    known = set(open_clip.list_pretrained())
    hub = load_hub("mll49", validate=False)
    missing = [(m.arch, m.pretrained) for m in hub if (m.arch, m.pretrained) not in known]
    assert missing == []


@pytest.mark.skipif(not MLL49_CSV.is_file(), reason="the shared data folder is not next to this checkout")
def test_mll49_metadata_matches_the_reference_csv() -> None:
    hub = load_hub("mll49", validate=False)
    with open(MLL49_CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(m.arch, m.pretrained) for m in hub] == [(r["name"], r["pretrained"]) for r in rows]
    for model, row in zip(hub, rows):
        assert model.params_m == pytest.approx(float(row["params (M)"]))
        assert model.flops_b == pytest.approx(float(row["FLOPs (B)"]))
        assert model.imagenet_acc == pytest.approx(float(row["ImageNet"]))


def test_unknown_builtin_hub_lists_the_builtins() -> None:
    with pytest.raises(InputError, match=r"mll48.*built-in hubs: \['mll49'"):
        load_hub("mll48")


def test_get_unknown_id_lists_available_ids() -> None:
    hub = load_hub("mll49", validate=False)
    with pytest.raises(InputError) as info:
        hub.get("RN50-opnai")
    message = str(info.value)
    assert "RN50-opnai" in message and "RN50-openai" in message and "20 of 49" in message


# --- custom architectures: load and run ---------------------------------------------------


def test_custom_arch_hub_loads_and_runs(tiny: dict[str, Path]) -> None:
    import torch

    hub = load_hub(tiny["hub"])
    model = hub.get("tiny32")
    assert model.config == tiny["arch32"].resolve() and model.checkpoint == tiny["ckpt32"].resolve()
    assert model.params_m == 1.6 and model.flops_b is None and model.licence is None
    loaded = load_model(model)
    assert loaded.hub_model is model
    assert not loaded.model.training
    with torch.no_grad():
        image = loaded.model.encode_image(torch.randn(2, 3, 32, 32))
        text = loaded.model.encode_text(loaded.tokenizer(["a photo of a tench", "a laptop"]))
    assert image.shape == (2, 32) and text.shape == (2, 32)
    assert torch.isfinite(image).all() and torch.isfinite(text).all()
    # The eval transform gives the input the model takes, and the key names that transform.
    from PIL import Image

    assert tuple(loaded.preprocess(Image.new("RGB", (50, 40))).shape) == (3, 32, 32)
    assert loaded.preprocess_key == preprocess_key(model) == "32px-bicubic-shortest-openai"


def test_tiny_resnet_arch_loads_and_runs(tmp_path: Path) -> None:
    import torch

    config = write_tiny_arch(tmp_path, "hubtest-tiny-rn32", vision="resnet")
    make_tiny_checkpoint(config, tmp_path / "rn.pt")
    path = write_hub(tmp_path / "hub.json", [{"id": "rn", "arch": config.stem, "checkpoint": "rn.pt",
                                              "config": config.name}])
    loaded = load_model(load_hub(path).get("rn"))
    with torch.no_grad():
        assert loaded.model.encode_image(torch.randn(2, 3, 32, 32)).shape == (2, 32)
        assert loaded.model.encode_text(loaded.tokenizer(["a tench"])).shape == (1, 32)


def test_checkpoint_weights_are_the_ones_loaded(tiny: dict[str, Path]) -> None:
    import torch

    loaded = load_model(load_hub(tiny["hub"]).get("tiny32"))
    saved = torch.load(tiny["ckpt32"], weights_only=True)
    state = loaded.model.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in saved.items())


def test_csv_hub_reads_like_json(tiny: dict[str, Path]) -> None:
    path = tiny["root"] / "hub.csv"
    path.write_text("id,arch,pretrained,checkpoint,config,params_m,flops_b,imagenet_acc,licence\n"
                    "tiny32,hubtest-tiny-vit32,,weights/tiny32.pt,archs/hubtest-tiny-vit32.json,1.6,,,\n"
                    "vitb32,ViT-B-32,openai,,,151.28,14.78,0.6332,MIT\n")
    hub = load_hub(path)
    assert hub.ids == ("tiny32", "vitb32")
    assert hub.get("tiny32") == load_hub(tiny["hub"]).get("tiny32")
    vitb32 = hub.get("vitb32")
    assert (vitb32.pretrained, vitb32.imagenet_acc, vitb32.licence, vitb32.checkpoint) == ("openai", 0.6332, "MIT", None)


def test_hub_files_as_spreadsheets_and_editors_write_them_read_like_plain_ones(tmp_path: Path) -> None:
    text = "id,arch,pretrained,params_m\nrn50,RN50,openai,102\nvitb32,ViT-B-32,openai,\n"
    plain = tmp_path / "plain.csv"
    plain.write_text(text)
    # Excel's "CSV UTF-8": a byte-order mark, CR LF, a trailing empty column and an empty last row.
    excel = tmp_path / "excel.csv"
    excel.write_bytes(codecs.BOM_UTF8 + "".join(line + ",\r\n" for line in text.splitlines()).encode() + b",,,,\r\n")
    assert load_hub(excel, validate=False).models == load_hub(plain, validate=False).models
    hub = {"models": [{"id": "rn50", "arch": "RN50", "pretrained": "openai"}]}
    utf16 = tmp_path / "hub.json"
    utf16.write_bytes(json.dumps(hub).encode("utf-16"))   # with its byte-order mark
    assert load_hub(utf16, validate=False).ids == ("rn50",)
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"id,arch,pretrained\nrn50,RN\xe950,openai\n")
    with pytest.raises(InputError, match=rf"^{re.escape(str(broken))}: line 2: not UTF-8 \(byte 0xe9 at offset 26 of the file"):
        load_hub(broken, validate=False)


# --- bad hub files ------------------------------------------------------------------------


BAD_HUBS = {
    "missing field": ({"id": "m1", "pretrained": "openai"}, r"model 'm1': missing field 'arch'"),
    "unknown arch": ({"id": "m1", "arch": "ViT-B-33", "pretrained": "openai"},
                     r"model 'm1': unknown open_clip architecture 'ViT-B-33'; close names: \[.*'ViT-B-32'"),
    "unknown tag": ({"id": "m1", "arch": "RN50", "pretrained": "laion9b"},
                    r"model 'm1': open_clip has no pretrained tag 'laion9b' for RN50; available tags: \['openai'"),
    "both weights": ({"id": "m1", "arch": "RN50", "pretrained": "openai", "checkpoint": "hub.json"},
                     r"model 'm1': give exactly one of 'pretrained' .* it has both"),
    "no weights": ({"id": "m1", "arch": "RN50"}, r"model 'm1': give exactly one of 'pretrained' .* it has neither"),
    "missing checkpoint": ({"id": "m1", "arch": "RN50", "checkpoint": "nowhere/rn50.pt"},
                           r"model 'm1': checkpoint file .*nowhere/rn50.pt does not exist"),
    "missing config": ({"id": "m1", "arch": "tiny-x", "checkpoint": "hub.json", "config": "tiny-x.json"},
                       r"model 'm1': config file .*tiny-x.json does not exist"),
    "device checkpoint": ({"id": "m1", "arch": "RN50", "checkpoint": "/dev/zero"},
                          r"model 'm1': checkpoint file /dev/zero is not a regular file"),
    "unknown field": ({"id": "m1", "arch": "RN50", "pretrain": "openai"}, r"model 'm1': unknown field\(s\) \['pretrain'\]"),
    "bad number": ({"id": "m1", "arch": "RN50", "pretrained": "openai", "params_m": "big"},
                   r"model 'm1': field 'params_m' must be a number or null, not 'big'"),
    # A cost below 0 or NaN would pass a budget for free; 1e21 is a typo.
    "negative flops": ({"id": "m1", "arch": "RN50", "pretrained": "openai", "flops_b": -1},
                       r"model 'm1': field 'flops_b' must be a finite number from 0 to 1e\+09, not -1"),
    "negative params": ({"id": "m1", "arch": "RN50", "pretrained": "openai", "params_m": -5},
                        r"model 'm1': field 'params_m' must be a finite number"),
    "nan params": ({"id": "m1", "arch": "RN50", "pretrained": "openai", "params_m": float("nan")},
                   r"model 'm1': field 'params_m' must be a finite number"),
    "infinite flops": ({"id": "m1", "arch": "RN50", "pretrained": "openai", "flops_b": float("inf")},
                       r"model 'm1': field 'flops_b' must be a finite number"),
    "huge params": ({"id": "m1", "arch": "RN50", "pretrained": "openai", "params_m": 1e21},
                    r"model 'm1': field 'params_m' must be a finite number from 0 to 1e\+07, not 1e\+21"),
    "accuracy above 100": ({"id": "m1", "arch": "RN50", "pretrained": "openai", "imagenet_acc": 150},
                           r"model 'm1': field 'imagenet_acc' must be a finite number from 0 to 100"),
}


@pytest.mark.parametrize("case", sorted(BAD_HUBS))
def test_bad_hub_entries_are_input_errors_naming_file_and_model(tmp_path: Path, case: str) -> None:
    entry, pattern = BAD_HUBS[case]
    path = write_hub(tmp_path / "hub.json", [{"id": "ok", "arch": "RN50", "pretrained": "openai"}, entry])
    with pytest.raises(InputError, match=pattern) as info:
        load_hub(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    if "finite number" in pattern:     # `hub show` reads without validating the weights: the numbers still
        with pytest.raises(InputError, match=pattern):
            load_hub(path, validate=False)


def test_duplicate_id_is_an_input_error(tmp_path: Path) -> None:
    path = write_hub(tmp_path / "hub.json", [{"id": "m1", "arch": "RN50", "pretrained": "openai"},
                                             {"id": "m1", "arch": "RN101", "pretrained": "openai"}])
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: model 'm1': duplicate id \(also model #1\)$"):
        load_hub(path)


def test_entry_without_id_is_named_by_position(tmp_path: Path) -> None:
    path = write_hub(tmp_path / "hub.json", [{"id": "m1", "arch": "RN50", "pretrained": "openai"},
                                             {"arch": "RN101", "pretrained": "openai"}])
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: model #2: missing field 'id'$"):
        load_hub(path)


def test_config_must_be_named_after_its_arch_and_be_a_model_config(tmp_path: Path, tiny: dict[str, Path]) -> None:
    path = write_hub(tmp_path / "hub.json", [{"id": "m1", "arch": "other-name", "checkpoint": str(tiny["ckpt32"]),
                                              "config": str(tiny["arch32"])}])
    with pytest.raises(InputError, match=r"model 'm1': config file hubtest-tiny-vit32.json must be named"):
        load_hub(path)
    (tmp_path / "not-a-model.json").write_text('{"embed_dim": 8}')
    path = write_hub(tmp_path / "hub.json", [{"id": "m2", "arch": "not-a-model", "checkpoint": str(tiny["ckpt32"]),
                                              "config": "not-a-model.json"}])
    with pytest.raises(InputError, match=r"model 'm2': config file .* is not an open_clip model config"):
        load_hub(path)


def test_custom_config_may_not_replace_a_builtin_arch(tmp_path: Path, tiny: dict[str, Path]) -> None:
    config = write_tiny_arch(tmp_path, "RN50")
    path = write_hub(tmp_path / "hub.json", [{"id": "m1", "arch": "RN50", "checkpoint": str(tiny["ckpt32"]),
                                              "config": str(config)}])
    with pytest.raises(InputError, match=r"model 'm1': arch 'RN50' is already an open_clip architecture"):
        load_hub(path)


def test_empty_and_malformed_hub_files(tmp_path: Path) -> None:
    path = write_hub(tmp_path / "empty.json", [])
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: the hub lists no models$"):
        load_hub(path)
    path.write_text('[{"id": "m1"}]')
    with pytest.raises(InputError, match=rf'^{re.escape(str(path))}: a hub file is a JSON object with a "models" list$'):
        load_hub(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: not a readable JSON hub file"):
        load_hub(path)


# --- load failures ------------------------------------------------------------------------


def test_checkpoint_that_does_not_match_its_config_is_a_model_load_error(tmp_path: Path, tiny: dict[str, Path]) -> None:
    # A 16-dimensional architecture given the 32-dimensional tiny checkpoint.
    config = write_tiny_arch(tmp_path, "hubtest-tiny-vit32-e16", embed_dim=16)
    path = write_hub(tmp_path / "hub.json", [{"id": "mismatch", "arch": config.stem,
                                              "checkpoint": str(tiny["ckpt32"]), "config": str(config)}])
    model = load_hub(path).get("mismatch")
    with pytest.raises(ModelLoadError) as info:
        load_model(model)
    message = str(info.value)
    assert message.startswith("cannot load model 'mismatch'") and "size mismatch" in message
    assert "\n" not in message


def test_checkpoint_that_is_not_weights_is_a_model_load_error(tmp_path: Path, tiny: dict[str, Path]) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    path = write_hub(tmp_path / "hub.json", [{"id": "junk", "arch": "hubtest-tiny-vit32", "checkpoint": "junk.pt",
                                              "config": str(tiny["arch32"])}])
    with pytest.raises(ModelLoadError, match=r"^cannot load model 'junk' \(.*junk.pt\): "):
        load_model(load_hub(path).get("junk"))


RN50_REPO = "timm/resnet50_clip.openai"


def _rn50_weights_cached() -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(RN50_REPO, name), str)
               for name in ("open_clip_pytorch_model.bin", "open_clip_model.safetensors"))


@pytest.mark.skipif(_rn50_weights_cached(), reason=f"the weights of RN50/openai are in this machine's "
                                                   f"Hugging Face cache ({RN50_REPO})")
def test_weights_that_need_a_download_fail_fast_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a machine online must not download 100 MB here
    except OSError:
        pass  # offline for real: the path this test is about
    model = load_hub("mll49").get("RN50-openai")
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_model(model)
    elapsed = time.monotonic() - start
    # A guard against a hang (the Hugging Face client alone retries for ~45 s), not a speed test.
    assert elapsed < 30
    message = str(info.value)
    assert message.startswith("cannot load model 'RN50-openai' (RN50/openai)") and "\n" not in message
    assert "cannot be reached" in message


# --- preprocess keys ----------------------------------------------------------------------


def test_preprocess_key_groups_models_with_the_same_preprocessing(tiny: dict[str, Path]) -> None:
    mll49 = load_hub("mll49")
    openai_224 = preprocess_key(mll49.get("ViT-B-32-openai"))
    assert openai_224 == "224px-bicubic-shortest-openai"
    assert preprocess_key(mll49.get("ViT-B-16-laion2b_s34b_b88k")) == openai_224
    assert preprocess_key(mll49.get("RN50-cc12m")) == openai_224
    assert preprocess_key(mll49.get("ViT-L-14-336-openai")) == "336px-bicubic-shortest-openai"
    assert preprocess_key(mll49.get("ViT-H-14-378-quickgelu-dfn5b")) == "378px-bicubic-squash-openai"
    assert preprocess_key(mll49.get("nllb-clip-base-siglip-v1")) == "384px-bicubic-squash-inception"
    custom = load_hub(tiny["hub"])
    assert preprocess_key(custom.get("tiny32")) == preprocess_key(custom.get("tiny32-again"))
    assert preprocess_key(custom.get("tiny64")) == "64px-bicubic-shortest-openai"


def test_preprocess_key_matches_the_transform_open_clip_builds(tiny: dict[str, Path]) -> None:
    model = load_hub(tiny["hub"]).get("tiny64")
    assert load_model(model).preprocess_key == preprocess_key(model)


def test_group_by_preprocess_on_mll49_gives_a_handful_of_groups() -> None:
    hub = load_hub("mll49")
    groups = group_by_preprocess(hub)
    assert 2 <= len(groups) < 15
    members = [m.id for group in groups.values() for m in group]
    assert sorted(members) == sorted(hub.ids)
    assert len(groups["224px-bicubic-shortest-openai"]) > 20
    assert all(preprocess_key(m) == key for key, group in groups.items() for m in group)


def test_hub_model_describe_round_trips_through_a_hub_file(tmp_path: Path, tiny: dict[str, Path]) -> None:
    models = list(load_hub(tiny["hub"]))
    path = write_hub(tmp_path / "copy.json", [m.describe() for m in models])
    assert list(load_hub(path)) == models
    assert isinstance(models[0], HubModel)
