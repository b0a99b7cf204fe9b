"""Building and loading the emoji world: corpus, sample set, target tasks and trained hub.

A built world is a directory (by default `<cache>/world/<size>`):

    manifest.json            kind "emoji-world": size, counts, domains, the hash of its inputs
    concepts.json            the concepts used, with the domains each appears in
    samples/<wnid>/*.png     the sample set for labeling (ImageFolder by wnid)
    tasks/<task>/<class>/*.png  target tasks' test images (ImageFolder by class name)
    tasks.json               the task definitions used (names, domains, classes with wnids)
    general.npz              the general benchmark: images (n, 32, 32, 3) uint8, concept, domain
    hub/hub.json             the hub file (open_clip arch + config + checkpoint per model)
    hub/<arch>.json, hub/<model>.pt
    accuracy.json            every model's accuracy on the general benchmark and on every task

Images come in four pools drawn from the same art with different seeds, so no image is in
two pools: `train` (hub training, never written), `samples` (labeling), `general` (the
general benchmark) and `task` (target tasks). The directory is written through a temporary
folder and renamed; trained weights are also kept in `<cache>/world/models/` by a hash of
what shaped them, so a rebuild after a change retrains only the models it touches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.core.artifacts import (
    atomic_dir, new_manifest, read_json, read_manifest, recover_dir, seal_manifest, write_json,
)
from mll_index.core.paths import cache_dir
from mll_index.errors import InputError, MLLIndexError
from mll_index.index.graph import Graph, load_taxonomy
from mll_index.world.art import fetch_art_packages
from mll_index.world.concepts import EmojiConcept, load_concepts, mapping_path
from mll_index.world.corpus import WORLD_SEED, concept_domains, draw_corpus, read_all_art
from mll_index.world.domains import DOMAINS
from mll_index.world.tasks import TaskSpec, load_task_specs, tasks_path
from mll_index.world.train import (
    HubSpec, ModelSpec, TrainingData, load_hub_spec, normalise, phrasings_of, spec_hash, train_model,
)

log = logging.getLogger(__name__)

WORLD_KIND = "emoji-world"
# Bump when the drawing of images or the training loop changes: it invalidates cached worlds and weights.
WORLD_VERSION = 1


@dataclass(frozen=True)
class WorldSize:
    """How big a world is: images per (concept, domain) and pool, which tasks and models, how long to train.

    `task_classes` keeps the first n classes of each task (None: all), and the concepts are
    then those of the kept tasks; `steps_scale` multiplies every model's training steps.
    """

    name: str
    per_cell: dict[str, int]
    tasks: int | None = None
    task_classes: int | None = None
    models: tuple[str, ...] | None = None
    steps_scale: float = 1.0
    batch: int | None = None


SIZES = {
    "full": WorldSize("full", {"train": 24, "samples": 6, "general": 4, "task": 8}),
    "small": WorldSize("small", {"train": 8, "samples": 3, "general": 2, "task": 3}, tasks=4, task_classes=5,
                       models=("vit-s-general", "noto-expert", "animal-expert"), steps_scale=0.02, batch=64),
}


@dataclass
class World:
    """A built world on disk. Paths are inside `root`; `accuracy[model][task or 'general']` in [0, 1]."""

    root: Path
    manifest: dict[str, Any]
    tasks: list[TaskSpec] = field(default_factory=list)

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    @property
    def tasks_dir(self) -> Path:
        return self.root / "tasks"

    @property
    def hub_path(self) -> Path:
        return self.root / "hub" / "hub.json"

    def task_dir(self, name: str) -> Path:
        return self.tasks_dir / name

    @property
    def accuracy(self) -> dict[str, dict[str, float]]:
        return read_json(self.root / "accuracy.json")

    @property
    def concepts(self) -> list[dict[str, Any]]:
        return read_json(self.root / "concepts.json")


def npm_dir() -> Path:
    """Where the vendors' npm tarballs are kept: $MLL_INDEX_NPM_DIR or <cache>/world/npm."""
    return Path(os.environ.get("MLL_INDEX_NPM_DIR") or cache_dir() / "world" / "npm")


def fetch_world_art() -> dict[str, Path]:
    """Fetch the emoji art packages with npm (once; set-up does this); package name → tarball."""
    return fetch_art_packages(npm_dir())


def default_world_dir(size: str = "full") -> Path:
    return cache_dir() / "world" / size


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _inputs_hash(size: WorldSize, hub: HubSpec, task_file: Path, mapping_file: Path) -> str:
    payload = json.dumps({"version": WORLD_VERSION, "seed": WORLD_SEED, "size": size.__dict__,
                          "mapping": _file_hash(mapping_file), "tasks": _file_hash(task_file),
                          "hub": [hub.archs, [m.__dict__ for m in hub.models]],
                          "domains": [d.__dict__ for d in DOMAINS.values()]}, sort_keys=True, default=list)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def training_key(size: WorldSize, mapping_file: Path, concepts: list[EmojiConcept]) -> str:
    """The training data's part of every model's cache key: only what training reads.

    Training reads the `train` pool (world version and seed, the domains, images per cell) of the
    given concepts, and their phrasings (the mapping's names and lemmas). Not the task file: a
    new task file (generated tasks, a user's own) then reuses the trained hub. The task file
    still shapes training where it picks the concepts (a size with `tasks`/`task_classes`),
    and does so through `concepts`.
    """
    payload = json.dumps({"version": WORLD_VERSION, "seed": WORLD_SEED, "train_per_cell": size.per_cell.get("train", 0),
                          "mapping": _file_hash(mapping_file), "domains": [d.__dict__ for d in DOMAINS.values()],
                          "concepts": [c.wnid for c in concepts]}, sort_keys=True, default=list)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_world(size: str = "full", root: Path | None = None) -> World:
    """A world built before; an InputError says how to build it if there is none."""
    root = Path(root) if root else default_world_dir(size)
    recover_dir(root)
    if not (root / "manifest.json").is_file():
        raise InputError(f"no emoji world at {root}; build it with `mll-index world build --size {size}`")
    manifest = read_manifest(root, WORLD_KIND)
    return World(root=root, manifest=manifest, tasks=load_task_specs(root / "tasks.json"))


def _select(size: WorldSize, concepts: list[EmojiConcept], tasks: list[TaskSpec]) -> tuple[list[EmojiConcept], list[TaskSpec]]:
    if size.tasks is None and size.task_classes is None:
        return concepts, tasks
    kept_tasks = [TaskSpec(t.name, t.description, t.domains, t.classes[:size.task_classes])
                  for t in tasks[:size.tasks]]
    wnids = {c.wnid for t in kept_tasks for c in t.classes}
    return [c for c in concepts if c.wnid in wnids], kept_tasks


def _write_pngs(folder: Path, images: np.ndarray, names: list[str]) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for image, name in zip(images, names):
        Image.fromarray(image).save(folder / name, optimize=False, compress_level=1)


def _cell_names(domain_ids: np.ndarray) -> list[str]:
    """File names `<domain>-<i>.png`, numbering the images of each domain in order."""
    names, counts = [], {}
    domain_names = list(DOMAINS)
    for d in domain_ids:
        counts[d] = counts.get(d, -1) + 1
        names.append(f"{domain_names[d]}-{counts[d]:02d}.png")
    return names


def _phrasings(concepts: list[EmojiConcept], graph: Graph) -> list[list[str]]:
    """Per concept, the texts the hub is trained with (its names in every template, and its label prompt)."""
    from mll_index.index.captions import node_concept, templates

    zero_shot = templates()["zero_shot"]
    label_template = templates()["label_prompt"]
    phrasings = []
    for c in concepts:
        node = node_concept(graph, graph.row(c.wnid))
        names = list(dict.fromkeys([c.name, c.lemma] + [lemma.replace("_", " ") for lemma in node.lemmas[:3]]))
        phrasings.append(phrasings_of(names, node.gloss, node.name, label_template, zero_shot))
    return phrasings


def _model_keys(hub_spec: HubSpec, size: WorldSize, data_key: str) -> dict[str, str]:
    """Each model's spec hash: its spec, architecture, training data and (fine-tuned) its parent's hash."""
    keys: dict[str, str] = {}
    for spec in hub_spec.models:
        if size.models is not None and spec.id not in size.models:
            continue
        parent = f"{spec.init}-{keys[spec.init]}.pt" if spec.init and spec.init in keys else ""
        keys[spec.id] = spec_hash(_scaled(spec, size), hub_spec.archs[spec.arch], data_key + parent)
    return keys


def _train_hub(hub_spec: HubSpec, size: WorldSize, concepts: list[EmojiConcept], corpus: dict[str, Any] | None,
               hub_dir: Path, data_key: str, progress: bool, retrain: bool = False) -> dict[str, dict[str, Any]]:
    """Every model of the size, from the weights cache, the shipped weights, or trained now (`retrain`:
    always trained, and compared with the shipped weights); writes configs and checkpoints."""
    import open_clip

    from mll_index.world import weights

    graph = load_taxonomy()
    phrasings = _phrasings(concepts, graph)
    data = None
    if corpus is not None:
        images, cids, dids = corpus["train"]
        data = TrainingData(images=images, concepts=cids, domains=dids, domain_names=tuple(DOMAINS),
                            phrasings=phrasings)
    keys = _model_keys(hub_spec, size, data_key)

    weights_dir = cache_dir() / "world" / "models"
    facts: dict[str, dict[str, Any]] = {}
    cached_paths: dict[str, Path] = {}
    models = [m for m in hub_spec.models if size.models is None or m.id in size.models]
    for spec in models:
        arch_config = hub_spec.archs[spec.arch]
        config_path = hub_dir / f"{spec.arch}.json"
        if not config_path.exists():
            config_path.write_text(json.dumps(arch_config, indent=1) + "\n")
        if open_clip.get_model_config(spec.arch) is None:
            open_clip.add_model_config(config_path)
        scaled = _scaled(spec, size)
        init_path = cached_paths.get(spec.init) if spec.init else None
        if spec.init and init_path is None:
            raise InputError(f"hub model {spec.id!r} fine-tunes {spec.init!r}, which this world size does not build")
        key = keys[spec.id]
        cached = weights_dir / f"{spec.id}-{key}.pt"
        cached_paths[spec.id] = cached
        info: dict[str, Any] = {"about": spec.about, "arch": spec.arch, "steps": scaled.steps, "init": spec.init,
                                "domains": spec.domains, "under": list(spec.under), "hash": key}
        shipped = weights.shipped_entry(spec.id, key)
        if cached.is_file() and not retrain:
            info["trained"] = "cached"
        elif shipped is not None and not retrain:
            base = (torch_load(init_path) if init_path is not None else weights.initial_state(spec.arch, spec.seed))
            weights.materialise(*shipped, base, cached)
            info["trained"] = "shipped"
        else:
            if data is None:
                raise InputError(f"hub model {spec.id!r} must be trained, and the training images were not drawn")
            in_scope = np.ones(len(concepts), bool)
            if spec.under:
                by_synset = {name: i for i, name in enumerate(graph.synsets)}
                unknown = [s for s in spec.under if s not in by_synset]
                if unknown:
                    raise InputError(f"hub model {spec.id!r}: unknown synset(s) {unknown} in 'under'")
                roots = {graph.wnids[by_synset[s]] for s in spec.under}
                in_scope = np.array([bool(({c.wnid} | graph.ancestors(c.wnid)) & roots) for c in concepts])
            info.update(train_model(scaled, arch_config, data, in_scope, cached, init_path, progress=progress))
            info["trained"] = "now"
            if shipped is not None:
                info["equals_shipped"] = _equals_shipped(cached, shipped, phrasings, spec.arch)
        # A hard link costs no space; across file systems, a copy.
        if _same_fs(cached, hub_dir):
            os.link(cached, hub_dir / f"{spec.id}.pt")
        else:
            shutil.copy2(cached, hub_dir / f"{spec.id}.pt")
        facts[spec.id] = info
    return facts


def torch_load(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _equals_shipped(checkpoint: Path, shipped: tuple[Path, dict[str, Any]], phrasings: list[list[str]],
                    arch: str) -> bool:
    """Whether a freshly trained checkpoint equals the shipped one bit for bit (same CPU kind and torch)."""
    import open_clip

    from mll_index.world import weights

    state = torch_load(checkpoint)
    rows = weights.token_rows(open_clip.get_tokenizer(arch), [t for p in phrasings for t in p])
    ours = weights.compact_state(state, rows)
    theirs = weights.read_compact(*shipped)
    return ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)


def ship_world_weights(world: World, out_dir: Path) -> dict[str, Any]:
    """Write the compact weights of a built world's hub (the maintainers' path to refresh the shipped ones)."""
    import open_clip

    from mll_index.world import weights

    concepts = [c for c in load_concepts(mapping_path()) if c.wnid in {x["wnid"] for x in world.concepts}]
    phrasings = _phrasings(concepts, load_taxonomy())
    facts = world.manifest["models"]
    archs = {info["arch"] for info in facts.values()}
    for arch in archs:
        if open_clip.get_model_config(arch) is None:
            open_clip.add_model_config(world.root / "hub" / f"{arch}.json")
    texts = [t for p in phrasings for t in p]
    rows = {arch: weights.token_rows(open_clip.get_tokenizer(arch), texts) for arch in archs}
    if len({r.tobytes() for r in rows.values()}) > 1:
        raise InputError("the hub's architectures tokenise differently; ship them separately")
    return weights.ship_weights({m: (world.root / "hub" / f"{m}.pt", info["hash"]) for m, info in facts.items()},
                                next(iter(rows.values())), out_dir)


def _must_train(hub_spec: HubSpec, size: WorldSize, data_key: str) -> bool:
    """Whether some model of the size is neither in the weights cache nor shipped."""
    from mll_index.world import weights

    weights_dir = cache_dir() / "world" / "models"
    return any(not (weights_dir / f"{m}-{key}.pt").is_file() and weights.shipped_entry(m, key) is None
               for m, key in _model_keys(hub_spec, size, data_key).items())


def _train_pool_size(concepts: list[EmojiConcept], domains: list[list[str]], size: WorldSize) -> int:
    """How many images the training pool holds (counted, not drawn, when no model is trained)."""
    return int(sum(len(d) for d in domains) * size.per_cell.get("train", 0))


def _same_fs(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def _scaled(spec: ModelSpec, size: WorldSize) -> ModelSpec:
    """The spec with the size's step scale and batch applied."""
    return replace(spec, steps=max(1, round(spec.steps * size.steps_scale)), batch=size.batch or spec.batch)


def _write_hub_file(hub_dir: Path, facts: dict[str, dict[str, Any]], general: dict[str, float]) -> None:
    models = []
    for model_id, info in facts.items():
        import torch

        state = torch.load(hub_dir / f"{model_id}.pt", map_location="cpu", weights_only=True)
        params = sum(int(t.numel()) for t in state.values())
        models.append({"id": model_id, "arch": info["arch"], "checkpoint": f"{model_id}.pt",
                       "config": f"{info['arch']}.json", "params_m": round(params / 1e6, 3),
                       "imagenet_acc": round(100 * general[model_id], 2),
                       "licence": "trained on Noto (Apache-2.0), Twemoji (CC-BY-4.0), OpenMoji (CC-BY-SA-4.0) art"})
    write_json(hub_dir / "hub.json", {"name": "emoji-world", "source": "trained by `mll-index world build`; "
                                      "imagenet_acc is the accuracy (%) on the world's general benchmark",
                                      "models": models})


def _evaluate(hub_dir: Path, model_ids: list[str], concepts: list[EmojiConcept], general: tuple[np.ndarray, ...],
              tasks: list[TaskSpec], task_sets: dict[str, tuple[np.ndarray, np.ndarray]],
              progress: bool) -> dict[str, dict[str, float]]:
    """Zero-shot accuracy of every model on the general benchmark (all concepts) and on each task."""
    from tqdm import tqdm

    from mll_index.models.hub import load_hub, load_model
    from mll_index.models.zeroshot import class_embeddings, class_probabilities, encode_pixels, logit_scale

    hub = load_hub(hub_dir / "hub.json")
    names = [c.name for c in concepts]
    general_pixels = normalise(general[0])
    accuracy: dict[str, dict[str, float]] = {}
    for model_id in tqdm(model_ids, desc="evaluate hub", unit="model", disable=not progress):
        loaded = load_model(hub.get(model_id))
        scale = logit_scale(loaded)
        row = {}
        probs = class_probabilities(encode_pixels(loaded, general_pixels), class_embeddings(loaded, names), scale)
        row["general"] = float((probs.argmax(1) == general[1]).mean())
        for task in tasks:
            images, labels = task_sets[task.name]
            probs = class_probabilities(encode_pixels(loaded, normalise(images)),
                                        class_embeddings(loaded, task.class_names), scale)
            row[task.name] = float((probs.argmax(1) == labels).mean())
        accuracy[model_id] = {k: round(v, 4) for k, v in row.items()}
    return accuracy


@dataclass(frozen=True)
class _Drawn:
    """What the build's writing steps share: the kept concepts and tasks, and the image pools drawn for them.

    `corpus[pool]` is (images (n, 32, 32, 3) uint8, concept positions (n,) int32, domain positions (n,) int32);
    it lacks the `train` pool when no model is trained (`must_train` False).
    """

    concepts: list[EmojiConcept]
    tasks: list[TaskSpec]
    domains: list[list[str]]    # per concept, the domains some vendor draws it in
    corpus: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    data_key: str               # `training_key`: the training data's part of every model's cache key
    must_train: bool


def build_world(size: str = "full", root: Path | None = None, *, task_file: Path | None = None,
                hub_file: Path | None = None, mapping_file: Path | None = None, workers: int | None = None, progress: bool = False,
                rebuild: bool = False, retrain: bool = False) -> World:
    """Build the emoji world (or load it, when one built from the same inputs is there).

    Args:
        size: "full" (the demo's world) or "small" (for tests: a few tasks, 3 models, seconds).
        root: where to write it; default `<cache>/world/<size>`.
        task_file, hub_file, mapping_file: other task definitions, hub spec or emoji mapping than
            the shipped ones.
        workers: processes drawing images (default: the CPU count, at most 4).
        rebuild: build even if an up-to-date world is there (trained weights still come from cache).
        retrain: train every hub model from its spec instead of taking the cached or shipped weights
            (implies rebuild); the manifest says per model whether the result equals the shipped weights.
    Raises:
        InputError: an unknown size, a task file or mapping that does not fit, npm unavailable.
    """
    if size not in SIZES:
        raise InputError(f"unknown world size {size!r}; sizes: {sorted(SIZES)}")
    spec = SIZES[size]
    root = Path(root) if root else default_world_dir(size)
    task_file = Path(task_file) if task_file else tasks_path()
    hub_spec = load_hub_spec(hub_file)
    mapping_file = Path(mapping_file) if mapping_file else mapping_path()
    inputs = _inputs_hash(spec, hub_spec, task_file, mapping_file)
    built = _built_world(size, root, inputs, rebuild or retrain)
    if built is not None:
        return built
    started = time.perf_counter()
    drawn = _draw_world(size, spec, hub_spec, task_file, mapping_file, workers or min(4, os.cpu_count() or 1), retrain)
    seconds = {"corpus": time.perf_counter() - started}
    with atomic_dir(root) as tmp:
        _write_samples(tmp, drawn)
        task_sets = _write_tasks(tmp, drawn)
        _write_general(tmp, drawn)
        facts, seconds["train"] = _write_hub(tmp, hub_spec, spec, drawn, progress, retrain)
        _write_accuracy(tmp, facts, drawn, task_sets, progress)
        seconds["total"] = time.perf_counter() - started
        _seal_world(tmp, size, spec, inputs, drawn, task_sets, facts, seconds)
    return load_world(size, root)


def _built_world(size: str, root: Path, inputs: str, rebuild: bool) -> World | None:
    """The world at `root` when it was built from the same inputs (None: build it), so a build runs once."""
    recover_dir(root)
    if not rebuild and (root / "manifest.json").is_file():
        try:
            world = load_world(size, root)
            if world.manifest.get("inputs") == inputs:
                return world
            log.info("the world at %s was built from other inputs; rebuilding", root)
        except MLLIndexError as exc:
            log.warning("rebuilding the world at %s: %s", root, exc)
    return None


def _draw_world(size: str, spec: WorldSize, hub_spec: HubSpec, task_file: Path, mapping_file: Path, workers: int,
                retrain: bool) -> _Drawn:
    """The size's concepts and tasks, checked against the mapping and the hub spec, and their image pools.

    Raises:
        InputError: a task file or size that does not fit the mapping or hub spec, an emoji no vendor draws.
    """
    all_concepts = load_concepts(mapping_file)
    tasks = load_task_specs(task_file, known_domains=set(DOMAINS), known_wnids={c.wnid for c in all_concepts})
    concepts, tasks = _select(spec, all_concepts, tasks)
    if size != "full" and spec.models:
        unknown = [m for m in spec.models if m not in {h.id for h in hub_spec.models}]
        if unknown:
            raise InputError(f"world size {size!r} names model(s) {unknown} that the hub spec lacks")
    log.info("reading emoji art for %d concepts", len(concepts))
    art = read_all_art(concepts, npm_dir())
    domains = [concept_domains(c, art) for c in concepts]
    missing = [c.name for c, d in zip(concepts, domains) if not d]
    if missing:
        raise InputError(f"no vendor draws these mapped emoji: {missing[:10]}")
    data_key = training_key(spec, mapping_file, concepts)
    must_train = retrain or _must_train(hub_spec, spec, data_key)
    # The training pool (over half the images) is drawn only if a model is to be trained.
    per_cell = spec.per_cell if must_train else {k: v for k, v in spec.per_cell.items() if k != "train"}
    log.info("drawing the corpus (%s per concept and domain)", per_cell)
    corpus = draw_corpus(concepts, art, domains, per_cell, workers)
    return _Drawn(concepts, tasks, domains, corpus, data_key, must_train)


def _write_samples(tmp: Path, drawn: _Drawn) -> None:
    """samples/<wnid>/<domain>-<i>.png: the sample set labeling reads (an ImageFolder by wnid)."""
    images, cids, dids = drawn.corpus["samples"]
    for ci, concept in enumerate(drawn.concepts):
        rows = np.flatnonzero(cids == ci)
        _write_pngs(tmp / "samples" / concept.wnid, images[rows], _cell_names(dids[rows]))


def _write_tasks(tmp: Path, drawn: _Drawn) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """tasks/<task>/<class>/*.png (each task's classes in its domains) and tasks.json.

    Returns:
        Per task, its images (n, 32, 32, 3) uint8 and their class positions (n,) int, for evaluating the hub.
    """
    wnid_index = {c.wnid: i for i, c in enumerate(drawn.concepts)}
    domain_names = list(DOMAINS)
    task_sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    images, cids, dids = drawn.corpus["task"]
    for task in drawn.tasks:
        wanted = [domain_names.index(d) for d in task.domains]
        parts, labels = [], []
        for label, cls in enumerate(task.classes):
            rows = np.flatnonzero((cids == wnid_index[cls.wnid]) & np.isin(dids, wanted))
            _write_pngs(tmp / "tasks" / task.name / cls.name, images[rows], _cell_names(dids[rows]))
            parts.append(images[rows])
            labels.extend([label] * len(rows))
        task_sets[task.name] = (np.concatenate(parts), np.array(labels))
    write_json(tmp / "tasks.json", {"tasks": [
        {"name": t.name, "description": t.description, "domains": list(t.domains),
         "classes": [{"name": c.name, "wnid": c.wnid} for c in t.classes]} for t in drawn.tasks]})
    return task_sets


def _write_general(tmp: Path, drawn: _Drawn) -> None:
    """general.npz, the general benchmark's pool as arrays, and concepts.json, the concepts it spans."""
    gi, gc, gd = drawn.corpus["general"]
    np.savez(tmp / "general.npz", images=gi, concepts=gc, domains=gd)
    write_json(tmp / "concepts.json", [
        {"wnid": c.wnid, "name": c.name, "emoji": c.emoji, "unified": c.unified, "category": c.category,
         "synset": c.synset, "domains": d} for c, d in zip(drawn.concepts, drawn.domains)])


def _write_hub(tmp: Path, hub_spec: HubSpec, spec: WorldSize, drawn: _Drawn, progress: bool,
               retrain: bool) -> tuple[dict[str, dict[str, Any]], float]:
    """hub/: every model's config and checkpoint, and a first hub.json (general accuracy 0 until evaluated).

    Returns:
        Per model, what the manifest says of it (see `_train_hub`), and the seconds training took.
    """
    hub_dir = tmp / "hub"
    hub_dir.mkdir()
    started = time.perf_counter()
    facts = _train_hub(hub_spec, spec, drawn.concepts, drawn.corpus if drawn.must_train else None, hub_dir,
                       drawn.data_key, progress, retrain)
    seconds = time.perf_counter() - started
    # The hub file needs a general accuracy, which needs the models loadable from a hub file:
    # write it once without, evaluate through it (`_write_accuracy`), then write it again.
    _write_hub_file(hub_dir, facts, {m: 0.0 for m in facts})
    return facts, seconds


def _write_accuracy(tmp: Path, facts: dict[str, dict[str, Any]], drawn: _Drawn,
                    task_sets: dict[str, tuple[np.ndarray, np.ndarray]], progress: bool) -> None:
    """accuracy.json, every model on the general benchmark and each task, and hub.json with the general one."""
    hub_dir = tmp / "hub"
    gi, gc, _ = drawn.corpus["general"]
    accuracy = _evaluate(hub_dir, list(facts), drawn.concepts, (gi, gc), drawn.tasks, task_sets, progress)
    _write_hub_file(hub_dir, facts, {m: accuracy[m]["general"] for m in facts})
    write_json(tmp / "accuracy.json", accuracy)


def _seal_world(tmp: Path, size: str, spec: WorldSize, inputs: str, drawn: _Drawn,
                task_sets: dict[str, tuple[np.ndarray, np.ndarray]], facts: dict[str, dict[str, Any]],
                seconds: dict[str, float]) -> None:
    """manifest.json, listing every file but the images with its checksum; `inputs` is what a rebuild compares."""
    counts = {pool: int(len(drawn.corpus[pool][0])) for pool in drawn.corpus}
    if not drawn.must_train:
        counts["train"] = _train_pool_size(drawn.concepts, drawn.domains, spec)
    manifest = new_manifest(WORLD_KIND, size=size, inputs=inputs, concepts=len(drawn.concepts),
                            domains=list(DOMAINS), images=counts,
                            task_images={name: len(labels) for name, (_, labels) in task_sets.items()}, models=facts,
                            seconds={k: round(v, 1) for k, v in seconds.items()})
    files = ["concepts.json", "tasks.json", "general.npz", "accuracy.json", "hub/hub.json"]
    files += sorted(f"hub/{p.name}" for p in (tmp / "hub").iterdir() if p.name != "hub.json")
    seal_manifest(tmp, manifest, files)
