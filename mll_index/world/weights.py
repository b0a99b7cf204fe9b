"""Shipped weights of the emoji world's hub: compact files, checksummed, made into open_clip checkpoints.

Why ship them: training the 13 models takes over ten minutes on 2 cores, and its float rounding
differs between CPU kinds, so two machines trained slightly different hubs. Shipping the weights
makes set-up fast and every machine's hub the same; `mll-index world build --retrain` trains them
again from the spec and says whether the result equals what is shipped.

Why they are small: almost all of a checkpoint is the text tower's token embedding (49,408 rows),
and training changes only the rows of tokens its texts use. The others get no gradient and, with no
weight decay on embeddings, keep their initial values, which `torch.manual_seed(seed)` and open_clip
re-create (a fine-tuned model keeps those of the model it starts from). A compact file stores every
tensor of the state_dict, but the token embedding only at the rows listed in `token_rows`, and
floating-point tensors in float16: half the bytes (the 13 files take 25 MB instead of 51), at a
relative rounding of 1e-3 that leaves the models' accuracies as they were (bench/emoji_world.py).
The hub *is* the rounded weights: the world is built and measured from them on every machine.

    mll_index/data/emoji_weights/
        manifest.json        {"models": {id: {"hash": spec hash, "file", "bytes", "sha256", "token_rows"}}}
        <id>.safetensors     the compact state_dict (float16), read with safetensors (no pickle)
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.core.artifacts import atomic_file, read_json, sha256_file, write_json
from mll_index.errors import IndexFormatError

log = logging.getLogger(__name__)

TOKEN_EMBEDDING = "token_embedding.weight"
TOKEN_ROWS = "__token_rows__"


def shipped_dir() -> Path:
    """The package's folder of shipped weights."""
    return Path(str(resources.files("mll_index").joinpath("data/emoji_weights")))


def token_rows(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """(r,) int64, sorted: every token id that `texts` use (padding included), as the tokenizer writes them."""
    return np.unique(np.asarray(tokenizer(list(texts))).ravel()).astype(np.int64)


def compact_state(state: dict[str, Any], rows: np.ndarray) -> dict[str, np.ndarray]:
    """A state_dict as numpy arrays, floats as float16, the token embedding cut to `rows` (stored with it)."""
    out = {}
    for name, tensor in state.items():
        array = tensor.detach().cpu().numpy()
        out[name] = array.astype(np.float16) if np.issubdtype(array.dtype, np.floating) else array.copy()
    out[TOKEN_EMBEDDING] = np.ascontiguousarray(out[TOKEN_EMBEDDING][rows])
    out[TOKEN_ROWS] = np.asarray(rows, np.int64)
    return out


def expand_state(compact: dict[str, np.ndarray], base: dict[str, Any]) -> dict[str, Any]:
    """The full state_dict: `base` (the initial weights) overwritten by the compact file's tensors.

    Raises:
        IndexFormatError: the compact tensors do not fit the architecture of `base`.
    """
    import torch

    state = {name: tensor.clone() for name, tensor in base.items()}
    rows = torch.from_numpy(compact[TOKEN_ROWS])
    for name, array in compact.items():
        if name == TOKEN_ROWS:
            continue
        if name not in state:
            raise IndexFormatError(f"shipped weights hold {name!r}, which the architecture lacks")
        value = torch.from_numpy(array)
        if name == TOKEN_EMBEDDING:
            state[name][rows] = value.to(state[name].dtype)
        elif tuple(value.shape) != tuple(state[name].shape):
            raise IndexFormatError(f"shipped weights: {name!r} has shape {tuple(value.shape)}, "
                                   f"the architecture {tuple(state[name].shape)}")
        else:
            state[name] = value.to(state[name].dtype)
    return state


def write_compact(path: Path, state: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """Write a compact file (safetensors) atomically; returns its manifest entry."""
    from safetensors.numpy import save

    data = save(compact_state(state, rows))
    with atomic_file(path, "wb") as handle:
        handle.write(data)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path), "token_rows": int(len(rows))}


def read_compact(path: Path, entry: dict[str, Any]) -> dict[str, np.ndarray]:
    """Read a compact file after checking its size and checksum.

    Raises:
        IndexFormatError: the file is missing, damaged or not the one the manifest lists.
    """
    from safetensors.numpy import load

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IndexFormatError(f"{path}: cannot read the shipped weights ({exc.strerror})") from None
    if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise IndexFormatError(f"{path}: does not match its checksum in manifest.json; reinstall mll-index, "
                               "or train the hub with `mll-index world build --retrain`")
    return load(data)


def shipped_entry(model_id: str, spec_key: str, folder: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The shipped compact file of a model trained from this exact spec (hash), or None."""
    folder = folder or shipped_dir()
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return None
    entry = read_json(manifest).get("models", {}).get(model_id)
    if not entry or entry.get("hash") != spec_key:
        return None
    return folder / entry["file"], entry


def initial_state(arch: str, seed: int) -> dict[str, Any]:
    """The weights a model of `arch` starts from before training (open_clip's init under `seed`)."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    return open_clip.create_model(arch, pretrained=None).state_dict()


def materialise(path: Path, entry: dict[str, Any], base: dict[str, Any], out_path: Path) -> None:
    """Write the full open_clip checkpoint of a shipped model to `out_path` (atomically)."""
    import torch

    state = expand_state(read_compact(path, entry), base)
    with atomic_file(out_path, "wb") as handle:
        torch.save(state, handle)


def ship_weights(checkpoints: dict[str, tuple[Path, str]], rows: np.ndarray, out_dir: Path) -> dict[str, Any]:
    """Write compact files of trained checkpoints, and their manifest, into `out_dir`.

    Args:
        checkpoints: model id -> (full checkpoint written by training, its spec hash).
        rows: the token rows that training used (`token_rows` of every training text).
    Returns:
        the manifest written.
    """
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    models = {}
    for model_id, (checkpoint, key) in checkpoints.items():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        models[model_id] = {"hash": key, **write_compact(out_dir / f"{model_id}.safetensors", state, rows)}
    manifest = {"format": "mll-index-emoji-weights", "version": 1, "models": models}
    write_json(out_dir / "manifest.json", manifest)
    return manifest
