"""Zero-shot classification with a loaded hub model: text and image embeddings, class probabilities.

The same code serves labeling (node prompts), the emoji world's accuracy tables and model
reuse, so that a model is scored the same way everywhere. A class's text embedding is the
normalised mean of its prompts' embeddings (the `zero_shot` templates of
data/caption_templates.json by default), as CLIP's zero-shot evaluation does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.index.captions import templates
from mll_index.models.hub import LoadedModel


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
    """Tokenize the class prompts with the model's tokenizer, as `class_embeddings` does, and report
    cut names and identical prompts (see `check_prompt_rows`). Only the tokenizer runs, no model."""
    return check_prompt_rows(lambda texts: np.asarray(loaded.tokenizer(texts)), class_names, prompt_names,
                             prompt_templates)


def check_prompt_rows(tokenize: Callable[[list[str]], np.ndarray], class_names: Sequence[str],
                      prompt_names: Sequence[str] | None = None,
                      prompt_templates: Sequence[str] | None = None) -> PromptCheck:
    """Report the class names a tokenizer cuts and the classes whose prompts it makes identical.

    A name is cut when the prompt up to the end of the name already fills the tokenizer's context:
    appending words then changes nothing (open_clip truncates at `context_length` tokens, 77 for
    most CLIP models, 16 for the emoji world's).

    Args:
        tokenize: texts → (n, context_length) int token rows, as open_clip tokenizers return.
        class_names: the names reported; prompt_names: the names written into the prompts
            (default: the class names), one per class.
    """
    chosen = list(prompt_templates) if prompt_templates else zero_shot_templates()
    written = list(prompt_names) if prompt_names is not None else list(class_names)
    full = [t.format(name=name) for name in written for t in chosen]
    heads = [t.split("{name}", 1)[0] + name for name in written for t in chosen]
    # Appending words to a prompt that is already cut leaves its token row as it was.
    longer = [h + " and some more words" for h in heads]
    rows = np.asarray(tokenize(full + heads + longer))
    n = len(full)
    whole, head, more = rows[:n], rows[n:2 * n], rows[2 * n:]
    per_class = len(chosen)
    cut_rows = (head == more).all(axis=1).reshape(len(written), per_class).any(axis=1)
    groups: dict[bytes, list[str]] = {}
    for c, name in enumerate(class_names):
        groups.setdefault(whole[c * per_class:(c + 1) * per_class].tobytes(), []).append(name)
    return PromptCheck(int(rows.shape[1]), tuple(n for n, cut in zip(class_names, cut_rows) if cut),
                       tuple(tuple(g) for g in groups.values() if len(g) > 1))


# ---------------------------------------------------------------------------------------
# CLIP's tokenizer without torch, for selection (which never loads a vision model)


@lru_cache(maxsize=1)
def _clip_bpe() -> Any:
    """open_clip's SimpleTokenizer logic on its own vocabulary file, read without importing open_clip
    (which imports torch): (encoder, bpe ranks, byte encoder, word pattern), or None without open_clip."""
    import gzip
    import importlib.util

    import regex

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    vocab_file = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not vocab_file.is_file():
        return None
    # bytes_to_unicode of OpenAI's CLIP: printable bytes map to themselves, the others above 255.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    byte_encoder = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(extra)}
    merges = [tuple(m.split()) for m in gzip.open(vocab_file).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]]
    vocab = list(byte_encoder.values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<start_of_text>", "<end_of_text>"]
    pattern = regex.compile(r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                            regex.IGNORECASE)
    return {v: i for i, v in enumerate(vocab)}, {m: i for i, m in enumerate(merges)}, byte_encoder, pattern


@lru_cache(maxsize=1 << 16)
def _bpe_word(word: str) -> tuple[str, ...]:
    """The BPE merges of one byte-encoded word (open_clip's SimpleTokenizer.bpe; memoised as there)."""
    ranks = _clip_bpe()[1]
    parts = [*word[:-1], word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = {(a, b) for a, b in zip(parts, parts[1:])}
        best = min(pairs, key=lambda pair: ranks.get(pair, 1 << 30))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(parts):
            if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return tuple(parts)


@lru_cache(maxsize=1 << 16)
def _text_tokens(text: str) -> tuple[int, ...]:
    """A text's token ids between start and end of text, untruncated. Memoised: the prompt check
    tokenizes the same class prompts for every model and every request (a few hundred texts a task)."""
    import html

    import ftfy

    encoder, _, byte_encoder, pattern = _clip_bpe()
    clean = " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).strip().split()).lower()
    tokens = [encoder["<start_of_text>"]]
    for piece in pattern.findall(clean):
        tokens += [encoder[t] for t in _bpe_word("".join(byte_encoder[b] for b in piece.encode("utf-8")))]
    tokens.append(encoder["<end_of_text>"])
    return tuple(tokens)


def clip_token_rows(texts: Sequence[str], context_length: int) -> np.ndarray | None:
    """(n, context_length) int64 token rows as open_clip's default tokenizer (SimpleTokenizer, clean
    'lower') writes them, computed without torch; None where open_clip is not installed."""
    bpe = _clip_bpe()
    if bpe is None:
        return None
    eot = bpe[0]["<end_of_text>"]
    rows = np.zeros((len(texts), context_length), np.int64)
    for r, text in enumerate(texts):
        tokens = list(_text_tokens(text))
        if len(tokens) > context_length:
            tokens = tokens[:context_length]
            tokens[-1] = eot
        rows[r, :len(tokens)] = tokens
    return rows


def text_context(entry: dict[str, Any]) -> int | None:
    """The context length of a hub model entry (its `arch` and optional `config` file) whose text
    tower uses open_clip's default tokenizer, read from the config JSON without importing open_clip;
    None when it uses another tokenizer (a Hugging Face one) or its config cannot be found."""
    import importlib.util
    import json

    path = Path(entry["config"]) if entry.get("config") else None
    if path is None and entry.get("arch"):
        spec = importlib.util.find_spec("open_clip")
        if spec is not None and spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0]) / "model_configs" / f"{entry['arch']}.json"
    try:
        text_cfg = json.loads(Path(path).read_text(encoding="utf-8")).get("text_cfg", {}) if path else None
    except (OSError, ValueError):
        return None
    if not isinstance(text_cfg, dict) or text_cfg.get("hf_tokenizer_name") or text_cfg.get("tokenizer_kwargs"):
        return None
    return int(text_cfg.get("context_length", 77))


def prompt_names(class_names: Sequence[str], lemmas: Mapping[str, str]) -> list[str]:
    """The name written into each class's prompts: the singular when the typed name, or its last
    word, is a plural of its matched node's lemma ("apples" with apple.n.01 → "apple", "red bananas"
    with banana.n.02 → "red banana"), else the typed name.

    A lemma that another class already uses keeps the typed name, so that two classes never share
    a prompt through this rule.

    Args:
        lemmas: class name → lemma of its best matched node (synset head, spaces for '_'); classes
            without one keep their name.
    """
    from mll_index.index.senses import sense_index

    senses = sense_index()
    out = []
    for name in class_names:
        lemma = (lemmas.get(name) or "").replace("_", " ").strip()
        words = name.replace("_", " ").split()
        folded = [w.lower() for w in words]
        singular = None
        if lemma and folded and " ".join(folded) != lemma.lower():
            # The whole name or its head noun ("red bananas" matched to banana) is the lemma's plural.
            for base in senses.plural_bases(folded[-1]):
                if lemma.lower() in (" ".join([*folded[:-1], base]), base):
                    singular = " ".join([*words[:-1], base])
                    break
        out.append(singular or name)
    taken = {n.lower() for n in class_names}
    return [p if p == n or p.lower() not in taken and out.count(p) == 1 else n for n, p in zip(class_names, out)]


def lemma_of(synset: str) -> str:
    """The head lemma of a synset name ('apple.n.01' → 'apple', 'ice_cream.n.01' → 'ice cream')."""
    return synset.rsplit(".", 2)[0].replace("_", " ")


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


# The vote's weight floor (reuse.ensemble.combine); selection's pseudo-tasks simulate the same vote.
MIN_ENTROPY_BITS = 1e-3


def entropy_weights(probs: np.ndarray) -> np.ndarray:
    """(n,) 1 / entropy in bits of each row of (n, C) probabilities (entropy floored at 1e-3 bits)."""
    p = np.clip(probs, 1e-12, 1.0)
    h = -(p * np.log2(p)).sum(axis=1)
    return 1.0 / np.maximum(h, MIN_ENTROPY_BITS)
