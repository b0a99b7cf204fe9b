"""Generated target tasks: many seeded tasks drawn from the emoji world's concepts and domains.

Fourteen hand-made tasks are too few to tune or calibrate anything; `generate_tasks(n, seed)` draws
as many as wanted, each of 10 to 60 classes (fewer where the world has fewer concepts), from one
emoji category, from all, or of closely related concepts (WordNet neighbours, as hand-made tasks
are), in one domain, several or all eight. A class is named as a user writes
it: the concept's lemma from the mapping table (`hot_dog` -> `hot dog`), never its wnid, which is
kept only as ground truth. The result has the shape of a task file (`world.tasks`), so `world build
--tasks` writes the tasks' images from the `task` pool and `evaluate` scores them.

`draw_task_images` draws the same images in memory (the first n of each class and domain), for
benchmarks that score hundreds of generated tasks without writing a world.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mll_index.errors import InputError
from mll_index.world.concepts import EmojiConcept
from mll_index.world.domains import DOMAINS

MIN_CLASSES = 10
MAX_CLASSES = 60
# How a task's domains are drawn: one domain, two to four, or all eight, as the shipped tasks mix them.
DOMAIN_REGIMES = ("one", "several", "all")


def class_name_of(concept: EmojiConcept) -> str:
    """The name a user writes for a concept: its lemma with spaces (`hot_dog` -> `hot dog`)."""
    return " ".join(concept.lemma.replace("_", " ").split())


def generate_tasks(concepts: Sequence[EmojiConcept], concept_domains: dict[str, Sequence[str]], n: int,
                   seed: int, *, min_classes: int = MIN_CLASSES, max_classes: int = MAX_CLASSES,
                   ancestors: dict[str, set[str]] | None = None) -> dict[str, Any]:
    """Draw `n` tasks; the same (concepts, n, seed) give the same tasks.

    Args:
        concepts: the world's concepts (`load_concepts()` filtered to a built world's).
        concept_domains: wnid -> the domains the world draws the concept in (a built world's concepts.json).
        n: tasks to draw, >= 1.
        seed: the random seed; task names carry it (`gen-<seed>-<i>`).
        min_classes, max_classes: the range of the number of classes, drawn uniformly (inclusive);
            capped by the concepts that fit a task's domains.
        ancestors: wnid -> its WordNet hypernyms; with them a third of the tasks are of related
            concepts (a random concept and those sharing the most hypernyms with it, as hand-made
            tasks are: farm animals, vehicles), which are harder to tell apart.
    Returns:
        a task file's content: {"tasks": [{"name", "description", "domains", "classes": [{"name", "wnid"}]}]}.
    Raises:
        InputError: n < 1, a bad class range, or fewer than 2 concepts to draw from.
    """
    if n < 1:
        raise InputError(f"the number of tasks to generate must be at least 1, got {n}")
    if not 2 <= min_classes <= max_classes:
        raise InputError(f"the class range must satisfy 2 <= min <= max, got {min_classes}..{max_classes}")
    usable = [c for c in concepts if concept_domains.get(c.wnid)]
    if len(usable) < 2:
        raise InputError(f"only {len(usable)} concept(s) with images to draw tasks from; a task needs 2 classes")
    rng = np.random.default_rng(seed)
    domain_names = [d for d in DOMAINS if any(d in concept_domains[c.wnid] for c in usable)]
    categories = sorted({c.category for c in usable})
    tasks = []
    for i in range(n):
        regime = DOMAIN_REGIMES[int(rng.integers(len(DOMAIN_REGIMES)))]
        if regime == "one" or len(domain_names) == 1:
            domains = [domain_names[int(rng.integers(len(domain_names)))]]
        elif regime == "several":
            count = int(rng.integers(2, min(4, len(domain_names)) + 1))
            picked = set(rng.choice(len(domain_names), count, replace=False).tolist())
            domains = [d for j, d in enumerate(domain_names) if j in picked]
        else:
            domains = list(domain_names)
        # Every class has images in every domain of its task.
        fitting = [c for c in usable if set(domains) <= set(concept_domains[c.wnid])]
        wanted = int(rng.integers(min_classes, max_classes + 1))
        # Classes: from one emoji category, from all, or (with `ancestors`) related concepts.
        draw = rng.random()
        related = ancestors is not None and draw < 1 / 3
        category = None
        if related:
            anchor = fitting[int(rng.integers(len(fitting)))]
            mine = ancestors.get(anchor.wnid, set())  # type: ignore[union-attr]
            # Closest first: most shared hypernyms; ties broken at random.
            shared = np.array([len(mine & ancestors.get(c.wnid, set())) for c in fitting])  # type: ignore[union-attr]
            order = np.lexsort((rng.random(len(fitting)), -shared))
            order = np.concatenate([[fitting.index(anchor)], [j for j in order if fitting[j] is not anchor]])
            pool = [fitting[j] for j in order]
        else:
            category = categories[int(rng.integers(len(categories)))] if draw < 2 / 3 else None
            pool = [c for c in fitting if category is None or c.category == category]
            if len(pool) < min(wanted, min_classes):
                category, pool = None, fitting
        classes: list[dict[str, str]] = []
        names: set[str] = set()
        for j in (range(len(pool)) if related else rng.permutation(len(pool))):
            name = class_name_of(pool[j])
            if name.lower() in names:  # two concepts with one lemma (mushroom, drum): a user could not tell them apart
                continue
            names.add(name.lower())
            classes.append({"name": name, "wnid": pool[j].wnid})
            if len(classes) == wanted:
                break
        if len(classes) < 2:
            raise InputError(f"only {len(classes)} concept(s) fit domains {domains}; a task needs 2 classes")
        where = f"concepts related to {classes[0]['name']!r}" if related else category or "all categories"
        tasks.append({"name": f"gen-{seed}-{i:03d}",
                      "description": f"generated (seed {seed}): {len(classes)} classes from {where}, "
                                     f"domains {', '.join(domains)}",
                      "domains": domains, "classes": classes})
    return {"tasks": tasks}


def draw_task_images(concepts: Sequence[EmojiConcept], domains: Sequence[str], per_cell: int,
                     workers: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first `per_cell` images of the world's `task` pool for each (concept, domain), drawn in memory.

    They are the images `world build` writes for a task (pool `task`, indices 0..per_cell-1), so a
    benchmark may score many generated tasks without writing their folders.

    Args:
        concepts: the concepts to draw (order kept).
        domains: the domain names to draw each concept in.
        per_cell: images per (concept, domain), 1..8 for the full world.
    Returns:
        images (m, 32, 32, 3) uint8, concept (m,) int32 index into `concepts`, domain (m,) int32 index
        into `DOMAINS`' order; sorted by (concept, domain, image index).
    Raises:
        InputError: an unknown domain; npm art missing (as `world build`).
    """
    from mll_index.world.build import npm_dir
    from mll_index.world.corpus import concept_domains, draw_corpus, read_all_art

    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise InputError(f"unknown domain(s) {unknown}; domains: {list(DOMAINS)}")
    art = read_all_art(list(concepts), npm_dir())
    cells = [[d for d in concept_domains(c, art) if d in domains] for c in concepts]
    return draw_corpus(list(concepts), art, cells, {"task": per_cell}, workers)["task"]


def generate_world_tasks(size: str, root: Any, n: int, seed: int) -> dict[str, Any]:
    """`generate_tasks` over a built world's concepts (see `load_world` for size and root)."""
    from mll_index.index.graph import load_taxonomy
    from mll_index.world.build import load_world
    from mll_index.world.concepts import load_concepts

    world = load_world(size, root)
    domains = {c["wnid"]: c["domains"] for c in world.concepts}
    graph = load_taxonomy()
    return generate_tasks([c for c in load_concepts() if c.wnid in domains], domains, n, seed,
                          ancestors={w: graph.ancestors(w) for w in domains})
