"""Generated tasks of the emoji world, and the training cache key that a task file no longer changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import InputError
from mll_index.world import DOMAINS, build_world, load_concepts, load_task_specs
from mll_index.world.build import SIZES, training_key
from mll_index.world.concepts import mapping_path
from mll_index.world.generate import class_name_of, draw_task_images, generate_tasks
from tests.conftest import run_cli


def _all_domains() -> dict[str, list[str]]:
    return {c.wnid: list(DOMAINS) for c in load_concepts()}


def test_generated_tasks_are_seeded_and_fit_the_world(tmp_path: Path) -> None:
    concepts = load_concepts()
    a = generate_tasks(concepts, _all_domains(), 40, seed=3)
    assert a == generate_tasks(concepts, _all_domains(), 40, seed=3)
    assert a != generate_tasks(concepts, _all_domains(), 40, seed=4)
    lemma_names = {class_name_of(c) for c in concepts}
    regimes = set()
    for task in a["tasks"]:
        names = [c["name"] for c in task["classes"]]
        assert 10 <= len(names) <= 60
        assert len({n.lower() for n in names}) == len(names)
        assert set(names) <= lemma_names                   # as users write them ...
        assert not any(n.startswith("n0") and n[1:].isdigit() for n in names)   # ... never a wnid
        regimes.add("one" if len(task["domains"]) == 1 else "all" if len(task["domains"]) == len(DOMAINS) else "several")
    assert regimes == {"one", "several", "all"}
    path = tmp_path / "generated.json"
    path.write_text(json.dumps(a))
    specs = load_task_specs(path, known_domains=set(DOMAINS), known_wnids={c.wnid for c in concepts})
    assert [s.name for s in specs] == [f"gen-3-{i:03d}" for i in range(40)]


def test_generation_caps_classes_at_the_concepts_that_fit() -> None:
    concepts = load_concepts()[:12]
    domains = {c.wnid: ["noto"] for c in concepts}
    tasks = generate_tasks(concepts, domains, 5, seed=0)["tasks"]
    assert all(t["domains"] == ["noto"] and 2 <= len(t["classes"]) <= 12 for t in tasks)
    with pytest.raises(InputError, match="at least 1"):
        generate_tasks(concepts, domains, 0, seed=0)
    with pytest.raises(InputError, match="a task needs 2 classes"):
        generate_tasks(concepts[:1], domains, 1, seed=0)


def test_training_key_reads_what_training_reads(tmp_path: Path) -> None:
    concepts = load_concepts()
    full = SIZES["full"]
    key = training_key(full, mapping_path(), concepts)
    assert training_key(full, mapping_path(), list(concepts)) == key
    assert training_key(full, mapping_path(), concepts[:-1]) != key      # other concepts: other training data
    other_mapping = tmp_path / "mapping.tsv"
    other_mapping.write_text(mapping_path().read_text() + "\n")
    assert training_key(full, other_mapping, concepts) != key


def test_another_task_file_reuses_the_trained_hub(small_world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Same concepts, other tasks (renamed, described, one more): the world is rebuilt, the hub is not retrained."""
    spec = json.loads((small_world.root / "tasks.json").read_text())
    for task in spec["tasks"]:
        task["description"] = "another user's words"
    spec["tasks"].append({**spec["tasks"][0], "name": "one-more"})   # past the small size's 4 tasks: not kept
    task_file = tmp_path / "tasks.json"
    task_file.write_text(json.dumps(spec))
    again = build_world("small", tmp_path / "world", task_file=task_file)
    assert again.manifest["inputs"] != small_world.manifest["inputs"]
    assert {m: info["trained"] for m, info in again.manifest["models"].items()} == \
        {m: "cached" for m in small_world.manifest["models"]}
    assert {m: info["hash"] for m, info in again.manifest["models"].items()} == \
        {m: info["hash"] for m, info in small_world.manifest["models"].items()}


def test_generated_task_images_are_the_worlds(small_world) -> None:  # type: ignore[no-untyped-def]
    """The in-memory draw gives the very images `world build` wrote for a task."""
    from PIL import Image

    task = small_world.tasks[0]
    concept = next(c for c in load_concepts() if c.wnid == task.classes[0].wnid)
    domain = task.domains[0]
    images, cids, dids = draw_task_images([concept], [domain], per_cell=2)
    assert images.shape == (2, 32, 32, 3) and set(cids.tolist()) == {0}
    assert set(dids.tolist()) == {list(DOMAINS).index(domain)}
    written = sorted((small_world.task_dir(task.name) / task.classes[0].name).glob(f"{domain}-*.png"))[:2]
    assert all(np.array_equal(np.asarray(Image.open(p).convert("RGB")), im) for p, im in zip(written, images))


def test_world_tasks_cli(small_world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "gen.json"
    done = run_cli("world", "tasks", "--size", "small", "--root", str(small_world.root), "--generate", "3",
                   "--seed", "7", "-o", str(out))
    assert done.returncode == 0, done.stderr
    tasks = json.loads(out.read_text())["tasks"]
    world_wnids = {c["wnid"] for c in small_world.concepts}
    assert len(tasks) == 3 and all({c["wnid"] for c in t["classes"]} <= world_wnids for t in tasks)
    missing = run_cli("world", "tasks", "--root", str(tmp_path / "nowhere"), "--generate", "3")
    assert missing.returncode == 1 and "no emoji world" in missing.stderr and "Traceback" not in missing.stderr


def test_related_tasks_gather_wordnet_neighbours(taxonomy) -> None:  # type: ignore[no-untyped-def]
    concepts = load_concepts()
    ancestors = {c.wnid: taxonomy.ancestors(c.wnid) for c in concepts}
    tasks = generate_tasks(concepts, _all_domains(), 30, seed=5, ancestors=ancestors)["tasks"]
    related = [t for t in tasks if "related to" in t["description"]]
    assert related and len(related) < len(tasks)
    for task in related:
        anchor, *others = [c["wnid"] for c in task["classes"]]
        shared = [len(ancestors[anchor] & ancestors[w]) for w in others]
        outside = [len(ancestors[anchor] & ancestors[c.wnid]) for c in concepts
                   if c.wnid not in {x["wnid"] for x in task["classes"]}]
        # Closest first: only a concept skipped for a lemma already taken may be closer than a class.
        assert np.mean(shared) > np.mean(outside) and sorted(shared, reverse=True)[0] >= np.percentile(outside, 99)
