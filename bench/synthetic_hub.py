"""Synthetic hubs at scale, written in the index's own on-disk format (bench/scale.py uses them).

A hub of M models over N nodes is a node index (real vectors from the default index where it
exists, seeded synthetic ones otherwise) plus a label matrix whose counts have the structure of
real labels:
- every model has a general skill, two category specialities (a node's category is its WordNet
  lexicographer file: animals, artifacts, foods, ...) and one domain speciality (a latent domain
  per node, as the emoji world's vendors and styles);
- node difficulty is drawn so that most nodes are easy for most models;
- each node has 10 sample images: TP ~ Binomial(10, p), FN = 10 - TP, FP ~ Binomial(10, 1 - p'),
  p' the model's accuracy on a node it confuses with this one.
For hubs of up to 1,000 models over 1,000 nodes the models also get image-level labels (per-model
folders with image and node embeddings), so the restricted mode can be measured there. A hub of
10,000 models with image-level labels (`linked_image_labels`) repeats the label arrays of a
1,000-model hub through hard links under new model ids: the same bytes per model, a tenth of the
disk and of the writing time; its top-K table (topk_table.py) is written in full.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

IMAGES_PER_NODE = 10
N_DOMAINS = 8
SEED = 20261129
ARCHS = ["RN50", "RN101", "ViT-B-32", "ViT-B-16", "ViT-L-14", "convnext_base", "EVA02-B-16", "coca_ViT-B-32"]


def node_index(path: Path, n_nodes: int, source: Path | None, embedder: Any) -> dict[str, Any]:
    """Write an N-node index at `path`: a seeded subset of `source`'s nodes with their real vectors
    (all of them, and more synsets embedded with `add_nodes`, when N exceeds the source), or,
    without a source, seeded synthetic vectors over WordNet synsets."""
    from mll_index.index.embed import record_of
    from mll_index.index.graph import build_graph
    from mll_index.index.node_index import add_nodes, compact_index, load_index, read_node_table, write_index

    rng = np.random.default_rng(SEED + n_nodes)
    if source is not None and (source / "manifest.json").is_file():
        base = load_index(source)
        if n_nodes <= base.size:
            keep = np.sort(rng.choice(base.size, n_nodes, replace=False))
            captions = [row["captions"] for row in read_node_table(source)]
            graph = base.graph.subgraph([base.graph.nodes[i] for i in keep], {"kind": "bench", "value": n_nodes})
            # subgraph sorts the nodes by taxonomy row: the vectors and captions follow that order.
            order = [base.graph.node_position[r] for r in graph.nodes]
            write_index(path, graph, np.asarray(base.vectors[order]), [captions[i] for i in order],
                        embedder=base.embedder, expander_id=base.manifest["expander"])
            return {"vectors": f"the default index ({source}), a seeded subset", "nodes": n_nodes}
        shutil.copytree(source, path, ignore=shutil.ignore_patterns("labels", "published", ".lock"))
        graph = base.graph
        present, inst = set(graph.nodes), set(graph.instances)
        extra = [r for r in range(len(graph.wnids)) if r not in present and r not in inst]
        picks = sorted(rng.choice(len(extra), n_nodes - base.size, replace=False).tolist())
        report = add_nodes(path, [graph.wnids[extra[i]] for i in picks], embedder)
        compact_index(path)             # one segment, as a build of this size would write
        return {"vectors": f"the default index ({source}), all {base.size} nodes, and {len(report.added)} more "
                           f"synsets embedded by add_nodes ({report.embed_seconds:.0f} s)", "nodes": n_nodes}
    graph = build_graph()
    pool = [r for r in range(len(graph.wnids)) if r not in set(graph.instances)]
    rows = sorted(rng.choice(len(pool), n_nodes, replace=False).tolist())
    graph = graph.subgraph([pool[r] for r in rows], {"kind": "bench", "value": n_nodes})
    vectors = rng.standard_normal((n_nodes, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    write_index(path, graph, vectors, [["(synthetic vector)"]] * n_nodes, embedder=record_of(embedder),
                expander_id="wordnet-v1")
    return {"vectors": "seeded synthetic (unit Gaussian, dim 384)", "nodes": n_nodes}


def _structure(n_models: int, wnids: list[str], lexnames: list[str], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cats = sorted(set(lexnames))
    cat = np.array([cats.index(x) for x in lexnames])
    node_rng = np.random.default_rng(SEED)       # node properties do not depend on the hub's size
    ease = node_rng.normal(1.2, 1.0, len(wnids)).astype(np.float32)
    domain = np.array([int(w[1:]) % N_DOMAINS for w in wnids])
    skill = rng.normal(0.6, 0.6, n_models).astype(np.float32)
    cat_bonus = np.zeros((n_models, len(cats)), np.float32)
    dom_bonus = np.zeros((n_models, N_DOMAINS), np.float32)
    for m in range(n_models):
        cat_bonus[m, rng.choice(len(cats), 2, replace=False)] = rng.uniform(0.8, 2.0, 2)
        dom_bonus[m, rng.integers(N_DOMAINS)] = rng.uniform(0.5, 1.5)
    return {"cat": cat, "ease": ease, "domain": domain, "skill": skill, "cat_bonus": cat_bonus, "dom_bonus": dom_bonus}


def _counts(st: dict[str, np.ndarray], nodes: slice, rng: np.random.Generator) -> np.ndarray:
    """(r, M, 3) uint16 TP, FP, FN for a block of nodes."""
    logit = (st["ease"][nodes, None] + st["skill"][None, :] + st["cat_bonus"][:, st["cat"][nodes]].T
             + st["dom_bonus"][:, st["domain"][nodes]].T)
    p = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    tp = rng.binomial(IMAGES_PER_NODE, p).astype(np.uint16)
    fp = rng.binomial(IMAGES_PER_NODE, np.clip(1.0 - p + rng.normal(0, 0.05, p.shape), 0, 1)).astype(np.uint16)
    return np.stack([tp, fp, IMAGES_PER_NODE - tp], axis=-1)


def model_entries(n_models: int, skill: np.ndarray) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for m in range(n_models):
        acc = float(1.0 / (1.0 + np.exp(-(skill[m] + 0.2))))
        out.append((f"model-{m:05d}", {"id": f"model-{m:05d}", "arch": ARCHS[m % len(ARCHS)], "tag": "synthetic",
                                       "imagenet_acc": round(acc, 4)}))
    return out


def label_matrix(index_path: Path, n_models: int, block: int = 5000) -> dict[str, Any]:
    """Write the hub's label matrix in node blocks (one shard each), then compact it into one shard."""
    from mll_index.index.node_index import load_index
    from mll_index.labels.matrix import append_labels, compact_matrix, open_matrix

    index = load_index(index_path)
    wnids = index.graph.node_wnids
    lexnames = [index.graph.lexnames[r] for r in index.graph.nodes]
    st = _structure(n_models, wnids, lexnames, SEED + n_models)
    models = model_entries(n_models, st["skill"])
    rng = np.random.default_rng(SEED + 7 * n_models + len(wnids))
    started = time.perf_counter()
    generate = 0.0
    for s in range(0, len(wnids), block):
        t = time.perf_counter()
        counts = _counts(st, slice(s, s + block), rng)
        generate += time.perf_counter() - t
        append_labels(index_path, wnids[s:s + block], models, counts, what="synthetic")
    compact_matrix(index_path)
    total = time.perf_counter() - started
    return {"models": n_models, "nodes": len(wnids), "label_bytes": open_matrix(index_path).label_bytes,
            "generate_s": round(generate, 1), "write_s": round(total - generate, 1)}


def image_labels(index_path: Path, n_models: int, dim: int = 64) -> dict[str, Any]:
    """Per-model label folders (image-level labels) for a small hub, then the matrix from their counts.

    Each model sees a node as a noisy copy of a shared node embedding; its images scatter
    around their node's embedding with a noise set by the same skill structure as the counts.
    """
    from mll_index.index.node_index import load_index
    from mll_index.labels.folders import SampleTable, write_label, write_sample_table
    from mll_index.labels.matrix import compact_matrix
    from mll_index.labels.sync import sync_matrix

    index = load_index(index_path)
    wnids = sorted(index.graph.node_wnids)
    lexnames = [index.graph.lexnames[index.graph.row(w)] for w in wnids]
    st = _structure(n_models, wnids, lexnames, SEED + n_models)
    models = model_entries(n_models, st["skill"])
    paths = tuple(f"{w}/{['noto', 'twemoji', 'openmoji', 'sketch', 'outline', 'grayscale', 'lowres', 'clutter'][i % 8]}-{i:02d}.png"
                  for w in wnids for i in range(IMAGES_PER_NODE))
    image_wnids = tuple(w for w in wnids for _ in range(IMAGES_PER_NODE))
    table = SampleTable("(synthetic)", paths, image_wnids, tuple(wnids), tuple("0:0" for _ in paths))
    fingerprint = f"synthetic-{len(wnids)}"
    write_sample_table(index_path, fingerprint, table)
    rng = np.random.default_rng(SEED + 11 * n_models)
    base = rng.standard_normal((len(wnids), dim)).astype(np.float32)
    image_nodes = table.image_nodes
    started = time.perf_counter()
    for m, (model_id, entry) in enumerate(models):
        nodes = base + 0.35 * rng.standard_normal(base.shape).astype(np.float32)
        nodes /= np.linalg.norm(nodes, axis=1, keepdims=True)
        logit = st["ease"] + st["skill"][m] + st["cat_bonus"][m, st["cat"]] + st["dom_bonus"][m, st["domain"]]
        noise = (1.6 / (1.0 + np.exp(logit)))[image_nodes, None]
        images = nodes[image_nodes] + noise * rng.standard_normal((len(paths), dim)).astype(np.float32)
        images /= np.linalg.norm(images, axis=1, keepdims=True)
        write_label(index_path, entry, table, fingerprint, images, nodes, logit_scale=100.0, preprocess="synthetic")
    sync_matrix(index_path)
    compact_matrix(index_path)
    from mll_index.labels.topk_table import write_topk_tables

    write_topk_tables(index_path)
    return {"models": n_models, "nodes": len(wnids), "images_per_model": len(paths),
            "seconds": round(time.perf_counter() - started, 1)}


def linked_image_labels(source: Path, index_path: Path, n_models: int) -> dict[str, Any]:
    """Image-level labels for `n_models` models in `index_path` (a copy of `source`'s node index), each
    the label arrays of source model i % n_source hard-linked under a new model id, a manifest of its
    own (own checksum), the label matrix written at once, and the top-K table.
    """
    import json

    from mll_index.core.artifacts import MANIFEST, SELF_DIGEST, manifest_digest
    from mll_index.core.layout import labels_dir, model_folder_name, sample_table_path
    from mll_index.labels.folders import LABEL_FILES, label_folder, load_label, read_sample_table, scan_labels
    from mll_index.labels.matrix import append_labels, compact_matrix
    from mll_index.labels.topk_table import write_topk_tables

    started = time.perf_counter()
    sources = sorted(scan_labels(source).folders)
    first = load_label(source, sources[0])
    fingerprint = first.manifest["samples"]
    table = read_sample_table(source, fingerprint)
    labels_dir(index_path).mkdir(parents=True, exist_ok=True)
    shutil.copy2(sample_table_path(source, fingerprint), sample_table_path(index_path, fingerprint))
    models = model_entries(n_models, np.zeros(n_models))
    counts = np.zeros((len(table.node_wnids), n_models, 3), np.uint16)
    entries = []
    for m, (model_id, entry) in enumerate(models):
        src = label_folder(source, sources[m % len(sources)])
        folder = labels_dir(index_path) / model_folder_name(model_id)
        folder.mkdir()
        for name in LABEL_FILES:
            (folder / name).hardlink_to(src / name)
        manifest = json.loads((src / MANIFEST).read_text())
        manifest["model"] = entry
        manifest[SELF_DIGEST] = manifest_digest(manifest)
        (folder / MANIFEST).write_text(json.dumps(manifest))
        counts[:, m] = np.asarray(load_label(source, sources[m % len(sources)]).counts[:, 1:4]) if m < len(sources) \
            else counts[:, m % len(sources)]
        entries.append((model_id, {**entry, "label_samples": fingerprint}))
    append_labels(index_path, list(table.node_wnids), entries, counts, what="synthetic")
    compact_matrix(index_path)
    linked_s = time.perf_counter() - started
    report = write_topk_tables(index_path)
    return {"models": n_models, "nodes": len(table.node_wnids), "images_per_model": len(table.paths),
            "distinct_label_arrays": len(sources), "link_s": round(linked_s, 1),
            "topk_table_s": round(time.perf_counter() - started - linked_s, 1), "topk_table": report}
