"""Models over streamed image batches → image embeddings → zero-shot probabilities: the second half of the data path.

- `encode_image_set` runs every model of a preprocessing configuration on each batch of
  `mll_index.images.loader.image_loader`, in one pass over the images, writing unit embeddings
  into (n, d) float32 arrays (or handing each batch to a callback); the pixels held are bounded
  by batch size x (workers x prefetch + 1), never by image count, and the models of a pass are
  the only ones loaded;
- `zero_shot_probabilities` and `hub_probabilities` turn those embeddings into per-class
  probabilities with the temperature rule of `mll_index.models.zeroshot.logit_scale` (the model's
  logit scale, capped at 100), which labeling, reuse and evaluation share.

Every run measures the time spent waiting on the loader (decoding) apart from the time in
the models (encoding), so a caller can say which one bounds it (`EncodeStats`).

torch is imported inside the functions that need it: importing this module does not import it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mll_index.errors import InputError
from mll_index.models.hub import Hub, HubModel, LoadedModel, group_by_preprocess, load_model
from mll_index.models.zeroshot import class_embeddings, logit_scale

if TYPE_CHECKING:
    pass

from mll_index.images.loader import DEFAULT_TIMEOUT_S, Decoder, ImageSet, explain_loader_error, image_loader

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "fp16", "bf16"]


# ---------------------------------------------------------------------------------------
# Encoding


@dataclass
class EncodeStats:
    """Where a pass over the images spent its time.

    `loader_wait_s` is the time the models waited for decoded batches (all of the decoding
    with 0 workers, only what the workers could not hide otherwise); `encode_s` the time in
    each model, transfers included.
    """

    images: int = 0
    unreadable: int = 0
    batches: int = 0
    seconds: float = 0.0
    loader_wait_s: float = 0.0
    encode_s: dict[str, float] = field(default_factory=dict)

    @property
    def decode_images_per_s(self) -> float:
        """Images the loader delivered per second of waiting on it (inf when it never held the models up)."""
        seen = self.images + self.unreadable
        return seen / self.loader_wait_s if self.loader_wait_s > 0 else float("inf")

    @property
    def encode_images_per_s(self) -> dict[str, float]:
        """Per model: images encoded per second in the model."""
        return {m: (self.images / s if s > 0 else float("inf")) for m, s in self.encode_s.items()}

    @property
    def bound_by(self) -> str:
        """"decode" when the run waited longer on the loader than it spent in the models, else "encode"."""
        return "decode" if self.loader_wait_s > sum(self.encode_s.values()) else "encode"

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "unreadable": self.unreadable, "seconds": round(self.seconds, 3),
                "loader_wait_s": round(self.loader_wait_s, 3),
                "encode_s": {m: round(s, 3) for m, s in self.encode_s.items()},
                "decode_images_per_s": round(self.decode_images_per_s, 1),
                "encode_images_per_s": {m: round(v, 1) for m, v in self.encode_images_per_s.items()},
                "bound_by": self.bound_by}


def rates(stats: Sequence[EncodeStats]) -> dict[str, Any]:
    """The decode and encode rates of a run made of several passes, for a JSON summary.

    Returns:
        images and unreadable (image decodes, summed over passes: an image is decoded once per pass,
        and there is a pass per preprocessing configuration and group of up to `models_per_pass`
        models), passes, seconds, loader_wait_s, decode_images_per_s
        (images the loader delivered per second the models waited on it; null when they never
        waited), encode_images_per_s per model, and bound_by ("decode" or "encode").
    """
    images = sum(s.images for s in stats)
    unreadable = sum(s.unreadable for s in stats)
    wait = sum(s.loader_wait_s for s in stats)
    encode: dict[str, float] = {}
    for s in stats:
        for mid, rate in s.encode_images_per_s.items():
            encode[mid] = round(rate, 1) if np.isfinite(rate) else None  # type: ignore[assignment]
    in_models = sum(sum(s.encode_s.values()) for s in stats)
    seen = sum(s.images + s.unreadable for s in stats)
    return {"images": images, "unreadable": unreadable, "passes": len(stats),
            "seconds": round(sum(s.seconds for s in stats), 3),
            "loader_wait_s": round(wait, 3), "decode_images_per_s": round(seen / wait, 1) if wait > 0 else None,
            "encode_images_per_s": encode, "bound_by": "decode" if wait > in_models else "encode"}


def rates_line(stats: Sequence[EncodeStats]) -> str:
    """One line for people: decode rate, the slowest and fastest model's encode rate, and which bounds the run."""
    r = rates(stats)
    decode = "never waited on" if r["decode_images_per_s"] is None else f"{r['decode_images_per_s']:.0f} images/s"
    encode = [v for v in r["encode_images_per_s"].values() if v is not None]
    spread = (f"{min(encode):.0f} images/s" if len(encode) == 1 or min(encode) == max(encode)
              else f"{min(encode):.0f}-{max(encode):.0f} images/s per model") if encode else "no image encoded"
    passes = f" over {r['passes']} passes" if r["passes"] > 1 else ""
    return (f"{r['images']} image decodes{passes} ({r['unreadable']} unreadable) in {r['seconds']:.1f} s: decoding {decode}, "
            f"encoding {spread}; bound by {r['bound_by']}")


@dataclass
class EncodedImages:
    """The result of a pass: per model id, (n, d) float32 unit embeddings (empty when a callback took
    them); row r is the image at `positions[r]` of the ImageSet ((n,) int64, increasing);
    `unreadable` lists (relative path, reason) of the images with no row."""

    embeddings: dict[str, np.ndarray]
    positions: np.ndarray
    unreadable: list[tuple[str, str]]
    stats: EncodeStats


def _autocast(device: str, precision: Precision) -> Any:
    import contextlib

    import torch

    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    if precision == "auto":
        precision = "fp16" if kind == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in ("fp16", "bf16"):
        raise InputError(f"unknown precision {precision!r}; precisions: ['auto', 'fp32', 'fp16', 'bf16']")
    return torch.autocast(device_type=kind, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)


def _one_config(models: Sequence[LoadedModel]) -> None:
    if not models:
        raise InputError("no models to run on the images")
    keys = sorted({m.preprocess_key for m in models})
    if len(keys) > 1:
        raise InputError(f"models {[m.hub_model.id for m in models]} have different preprocessing ({keys}); "
                         "run each group of hub.group_by_preprocess separately")


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not enabled, dynamic_ncols=True)


def encode_image_set(models: Sequence[LoadedModel], images: ImageSet, *, batch_size: int = 64, workers: int = 0,
                     device: str = "cpu", precision: Precision = "auto", decode: Decoder | None = None,
                     on_batch: Callable[[np.ndarray, dict[str, Any]], None] | None = None,
                     out: Mapping[str, np.ndarray] | None = None, progress: bool = False,
                     timeout_s: float = DEFAULT_TIMEOUT_S, desc: str = "encode images",
                     log_unreadable: bool = True) -> EncodedImages:
    """Unit image embeddings of every model on every image, in ONE pass over the images.

    Each batch is decoded once (by `workers` processes) and run through every model, under
    `torch.inference_mode()` and, on cuda, fp16 autocast (`precision`). The embeddings go,
    per batch, to `on_batch(positions, {model id: (b, d) float32 unit tensor on device})` when
    given (nothing is kept), else into `out[model id]` (caller's (len(images), d) float32
    arrays, e.g. memory-mapped) or into arrays allocated here; readable rows are packed at
    the front in image order.

    Args:
        models: loaded models of ONE preprocessing configuration (`LoadedModel.preprocess_key`).
        images: the files; unreadable ones are skipped and listed.
        batch_size, workers, decode, timeout_s: see `image_loader`.
        device: where the models are ("cpu", "cuda", "cuda:1").
        precision: "auto" (fp16 on cuda, fp32 on cpu), "fp32", "fp16" or "bf16".
        progress: a tqdm bar on stderr with images/s and time left.
        log_unreadable: log a warning naming the skipped images (off where the caller reports
            them itself, as probe images do in the selection's warnings).
    Returns:
        EncodedImages: embeddings (n_readable, d) float32 per model id (views into `out` when
        given), positions (n_readable,) int64, unreadable (path, reason), and the timing stats.
    Raises:
        InputError: models of several configurations, a dead or stuck loader worker (names the
            file), or a bad precision.
    """

    _one_config(models)
    ids = [m.hub_model.id for m in models]
    n = len(images)
    loader = image_loader(images, models[0].preprocess, batch_size=batch_size, workers=workers, device=device,
                          decode=decode, timeout_s=timeout_s)
    arrays: dict[str, np.ndarray] = dict(out) if out is not None else {}
    for mid, array in arrays.items():
        if array.ndim != 2 or array.shape[0] != n:
            raise InputError(f"the output array for {mid} is {array.shape}, expected ({n}, d)")
    positions = np.empty(n, np.int64)
    unreadable: list[tuple[str, str]] = []
    stats = EncodeStats(encode_s={mid: 0.0 for mid in ids})
    started = time.perf_counter()
    try:
        kept = _run_models(models, ids, loader, images, device, precision, arrays, positions, unreadable, stats,
                           on_batch, _progress_bar(n, desc, progress))
    except RuntimeError as exc:
        # A worker's death can surface from torch's SIGCHLD handler anywhere in this loop.
        explained = explain_loader_error(loader, exc)
        if explained is exc:
            raise
        raise explained from None
    stats.seconds = time.perf_counter() - started
    if unreadable and log_unreadable:
        log.warning("%s: skipped %d unreadable images: %s", images.root, len(unreadable),
                    [p for p, _ in unreadable[:5]])
    if on_batch is None:
        for mid in ids:
            if mid not in arrays:  # no image decoded: the dimension is the model's
                arrays[mid] = np.empty((0, _embed_dim(models[ids.index(mid)])), np.float32)
    embeddings = {mid: arrays[mid][:kept] for mid in ids} if on_batch is None else {}
    return EncodedImages(embeddings, positions[:kept].copy(), unreadable, stats)


def _run_models(models: Sequence[LoadedModel], ids: list[str], loader: Any, images: ImageSet, device: str,
                precision: Precision, arrays: dict[str, np.ndarray], positions: np.ndarray,
                unreadable: list[tuple[str, str]], stats: EncodeStats,
                on_batch: Callable[[np.ndarray, dict[str, Any]], None] | None, bar: Any) -> int:
    """The loop of `encode_image_set`; returns the number of readable images."""
    import torch

    n = len(images)
    cuda = str(device).startswith("cuda")
    kept = 0
    with torch.inference_mode(), _autocast(device, precision), bar, contextlib.closing(iter(loader)) as batches:
        while True:
            waited = time.perf_counter()
            batch = next(batches, None)
            stats.loader_wait_s += time.perf_counter() - waited
            if batch is None:
                break
            stats.batches += 1
            for pos, reason in batch.unreadable:
                unreadable.append((images.paths[pos], reason))
            stats.unreadable += len(batch.unreadable)
            if batch.pixels is not None:
                b = int(batch.positions.shape[0])
                pixels = batch.pixels.to(device, non_blocking=cuda)
                got: dict[str, Any] = {}
                for model, mid in zip(models, ids):
                    t0 = time.perf_counter()
                    emb = torch.nn.functional.normalize(model.model.encode_image(pixels).float(), dim=-1)
                    if on_batch is None:
                        host = emb.cpu().numpy()  # the copy waits for the device, so the time is the model's
                        if mid not in arrays:
                            arrays[mid] = np.empty((n, host.shape[1]), np.float32)
                        arrays[mid][kept:kept + b] = host
                    elif cuda:
                        torch.cuda.synchronize(device)
                    got[mid] = emb
                    stats.encode_s[mid] += time.perf_counter() - t0
                positions[kept:kept + b] = batch.positions.numpy()
                if on_batch is not None:
                    on_batch(positions[kept:kept + b], got)
                kept += b
                stats.images += b
            bar.update(len(batch.unreadable) + (0 if batch.pixels is None else int(batch.positions.shape[0])))
            total_encode = sum(stats.encode_s.values())
            bar.set_postfix_str(f"decode wait {stats.loader_wait_s:.0f}s, in models {total_encode:.0f}s", refresh=False)
    return kept


def _embed_dim(loaded: LoadedModel) -> int:
    dim = getattr(getattr(loaded.model, "visual", None), "output_dim", None)
    return int(dim) if dim is not None else 0


# ---------------------------------------------------------------------------------------
# Zero-shot probabilities


def temperature(loaded: LoadedModel) -> float:
    """The softmax temperature of a model's zero-shot logits: its learned logit scale, capped at 100.

    The one rule for labeling, reuse and evaluation (`mll_index.models.zeroshot.logit_scale`).
    """
    return logit_scale(loaded)


def probabilities_from_embeddings(image_emb: Any, class_emb: Any, scale: float) -> Any:
    """(n, C) float32 softmax of scale x cosine similarity, rows summing to 1; numpy in, numpy out,
    torch in, torch out (on the tensors' device). Inputs are unit rows: (n, d) images, (C, d) classes."""
    import torch

    if isinstance(image_emb, np.ndarray):
        result = probabilities_from_embeddings(torch.from_numpy(np.asarray(image_emb, np.float32)),
                                               torch.from_numpy(np.asarray(class_emb, np.float32)), scale)
        return result.numpy()
    logits = scale * (image_emb.float() @ torch.as_tensor(class_emb, dtype=torch.float32,
                                                          device=image_emb.device).T)
    return torch.softmax(logits, dim=1)


@dataclass
class Probabilities:
    """Per model id, (n, C) float32 zero-shot probabilities over the class names (rows sum to 1, or
    NaN where the model's outputs are not finite); row r is the image at `positions[r]` ((n,) int64,
    increasing) of the ImageSet; `unreadable` lists (relative path, reason) of the images with no row;
    `stats` per preprocessing pass; per model, the class embeddings and temperature used and the number
    of images whose embedding was not finite."""

    probabilities: dict[str, np.ndarray]
    positions: np.ndarray
    unreadable: list[tuple[str, str]]
    stats: list[EncodeStats] = field(default_factory=list)
    class_embeddings: dict[str, np.ndarray] = field(default_factory=dict)   # (C, d) float32 unit rows per model
    scales: dict[str, float] = field(default_factory=dict)                  # `temperature` per model
    nonfinite_rows: dict[str, int] = field(default_factory=dict)            # images whose embedding is not finite


def zero_shot_probabilities(models: Sequence[LoadedModel], images: ImageSet, class_names: Sequence[str], *,
                            batch_size: int = 64, workers: int = 0, device: str = "cpu",
                            precision: Precision = "auto", decode: Decoder | None = None,
                            prompt_templates: Sequence[str] | None = None, progress: bool = False,
                            timeout_s: float = DEFAULT_TIMEOUT_S) -> Probabilities:
    """Zero-shot class probabilities of models of ONE preprocessing configuration, in one pass.

    A class's text embedding is the normalised mean of its prompts (`zeroshot.class_embeddings`);
    the logits are `temperature(model)` x cosine similarity. Only (n, C) per model is kept.

    Raises:
        InputError: see `encode_image_set`.
    """
    _one_config(models)
    classes = {m.hub_model.id: class_embeddings(m, class_names, device, prompt_templates) for m in models}
    scales = {m.hub_model.id: temperature(m) for m in models}
    n = len(images)
    probs = {mid: np.empty((n, len(class_names)), np.float32) for mid in classes}
    row = [0]
    bad = {mid: 0 for mid in classes}

    def keep(positions: np.ndarray, emb: dict[str, Any]) -> None:
        import torch

        b = len(positions)
        for mid, e in emb.items():
            bad[mid] += int((~torch.isfinite(e).all(dim=1)).sum())
            probs[mid][row[0]:row[0] + b] = probabilities_from_embeddings(e, classes[mid], scales[mid]).cpu().numpy()
        row[0] += b

    encoded = encode_image_set(models, images, batch_size=batch_size, workers=workers, device=device,
                               precision=precision, decode=decode, on_batch=keep, progress=progress,
                               timeout_s=timeout_s, desc=f"predict {models[0].preprocess_key}")
    return Probabilities({mid: p[:row[0]] for mid, p in probs.items()}, encoded.positions, encoded.unreadable,
                         [encoded.stats], classes, scales, bad)


# Models held in memory at once in a pass, by their parameters (hub field params_m): every decode
# of a pass feeds all its models, so fewer, fuller passes decode each image fewer times. 1,000 M
# parameters is 4 GB in float32 (two ViT-L-14, or the emoji world's whole hub of 13 small models).
PASS_PARAMS_M = 1000.0
UNKNOWN_PARAMS_M = 430.0        # a model whose size the hub does not give counts as a ViT-L-14
MODELS_PER_PASS = 16            # and never more than this many at once


def model_passes(models: Sequence[HubModel], models_per_pass: int = MODELS_PER_PASS,
                 params_budget_m: float = PASS_PARAMS_M) -> list[list[HubModel]]:
    """The models split into passes: grouped by preprocessing (`hub.group_by_preprocess`, hub order),
    each group cut into chunks held at once: at most `models_per_pass` models, and at most
    `params_budget_m` million parameters together by their `params_m` (UNKNOWN_PARAMS_M where the
    hub does not say), at least one model per pass."""
    if models_per_pass < 1:
        raise InputError(f"models per pass must be >= 1, not {models_per_pass}")
    groups = group_by_preprocess(Hub(name="selection", models=tuple(models)))
    passes: list[list[HubModel]] = []
    for group in groups.values():
        chunk: list[HubModel] = []
        held = 0.0
        for model in group:
            size = model.params_m if model.params_m is not None else UNKNOWN_PARAMS_M
            if chunk and (len(chunk) >= models_per_pass or held + size > params_budget_m):
                passes.append(chunk)
                chunk, held = [], 0.0
            chunk.append(model)
            held += size
        if chunk:
            passes.append(chunk)
    return passes


def hub_probabilities(hub: Hub, model_ids: Sequence[str], images: ImageSet, class_names: Sequence[str], *,
                      batch_size: int = 64, workers: int = 0, device: str = "cpu", precision: Precision = "auto",
                      models_per_pass: int = MODELS_PER_PASS, decode: Decoder | None = None, progress: bool = False,
                      timeout_s: float = DEFAULT_TIMEOUT_S,
                      before_pass: Callable[[Sequence[LoadedModel]], None] | None = None) -> Probabilities:
    """Zero-shot probabilities of hub models on images: one pass over the images per preprocessing
    configuration (per `models_per_pass` models of it), models loaded with `hub.load_model`.

    `before_pass` sees each pass's loaded models before any image is decoded (reuse checks their
    prompts there, so that a refusal costs no pass).

    Returns:
        Probabilities over the images readable in every pass (a file that failed once is dropped
        from all models, so rows line up across models).
    Raises:
        InputError: an unknown model id, a dead or stuck loader worker. ModelLoadError: a model
            that cannot be loaded.
    """
    chosen = [hub.get(m) for m in dict.fromkeys(model_ids)]
    results: list[Probabilities] = []
    for group in model_passes(chosen, models_per_pass):
        loaded = [load_model(m, device) for m in group]
        if before_pass is not None:
            before_pass(loaded)
        results.append(zero_shot_probabilities(loaded, images, class_names, batch_size=batch_size, workers=workers,
                                               device=device, precision=precision, decode=decode, progress=progress,
                                               timeout_s=timeout_s))
        del loaded
    return merge_probabilities(results)


def merge_probabilities(results: Sequence[Probabilities]) -> Probabilities:
    """The passes of one image set as one result, over the images readable in every pass (rows line up
    across models); an image unreadable in any pass is listed once, with its reason."""
    common = results[0].positions
    for r in results[1:]:
        common = np.intersect1d(common, r.positions)
    merged = Probabilities({}, common, [], [s for r in results for s in r.stats])
    unreadable: dict[str, str] = {}
    for r in results:
        rows = np.searchsorted(r.positions, common)
        merged.probabilities.update({mid: p[rows] for mid, p in r.probabilities.items()})
        merged.class_embeddings.update(r.class_embeddings)
        merged.scales.update(r.scales)
        merged.nonfinite_rows.update(r.nonfinite_rows)
        for path, reason in r.unreadable:
            unreadable.setdefault(path, reason)
    merged.unreadable = sorted(unreadable.items())
    return merged
