"""Training the emoji world's hub: small open_clip models with deliberately different strengths.

Each model is a real open_clip CLIP (custom architecture config, random init) trained
contrastively on the CPU: a batch of images against the text embeddings of the batch's
distinct concepts, each concept written with a random phrasing (its names in zero-shot and
labeling templates). What a model sees is what makes it differ: a domain expert draws most of
its images from one style, a category expert only concepts under a few synsets, an
under-trained model stops early. Training is seeded and runs single-process, so a model is
the same on every rebuild of the same spec; trained weights are cached by a hash of
everything that shaped them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.errors import InputError

log = logging.getLogger(__name__)

OPENAI_MEAN = np.array((0.48145466, 0.4578275, 0.40821073), np.float32)
OPENAI_STD = np.array((0.26862954, 0.26130258, 0.27577711), np.float32)


@dataclass(frozen=True)
class ModelSpec:
    """How one hub model of the world is made.

    `domains` weighs the domains an image is drawn from (`*` for every other domain; a
    missing `*` means weight 1). `under` restricts the concepts to hyponyms of these synsets
    (nltk names), with `others` as the relative weight of the remaining concepts (0: never).
    """

    id: str
    arch: str
    steps: int
    seed: int
    about: str
    domains: dict[str, float] = field(default_factory=dict)
    under: tuple[str, ...] = ()
    others: float = 0.0
    batch: int = 256
    lr: float = 2e-3
    init: str | None = None  # id of an earlier model of the spec to fine-tune from

    def domain_weight(self, domain: str) -> float:
        return float(self.domains.get(domain, self.domains.get("*", 1.0)))


@dataclass(frozen=True)
class HubSpec:
    """The world's hub: architecture configs (open_clip JSON) by name, and the models."""

    archs: dict[str, dict[str, Any]]
    models: tuple[ModelSpec, ...]


def load_hub_spec(path: Path | None = None) -> HubSpec:
    """Read `data/emoji_hub.json` (or another file of that shape)."""
    if path is None:
        text = resources.files("mll_index").joinpath("data/emoji_hub.json").read_text()
        where = "data/emoji_hub.json"
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{where}: cannot read the hub spec ({exc})") from None
    try:
        data = json.loads(text)
        archs = data["archs"]
        models = tuple(ModelSpec(**{**m, "under": tuple(m.get("under", ()))}) for m in data["models"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{where}: not a hub spec ({type(exc).__name__}: {exc})") from None
    for i, m in enumerate(models):
        if m.init is not None and m.init not in [e.id for e in models[:i]]:
            raise InputError(f"{where}: model {m.id!r} fine-tunes {m.init!r}, which is not an earlier model")
        if m.init is not None and models[[e.id for e in models].index(m.init)].arch != m.arch:
            raise InputError(f"{where}: model {m.id!r} must have the arch of {m.init!r}, which it fine-tunes")
        if m.arch not in archs:
            raise InputError(f"{where}: model {m.id!r} uses unknown arch {m.arch!r}; archs: {sorted(archs)}")
    ids = [m.id for m in models]
    if len(set(ids)) != len(ids):
        raise InputError(f"{where}: duplicate model ids")
    return HubSpec(archs=archs, models=models)


def spec_hash(spec: ModelSpec, arch_config: dict[str, Any], data_key: str) -> str:
    """A short hash of everything that shapes a trained model: spec, arch and training data."""
    payload = json.dumps([spec.__dict__, arch_config, data_key], sort_keys=True, default=list)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def normalise(images: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) uint8 → (n, 3, H, W) float32 with CLIP's mean and std (open_clip's default)."""
    x = images.astype(np.float32) / 255.0
    x = (x - OPENAI_MEAN) / OPENAI_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@dataclass
class TrainingData:
    """The training pool: images with their concept and domain, and each concept's phrasings.

    images: (n, H, W, 3) uint8; concepts, domains: (n,) int32 indices into `phrasings` and
    `domain_names`; phrasings: per concept, the texts it may be written as.
    """

    images: np.ndarray
    concepts: np.ndarray
    domains: np.ndarray
    domain_names: tuple[str, ...]
    phrasings: list[list[str]]


def _sampling_weights(spec: ModelSpec, data: TrainingData, in_scope: np.ndarray) -> np.ndarray:
    domain_w = np.array([spec.domain_weight(d) for d in data.domain_names], np.float64)
    concept_w = np.where(in_scope, 1.0, spec.others)
    w = domain_w[data.domains] * concept_w[data.concepts]
    if w.sum() <= 0:
        raise InputError(f"hub model {spec.id!r}: its domains and synsets select no training image")
    return w / w.sum()


def train_model(spec: ModelSpec, arch_config: dict[str, Any], data: TrainingData, in_scope: np.ndarray,
                out_path: Path, init_path: Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Train one hub model and save its state_dict to `out_path` (written through a temporary file).

    Args:
        in_scope: (n_concepts,) bool, the concepts under the model's synsets (all True without `under`).
        init_path: weights to start from (fine-tuning); random initialisation without.
    Returns:
        training facts: steps, images seen, seconds, final loss.
    """
    import open_clip
    import torch
    from tqdm import tqdm

    from mll_index.core.artifacts import atomic_file

    torch.manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    model = open_clip.create_model(spec.arch, pretrained=None)
    if init_path is not None:
        model.load_state_dict(torch.load(init_path, map_location="cpu", weights_only=True))
    model.train()
    tokenizer = open_clip.get_tokenizer(spec.arch)
    tokens = [tokenizer(p) for p in data.phrasings]  # per concept: (n_phrasings, context) int64
    weights = _sampling_weights(spec, data, in_scope)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimiser = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                                  lr=spec.lr, betas=(0.9, 0.98))
    warmup = max(1, spec.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(s, spec.steps) / spec.steps)))
    started, loss_value = time.perf_counter(), float("nan")
    for _ in tqdm(range(spec.steps), desc=f"train {spec.id}", unit="step", disable=not progress):
        rows = rng.choice(len(weights), size=spec.batch, p=weights)
        batch = data.images[rows]
        if rng.random() < 0.5:
            batch = batch[:, :, ::-1]
        concepts = data.concepts[rows]
        distinct, target = np.unique(concepts, return_inverse=True)
        text = torch.stack([tokens[c][rng.integers(len(tokens[c]))] for c in distinct])
        image_emb = model.encode_image(torch.from_numpy(normalise(batch)), normalize=True)
        text_emb = model.encode_text(text, normalize=True)
        logits = model.logit_scale.exp().clamp(max=100) * image_emb @ text_emb.T
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(target.astype(np.int64)))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        loss_value = float(loss.detach())
    model.eval()
    with atomic_file(out_path, "wb") as handle:
        torch.save(model.state_dict(), handle)
    return {"steps": spec.steps, "images_seen": spec.steps * spec.batch,
            "seconds": round(time.perf_counter() - started, 2), "final_loss": round(loss_value, 4)}


def phrasings_of(names: Sequence[str], gloss: str, label_lemma: str, label_template: str,
                 zero_shot: Sequence[str]) -> list[str]:
    """The texts a concept is trained with: each name in every zero-shot template, plus its labeling prompt."""
    texts = [t.format(name=n) for n in names for t in zero_shot]
    texts.append(label_template.format(lemma=label_lemma, gloss=gloss))
    texts.append(f"{names[0]} emoji")
    return list(dict.fromkeys(texts))
