"""Selection quality and speed on the emoji world: MLL against INB, random, text proxy and the oracles.

    python bench/selection_quality.py [--index indexes/default]

Builds or loads the full emoji world, labels its hub into the index (once), evaluates every
method on every target task, sweeps alpha x k x selection mode, and times selection: one task
with a cold caption cache (every caption embedded anew), and a batch of 1,000 tasks of 20
classes drawn from the world's concept names. Writes bench/results/selection_quality.{json,md,png}.

Then 200 generated tasks (`world tasks --generate`, seed 2; `--generated-only` runs just these):
`generated` (mean and std per method), `prediction_mae` and `prediction_coverage_80` (select's
predicted accuracy, k=1, calibrated on seed 1 by bench/calibrate_accuracy.py) and `budget` (per
fraction 0.2 / 0.5 / 1.0 of the hub's largest model's GFLOPs: MLL k=3 within it and the oracle
single model within it). Their images are the first `--per-cell` (default 2 of the world's 8) task-pool
images per class and domain, encoded once by every model (bench/generated_tasks.py).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, write_results  # noqa: E402


def generated_figures(index: Path, n: int, per_cell: int) -> tuple[dict, list[str]]:
    """The `generated`, `prediction_mae`, `prediction_coverage_80` and `budget` figures and their Markdown.

    `n` generated tasks of the report seed (the calibration of predicted accuracy used the other
    seed), their images the first `per_cell` of the world's task pool per class and domain
    (bench/generated_tasks.py); the shipped tasks are scored the same way for the prediction."""
    from generated_tasks import bench_tasks, embed_pool, score_probes, score_tasks, summarise

    from mll_index.models.flops import model_costs
    from mll_index.models.hub import load_hub
    from mll_index.selection.selector import open_selector
    from mll_index.world import load_world

    world = load_world("full")
    hub = load_hub(world.hub_path)
    sets = bench_tasks(world, n)
    pool = embed_pool(world, hub, [t for ts in sets.values() for t in ts], per_cell)
    selector = open_selector(index, models=list(hub.ids))
    costs = model_costs(list(hub))
    # The three asked-for fractions, and two that admit an ensemble (the emoji hub's models cost 0.011 to
    # 0.014 GFLOPs, so nothing fits under half the largest and one model under all of it).
    fractions = (0.2, 0.5, 1.0, 2.0, 3.0)
    started = time.perf_counter()
    outcomes, seconds = score_tasks(selector, hub, pool, sets["report"], costs=costs, fractions=fractions)
    shipped, _ = score_tasks(selector, hub, pool, sets["shipped"])
    from mll_index.selection.accuracy import load_calibration, predict_features

    calibration = load_calibration()

    def prediction(scored: list) -> dict:
        out = {}
        for k in ("1", "3"):
            rows = [(predict_features(o.prediction[k]["features"], calibration)[0], o.prediction[k]["truth"])
                    for o in scored]
            out[f"k{k}"] = {"mae": round(float(np.mean([abs(p.estimate - t) for p, t in rows])), 4),
                            "coverage_80": round(float(np.mean([p.low <= t <= p.high for p, t in rows])), 4)}
        return out

    generated_pred, shipped_pred = prediction(outcomes), prediction(shipped)
    probed, probe_cost = score_probes(selector, pool, sets["report"])
    probe = {**summarise(probed), "tasks": len(probed), "seed": 2, "probes_per_task": PROBES_PER_TASK,
             "cost": probe_cost,
             "bars": {"mll_k3_minus_oracle_single": round(float(np.mean(
                          [o.accuracy["mll_k3"] - o.accuracy["oracle_single"] for o in probed])), 4),
                      "mll_k1_minus_domain_word_k1": round(float(np.mean(
                          [o.accuracy["mll_k1"] - o.accuracy["mll_k1_domain_word"] for o in probed])), 4)},
             "note": "scored on each task's images less its probes; domain_word: the word where the task has one "
                     "domain; parameters chosen on seed 1, reported here on seed 2"}
    budget = {}
    for frac in fractions:
        rows = [o.budget[str(frac)] for o in outcomes]
        fits = [r for r in rows if r["mll"] is not None]
        budget[str(frac)] = {
            "gflops": round(frac * max(c.gflops for c in costs.values()), 5),
            "mll": round(float(np.mean([r["mll"] for r in fits])), 4) if fits else None,
            "oracle_single": round(float(np.mean([r["oracle_single"] for r in fits])), 4) if fits else None,
            "tasks_with_a_model_within": len(fits)}
    figures = {"generated": {**summarise(outcomes), "tasks": len(outcomes), "seed": 2,
                             "images_per_class_and_domain": per_cell, "probe": probe},
               "prediction_mae": generated_pred["k1"]["mae"], "prediction_coverage_80": generated_pred["k1"]["coverage_80"],
               "prediction": {"generated": generated_pred, "shipped": shipped_pred, "calibration": calibration.about},
               "budget": budget, "budget_note": "k=3 within --budget-gflops = fraction x the hub's largest model's GFLOPs; "
                                                "oracle_single: the best single model within the same limit",
               "generated_seconds": {**seconds, "score_all": round(time.perf_counter() - started, 1), **pool.seconds}}
    g = figures["generated"]
    md = [f"\n## {len(outcomes)} generated tasks (seed 2; {per_cell} images per class and domain)\n",
          "| method | mean | std |\n|---|---|---|",
          *[f"| {m} | {g['mean'][m]:.3f} | {g['std'][m]:.3f} |" for m in g["mean"]],
          (f"\n## Probe images on the {len(probed)} generated tasks ({PROBES_PER_TASK} per task, left out of "
           "scoring; no domain word)\n"),
          "| method | k=1 | k=3 |\n|---|---|---|",
          *[(f"| {label} | {probe['mean'][f'mll_k1{key}']:.3f} ± {probe['std'][f'mll_k1{key}']:.3f} | "
             f"{probe['mean'][f'mll_k3{key}']:.3f} ± {probe['std'][f'mll_k3{key}']:.3f} |")
            for label, key in (("probe images", ""), ("neither", "_no_domain"), ("domain word", "_domain_word"))],
          f"| oracle single | {probe['mean']['oracle_single']:.3f} ± {probe['std']['oracle_single']:.3f} | |",
          (f"\nBars: k=3 with probes minus oracle single {probe['bars']['mll_k3_minus_oracle_single']:+.4f} (>= 0); "
           f"k=1 with probes minus with the domain word {probe['bars']['mll_k1_minus_domain_word_k1']:+.4f} "
           f"(>= -0.010). Cost: {probe_cost['images_encoded_per_task']} images encoded per task, "
           f"{probe_cost['select_seconds_per_task']} s selection per task, against "
           f"~{probe_cost['images_per_task_mean']} images x {probe_cost['models_in_hub']} models to evaluate the hub."),
          "\n## Predicted accuracy (calibrated on seed 1)\n",
          "| tasks | k | MAE | 80% coverage |\n|---|---|---|---|",
          *[f"| {name} | {k[1:]} | {v['mae']:.3f} | {v['coverage_80']:.2f} |"
            for name, pred in (("generated", generated_pred), ("shipped", shipped_pred)) for k, v in pred.items()],
          "\n## Budget (k=3 MLL against the oracle single model within the same GFLOPs)\n",
          "| fraction of the largest model | GFLOPs | MLL | oracle single | tasks with a model within |\n|---|---|---|---|---|",
          *[f"| {f} | {b['gflops']} | {b['mll']} | {b['oracle_single']} | {b['tasks_with_a_model_within']} |"
            for f, b in budget.items()]]
    return figures, md


PROBES_PER_TASK = 16


def probe_quality(index: Path, probes_per_task: int = PROBES_PER_TASK, seed: int = 0,
                  cache: Path | None = None, probe_models: int = 1) -> dict:
    """MLL with probe images and no domain word on the emoji world's target tasks.

    Per task, `probes_per_task` images drawn (seeded) from the task's pool are the probes and are left
    out of scoring; every method is scored on the remaining images, so the figures beside each
    other (with the domain word, with neither, the oracles) are on the same images.
    Returns `probe` (the keys of `mean`, MLL with probes and no domain word), the same-image
    references, per-task figures and `probe_seconds_per_task`.
    """
    from mll_index.evaluation.baselines import accuracy_of, inb_model, oracle_per_class, oracle_single, random_accuracy
    from mll_index.evaluation.run import _all_probabilities, world_eval_tasks
    from mll_index.models.hub import load_hub
    from mll_index.reuse.ensemble import combine, scan_task_images
    from mll_index.selection.selector import open_selector, select_batch
    from mll_index.selection.task import make_task
    from mll_index.world import load_world

    world = load_world("full")
    hub = load_hub(world.hub_path)
    tasks = world_eval_tasks(world)
    images = {t.name: scan_task_images(t.folder, t.class_names) for t in tasks}
    if cache is not None and cache.is_file():
        stored = np.load(cache, allow_pickle=False)
        probs = {t.name: {m: stored[f"{t.name}/{m}"] for m in hub.ids} for t in tasks}
        proxy = {t.name: {m: float(stored[f"proxy/{t.name}/{m}"]) for m in hub.ids} for t in tasks}
    else:
        probs, proxy, images, _ = _all_probabilities(hub, tasks, images, "cpu", progress=True)
        if cache is not None:
            np.savez(cache, **{f"{t}/{m}": p for t, ps in probs.items() for m, p in ps.items()},
                     **{f"proxy/{t}/{m}": np.array(v) for t, ps in proxy.items() for m, v in ps.items()})
    rng = np.random.default_rng(seed)
    held: dict[str, np.ndarray] = {}
    probe_files: dict[str, list[str]] = {}
    for t in tasks:
        n = len(images[t.name].paths)
        picked = np.sort(rng.choice(n, min(probes_per_task, n // 2), replace=False))
        probe_files[t.name] = [str(Path(images[t.name].root) / images[t.name].paths[i]) for i in picked]
        held[t.name] = np.setdiff1d(np.arange(n), picked)
    selector = open_selector(index, models=list(hub.ids))
    plain = [make_task(t.class_names, t.name) for t in tasks]
    worded = [make_task(t.class_names, t.name, domain=t.domain) for t in tasks]
    probed = [make_task(t.class_names, t.name, probe_images=probe_files[t.name]) for t in tasks]
    started = time.perf_counter()
    with_probes = {k: select_batch(selector, probed, k=k, mode="restricted", probe_models=probe_models) for k in (1, 3)}
    probe_seconds = (time.perf_counter() - started) / len(tasks) / 2
    without = {k: select_batch(selector, plain, k=k, mode="restricted") for k in (1, 3)}
    word = {k: select_batch(selector, worded, k=k, mode="restricted") for k in (1, 3)}
    inb = inb_model(hub, list(hub.ids))
    per_task = {}
    for i, t in enumerate(tasks):
        rows = held[t.name]
        labels = np.asarray(images[t.name].labels)[rows]
        p = {m: probs[t.name][m][rows] for m in hub.ids}

        def acc(selection, p=p, labels=labels, t=t) -> float:  # type: ignore[no-untyped-def]
            return float((combine(p, selection.models_for(), t.class_names).argmax(axis=1) == labels).mean())

        proxy_best = max(sorted(hub.ids), key=lambda m, t=t: proxy[t.name][m])
        per_task[t.name] = {
            "mll_k1": acc(with_probes[1][i]), "mll_k3": acc(with_probes[3][i]), "inb": accuracy_of(p[inb], labels),
            "random": random_accuracy(p, labels), "text_proxy": accuracy_of(p[proxy_best], labels),
            "oracle_single": oracle_single(p, labels)[1],
            "oracle_per_class": oracle_per_class(p, labels, len(t.class_names)),
            "mll_k1_no_domain": acc(without[1][i]), "mll_k3_no_domain": acc(without[3][i]),
            "mll_k1_domain_word": acc(word[1][i]), "mll_k3_domain_word": acc(word[3][i])}
    keys = list(next(iter(per_task.values())))
    mean = {k: round(float(np.mean([r[k] for r in per_task.values()])), 4) for k in keys}
    encoded = sorted({m for s in with_probes[1] for m in (s.probe or {}).get("models", [])})
    return {"probe": {k: mean[k] for k in keys if not k.endswith("_domain_word")},
            "probe_same_images": {"mll_k1_domain_word": mean["mll_k1_domain_word"],
                                  "mll_k3_domain_word": mean["mll_k3_domain_word"]},
            "probe_tasks": {t: {k: round(v, 4) for k, v in r.items()} for t, r in per_task.items()},
            "probe_seconds_per_task": round(probe_seconds, 3),
            "probe_cost": {"images_encoded_per_task": with_probes[1][0].probe["images_encoded"],  # type: ignore[index]
                           "probe_models": encoded,
                           "images_per_task_mean": round(float(np.mean([len(v) for v in held.values()])), 1),
                           "models_in_hub": len(hub.ids)},
            "probe_bars": {"mll_k3_minus_oracle_single": round(mean["mll_k3"] - mean["oracle_single"], 4),
                           "mll_k1_minus_domain_word_k1": round(mean["mll_k1"] - mean["mll_k1_domain_word"], 4)},
            "probe_settings": {"probes_per_task": probes_per_task, "seed": seed, "mode": "restricted",
                               "domain_word": None, "probe_models": probe_models}}


def probe_only(args: argparse.Namespace) -> None:
    """Only the probe-image figures, merged into the existing results/selection_quality.json."""
    import json
    import os

    figures = probe_quality(args.index, cache=args.probe_cache)
    path = RESULTS / "selection_quality.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    record.update(figures)
    record["probe_command"] = "python bench/selection_quality.py --probe-only"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    md = RESULTS / "selection_quality.md"
    text = md.read_text() if md.is_file() else ""
    text = text.split("\n## Probe images", 1)[0].rstrip("\n")
    md.write_text(text + "\n\n" + probe_markdown(figures))
    print(probe_markdown(figures))


def probe_markdown(f: dict) -> str:
    p, same, cost = f["probe"], f["probe_same_images"], f["probe_cost"]
    return "\n".join([
        "## Probe images instead of the domain word", "",
        f"{f['probe_settings']['probes_per_task']} unlabeled images per task from its pool, left out of scoring; "
        "no domain word; every figure on the same (remaining) images.", "",
        "| | MLL k=1 | MLL k=3 |", "|---|---|---|",
        f"| probe images | {p['mll_k1']:.3f} | {p['mll_k3']:.3f} |",
        f"| domain word | {same['mll_k1_domain_word']:.3f} | {same['mll_k3_domain_word']:.3f} |",
        f"| neither | {p['mll_k1_no_domain']:.3f} | {p['mll_k3_no_domain']:.3f} |", "",
        f"Oracle single model: {p['oracle_single']:.3f}; oracle per class: {p['oracle_per_class']:.3f}; "
        f"INB {p['inb']:.3f}; text proxy {p['text_proxy']:.3f}.", "",
        f"Bars: MLL k=3 with probes minus oracle single = {f['probe_bars']['mll_k3_minus_oracle_single']:+.3f} "
        f"(>= 0); MLL k=1 with probes minus with the domain word = "
        f"{f['probe_bars']['mll_k1_minus_domain_word_k1']:+.3f} (>= -0.010).", "",
        f"Cost: {cost['images_encoded_per_task']} images encoded per task (probe models {cost['probe_models']}), "
        f"{f['probe_seconds_per_task']} s per task with selection; evaluating the hub instead encodes every one of "
        f"~{cost['images_per_task_mean']} task images with each of {cost['models_in_hub']} models.", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("indexes/default"))
    parser.add_argument("--batch-tasks", type=int, default=1000)
    parser.add_argument("--probe-only", action="store_true",
                        help="Only the probe-image figures (probe, probe_seconds_per_task), merged into the results.")
    parser.add_argument("--probe-cache", type=Path, default=None,
                        help="An .npz of every model's task probabilities, written on the first run and read after.")
    parser.add_argument("--generated-tasks", type=int, default=200)
    parser.add_argument("--per-cell", type=int, default=2, help="Task-pool images per class and domain, generated tasks.")
    parser.add_argument("--generated-only", action="store_true",
                        help="Only the generated-task figures, merged into the existing results file.")
    args = parser.parse_args()
    if args.generated_only:
        import json

        extra, extra_md = generated_figures(args.index, args.generated_tasks, args.per_cell)
        path = RESULTS / "selection_quality.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        keep = {k: v for k, v in previous.items() if k not in ("command", "date", "machine")}
        md_path = RESULTS / "selection_quality.md"
        md = md_path.read_text().split("\n## " + str(args.generated_tasks) + " generated tasks")[0] if md_path.is_file() else ""
        write_results("selection_quality", {**keep, **extra}, md + "\n".join(extra_md) + "\n")
        print("\n".join(extra_md))
        return
    if args.probe_only:
        probe_only(args)
        return

    from mll_index.models.hub import load_hub
    from mll_index.selection.selector import open_selector, select_batch, select_models
    from mll_index.selection.task import make_task
    from mll_index.world import load_world
    from mll_index.world.demo import run_demo

    demo = run_demo(args.index, RESULTS / "selection_quality_eval", progress=True)
    result, files = demo.evaluation, demo.files
    world = load_world("full")
    selector = open_selector(args.index, models=list(load_hub(world.hub_path).ids))

    timings: dict[str, list[float]] = {"restricted": [], "counts": []}
    for mode in timings:
        for t in world.tasks:
            task = make_task(t.class_names, t.name)
            started = time.perf_counter()
            select_models(selector, task, k=1, mode=mode)  # no caption cache: every caption is embedded
            timings[mode].append(time.perf_counter() - started)
    names = sorted({c["name"] for c in world.concepts})
    rng = np.random.default_rng(0)
    tasks = [make_task(list(rng.choice(names, 20, replace=False)), f"t{i}") for i in range(args.batch_tasks)]
    batch = {}
    for mode in ("restricted", "counts"):
        started = time.perf_counter()
        select_batch(selector, tasks, k=1, mode=mode)
        batch[mode] = round(time.perf_counter() - started, 2)

    mean = result.mean
    figures = {
        "tasks": result.tasks, "mean": mean,
        "select_seconds_per_task": round(statistics.mean(timings["restricted"]), 4),
        "select_seconds_per_task_max": round(max(timings["restricted"]), 4),
        "select_seconds_per_task_counts_mode": round(statistics.mean(timings["counts"]), 4),
        "batch_1000_seconds": batch["restricted"], "batch_1000_seconds_counts_mode": batch["counts"],
        "batch_tasks": args.batch_tasks, "sweep": result.sweep, "chosen": result.chosen,
        "settings": result.settings, "evaluation_seconds": result.seconds,
        "bars": {"mll_k3_minus_oracle_single": round(mean["mll_k3"] - mean["oracle_single"], 4),
                 "mll_k1_minus_inb": round(mean["mll_k1"] - mean["inb"], 4),
                 "mll_k1_minus_text_proxy": round(mean["mll_k1"] - mean["text_proxy"], 4)},
    }
    figures.update(probe_quality(args.index))
    extra, extra_md = generated_figures(args.index, args.generated_tasks, args.per_cell)
    figures |= extra
    shutil.copy(files["png"], RESULTS / "selection_quality.png")
    md = ["# Selection quality on the emoji world\n", result.table(),
          f"\nBars: MLL k=3 minus oracle single = {figures['bars']['mll_k3_minus_oracle_single']:+.3f}; "
          f"MLL k=1 minus INB = {figures['bars']['mll_k1_minus_inb']:+.3f}; "
          f"MLL k=1 minus text proxy = {figures['bars']['mll_k1_minus_text_proxy']:+.3f}.\n",
          f"Selection of one task, cold caption cache: {figures['select_seconds_per_task']:.3f} s mean, "
          f"{figures['select_seconds_per_task_max']:.3f} s max (restricted); "
          f"{figures['select_seconds_per_task_counts_mode']:.3f} s (counts).\n",
          f"Batch of {args.batch_tasks} tasks of 20 classes: {batch['restricted']} s (restricted), "
          f"{batch['counts']} s (counts).\n", "![](selection_quality.png)\n",
          "## Sweep" + (RESULTS / "selection_quality_eval" / "evaluation.md").read_text().split("## Sweep", 1)[-1],
          probe_markdown(figures), *extra_md]
    write_results("selection_quality", figures, "\n".join(md))
    print((RESULTS / "selection_quality.md").read_text())


if __name__ == "__main__":
    main()
