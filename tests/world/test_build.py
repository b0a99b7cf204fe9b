"""The emoji world: the shipped mapping, tasks and hub spec, the drawing of images, and a small world built for real."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import InputError
from mll_index.index import graph as graph_mod
from mll_index.models.hub import load_hub, load_model
from mll_index.world import DOMAINS, build_world, load_concepts, load_task_specs, load_world
from mll_index.world.build import SIZES
from mll_index.world.corpus import draw_corpus
from mll_index.world.domains import draw_image, image_rng
from mll_index.world.train import load_hub_spec
from tests.conftest import run_cli

# --------------------------------------------------------------------------------------
# Shipped data


def test_mapping_is_several_hundred_checked_visual_synsets(taxonomy: graph_mod.Graph) -> None:
    concepts = load_concepts()
    assert len(concepts) >= 350
    wnids = [c.wnid for c in concepts]
    assert len(set(wnids)) == len(wnids)
    visual = set(graph_mod.resolve_node_set(taxonomy, graph_mod.recipe_node_set("visual")).node_wnids)
    assert set(wnids) <= visual
    for c in concepts:
        # The synset column names the same synset as the wnid.
        assert taxonomy.synsets[taxonomy.row(c.wnid)] == c.synset
        assert c.checked
    assert {c.category for c in concepts} <= {"Animals & Nature", "Food & Drink", "Travel & Places", "Objects",
                                               "Activities"}


def test_mapping_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "map.tsv"
    header = "unified\temoji\tname\tcategory\twnid\tsynset\tlemma\tmethod\tchecked\n"
    bad.write_text(header + "1F415\t🐕\tdog\tAnimals & Nature\tn02084071\tdog.n.01\tdog\tmanual\tyes\n"
                   "1F436\t🐶\tdog face\tAnimals & Nature\tn02084071\tdog.n.01\tdog\tmanual\tyes\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"map.tsv:3: wnid n02084071 is already used on line 2"):
        load_concepts(bad)
    bad.write_text(header + "1F415\t🐕\tdog\tAnimals & Nature\tdog\tdog.n.01\tdog\tmanual\tyes\n", encoding="utf-8")
    with pytest.raises(InputError, match="malformed wnid 'dog'"):
        load_concepts(bad)
    bad.write_text("unified\temoji\n", encoding="utf-8")
    with pytest.raises(InputError, match="missing column"):
        load_concepts(bad)


def test_shipped_tasks_fit_the_world() -> None:
    wnids = {c.wnid for c in load_concepts()}
    tasks = load_task_specs(known_domains=set(DOMAINS), known_wnids=wnids)
    assert len(tasks) >= 10
    assert all(5 <= len(t.classes) <= 60 for t in tasks)
    assert any(len(t.domains) == 1 for t in tasks) and any(len(t.domains) > 1 for t in tasks)
    # Class names are written as a user would, never as synset ids.
    assert not any(graph_mod.WNID_RE.match(c.name) for t in tasks for c in t.classes)


@pytest.mark.parametrize("change, message", [
    (lambda t: t["classes"].__setitem__(slice(1, None), []), "at least 2 classes"),
    (lambda t: t["classes"].append(dict(t["classes"][0])), "duplicate class name"),
    (lambda t: t.__setitem__("domains", ["watercolour"]), "unknown domain"),
    (lambda t: t["classes"][0].__setitem__("wnid", "n00000000"), "not a concept of the emoji world"),
    (lambda t: t.__setitem__("name", "Bad Name"), "task name"),
])
def test_bad_task_files_are_refused(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    task = {"name": "t", "domains": ["noto"], "classes": [{"name": "dog", "wnid": "n02084071"},
                                                          {"name": "cat", "wnid": "n02121620"}]}
    change(task)
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps({"tasks": [task]}))
    with pytest.raises(InputError, match=message):
        load_task_specs(path, known_domains=set(DOMAINS), known_wnids={c.wnid for c in load_concepts()})


def test_hub_spec_has_the_strengths_a_real_hub_has() -> None:
    spec = load_hub_spec()
    assert len(spec.models) >= 12
    assert len({m.arch for m in spec.models}) >= 2
    assert any(m.under for m in spec.models)                      # category experts
    assert any(m.domains for m in spec.models)                    # domain experts
    assert min(m.steps for m in spec.models if m.init is None) < max(m.steps for m in spec.models)  # under-trained


# --------------------------------------------------------------------------------------
# Drawing


def test_drawing_is_seeded_and_pools_differ() -> None:
    art = np.zeros((64, 64, 4), np.uint8)
    art[16:48, 16:48] = (200, 30, 30, 255)
    for domain in DOMAINS.values():
        a = draw_image(art, domain, image_rng(1, "1F415", domain.name, "train", 0))
        b = draw_image(art, domain, image_rng(1, "1F415", domain.name, "train", 0))
        c = draw_image(art, domain, image_rng(1, "1F415", domain.name, "task", 0))
        assert a.shape == (32, 32, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)


# --------------------------------------------------------------------------------------
# A small world, built for real


def _digests(images: np.ndarray) -> set[str]:
    return {hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images}


def _png_digests(folder: Path) -> set[str]:
    from PIL import Image

    return {hashlib.sha1(np.asarray(Image.open(p).convert("RGB")).tobytes()).hexdigest()
            for p in folder.rglob("*.png")}


def test_small_world_layout(small_world) -> None:  # type: ignore[no-untyped-def]
    m = small_world.manifest
    assert m["concepts"] == len(small_world.concepts) == len(list(small_world.samples_dir.iterdir()))
    assert all(graph_mod.WNID_RE.match(p.name) for p in small_world.samples_dir.iterdir())
    per_cell = SIZES["small"].per_cell
    for concept in small_world.concepts:
        files = list((small_world.samples_dir / concept["wnid"]).glob("*.png"))
        assert len(files) == per_cell["samples"] * len(concept["domains"])
    assert len(small_world.tasks) == SIZES["small"].tasks
    for task in small_world.tasks:
        folders = sorted(p.name for p in small_world.task_dir(task.name).iterdir())
        assert folders == sorted(task.class_names)
        assert sum(1 for _ in small_world.task_dir(task.name).rglob("*.png")) == m["task_images"][task.name]


def test_small_world_pools_share_no_image(small_world) -> None:  # type: ignore[no-untyped-def]
    samples = _png_digests(small_world.samples_dir)
    tasks = _png_digests(small_world.tasks_dir)
    general = _digests(np.load(small_world.root / "general.npz")["images"])
    assert samples and tasks and general
    assert not samples & tasks and not samples & general and not tasks & general
    # The training pool is never written; draw it again as the build did and compare.
    concepts = [c for c in load_concepts() if c.wnid in {x["wnid"] for x in small_world.concepts}]
    from mll_index.world.build import npm_dir
    from mll_index.world.corpus import read_all_art

    art = read_all_art(concepts, npm_dir())
    domains = [next(x["domains"] for x in small_world.concepts if x["wnid"] == c.wnid) for c in concepts]
    train = draw_corpus(concepts, art, domains, {"train": SIZES["small"].per_cell["train"]}, workers=1)["train"][0]
    assert not _digests(train) & (samples | tasks | general)


def test_small_world_hub_loads_through_its_hub_file(small_world) -> None:  # type: ignore[no-untyped-def]
    hub = load_hub(small_world.hub_path)
    assert list(hub.ids) == list(SIZES["small"].models)
    accuracy = small_world.accuracy
    for model in hub:
        loaded = load_model(model)
        assert loaded.preprocess_key.startswith("32px")
        # The hub's "ImageNet accuracy" is the world's general accuracy, in percent.
        assert model.imagenet_acc == pytest.approx(100 * accuracy[model.id]["general"], abs=0.01)
        assert set(accuracy[model.id]) == {"general"} | {t.name for t in small_world.tasks}
        assert all(0.0 <= v <= 1.0 for v in accuracy[model.id].values())


def test_small_world_loads_from_cache(small_world) -> None:  # type: ignore[no-untyped-def]
    again = build_world("small", small_world.root)
    assert again.manifest["inputs"] == small_world.manifest["inputs"]
    assert again.manifest["seconds"] == small_world.manifest["seconds"]  # not rebuilt
    assert load_world("small", small_world.root).manifest == small_world.manifest


def test_world_cli(small_world) -> None:  # type: ignore[no-untyped-def]
    shown = run_cli("world", "show", "--size", "small", "--root", str(small_world.root))
    assert shown.returncode == 0, shown.stderr
    assert "general" in shown.stdout and small_world.tasks[0].name[:12] in shown.stdout
    as_json = json.loads(run_cli("world", "show", "--size", "small", "--root", str(small_world.root),
                                 "--format", "json").stdout)
    assert set(as_json["accuracy"]) == set(SIZES["small"].models)


def test_world_cli_errors(tmp_path: Path) -> None:
    missing = run_cli("world", "show", "--root", str(tmp_path / "nowhere"))
    assert missing.returncode == 1
    assert "no emoji world" in missing.stderr and "mll-index world build" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = tmp_path / "tasks.json"
    bad.write_text("{not json")
    refused = run_cli("world", "build", "--size", "small", "--root", str(tmp_path / "w"), "--tasks", str(bad))
    assert refused.returncode == 1 and "not a readable task file" in refused.stderr
    assert not (tmp_path / "w").exists()


# --------------------------------------------------------------------------------------
# Shipped weights: compact files that make the same checkpoints as training


def test_compact_weights_make_the_trained_checkpoints_again(small_world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Only the token rows that training texts use change: the rest is open_clip's seeded init."""
    import torch

    from mll_index.world import weights
    from mll_index.world.build import ship_world_weights
    from mll_index.world.train import load_hub_spec

    manifest = ship_world_weights(small_world, tmp_path / "shipped")
    specs = {m.id: m for m in load_hub_spec().models}
    made: dict[str, dict] = {}
    for model_id, entry in manifest["models"].items():
        spec = specs[model_id]
        assert weights.shipped_entry(model_id, entry["hash"], tmp_path / "shipped") is not None
        assert weights.shipped_entry(model_id, "another-hash", tmp_path / "shipped") is None
        base = made[spec.init] if spec.init else weights.initial_state(spec.arch, spec.seed)
        out = tmp_path / f"{model_id}.pt"
        weights.materialise(tmp_path / "shipped" / entry["file"], entry, base, out)
        made[model_id] = torch.load(out, weights_only=True)
        trained = torch.load(small_world.root / "hub" / f"{model_id}.pt", weights_only=True)
        assert made[model_id].keys() == trained.keys()
        for name, value in trained.items():  # stored as float16: equal to its rounding
            assert made[model_id][name].dtype == value.dtype
            torch.testing.assert_close(made[model_id][name], value, rtol=2 ** -10, atol=1e-7, msg=name)
        # Token rows no training text uses are the seeded init (or the parent's), exactly.
        unused = np.setdiff1d(np.arange(trained[weights.TOKEN_EMBEDDING].shape[0]),
                              weights.read_compact(tmp_path / "shipped" / entry["file"], entry)[weights.TOKEN_ROWS])
        assert torch.equal(made[model_id][weights.TOKEN_EMBEDDING][unused], trained[weights.TOKEN_EMBEDDING][unused])
        assert entry["bytes"] < (small_world.root / "hub" / f"{model_id}.pt").stat().st_size / 4


def test_damaged_shipped_weights_are_refused(small_world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mll_index.errors import IndexFormatError
    from mll_index.world import weights
    from mll_index.world.build import ship_world_weights

    manifest = ship_world_weights(small_world, tmp_path)
    model_id, entry = next(iter(manifest["models"].items()))
    path = tmp_path / entry["file"]
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=rf"{entry['file']}: does not match its checksum.*--retrain"):
        weights.read_compact(path, entry)


def test_the_shipped_weights_match_their_checksums() -> None:
    """Every compact file the package ships is the one its manifest lists (content hash)."""
    from mll_index.world import weights

    folder = weights.shipped_dir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["models"]) == {m.id for m in load_hub_spec().models}
    for entry in manifest["models"].values():
        arrays = weights.read_compact(folder / entry["file"], entry)
        assert len(arrays[weights.TOKEN_ROWS]) == entry["token_rows"] < 49408
