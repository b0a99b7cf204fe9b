"""Tiny open_clip models and generated sample images for tests (real open_clip code, random weights).

A tiny CLIP here has about 1.7 M parameters, almost all in the token embedding, which keeps
open_clip's vocabulary (49408) and context length (77) so its default tokenizer works.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

# Distinct, saturated colours for the generated images, one per wnid (cycled).
COLOURS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 200, 30), (160, 60, 200), (30, 190, 200)]


def tiny_model_config(embed_dim: int = 32, image_size: int = 32, vision: str = "vit", width: int = 32,
                      layers: int = 1) -> dict[str, Any]:
    """An open_clip model config for a tiny CLIP.

    Args:
        embed_dim: joint embedding size.
        image_size: input size; a multiple of 8 (ViT, patch 8) or 32 (ResNet).
        vision: "vit" (VisionTransformer, 2 heads) or "resnet" (ModifiedResNet, one block per stage).
        width: vision and text transformer width (the ResNet uses width // 4 as its base width).
        layers: transformer layers of both towers.
    """
    if vision == "vit":
        vision_cfg: dict[str, Any] = {"image_size": image_size, "layers": layers, "width": width,
                                      "patch_size": 8, "head_width": width // 2, "mlp_ratio": 2.0}
    elif vision == "resnet":
        vision_cfg = {"image_size": image_size, "layers": [1, 1, 1, 1], "width": max(width // 4, 8),
                      "head_width": 32}
    else:
        raise ValueError(f"vision must be 'vit' or 'resnet', not {vision!r}")
    return {
        "embed_dim": embed_dim,
        "vision_cfg": vision_cfg,
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": width, "heads": 2, "layers": layers},
    }


def write_tiny_arch(directory: Path, name: str, **config: Any) -> Path:
    """Write `<directory>/<name>.json` (open_clip registers an architecture under its file name)."""
    path = Path(directory) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tiny_model_config(**config), indent=1))
    return path


def make_tiny_checkpoint(config_path: Path, out_path: Path, seed: int = 0) -> Path:
    """Create the model of `config_path` with random weights (seeded) and torch.save its state_dict."""
    import open_clip
    import torch

    config_path = Path(config_path)
    if open_clip.get_model_config(config_path.stem) is None:
        open_clip.add_model_config(config_path)
    torch.manual_seed(seed)
    model = open_clip.create_model(config_path.stem, pretrained=None)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_path)
    return out_path


def _draw(colour: tuple[int, int, int], shape: int, size: int, rng: np.random.Generator) -> Any:
    from PIL import Image, ImageDraw

    background = tuple(int(v) for v in rng.integers(0, 60, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == 0:
        draw.ellipse(box, fill=colour)
    elif shape == 1:
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return image


def make_sample_images(root: Path, wnids: list[str], per_node: int = 3, size: int = 48, seed: int = 0,
                       corrupt: bool = False, non_wnid_folder: str | None = None) -> list[Path]:
    """Write generated PNG images in the ImageFolder layout `root/<wnid>/<i>.png`.

    Images of the i-th wnid show a shape (circle, square, triangle by i % 3) in the i-th
    colour at a seeded random place, so nodes differ and reruns give the same bytes.

    Args:
        corrupt: also write `root/<first wnid>/corrupt.jpg`, bytes that are not an image.
        non_wnid_folder: also write one image into `root/<non_wnid_folder>/`.
    Returns:
        the image files written (the valid ones, not the corrupt file), sorted.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    written = []
    for i, wnid in enumerate(wnids):
        folder = root / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_node):
            path = folder / f"{j}.png"
            _draw(COLOURS[i % len(COLOURS)], i % 3, size, rng).save(path)
            written.append(path)
    if corrupt:
        (root / wnids[0] / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG image" * 4)
    if non_wnid_folder:
        folder = root / non_wnid_folder
        folder.mkdir(parents=True, exist_ok=True)
        _draw((255, 255, 255), 0, size, rng).save(folder / "0.png")
    return sorted(written)
