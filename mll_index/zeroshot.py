"""Zero-shot classification with a loaded hub model: text and image embeddings, class probabilities.

The same code serves labeling (node prompts), the emoji world's accuracy tables and model
reuse, so that a model is scored the same way everywhere. A class's text embedding is the
normalised mean of its prompts' embeddings (the `zero_shot` templates of
data/caption_templates.json by default), as CLIP's zero-shot evaluation does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mll_index.captions import templates
from mll_index.hub import LoadedModel


def zero_shot_templates() -> list[str]:
    """The prompt templates for class names, each with a `{name}` field."""
    return list(templates()["zero_shot"])


def encode_texts(loaded: LoadedModel, texts: Sequence[str], device: str = "cpu", batch_size: int = 256) -> np.ndarray:
    """(n, d) float32 unit text embeddings; (0, 0) for no texts."""
    import torch

    out = []
    with torch.no_grad(), torch.autocast(device_type="cuda", enabled=device.startswith("cuda")):
        for s in range(0, len(texts), batch_size):
            tokens = loaded.tokenizer(list(texts[s:s + batch_size])).to(device)
            emb = loaded.model.encode_text(tokens).float()
            out.append(torch.nn.functional.normalize(emb, dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def class_embeddings(loaded: LoadedModel, class_names: Sequence[str], device: str = "cpu",
                     prompt_templates: Sequence[str] | None = None) -> np.ndarray:
    """(n_classes, d) float32 unit rows: per class, the normalised mean of its prompts' embeddings."""
    chosen = list(prompt_templates) if prompt_templates else zero_shot_templates()
    texts = [t.format(name=name) for name in class_names for t in chosen]
    emb = encode_texts(loaded, texts, device).reshape(len(class_names), len(chosen), -1).mean(axis=1)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class PromptCheck:
    """What a model's tokenizer does to a task's class prompts.

    context_length: the tokenizer's row length in tokens; cut: classes whose name is cut off in at
    least one prompt (the tokens that would follow it are lost); identical: groups of classes (2 or
    more each) whose prompts are the same token rows, so the model cannot tell them apart.
    """

    context_length: int
    cut: tuple[str, ...] = ()
    identical: tuple[tuple[str, ...], ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.cut and not self.identical


def check_prompts(loaded: LoadedModel, class_names: Sequence[str], prompt_names: Sequence[str] | None = None,
                  prompt_templates: Sequence[str] | None = None) -> PromptCheck:
    """Tokenize the class prompts as `class_embeddings` does and report cut names and identical prompts.

    A name is cut when the prompt up to the end of the name already fills the tokenizer's context:
    appending words then changes nothing (open_clip truncates at `context_length` tokens, 77 for
    most CLIP models). Only the tokenizer runs, no model.

    Args:
        class_names: the names reported; prompt_names: the names written into the prompts
            (default: the class names), one per class.
    """
    chosen = list(prompt_templates) if prompt_templates else zero_shot_templates()
    written = list(prompt_names) if prompt_names is not None else list(class_names)
    full = [t.format(name=name) for name in written for t in chosen]
    heads = [t.split("{name}", 1)[0] + name for name in written for t in chosen]
    # Appending words to a prompt that is already cut leaves its token row as it was.
    longer = [h + " and some more words" for h in heads]
    rows = np.asarray(loaded.tokenizer(full + heads + longer))
    n = len(full)
    whole, head, more = rows[:n], rows[n:2 * n], rows[2 * n:]
    per_class = len(chosen)
    cut_rows = (head == more).all(axis=1).reshape(len(written), per_class).any(axis=1)
    groups: dict[bytes, list[str]] = {}
    for c, name in enumerate(class_names):
        groups.setdefault(whole[c * per_class:(c + 1) * per_class].tobytes(), []).append(name)
    return PromptCheck(int(rows.shape[1]), tuple(n for n, cut in zip(class_names, cut_rows) if cut),
                       tuple(tuple(g) for g in groups.values() if len(g) > 1))


def all_finite(*arrays: Any) -> bool:
    """Whether every value of the arrays is finite (no NaN, no infinity): a model's outputs are usable."""
    return all(bool(np.isfinite(np.asarray(a, np.float32)).all()) for a in arrays)


def encode_pixels(loaded: LoadedModel, pixels: Any, device: str = "cpu", batch_size: int = 512) -> np.ndarray:
    """(n, d) float32 unit image embeddings of preprocessed pixels ((n, 3, H, W) float array or tensor)."""
    import torch

    out = []
    with torch.no_grad(), torch.autocast(device_type="cuda", enabled=device.startswith("cuda")):
        for s in range(0, len(pixels), batch_size):
            batch = torch.as_tensor(np.asarray(pixels[s:s + batch_size], np.float32)).to(device)
            emb = loaded.model.encode_image(batch).float()
            out.append(torch.nn.functional.normalize(emb, dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def logit_scale(loaded: LoadedModel) -> float:
    """The model's learned temperature (exp of its logit_scale), capped at 100 as CLIP does; NaN stays NaN
    (a min() would let a NaN through as 100 or as NaN depending on the argument order)."""
    scale = float(loaded.model.logit_scale.detach().exp())
    return scale if np.isnan(scale) else min(scale, 100.0)


def class_probabilities(image_emb: np.ndarray, class_emb: np.ndarray, scale: float) -> np.ndarray:
    """(n, n_classes) float32 softmax of scale x cosine similarity; rows sum to 1."""
    logits = scale * (np.asarray(image_emb, np.float32) @ np.asarray(class_emb, np.float32).T)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
