"""Labeling throughput and label size, measured on this machine, extrapolated to the MLL hub.

    python bench/labeling.py [--images 256] [--nodes 20]

Labels a tiny open_clip model end to end (hub file -> `label_models`), times the image tower
of ViT-B-32 with random weights through the same encoding code, measures the bytes a label
takes per image and per node, and extrapolates to 49 models x 20,000 nodes x 25 images.
Writes bench/results/labeling.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from common import write_results  # noqa: E402
from tinyclip import make_sample_images, make_tiny_checkpoint, write_tiny_arch  # noqa: E402

from mll_index.core.layout import labels_dir
from mll_index.images.encoding import encode_image_set  # noqa: E402
from mll_index.images.loader import image_set_from_samples
from mll_index.index.embed import load_embedder  # noqa: E402
from mll_index.index.graph import build_graph, wnid_node_set  # noqa: E402
from mll_index.index.node_index import build_index  # noqa: E402
from mll_index.labeling.run import label_models
from mll_index.labeling.samples import scan_samples  # noqa: E402
from mll_index.labels.folders import LABEL_FILES, load_label  # noqa: E402
from mll_index.models.hub import LoadedModel, load_hub  # noqa: E402

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331", "n01498041", "n01514668",
         "n01514859", "n01518878", "n01530575", "n01531178", "n01532829", "n01534433", "n01537544", "n01558993",
         "n01560419", "n01580077", "n01582220", "n01592084"]
PAPER = {"models": 49, "nodes": 20000, "images_per_node": 25}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="Images timed through ViT-B-32.")
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--per-node", type=int, default=25)
    args = parser.parse_args()
    import open_clip

    work = Path(tempfile.mkdtemp(prefix="mll-bench-labeling-"))
    wnids = WNIDS[: args.nodes]
    index = work / "index"
    build_index(index, build_graph(wnid_node_set(wnids)), load_embedder("minilm"))
    samples = work / "samples"
    make_sample_images(samples, wnids, per_node=args.per_node, size=96)

    cfg = write_tiny_arch(work / "arch", "benchtiny", vision="vit")
    make_tiny_checkpoint(cfg, work / "tiny.pt")
    (work / "hub.json").write_text(json.dumps({"models": [
        {"id": "tiny-vit", "arch": "benchtiny", "checkpoint": "tiny.pt", "config": "arch/benchtiny.json"}]}))
    started = time.perf_counter()
    report = label_models(index, load_hub(work / "hub.json"), samples, batch_size=64)
    tiny_wall = time.perf_counter() - started
    label = load_label(index, "tiny-vit")
    n_img, n_nodes = label.manifest["counts"]["images"], label.manifest["counts"]["nodes"]
    sizes = {name: (labels_dir(index) / "tiny-vit" / name).stat().st_size for name in LABEL_FILES}

    # ViT-B-32 with random weights: the image tower at 224 px, through the labeling code.
    net, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    net.eval()
    loaded = LoadedModel(hub_model=SimpleNamespace(id="ViT-B-32"), model=net,  # type: ignore[arg-type]
                         preprocess=preprocess, tokenizer=open_clip.get_tokenizer("ViT-B-32"), preprocess_key="224")
    # Through the labeling data path (mll_index.images.loader), decoding in this process so that the
    # decode and encode rates are measured apart.
    images = image_set_from_samples(scan_samples(samples))
    images = images.subset(range(min(args.images, len(images))))
    encode_image_set([loaded], images.subset(range(min(64, len(images)))), batch_size=64)  # warm-up
    got = encode_image_set([loaded], images, batch_size=64)
    decode_rate = got.stats.decode_images_per_s
    vitb32_rate = got.stats.encode_images_per_s["ViT-B-32"]
    emb = got.embeddings["ViT-B-32"]
    d = emb.shape[1]

    k = label.manifest["top_k"]
    per_image = {"image_embedding": 2 * d, "topk_nodes": 4 * 32, "topk_logits": 2 * 32, "true_logit": 2}
    per_node = {"node_embedding": 2 * d, "counts": 16}
    bytes_per_image = sum(per_image.values())
    bytes_per_node = sum(per_node.values()) + PAPER["images_per_node"] * bytes_per_image
    paper_images = PAPER["nodes"] * PAPER["images_per_node"]
    paper_bytes = PAPER["models"] * (paper_images * bytes_per_image + PAPER["nodes"] * sum(per_node.values()))
    paper_hours_cpu = PAPER["models"] * paper_images / vitb32_rate / 3600
    figures = {
        "images_per_s": {"tiny-vit (32 px, 1.6M params)": round(report.images_per_s["tiny-vit"], 1),
                         "ViT-B-32 random weights (224 px)": round(vitb32_rate, 2)},
        "decode_preprocess_images_per_s_224px": round(decode_rate, 1),
        "tiny_label_wall_seconds": round(tiny_wall, 2),
        "measured_tiny_label": {"images": n_img, "nodes": n_nodes, "top_k": k, "dim": int(label.manifest["dim"]),
                                "file_bytes": sizes},
        "label_bytes_per_image_per_model": bytes_per_image,
        "label_bytes_per_image_per_model_parts": per_image,
        "label_bytes_per_node_per_model": bytes_per_node,
        "label_bytes_per_node_per_model_note": f"d={d} (ViT-B-32), top-K 32, {PAPER['images_per_node']} images per node",
        "paper_scale": {**PAPER, "label_gib": round(paper_bytes / 2**30, 1),
                        "label_gib_without_image_embeddings": round(
                            PAPER["models"] * paper_images * (bytes_per_image - 2 * d) / 2**30, 1),
                        "cpu_hours_at_vitb32_rate": round(paper_hours_cpu, 1)},
    }
    md = "\n".join([
        "# Labeling throughput and label size", "",
        "| model | images/s on this CPU |", "|---|---|",
        *[f"| {m} | {v} |" for m, v in figures["images_per_s"].items()], "",
        f"Decoding + preprocessing to 224 px: {decode_rate:.0f} images/s (once per preprocessing configuration).", "",
        f"A label costs {bytes_per_image} bytes per image per model ({per_image}) and "
        f"{bytes_per_node} bytes per node per model with {PAPER['images_per_node']} images per node.", "",
        f"At the paper's scale (49 models, 20,000 nodes, 25 images each = {paper_images:,} images): "
        f"{figures['paper_scale']['label_gib']} GiB of labels "
        f"({figures['paper_scale']['label_gib_without_image_embeddings']} GiB without the image embeddings), and "
        f"{paper_hours_cpu:.0f} CPU-hours at the ViT-B-32 rate measured here (larger models cost more).", "",
    ])
    path = write_results("labeling", figures, md + "\n")
    print(md)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
