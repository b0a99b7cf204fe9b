"""Scoring MLL on many generated tasks of the emoji world without writing their folders.

Every hub model encodes the world's `task` pool once (the same images `world build --tasks`
would write: the first `per_cell` of each concept and domain) and every distinct class name once;
a task's zero-shot probabilities are then a softmax over its own classes' rows, as the world's
own evaluation computes them (`world.build._evaluate`: raw 32x32 pixels, CLIP normalisation).
Selection runs on the index's labels as `select` does; the ground truth only scores it.

Used by selection_quality.py (the `generated`, `prediction_*` and `budget` figures) and by
calibrate_accuracy.py (the constants of mll_index/data/accuracy_calibration.json).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TASKS_SEEDS = {"calibrate": 1, "report": 2}


@dataclass
class PoolEmbeddings:
    """The task pool as every model sees it: image embeddings, class-name embeddings, logit scales."""

    concept_ids: np.ndarray            # (m,) index into `wnids`
    domain_ids: np.ndarray             # (m,) index into DOMAINS' order
    wnids: list[str]
    image_emb: dict[str, np.ndarray]   # model -> (m, d) unit rows
    name_emb: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # model -> name -> (d,)
    scale: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _images_key(world: Any, hub: Any, per_cell: int) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps([world.manifest["inputs"], per_cell, list(hub.ids)]).encode()).hexdigest()[:16]


def embed_pool(world: Any, hub: Any, tasks: list[dict[str, Any]], per_cell: int, workers: int = 2) -> PoolEmbeddings:
    """Draw the task pool of every concept of the world in all domains and embed it with every model
    (kept in <cache>/bench/ by the world's inputs, the images per cell and the hub: the slow part), then
    embed the tasks' class names (a few seconds per model)."""
    import json

    from mll_index.core.paths import cache_dir
    from mll_index.models.hub import load_model
    from mll_index.models.zeroshot import class_embeddings, encode_pixels, logit_scale
    from mll_index.world import DOMAINS, load_concepts
    from mll_index.world.generate import draw_task_images
    from mll_index.world.train import normalise

    path = cache_dir() / "bench" / f"generated_images-{_images_key(world, hub, per_cell)}.npz"
    if path.is_file():
        data = np.load(path, allow_pickle=False)
        meta = json.loads(str(data["meta"]))
        pool = PoolEmbeddings(data["concept_ids"], data["domain_ids"], meta["wnids"],
                              {m: data[f"img_{i}"] for i, m in enumerate(meta["models"])}, seconds=meta["seconds"])
    else:
        in_world = {c["wnid"] for c in world.concepts}
        concepts = [c for c in load_concepts() if c.wnid in in_world]
        started = time.perf_counter()
        images, cids, dids = draw_task_images(concepts, list(DOMAINS), per_cell, workers=workers)
        seconds: dict[str, Any] = {"draw": round(time.perf_counter() - started, 1), "images": int(len(images))}
        pixels = normalise(images)
        pool = PoolEmbeddings(cids, dids, [c.wnid for c in concepts], {}, seconds=seconds)
        started = time.perf_counter()
        for model in hub:
            pool.image_emb[model.id] = encode_pixels(load_model(model), pixels)
        pool.seconds["encode_images"] = round(time.perf_counter() - started, 1)
        models = list(pool.image_emb)
        meta = {"wnids": pool.wnids, "models": models, "seconds": pool.seconds}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, concept_ids=cids, domain_ids=dids, meta=np.array(json.dumps(meta)),
                 **{f"img_{i}": pool.image_emb[m] for i, m in enumerate(models)})
        tmp.replace(path)
    names = sorted({c["name"] for t in tasks for c in t["classes"]})
    started = time.perf_counter()
    for model in hub:
        loaded = load_model(model)
        pool.name_emb[model.id] = dict(zip(names, class_embeddings(loaded, names)))
        pool.scale[model.id] = logit_scale(loaded)
    pool.seconds["encode_names"] = round(time.perf_counter() - started, 1)
    return pool


def task_rows(pool: PoolEmbeddings, task: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The task's images as (n,) rows of the pool, and their (n,) labels (class positions)."""
    from mll_index.world import DOMAINS

    index = {w: i for i, w in enumerate(pool.wnids)}
    domains = [list(DOMAINS).index(d) for d in task["domains"]]
    rows, labels = [], []
    for label, cls in enumerate(task["classes"]):
        hit = np.flatnonzero((pool.concept_ids == index[cls["wnid"]]) & np.isin(pool.domain_ids, domains))
        rows.append(hit)
        labels.append(np.full(len(hit), label))
    return np.concatenate(rows), np.concatenate(labels)


def task_probabilities(pool: PoolEmbeddings, task: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every model's (n, C) probabilities over the task's classes on its images, and the (n,) labels."""
    from mll_index.models.zeroshot import class_probabilities

    rows_all, labels_all = task_rows(pool, task)
    names = [c["name"] for c in task["classes"]]
    probs = {m: class_probabilities(emb[rows_all], np.stack([pool.name_emb[m][n] for n in names]), pool.scale[m])
             for m, emb in pool.image_emb.items()}
    return probs, labels_all


def ensemble_accuracy(probs: dict[str, np.ndarray], labels: np.ndarray, chosen: dict[str, list[str]],
                      names: list[str]) -> tuple[float, np.ndarray]:
    """Task accuracy and (C,) per-class recall of the entropy-weighted ensemble `reuse` runs."""
    from mll_index.reuse.ensemble import combine

    pred = combine(probs, chosen, names).argmax(axis=1)
    hit = pred == labels
    recall = np.bincount(labels[hit], minlength=len(names)) / np.maximum(np.bincount(labels, minlength=len(names)), 1)
    return float(hit.mean()), recall


@dataclass
class TaskOutcome:
    """One task: accuracy per method, the predicted accuracy's features and truth, the budget rows."""

    name: str
    n_classes: int
    accuracy: dict[str, float]
    prediction: dict[str, dict[str, Any]]          # k -> {"x": task feature, "class_x", "truth", "class_truth"}
    budget: dict[str, dict[str, float | None]] = field(default_factory=dict)


def score_tasks(selector: Any, hub: Any, pool: PoolEmbeddings, tasks: list[dict[str, Any]], *, alpha: float = 0.7,
                mode: str = "restricted", costs: dict[str, Any] | None = None,
                fractions: tuple[float, ...] = ()) -> tuple[list[TaskOutcome], dict[str, float]]:
    """MLL (k=1, 3; with the domain word where a task has one domain, and without), the baselines,
    the predicted-accuracy features against the truth, and MLL / oracle single under budgets.

    Returns the outcomes and timings (seconds per task for selection)."""
    from mll_index.evaluation.baselines import inb_model, oracle_per_class, oracle_single, random_accuracy
    from mll_index.selection.accuracy import class_features, f1_matrix, selection_matrix
    from mll_index.selection.budget import Budget, choose_within_budget
    from mll_index.selection.selector import prepare_tasks, select_prepared
    from mll_index.selection.task import make_task

    ids = list(selector.store.model_ids)
    made = [make_task([c["name"] for c in t["classes"]], t["name"],
                      domain=t["domains"][0] if len(t["domains"]) == 1 else None) for t in tasks]
    started = time.perf_counter()
    prepared = prepare_tasks(selector, made)
    full = select_prepared(selector, prepared, k=len(ids), alpha=alpha, mode=mode, ranking_size=None, rule="mll")
    no_domain = select_prepared(selector, prepared, k=len(ids), alpha=alpha, mode=mode, ranking_size=None, rule="mll",
                                use_domain=False)
    seconds = {"select_per_task": round((time.perf_counter() - started) / (2 * len(tasks)), 4)}
    inb = inb_model(hub, ids)
    largest = max(c.gflops for c in costs.values() if c.gflops is not None) if costs else None
    out = []
    for t, sel, sel_nd in zip(tasks, full, no_domain):
        names = [c["name"] for c in t["classes"]]
        probs, labels = task_probabilities(pool, t)
        probs = {m: probs[m] for m in ids}
        acc: dict[str, float] = {}
        pred: dict[str, dict[str, Any]] = {}
        got = selection_matrix(sel)
        f1 = f1_matrix(*got[:2], got[2], alpha)
        for k in (1, 3):
            chosen = {c.name: [m.model for m in c.models[:k]] for c in sel.classes}
            acc[f"mll_k{k}"], recall = ensemble_accuracy(probs, labels, chosen, names)
            chosen_nd = {c.name: [m.model for m in c.models[:k]] for c in sel_nd.classes}
            acc[f"mll_k{k}_no_domain"], _ = ensemble_accuracy(probs, labels, chosen_nd, names)
            features = class_features(sel, f1, got[0], got[2], [chosen[n] for n in names],
                                      selector.index.graph.ancestors)
            pred[str(k)] = {"features": features, "truth": acc[f"mll_k{k}"], "class_truth": recall.tolist()}
        acc["inb"] = float((probs[inb].argmax(1) == labels).mean())
        acc["random"] = random_accuracy(probs, labels)
        acc["oracle_single"] = oracle_single(probs, labels)[1]
        acc["oracle_per_class"] = oracle_per_class(probs, labels, len(names))
        budget_rows: dict[str, dict[str, float | None]] = {}
        for frac in fractions:
            limit = frac * largest
            fitting = [m for m in ids if costs[m].gflops is not None and costs[m].gflops <= limit]
            row: dict[str, float | None] = {"mll": None, "oracle_single": None}
            if fitting:
                row["oracle_single"] = oracle_single({m: probs[m] for m in fitting}, labels)[1]
                choice = choose_within_budget(got[0], got[1], f1, costs, 3, Budget(budget_gflops=limit))
                row["mll"], _ = ensemble_accuracy(probs, labels, dict(zip(names, map(list, choice.per_class))), names)
            budget_rows[str(frac)] = row
        out.append(TaskOutcome(t["name"], len(names), {k: round(v, 4) for k, v in acc.items()}, pred, budget_rows))
    return out, seconds


def score_probes(selector: Any, pool: PoolEmbeddings, tasks: list[dict[str, Any]], *, probes_per_task: int = 16,
                 seed: int = 0, probe_models: int = 1, alpha: float = 0.7) -> tuple[list[TaskOutcome], dict[str, Any]]:
    """MLL with probe images and no domain word, beside MLL with neither and with the domain word.

    Per task, `probes_per_task` of its images (seeded; at most half) are the probes and are left out
    of scoring: every method is scored on the same remaining images. The probes' embeddings are the
    pool's, taken from the probe models (`probes.probe_models`: the labeled models with the most
    accurate labels): what `encode_probes` computes from files, without writing the files. Returns
    the outcomes (accuracy keys mll_k1, mll_k3, mll_k{1,3}_no_domain, mll_k{1,3}_domain_word,
    oracle_single) and the cost: probe images encoded per task and selection seconds per task.
    """
    from mll_index.evaluation.baselines import oracle_single
    from mll_index.selection.probes import PROBE_LIMIT, ProbeSet
    from mll_index.selection.probes import probe_models as choose_probe_models
    from mll_index.selection.selector import prepare_tasks, select_prepared
    from mll_index.selection.settings import SelectionSettings
    from mll_index.selection.task import make_task

    ids = list(selector.store.model_ids)
    encoders = sorted({m for ms in choose_probe_models(selector.store, probe_models).values() for m in ms})
    rng = np.random.default_rng(seed)
    held, made = [], []
    settings = SelectionSettings(k=len(ids), alpha=alpha, mode="restricted", ranking_size=None, rule="mll",
                                 probe=PROBE_LIMIT, probe_models=probe_models)
    for t in tasks:
        rows, labels = task_rows(pool, t)
        picked = np.sort(rng.choice(len(rows), min(probes_per_task, len(rows) // 2), replace=False))
        held.append(np.setdiff1d(np.arange(len(rows)), picked))
        names = [c["name"] for c in t["classes"]]
        sources = [f"pool:{t['name']}:{int(rows[i])}" for i in picked]
        task = make_task(names, t["name"], domain=t["domains"][0] if len(t["domains"]) == 1 else None,
                         probe_images=sources)
        selector.probes[(task.probe_images, settings.probe, settings.probe_models)] = ProbeSet(
            tuple(sources), (), {m: pool.image_emb[m][rows[picked]] for m in encoders}, 0.0)
        made.append(task)
    prepared = prepare_tasks(selector, made)
    started = time.perf_counter()
    probed = select_prepared(selector, prepared, settings, use_domain=False)
    probe_seconds = (time.perf_counter() - started) / len(tasks)
    plain = [make_task(t.classes, t.name, domain=t.domain) for t in made]
    prepared_plain = prepare_tasks(selector, plain)
    without = select_prepared(selector, prepared_plain, settings, use_domain=False)
    worded = select_prepared(selector, prepared_plain, settings)
    out = []
    for t, keep, sel_p, sel_n, sel_w in zip(tasks, held, probed, without, worded):
        names = [c["name"] for c in t["classes"]]
        probs, labels = task_probabilities(pool, t)
        probs = {m: probs[m][keep] for m in ids}
        labels = labels[keep]
        acc: dict[str, float] = {}
        for k in (1, 3):
            for key, sel in ((f"mll_k{k}", sel_p), (f"mll_k{k}_no_domain", sel_n), (f"mll_k{k}_domain_word", sel_w)):
                chosen = {c.name: [m.model for m in c.models[:k]] for c in sel.classes}
                acc[key], _ = ensemble_accuracy(probs, labels, chosen, names)
        acc["oracle_single"] = oracle_single(probs, labels)[1]
        out.append(TaskOutcome(t["name"], len(names), {k: round(v, 4) for k, v in acc.items()}, {}))
    cost = {"images_encoded_per_task": min(probes_per_task, PROBE_LIMIT) * len(encoders), "probe_models": encoders,
            "select_seconds_per_task": round(probe_seconds, 4),
            "images_per_task_mean": round(float(np.mean([len(h) for h in held])), 1), "models_in_hub": len(ids)}
    return out, cost


def summarise(outcomes: list[TaskOutcome]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over tasks, per method."""
    methods = list(outcomes[0].accuracy)
    return {"mean": {m: round(float(np.mean([o.accuracy[m] for o in outcomes])), 4) for m in methods},
            "std": {m: round(float(np.std([o.accuracy[m] for o in outcomes])), 4) for m in methods}}


def bench_tasks(world: Any, n: int) -> dict[str, list[dict[str, Any]]]:
    """The task sets the benches score: `n` generated tasks per seed of TASKS_SEEDS, and the shipped ones."""
    import json

    from mll_index.world.generate import generate_world_tasks

    sets = {name: generate_world_tasks("full", world.root, n, seed)["tasks"] for name, seed in TASKS_SEEDS.items()}
    sets["shipped"] = json.loads((world.root / "tasks.json").read_text())["tasks"]
    return sets
