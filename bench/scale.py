"""Scale: selection latency, batch throughput, growth and memory on synthetic hubs of up to 10,000 x 50,000.

    python bench/scale.py              # the full run (about 30 minutes on 2 cores; hubs cached in ~/.cache)
    python bench/scale.py --smoke      # smallest sizes, under a minute (CI runs it)
    python bench/scale.py --calibrated-only   # calibrate at 100 / 1,000 / 10,000 models and select under its rule

Synthetic hubs (bench/synthetic_hub.py) of 100, 1,000 and 10,000 models over 1,000, 10,000 and
50,000 nodes are written in the index's own format. Measured side by side in one run: opening an
index (time, resident memory), one task's selection (10, 100, 1,000 classes; cold and warm caption
cache; auto, counts and restricted modes), a batch of 10,000 tasks of 20 classes, growth (one
model at each hub size, with the bytes it writes; 1,000 nodes) against a rebuild, the
straightforward pandas implementation on the same inputs, and the cost that selection avoids
(evaluating every model). Writes
bench/results/scale.{json,md} and scale_latency.png, scale_throughput.png (--smoke: scale_smoke.*).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, write_results  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
SEED = 7


def rss_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def name_pool(graph: Any) -> tuple[list[str], str]:
    """Class names users give: the benchmark datasets' class names where the shared data is here,
    else the lemmas of the graph's nodes."""
    names: list[str] = []
    source = SHARED / "clip_benchmark_classnames.json"
    if source.is_file():
        for values in json.loads(source.read_text()).values():
            names.extend(v for v in values if isinstance(v, str))
        for task in sorted((SHARED / "target_tasks").glob("*.txt")):
            names.extend(line.strip() for line in task.read_text().splitlines() if line.strip())
        origin = "benchmark class names (clip_benchmark_classnames.json, target_tasks/)"
    else:
        names = [graph.lemmas[r][0].replace("_", " ") for r in graph.nodes]
        origin = "lemmas of the graph's nodes"
    from mll_index.index.graph import normalize_name

    unique: dict[str, str] = {}
    for n in names:
        name = " ".join(n.split())
        if name and len(name) <= 200:
            unique.setdefault(normalize_name(name), name)   # names a task may not repeat ("Pickup truck")
    pool = sorted(unique.values())
    np.random.default_rng(SEED).shuffle(pool)
    return pool, origin


def draw_tasks(pool: list[str], n_tasks: int, n_classes: int, seed: int) -> list[Any]:
    """Tasks whose class names repeat as in real sweeps: names drawn by a Zipf law over the pool."""
    from mll_index.selection.task import make_task

    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(pool) + 1) ** 0.8
    weights /= weights.sum()
    tasks = []
    for t in range(n_tasks):
        picks = rng.choice(len(pool), n_classes, replace=False, p=weights)
        tasks.append(make_task([pool[i] for i in picks], name=f"task-{t:05d}"))
    return tasks


def fresh_cache(root: Path, name: str) -> Any:
    from mll_index.index.embed import EmbeddingCache

    path = root / f"{name}.sqlite"
    if path.exists():
        path.unlink()
    return EmbeddingCache(path)


# ---------------------------------------------------------------------------------------
# Hubs


def make_hubs(root: Path, models: list[int], nodes: list[int], source: Path | None, embedder: Any,
              image_hubs: set[tuple[int, int]], log: dict[str, Any]) -> dict[tuple[int, int], Path]:
    """Write (or reuse) a node index per size and a hub per (models, nodes)."""
    import synthetic_hub as sh

    hubs = {}
    for n in nodes:
        base = root / f"nodes-{n}"
        if not (base / "manifest.json").is_file():
            t = time.perf_counter()
            log.setdefault("node_indexes", {})[n] = sh.node_index(base, n, source, embedder)
            log["node_indexes"][n]["seconds"] = round(time.perf_counter() - t, 1)
        for m in models:
            hub = root / f"hub-{m}x{n}"
            done = hub / "labels" / "matrix" / "manifest.json"
            if not done.is_file():
                shutil.rmtree(hub, ignore_errors=True)
                shutil.copytree(base, hub)
                t = time.perf_counter()
                if (m, n) in image_hubs:
                    info = sh.image_labels(hub, m)
                else:
                    info = sh.label_matrix(hub, m)
                info["seconds"] = round(time.perf_counter() - t, 1)
                log.setdefault("hubs_written", {})[f"{m}x{n}"] = info
                print(f"wrote hub {m} x {n}: {info}", flush=True)
            hubs[(m, n)] = hub
    return hubs


# ---------------------------------------------------------------------------------------
# Measurements


def probe_open(index: Path, classes: int) -> dict[str, Any]:
    """Run in a fresh process: time and memory of opening an index for selection, then of one gather."""
    import faiss  # noqa: F401  (imported before the baseline, as by any caller)

    from mll_index.index.node_index import load_index
    from mll_index.labels.store import open_labels
    from mll_index.selection.confusion import node_confusion
    from mll_index.selection.labeled_nodes import labeled_nodes

    before = rss_bytes()
    t = time.perf_counter()
    idx = load_index(index)
    store = open_labels(index)
    labeled_nodes(idx, store)
    seconds = time.perf_counter() - t
    after = rss_bytes()
    label_bytes = store.matrix.label_bytes
    rng = np.random.default_rng(SEED)
    nodes = np.sort(rng.choice(len(store.node_wnids), min(len(store.node_wnids), 5 * classes), replace=False))
    node_confusion(store, nodes, "counts")
    touched = rss_bytes()
    return {"open_s": round(seconds, 3), "rss_open_bytes": after - before, "label_bytes": label_bytes,
            "node_vector_bytes": int(idx.vectors.nbytes),
            "open_rss_over_label_bytes": round((after - before) / label_bytes, 4),
            "rss_after_one_selection_bytes": touched - before}


def open_in_subprocess(index: Path, classes: int = 100) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--probe-open", str(index), "--probe-classes", str(classes)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_selects(sel: Any, task: Any, mode: str, reps: int, cold_root: Path | None = None,
                 rule: str = "auto") -> list[float]:
    """Seconds per selection; with cold_root, every repetition starts from an empty caption cache."""
    from mll_index.selection.selector import select_models

    times = []
    for r in range(reps):
        if cold_root is not None:
            sel.cache = fresh_cache(cold_root, f"cold-{r}")
        t = time.perf_counter()
        select_models(sel, task, k=3, mode=mode, rule=rule)  # type: ignore[arg-type]
        times.append(time.perf_counter() - t)
    return times


def summary(times: list[float]) -> dict[str, Any]:
    return {"p50_s": round(percentile(times, 50), 4), "p99_s": round(percentile(times, 99), 4), "n": len(times)}


def single_task(sel: Any, tasks: dict[int, Any], modes: list[str], reps: dict[int, int], work: Path,
                cold: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sel.cache = fresh_cache(work, "warm")
    for c, task in tasks.items():
        for mode in modes:
            key = f"{c}_classes/{mode}"
            time_selects(sel, task, mode, 1)                       # fills the warm cache
            out[key] = {"warm": summary(time_selects(sel, task, mode, reps[c]))}
            if cold:
                out[key]["cold"] = summary(time_selects(sel, task, mode, max(3, reps[c] // 4), cold_root=work))
                sel.cache = fresh_cache(work, "warm")
    return out


def profile_restricted(sel: Any, task: Any) -> list[dict[str, Any]]:
    from mll_index.selection.selector import select_models

    select_models(sel, task, k=3, mode="restricted")      # captions cached: the profile is selection alone
    prof = cProfile.Profile()
    prof.enable()
    select_models(sel, task, k=3, mode="restricted")
    prof.disable()
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, fn), (_, _, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(file).name}:{fn}", "self_s": round(tottime, 4), "cumulative_s": round(cumtime, 4)})
    return sorted(rows, key=lambda r: -r["self_s"])[:8]


def task_nodes(sel: Any, task: Any) -> tuple[np.ndarray, np.ndarray]:
    """(nodes S on the store's axis, (n_classes, |S|) class-node weights) of a task, as selection builds them."""
    from mll_index.selection.selector import prepare_tasks

    prepared = prepare_tasks(sel, [task])
    matches = [prepared.matched[r] for r in prepared.rows[0]]
    pos = sel.store.node_position
    union = sorted({pos[m.wnid] for ms in matches for m in ms})
    col = {j: i for i, j in enumerate(union)}
    weights = np.zeros((len(matches), len(union)))
    for c, ms in enumerate(matches):
        for m in ms:
            weights[c, col[pos[m.wnid]]] = max(m.score, 0.0)
    return np.array(union, np.int64), weights


def topk_against_exact(sel: Any, task: Any) -> dict[str, Any]:
    """The restricted confusion read from stored top nodes against the exact recomputation, on one task:
    image-model pairs where no node of S is among the stored top nodes (the only place they can differ),
    confusion entries that differ, and the models chosen (top-3 per class, top-10 of the ranking)."""
    from mll_index.selection.confusion import class_f1, exact_restricted_confusion, restricted_confusion, smooth_scores
    from mll_index.selection.labeled_nodes import top_stable

    nodes, weights = task_nodes(sel, task)
    t = time.perf_counter()
    fast = restricted_confusion(sel.store, nodes)
    fast_s = time.perf_counter() - t
    t = time.perf_counter()
    exact = exact_restricted_confusion(sel.store, nodes)
    exact_s = time.perf_counter() - t
    pairs = float(exact[:, :, 0].sum() + exact[:, :, 2].sum())
    beyond = float(fast[:, :, 2].sum() - fast[:, :, 1].sum() - (exact[:, :, 2].sum() - exact[:, :, 1].sum()))
    scores = [smooth_scores(class_f1(c, weights), 0.7) for c in (fast, exact)]
    same_k3 = sum(set(top_stable(scores[0][:, c], 3).tolist()) == set(top_stable(scores[1][:, c], 3).tolist())
                  for c in range(weights.shape[0]))
    rank = [set(top_stable(s.mean(axis=1), 10).tolist()) for s in scores]
    return {"classes": int(weights.shape[0]), "nodes": int(len(nodes)), "image_model_pairs": int(pairs),
            "pairs_beyond_top_k": int(round(beyond)), "pairs_beyond_top_k_share": round(beyond / max(pairs, 1), 5),
            "confusion_entries_differing": int((np.abs(fast - exact) > 1e-6).sum()),
            "confusion_entries": int(fast.size), "same_top3_classes": f"{same_k3}/{weights.shape[0]}",
            "ranking_top10_overlap": len(rank[0] & rank[1]), "topk_s": round(fast_s, 4), "exact_s": round(exact_s, 4)}


def restricted_at_scale(hubs: dict[int, Path], task: Any, embedder: Any, reps: int, work: Path,
                        compare_up_to: int = 1000) -> dict[str, Any]:
    """Per hub size (models over 1,000 nodes, image-level labels, top-K table written): the warm p50 of a
    restricted selection of `task`, the mode `auto` takes, and the difference from the exact mode."""
    from mll_index.labels.topk_table import write_topk_tables
    from mll_index.selection.selector import open_selector, select_models

    out: dict[str, Any] = {}
    for m, hub in sorted(hubs.items()):
        if not any((hub / "labels").glob("samples-*.topk")):
            t = time.perf_counter()
            write_topk_tables(hub)
            print(f"top-K table of {hub.name}: {time.perf_counter() - t:.1f} s", flush=True)
        t = time.perf_counter()
        sel = open_selector(hub, embedder)
        open_s = time.perf_counter() - t
        sel.cache = fresh_cache(work, "restricted")
        select_models(sel, task, k=3, mode="restricted")           # captions cached, table opened
        times = time_selects(sel, task, "restricted", reps)
        row = {"hub": hub.name, "models": len(sel.store.model_ids), "open_s": round(open_s, 2), **summary(times),
               "auto_mode": select_models(sel, task, k=3).mode, "load_avg_1min": round(os.getloadavg()[0], 2)}
        if m <= compare_up_to:
            row["against_exact"] = topk_against_exact(sel, task)
        out[str(m)] = row
        print(f"restricted {m} models: {row}", flush=True)
        del sel
    return out


def straightforward(sel: Any, task: Any, reps: int = 3) -> dict[str, Any]:
    """Steps 2-5 on the same matched nodes: ours (counts mode) against pandas loops per model and class."""
    from straightforward import label_frames, straightforward_select

    from mll_index.selection.selector import prepare_tasks, select_prepared

    prepared = prepare_tasks(sel, [task])
    ours = []
    for _ in range(reps):
        t = time.perf_counter()
        mine = select_prepared(sel, prepared, k=3, mode="counts")[0]
        ours.append(time.perf_counter() - t)
    store = sel.store
    t = time.perf_counter()
    dense = store.matrix.dense()                                  # (n_nodes, n_models, 3)
    frames = label_frames(list(store.model_ids), list(store.node_wnids), dense[..., 0].T, dense[..., 1].T,
                          dense[..., 2].T)
    frames_s = time.perf_counter() - t
    class_nodes = [[(m.wnid, max(m.score, 0.0)) for m in c.nodes] for c in mine.classes]
    t = time.perf_counter()
    top, _ = straightforward_select(frames, class_nodes, mine.alpha, 3)
    theirs = time.perf_counter() - t
    agree = sum(abs(a[1] - b.score) < 1e-3 and a[0] == b.model
                for c, row in zip(mine.classes, top) for a, b in zip(row, c.models))
    total = sum(len(c.models) for c in mine.classes)
    return {"models": len(store.model_ids), "classes": len(task.classes), "ours_s": round(statistics.median(ours), 4),
            "straightforward_s": round(theirs, 3), "straightforward_frames_s": round(frames_s, 2),
            "speedup": round(theirs / statistics.median(ours), 1), "same_choices": f"{agree}/{total}"}


def batch(sel: Any, tasks: list[Any], work: Path, cold: bool) -> dict[str, Any]:
    from mll_index.selection.selector import prepare_tasks, select_prepared

    if cold:
        sel.cache = fresh_cache(work, "batch-cold")
    t = time.perf_counter()
    prepared = prepare_tasks(sel, tasks)
    prepare_s = time.perf_counter() - t
    select_prepared(sel, prepared, k=3, ranking_size=10)
    total = time.perf_counter() - t
    return {"tasks": len(tasks), "classes_per_task": len(tasks[0].classes), "distinct_classes": len(prepared.matched),
            "cold_cache": cold, "seconds": round(total, 2), "embed_and_match_s": round(prepare_s, 2),
            "select_s": round(total - prepare_s, 2), "tasks_per_s": round(len(tasks) / total, 1)}


def bytes_written(folder: Path, act: Any) -> int:
    """Run `act()`; the bytes it wrote under `folder`: new or replaced files whole, appended files' growth."""
    def state() -> dict[str, tuple[int, int, int]]:
        out = {}
        for p in folder.rglob("*"):
            if p.is_file():
                st = p.stat()
                out[str(p)] = (st.st_ino, st.st_size, st.st_mtime_ns)
        return out

    before = state()
    act()
    written = 0
    for name, (ino, size, mtime) in state().items():
        old = before.get(name)
        if old != (ino, size, mtime):
            written += size - old[1] if old and old[0] == ino and size >= old[1] else size
    return written


def growth(hub: Path, work: Path, n_models: int, embedder: Any, add_nodes_too: bool,
           n_new: int = 1000) -> dict[str, Any]:
    """Add one model (three times), and n_new nodes, to a hard-linked copy of a hub; the hub stays as it was."""
    from mll_index.index.node_index import add_nodes, load_index, read_node_table, write_index
    from mll_index.labels.matrix import append_labels, matrix_dir, open_matrix

    copy = work / f"grow-{hub.name}"
    shutil.rmtree(copy, ignore_errors=True)
    # Growth writes new files only (the label log is copied before an append if it has other links):
    # the hub's files are shared, never changed.
    shutil.copytree(hub, copy, copy_function=os.link)
    matrix = open_matrix(copy)
    rng = np.random.default_rng(SEED)
    counts = np.stack([rng.binomial(10, 0.8, matrix.n_nodes), rng.binomial(10, 0.2, matrix.n_nodes)], 1)
    counts = np.concatenate([counts, 10 - counts[:, :1]], 1).astype(np.uint16)[:, None, :]
    times, written = [], []
    for rep in range(3):    # the median of three (disk write-back makes single timings jumpy)
        model_id = f"new-model-{rep}"
        t = time.perf_counter()
        written.append(bytes_written(matrix_dir(copy), lambda: append_labels(
            copy, matrix.node_wnids, [(model_id, {"id": model_id, "arch": "ViT-B-32"})], counts, what="one new model")))
        times.append(time.perf_counter() - t)
    out: dict[str, Any] = {"add_model_s": round(statistics.median(times), 3),
                           "add_model_s_all": [round(x, 3) for x in times], "add_model_bytes_written": written[0],
                           "models_before": n_models}
    if add_nodes_too:
        index = load_index(copy)
        graph = index.graph
        present = set(graph.nodes)
        inst = set(graph.instances)
        candidates = [r for r in range(len(graph.wnids)) if r not in present and r not in inst]
        picks = np.random.default_rng(SEED).choice(len(candidates), n_new, replace=False)
        wnids = [graph.wnids[candidates[i]] for i in sorted(picks)]
        # Three times on fresh copies; the first embeds from a cold caption cache, the others find
        # the captions cached.
        cache = fresh_cache(work, "grow")
        writes, labels, embeds, index_bytes = [], [], [], []
        for rep in range(3):
            if rep:
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(hub, copy, copy_function=os.link)
            reports: list[Any] = []
            index_bytes.append(bytes_written(copy, lambda: reports.append(add_nodes(copy, wnids, embedder, cache=cache))))
            report = reports[0]
            grown = open_matrix(copy)
            new_counts = np.random.default_rng(SEED).integers(0, 10, (n_new, grown.n_models, 3))
            t = time.perf_counter()
            # Labels of every model on the new nodes; the models' hub entries stay as they are.
            append_labels(copy, report.added, list(zip(grown.model_ids, grown.entries)), new_counts.astype(np.uint16),
                          what=f"{n_new} new nodes")
            labels.append(time.perf_counter() - t)
            writes.append(report.write_seconds)
            embeds.append(report.embed_seconds)
        write_s, label_s = statistics.median(writes), statistics.median(labels)
        out.update({"nodes_added": n_new, "add_1000_nodes_embed_s": round(embeds[0], 2),
                    "add_1000_nodes_write_s": round(write_s, 3), "add_1000_nodes_write_s_all": [round(w, 3) for w in writes],
                    "add_1000_nodes_index_bytes_written": index_bytes[0],
                    "add_1000_nodes_labels_s": round(label_s, 2),
                    "add_1000_nodes_s": round(write_s + label_s, 2)})
        # A rebuild writes every node again (and embeds them all: extrapolated from the rate just measured).
        index = load_index(copy)
        caps = [row["captions"] for row in read_node_table(copy)]
        t = time.perf_counter()
        write_index(work / "rebuilt", index.graph, np.asarray(index.vectors), caps, embedder=index.embedder,
                    expander_id=index.manifest["expander"])
        write_s = time.perf_counter() - t
        per_node = embeds[0] / max(1, len(report.added))
        out.update({"rebuild_write_index_s": round(write_s, 2),
                    "rebuild_embed_all_nodes_s_estimated": round(per_node * index.size, 1),
                    "rebuild_s_estimated": round(per_node * index.size + write_s, 1)})
        shutil.rmtree(work / "rebuilt", ignore_errors=True)
    shutil.rmtree(copy, ignore_errors=True)
    return out


def eval_cost() -> dict[str, Any]:
    from eval_cost import extrapolate_hub_eval, measure_arch_throughput, measure_world_eval

    out: dict[str, Any] = {}
    try:
        out["emoji_world"] = measure_world_eval("full")
    except Exception as exc:  # the world is built by the demo; without it the measured half is skipped
        out["emoji_world"] = {"skipped": str(exc)}
    arch = measure_arch_throughput()
    out["arch_throughput"] = arch
    if (SHARED / "hubs" / "mll49.csv").is_file():
        out["mll49_on_50000_images"] = extrapolate_hub_eval(SHARED / "hubs" / "mll49.csv", arch["gflops_per_s"])
    return out


# ---------------------------------------------------------------------------------------
# Report


def plots(figures: dict[str, Any], out: Path, stem: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for mode in ("counts", "restricted"):
        for n in figures["sizes"]["nodes"]:
            xs, ys = [], []
            for m in figures["sizes"]["models"]:
                row = figures["select"].get(f"{m}x{n}", {}).get(f"100_classes/{mode}")
                if row:
                    xs.append(m)
                    ys.append(row["warm"]["p50_s"])
            if xs:
                ax.plot(xs, ys, marker="o", linestyle="-" if mode == "counts" else "--", label=f"{mode}, {n:,} nodes")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("models in the hub")
    ax.set_ylabel("p50 seconds, 100-class task, warm")
    ax.axhline(0.1, color="grey", linewidth=0.8)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.legend(fontsize=7)
    ax.set_title("Selection latency against hub size")
    fig.tight_layout()
    fig.savefig(out / f"{stem}_latency.png", dpi=110)
    files.append(f"{stem}_latency.png")
    plt.close(fig)
    rows = figures.get("throughput_by_batch_size", [])
    if rows:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        ax.plot([r["tasks"] for r in rows], [r["tasks_per_s"] for r in rows], marker="o")
        ax.set_xscale("log")
        ax.set_xlabel("tasks in the batch (20 classes each, warm cache)")
        ax.set_ylabel("tasks per second")
        ax.set_title(f"Batch throughput, hub {figures['largest']}")
        fig.tight_layout()
        fig.savefig(out / f"{stem}_throughput.png", dpi=110)
        files.append(f"{stem}_throughput.png")
        plt.close(fig)
    return files


def growth_lines(f: dict[str, Any]) -> list[str]:
    """The growth figures in words: one model at each hub size, and 1,000 nodes at the largest."""
    grow = f["growth"].get(f["largest"], {})
    lines = ["| models in the hub | add one model (median of 3) | bytes written |", "|---|---|---|"]
    for m, seconds in f["add_model_s"].items():
        lines.append(f"| {int(m):,} | {seconds} s | {f['add_model_bytes_written'][m]:,} |")
    if grow.get("nodes_added"):
        lines += ["", f"Adding {grow['nodes_added']:,} nodes to {f['largest']}, beyond embedding them "
                      f"({grow['add_1000_nodes_embed_s']} s): **{f['add_1000_nodes_s']} s** = the index's new segment "
                      f"{grow['add_1000_nodes_write_s']} s ({grow['add_1000_nodes_index_bytes_written']:,} bytes written) "
                      f"+ every model's labels on the new nodes {grow['add_1000_nodes_labels_s']} s."]
    return lines


def markdown(f: dict[str, Any]) -> str:
    goals = f["goals"]
    lines = [f"# Scale ({'smoke' if f['smoke'] else 'full'} run)", "",
             f"Command: `{f['command_line']}`. Hubs: {f['sizes']['models']} models x {f['sizes']['nodes']} nodes; "
             f"node vectors: {f['node_vectors']}; class names: {f['class_names']}.", "",
             "| goal | target | measured | met |", "|---|---|---|---|"]
    for g in goals:
        lines.append(f"| {g['goal']} | {g['target']} | {g['measured']} | {'yes' if g['met'] else 'NO'} |")
    lines += ["", "## One task's selection (p50 / p99 seconds; warm, and cold caption cache)", "",
              "| hub | task | mode | warm p50 | warm p99 | cold p50 | cold p99 |", "|---|---|---|---|---|---|---|"]
    for hub, rows in f["select"].items():
        for key, r in rows.items():
            c, mode = key.split("/")
            cold = r.get("cold", {})
            lines.append(f"| {hub} | {c.replace('_', ' ')} | {mode} | {r['warm']['p50_s']} | {r['warm']['p99_s']} | "
                         f"{cold.get('p50_s', '')} | {cold.get('p99_s', '')} |")
    lines += ["", "## Opening an index", "", "| hub | open s | RSS after open | label bytes | ratio | RSS after one selection |",
              "|---|---|---|---|---|---|"]
    for hub, r in f["open"].items():
        lines.append(f"| {hub} | {r['open_s']} | {r['rss_open_bytes'] / 2**20:.1f} MiB | {r['label_bytes'] / 2**20:.1f} MiB | "
                     f"{r['open_rss_over_label_bytes']} | {r['rss_after_one_selection_bytes'] / 2**20:.1f} MiB |")
    lines += ["", "## Batch", "", "```", json.dumps(f["batch"], indent=1), "```",
              "", "## Growth", ""] + growth_lines(f) + ["", "```", json.dumps(f["growth"], indent=1), "```",
              "", "## Straightforward implementation (pandas, loops over models and classes), same inputs", "",
              "```", json.dumps(f["straightforward"], indent=1), "```",
              "", "## Restricted mode: where the time goes (cProfile, one 100-class task)", "", "```",
              json.dumps(f.get("restricted_profile", {}), indent=1), "```",
              "", "## The cost selection avoids", "", "```", json.dumps(f.get("eval_cost", {}), indent=1), "```", ""]
    if f.get("restricted"):
        lines += [restricted_markdown(f["restricted"])]
    return "\n".join(lines)


def image_hub_sizes(root: Path, hubs: dict[tuple[int, int], Path], smoke: bool) -> dict[int, Path]:
    """Hubs with image-level labels over 1,000 nodes by model count; the full run adds 10,000 models
    (synthetic_hub.linked_image_labels over the 1,000-model hub)."""
    if smoke:
        return {20: hubs[(20, 1000)]}
    import synthetic_hub as sh

    big = root / "hub-10000x1000-images"
    if not (big / "labels" / "matrix" / "manifest.json").is_file():
        shutil.rmtree(big, ignore_errors=True)
        shutil.copytree(root / "nodes-1000", big)
        info = sh.linked_image_labels(hubs[(1000, 1000)], big, 10000)
        print(f"wrote {big.name}: {info}", flush=True)
    return {100: hubs[(100, 1000)], 1000: hubs[(1000, 1000)], 10000: big}


def restricted_only(root: Path, source: Path | None, embedder: Any, out: Path, smoke: bool) -> None:
    """The restricted-mode figures alone, merged into results/scale.json (scale_smoke.json with --smoke)."""
    from mll_index.index.node_index import load_index

    started = time.perf_counter()
    models = [20] if smoke else [100, 1000]
    hubs = make_hubs(root, models, [1000], source, embedder, {(m, 1000) for m in models}, {})
    pool, _ = name_pool(load_index(hubs[(models[-1], 1000)]).graph)
    task = draw_tasks(pool, 1, 100, seed=100)[0]
    work = Path(tempfile.mkdtemp(prefix="mll-scale-"))
    restricted = restricted_at_scale(image_hub_sizes(root, hubs, smoke), task, embedder, 5 if smoke else 20, work)
    shutil.rmtree(work, ignore_errors=True)
    stem = "scale_smoke" if smoke else "scale"
    path = out / f"{stem}.json"
    figures = json.loads(path.read_text()) if path.is_file() else {}
    figures["restricted"] = restricted
    figures["restricted_p50_s"] = {k: v["p50_s"] for k, v in restricted.items()}
    figures["restricted_command"] = "python bench/scale.py --restricted-only" + (" --smoke" if smoke else "")
    figures["restricted_seconds"] = round(time.perf_counter() - started, 1)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(figures, indent=1) + "\n")
    os.replace(tmp, path)
    md = out / f"{stem}.md"
    text = md.read_text() if md.is_file() else ""
    text = text.split("\n## Restricted mode from stored top nodes", 1)[0].rstrip("\n")
    md.write_text(text + "\n\n" + restricted_markdown(restricted))
    print(f"wrote {path}")


def calibrated_at_scale(hubs: dict[int, Path], task: Any, embedder: Any, reps: int, work: Path,
                        tasks: dict[int, int]) -> dict[str, Any]:
    """Per hub size (image-level labels, 1,000 nodes): `mll-index calibrate`'s seconds on a hard-linked
    copy of the hub (the cached hub keeps no rule, so the other figures stay the paper's rule's), then
    the warm p50 of a restricted selection of `task` under the calibrated rule and, side by side in the
    same process, under the paper's rule. `tasks[m]`: pseudo-tasks drawn at m models (the default 600
    unless a size is given fewer, and then it says so)."""
    from mll_index.selection.calibrate import calibrate_rule
    from mll_index.selection.selector import open_selector, select_models

    out: dict[str, Any] = {}
    for m, hub in sorted(hubs.items()):
        copy = work / f"calibrated-{m}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(hub, copy, copy_function=os.link, ignore=shutil.ignore_patterns(".lock", "selection_rule"))
        t = time.perf_counter()
        report = calibrate_rule(copy, tasks=tasks.get(m, 600), progress=True)
        calibrate_s = round(time.perf_counter() - t, 1)
        sel = open_selector(copy, embedder)
        sel.cache = fresh_cache(work, "calibrated")
        for rule in ("calibrated", "mll"):
            select_models(sel, task, k=3, mode="restricted", rule=rule)   # captions cached, rule and table read
        calibrated = time_selects(sel, task, "restricted", reps, rule="calibrated")
        paper = time_selects(sel, task, "restricted", reps, rule="mll")
        row = {"hub": hub.name, "models": len(sel.store.model_ids), "calibrate_s": calibrate_s,
               "pseudo_tasks": report["pseudo_tasks"], "examples": report["examples"],
               "held_out": {k: report["held_out"][k] for k in ("calibrated_k1", "mll_k1", "calibrated_k3", "mll_k3")},
               "calibrated": summary(calibrated), "mll": summary(paper),
               "ratio_p50": round(percentile(calibrated, 50) / percentile(paper, 50), 2),
               "load_avg_1min": round(os.getloadavg()[0], 2)}
        out[str(m)] = row
        print(f"calibrated {m} models: {row}", flush=True)
        del sel
        shutil.rmtree(copy, ignore_errors=True)
    return out


def calibrated_only(root: Path, source: Path | None, embedder: Any, out: Path, smoke: bool,
                    tasks_10000: int) -> None:
    """The calibrated rule's figures alone (calibrate_s by hub size, calibrated_select_p50_s), merged into
    results/scale.json (scale_smoke.json with --smoke)."""
    from mll_index.index.node_index import load_index

    started = time.perf_counter()
    models = [20] if smoke else [100, 1000]
    hubs = make_hubs(root, models, [1000], source, embedder, {(m, 1000) for m in models}, {})
    pool, _ = name_pool(load_index(hubs[(models[-1], 1000)]).graph)
    task = draw_tasks(pool, 1, 100, seed=100)[0]
    work = Path(tempfile.mkdtemp(prefix="mll-scale-", dir=root))     # on the hubs' file system: hard links
    sizes = image_hub_sizes(root, hubs, smoke)
    calibrated = calibrated_at_scale(sizes, task, embedder, 5 if smoke else 20, work, {10000: tasks_10000})
    shutil.rmtree(work, ignore_errors=True)
    stem = "scale_smoke" if smoke else "scale"
    path = out / f"{stem}.json"
    figures = json.loads(path.read_text()) if path.is_file() else {}
    figures["calibrated"] = calibrated
    figures["calibrate_s"] = {k: v["calibrate_s"] for k, v in calibrated.items()}
    figures["calibrated_select_p50_s"] = {k: v["calibrated"]["p50_s"] for k, v in calibrated.items()}
    figures["calibrated_command"] = ("python bench/scale.py --calibrated-only" + (" --smoke" if smoke else "")
                                     + (f" --calibrate-tasks-10000 {tasks_10000}" if tasks_10000 != 600 else ""))
    figures["calibrated_seconds"] = round(time.perf_counter() - started, 1)
    from common import machine

    figures["calibrated_machine"] = machine()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(figures, indent=1) + "\n")
    os.replace(tmp, path)
    md = out / f"{stem}.md"
    text = md.read_text() if md.is_file() else ""
    text = text.split("\n## The calibrated rule at scale", 1)[0].rstrip("\n")
    md.write_text(text + "\n\n" + calibrated_markdown(calibrated))
    print(f"wrote {path}")


def calibrated_markdown(calibrated: dict[str, Any]) -> str:
    lines = ["## The calibrated rule at scale", "",
             "`mll-index calibrate` on synthetic hubs with image-level labels (1,000 nodes), then a 100-class "
             "restricted selection, warm, under the calibrated rule and the paper's rule side by side.", "",
             "| models | pseudo-tasks | calibrate s | select p50 s, calibrated | select p50 s, paper's rule | ratio | load |",
             "|---|---|---|---|---|---|---|"]
    for m, r in calibrated.items():
        lines.append(f"| {int(m):,} | {r['pseudo_tasks']} | {r['calibrate_s']} | {r['calibrated']['p50_s']} | "
                     f"{r['mll']['p50_s']} | {r['ratio_p50']} | {r['load_avg_1min']} |")
    return "\n".join(lines) + "\n"


def restricted_markdown(restricted: dict[str, Any]) -> str:
    lines = ["## Restricted mode from stored top nodes", "",
             "A 100-class task, warm caption cache, 1,000 nodes, image-level labels and the top-K table; "
             "`auto` is the mode auto took; the exact columns compare with the recomputed confusion.", "",
             "| models | p50 s | p99 s | auto | pairs beyond top-K | same top-3 classes | exact s | load |",
             "|---|---|---|---|---|---|---|---|"]
    for m, r in restricted.items():
        ex = r.get("against_exact", {})
        lines.append(f"| {int(m):,} | {r['p50_s']} | {r['p99_s']} | {r['auto_mode']} | "
                     f"{ex.get('pairs_beyond_top_k_share', '-')} | {ex.get('same_top3_classes', '-')} | "
                     f"{ex.get('exact_s', '-')} | {r['load_avg_1min']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="Smallest sizes, under a minute.")
    parser.add_argument("--root", type=Path, default=None, help="Where the synthetic hubs live "
                        "[default: ~/.cache/mll-index/scale; --smoke: a temporary folder].")
    parser.add_argument("--source", type=Path, default=REPO / "indexes" / "default",
                        help="Index whose node vectors the hubs reuse (seeded synthetic vectors if absent).")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--restricted-only", action="store_true",
                        help="Only the restricted mode at 100, 1,000 and 10,000 models (1,000 nodes, image-level labels); "
                             "merges restricted_p50_s into the existing results.")
    parser.add_argument("--calibrated-only", action="store_true",
                        help="Only `calibrate` and selection under the calibrated rule at 100, 1,000 and 10,000 models "
                             "(1,000 nodes, image-level labels); merges calibrate_s and calibrated_select_p50_s.")
    parser.add_argument("--calibrate-tasks-10000", type=int, default=600,
                        help="Pseudo-tasks calibrate draws at 10,000 models (--calibrated-only).")
    parser.add_argument("--probe-open", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--probe-classes", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_open is not None:
        print(json.dumps(probe_open(args.probe_open, args.probe_classes)))
        return

    from mll_index.index.embed import load_embedder
    from mll_index.selection.selector import open_selector

    started = time.perf_counter()
    smoke = args.smoke
    models = [20, 100] if smoke else [100, 1000, 10000]
    nodes = [1000] if smoke else [1000, 10000, 50000]
    image_hubs = {(20, 1000)} if smoke else {(100, 1000), (1000, 1000)}
    tmp = Path(tempfile.mkdtemp(prefix="mll-scale-"))
    root = args.root or (tmp / "hubs" if smoke else Path.home() / ".cache" / "mll-index" / "scale")
    root.mkdir(parents=True, exist_ok=True)
    source = None if smoke else (args.source if (args.source / "manifest.json").is_file() else None)
    embedder = load_embedder()
    log: dict[str, Any] = {}
    if args.restricted_only:
        restricted_only(root, source, embedder, args.out, smoke)
        return
    if args.calibrated_only:
        calibrated_only(root, source, embedder, args.out, smoke, args.calibrate_tasks_10000)
        return
    hubs = make_hubs(root, models, nodes, source, embedder, image_hubs, log)
    largest = (models[-1], nodes[-1])
    figures: dict[str, Any] = {"smoke": smoke, "command_line": "python bench/scale.py" + (" --smoke" if smoke else ""),
                               "sizes": {"models": models, "nodes": nodes}, "largest": f"{largest[0]}x{largest[1]}",
                               "node_vectors": "default index" if source else "seeded synthetic", "hub_build": log,
                               "label_bytes_per_model_node": 6, "select": {}, "open": {}}
    from mll_index.index.node_index import load_index

    pool, origin = name_pool(load_index(hubs[largest]).graph)
    figures["class_names"] = origin
    task_sizes = [10, 100] if smoke else [10, 100, 1000]
    tasks = {c: draw_tasks(pool, 1, c, seed=c)[0] for c in task_sizes}
    reps = {10: 20, 100: 20, 1000: 5} if not smoke else {10: 5, 100: 5}

    for (m, n), hub in sorted(hubs.items()):
        key = f"{m}x{n}"
        figures["open"][key] = open_in_subprocess(hub)
        sel = open_selector(hub, embedder)
        modes = ["auto", "counts"] + (["restricted"] if sel.store.has_image_labels else [])
        cold = (m, n) == largest
        figures["select"][key] = single_task(sel, tasks, modes, reps, tmp, cold)
        print(f"{key}: open {figures['open'][key]['open_s']} s; 100 classes warm "
              f"{figures['select'][key]['100_classes/auto']['warm']}", flush=True)
        if sel.store.has_image_labels and (m, n) == max(image_hubs):
            figures["restricted_profile"] = {"hub": key, "top_functions": profile_restricted(sel, tasks[100])}
        del sel

    image_sizes = image_hub_sizes(root, hubs, smoke)
    figures["restricted"] = restricted_at_scale(image_sizes, tasks[100], embedder, reps[100], tmp)
    figures["restricted_p50_s"] = {k: v["p50_s"] for k, v in figures["restricted"].items()}

    sel = open_selector(hubs[largest], embedder)
    n_batch = 200 if smoke else 10000
    figures["batch"] = batch(sel, draw_tasks(pool, n_batch, 20, seed=1), tmp, cold=True)
    print("batch", figures["batch"], flush=True)
    figures["throughput_by_batch_size"] = [batch(sel, draw_tasks(pool, b, 20, seed=1), tmp, cold=False)
                                           for b in ([10, 50, 200] if smoke else [10, 100, 1000, 10000])]
    del sel

    figures["straightforward"] = {}
    for (m, n) in ([(20, 1000), (100, 1000)] if smoke else [(100, 10000), (1000, 10000)]):
        sel = open_selector(hubs[(m, n)], embedder)
        figures["straightforward"][f"{m}x{n}"] = straightforward(sel, tasks[100])
        print("straightforward", m, n, figures["straightforward"][f"{m}x{n}"], flush=True)
        del sel

    figures["growth"] = {}
    for m in models:
        n = nodes[-1]
        figures["growth"][f"{m}x{n}"] = growth(hubs[(m, n)], tmp, m, embedder, add_nodes_too=(m, n) == largest,
                                               n_new=100 if smoke else 1000)
        print("growth", m, n, figures["growth"][f"{m}x{n}"], flush=True)
    if not smoke:
        figures["eval_cost"] = eval_cost()

    big = figures["select"][f"{largest[0]}x{largest[1]}"]["100_classes/auto"]
    grow = figures["growth"][f"{largest[0]}x{largest[1]}"]
    sf = figures["straightforward"][f"{1000 if not smoke else 100}x{10000 if not smoke else 1000}"]
    restricted_ok = [k for k, v in figures["select"].items() if v.get("100_classes/restricted", {}).get("warm", {}).get("p50_s", 9) <= 1.0]
    figures.update({
        "select_p50_s": big["cold"]["p50_s"], "select_p50_warm_s": big["warm"]["p50_s"],
        "speedup_vs_straightforward_1000_models": sf["speedup"],
        "batch_10000_tasks_s": figures["batch"]["seconds"] if n_batch == 10000 else None,
        "add_model_s": {str(m): figures["growth"][f"{m}x{nodes[-1]}"]["add_model_s"] for m in models},
        "add_model_bytes_written": {str(m): figures["growth"][f"{m}x{nodes[-1]}"]["add_model_bytes_written"]
                                    for m in models},
        "add_1000_nodes_s": grow.get("add_1000_nodes_s"),
        "open_rss_over_label_bytes": figures["open"][f"{largest[0]}x{largest[1]}"]["open_rss_over_label_bytes"],
        "restricted_largest_hub_under_1s": max(restricted_ok, key=lambda k: int(k.split("x")[0])) if restricted_ok else None,
    })
    add_model = [figures["add_model_s"][str(m)] for m in models]
    add_bytes = [figures["add_model_bytes_written"][str(m)] for m in models]
    figures["goals"] = [
        {"goal": f"{figures['largest']}: 100-class task, cold caption cache", "target": "<= 1 s p50",
         "measured": f"{figures['select_p50_s']} s", "met": figures["select_p50_s"] <= 1.0},
        {"goal": f"{figures['largest']}: 100-class task, warm", "target": "<= 0.1 s p50",
         "measured": f"{figures['select_p50_warm_s']} s", "met": figures["select_p50_warm_s"] <= 0.1},
        {"goal": f"speed-up over pandas loops at {sf['models']:,} models", "target": ">= 100x",
         "measured": f"{figures['speedup_vs_straightforward_1000_models']}x",
         "met": figures["speedup_vs_straightforward_1000_models"] >= 100},
        {"goal": f"{n_batch} tasks of 20 classes, cold cache", "target": "<= 300 s" if n_batch == 10000 else "(smoke)",
         "measured": f"{figures['batch']['seconds']} s", "met": figures["batch"]["seconds"] <= 300},
        {"goal": f"add one model to a hub of {models[0]:,} / {models[-1]:,} models ({nodes[-1]:,} nodes)",
         "target": "<= 2 s, bytes written independent of the hub's size",
         "measured": f"{add_model[0]} s / {add_model[-1]} s; {add_bytes[0]:,} / {add_bytes[-1]:,} bytes",
         "met": max(add_model) <= 2 and add_bytes[0] == add_bytes[-1]},
        {"goal": f"add {grow.get('nodes_added', 0):,} nodes, beyond embedding them", "target": "<= 1 s",
         "measured": f"{figures['add_1000_nodes_s']} s (+ {grow.get('add_1000_nodes_embed_s')} s embedding)",
         "met": (figures["add_1000_nodes_s"] or 9) <= 1},
        {"goal": "resident memory after opening / label bytes", "target": "<= 1.2",
         "measured": str(figures["open_rss_over_label_bytes"]), "met": figures["open_rss_over_label_bytes"] <= 1.2},
    ]
    figures["seconds"] = round(time.perf_counter() - started, 1)
    stem = "scale_smoke" if smoke else "scale"
    args.out.mkdir(parents=True, exist_ok=True)
    figures["plots"] = plots(figures, args.out, stem)
    if args.out == RESULTS:
        path = write_results(stem, figures, markdown(figures))
    else:
        path = args.out / f"{stem}.json"
        path.write_text(json.dumps(figures, indent=1))
        (args.out / f"{stem}.md").write_text(markdown(figures))
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {path} in {figures['seconds']} s")
    for g in figures["goals"]:
        print(f"{'met ' if g['met'] else 'MISS'} {g['goal']}: {g['measured']} (target {g['target']})")


if __name__ == "__main__":
    main()
