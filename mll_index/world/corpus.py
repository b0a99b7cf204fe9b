"""The emoji world's image pools, drawn from the vendors' art.

Every concept is drawn in each domain some vendor's art reaches, `per_cell[pool]` images per
(concept, domain); an image's random draw is seeded by (WORLD_SEED, concept, domain, pool, i), so
the pools share no image and a pool comes out the same whatever the number of workers.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.world.art import VENDORS, fetch_art_packages, read_art
from mll_index.world.concepts import EmojiConcept
from mll_index.world.domains import DOMAINS, draw_image, image_rng

WORLD_SEED = 20250130
POOLS = ("train", "samples", "general", "task")


def read_all_art(concepts: list[EmojiConcept], npm_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every vendor's art of the concepts: vendor → unified code → (64, 64, 4) uint8 RGBA; a code is absent
    where the vendor does not draw it. The tarballs are fetched with npm the first time."""
    codes = [c.unified for c in concepts]
    tarballs = fetch_art_packages(npm_dir)
    return {name: read_art(v, tarballs[v.package], codes) for name, v in VENDORS.items()}


def concept_domains(concept: EmojiConcept, art: dict[str, dict[str, np.ndarray]]) -> list[str]:
    """The domains a concept can be drawn in: those with a source vendor that draws it, in `DOMAINS` order."""
    return [d.name for d in DOMAINS.values() if any(concept.unified in art[s] for s in d.sources)]


def _draw_cells(job: tuple[list[tuple[int, str, dict[str, np.ndarray], list[str]]], dict[str, int]]) -> dict[str, Any]:
    """Draw every image of some concepts: {pool: (images, concept indices, domain indices)}."""
    cells, per_cell = job
    domain_index = {name: i for i, name in enumerate(DOMAINS)}
    out: dict[str, Any] = {}
    for pool, count in per_cell.items():
        images, concept_ids, domain_ids = [], [], []
        for ci, unified, arts, domains in cells:
            for dname in domains:
                domain = DOMAINS[dname]
                sources = [s for s in domain.sources if s in arts]
                for i in range(count):
                    rng = image_rng(WORLD_SEED, unified, dname, pool, i)
                    images.append(draw_image(arts[sources[i % len(sources)]], domain, rng))
                    concept_ids.append(ci)
                    domain_ids.append(domain_index[dname])
        out[pool] = (np.stack(images) if images else np.zeros((0, 32, 32, 3), np.uint8),
                     np.array(concept_ids, np.int32), np.array(domain_ids, np.int32))
    return out


def draw_corpus(concepts: list[EmojiConcept], art: dict[str, dict[str, np.ndarray]], domains: list[list[str]],
                per_cell: dict[str, int], workers: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Draw every pool of `per_cell`, each concept in its `domains`, over `workers` processes.

    Returns:
        Per pool: images (n, 32, 32, 3) uint8, concept positions (n,) int32 into `concepts` and domain
        positions (n,) int32 into `DOMAINS`, sorted by (concept, domain, image index).
    """
    cells = [(i, c.unified, {s: art[s][c.unified] for s in art if c.unified in art[s]}, domains[i])
             for i, c in enumerate(concepts)]
    chunks = [cells[i::max(1, workers * 4)] for i in range(max(1, workers * 4))]
    jobs = [(chunk, per_cell) for chunk in chunks if chunk]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_draw_cells, jobs))
    else:
        parts = [_draw_cells(job) for job in jobs]
    corpus = {}
    for pool_name in per_cell:
        images = np.concatenate([p[pool_name][0] for p in parts])
        cids = np.concatenate([p[pool_name][1] for p in parts])
        dids = np.concatenate([p[pool_name][2] for p in parts])
        # A stable order (concept, domain, index) whatever the chunking.
        order = np.lexsort((np.arange(len(cids)), dids, cids))
        corpus[pool_name] = (images[order], cids[order], dids[order])
    return corpus
