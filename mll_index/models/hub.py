"""The model hub: the CLIP-family models to choose from, as data.

A hub file lists models, each an open_clip architecture (`arch`) with either an open_clip
pretrained tag or a local checkpoint, plus metadata (parameters, FLOPs, ImageNet accuracy,
licence). It is JSON (`{"name", "source", "models": [{...}, ...]}`) or CSV with the same
columns. `load_model` turns a hub entry into an eval-mode model, its eval transform and its
tokenizer; `preprocess_key` names a model's image preprocessing without loading weights, so
that sample images are decoded once per preprocessing configuration, not once per model.

open_clip (and with it torch) is imported inside the functions that need it: reading a hub
with `validate=False` needs neither.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import logging
import math
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mll_index.core.layout import model_folder_name
from mll_index.core.userfiles import NUMBER_RANGES, number_in_range, read_user_csv, read_user_json
from mll_index.errors import InputError, ModelLoadError

log = logging.getLogger(__name__)

HUB_FIELDS = ("id", "arch", "pretrained", "checkpoint", "config", "params_m", "flops_b", "imagenet_acc", "licence")
NUMBER_FIELDS = ("params_m", "flops_b", "imagenet_acc")
# Normalisation constants that have a common name, for readable preprocess keys.
NAMED_NORMALISATIONS = {
    "openai": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
REACH_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class HubModel:
    """One model of a hub: an open_clip architecture with a pretrained tag or a checkpoint.

    Exactly one of `pretrained` and `checkpoint` is set. `checkpoint` and `config` are
    absolute paths (relative ones in a hub file resolve against the file's folder).
    """

    id: str
    arch: str
    pretrained: str | None = None
    checkpoint: Path | None = None
    config: Path | None = None
    params_m: float | None = None
    flops_b: float | None = None
    imagenet_acc: float | None = None
    licence: str | None = None

    @property
    def weights(self) -> str:
        """Where the weights come from, for messages: `arch/tag` or the checkpoint path."""
        return f"{self.arch}/{self.pretrained}" if self.pretrained else str(self.checkpoint)

    def describe(self) -> dict[str, Any]:
        """The entry as plain data (the hub file's columns; paths as strings)."""
        return {name: (str(value) if isinstance(value, Path) else value)
                for name, value in ((n, getattr(self, n)) for n in HUB_FIELDS)}


@dataclass(frozen=True)
class Hub:
    """The models of a hub file, in file order; ids are unique."""

    name: str
    models: tuple[HubModel, ...]
    path: Path | None = None
    source: str | None = None
    _by_id: dict[str, HubModel] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {m.id: m for m in self.models})

    @cached_property
    def ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.models)

    def get(self, model_id: str) -> HubModel:
        """The model with this id; an unknown id is an InputError listing the available ones."""
        try:
            return self._by_id[model_id]
        except KeyError:
            close = difflib.get_close_matches(model_id, self.ids, n=3)
            hint = f" (did you mean {close}?)" if close else ""
            raise InputError(f"unknown model {model_id!r} in hub {self.name!r}{hint}; available "
                             f"({min(20, len(self.ids))} of {len(self.ids)}): {list(self.ids[:20])}") from None

    def __len__(self) -> int:
        return len(self.models)

    def __iter__(self) -> Iterator[HubModel]:
        return iter(self.models)


@dataclass
class LoadedModel:
    """A hub model ready to use.

    `model` is in eval mode on the requested device; `preprocess` maps a PIL image to a
    (3, H, W) float32 tensor (open_clip's eval transform); `tokenizer` maps a list of n
    texts to an (n, context_length) int64 tensor. `preprocess_key` is computed from the
    transform the model was actually built with, and equals `preprocess_key(hub_model)`.
    """

    hub_model: HubModel
    model: Any
    preprocess: Callable[[Any], Any]
    tokenizer: Callable[..., Any]
    preprocess_key: str


# ---------------------------------------------------------------------------------------
# Reading hub files


def builtin_hubs() -> list[str]:
    """Names of the hubs shipped with the package (data/hubs/*.json)."""
    folder = resources.files("mll_index").joinpath("data/hubs")
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_hub(source: str | Path, validate: bool = True) -> Hub:
    """Read a hub: a path to a JSON or CSV hub file, or the name of a built-in hub (`mll49`).

    Args:
        source: file path or built-in name.
        validate: also check every arch and pretrained tag against open_clip (imports torch;
            without it only the file's structure and the checkpoint/config files are checked).
    Raises:
        InputError: one line naming the file and the model that is wrong.
    """
    path = Path(source)
    if not path.is_file():
        name = str(source)
        if name in builtin_hubs():
            path = Path(str(resources.files("mll_index").joinpath(f"data/hubs/{name}.json")))
        else:
            raise InputError(f"no hub file {name!r} and no built-in hub of that name; "
                             f"built-in hubs: {builtin_hubs()}")
    if path.suffix.lower() == ".csv":
        header, rows = _read_csv(path)
    else:
        header, rows = _read_json(path)
    if not rows:
        raise InputError(f"{path}: the hub lists no models")
    models: list[HubModel] = []
    seen: dict[str, int] = {}
    folders: dict[str, int] = {}
    for position, row in enumerate(rows, start=1):
        model = _parse_model(row, path, position)
        if model.id in seen:
            raise InputError(f"{path}: model {model.id!r}: duplicate id (also model #{seen[model.id]})")
        seen[model.id] = position
        # Label folders are named by id (layout.model_folder_name): one-to-one, but some file systems
        # ignore case, where `ViT-B` and `vit-b` would share one.
        folder = model_folder_name(model.id).casefold()
        if folder in folders:
            other = models[folders[folder] - 1].id
            raise InputError(f"{path}: model {model.id!r}: its label folder would be model #{folders[folder]} "
                             f"({other!r})'s on file systems that ignore case; rename one of them")
        folders[folder] = position
        models.append(model)
    if validate:
        for model in models:
            _validate_with_open_clip(model, path)
    return Hub(name=header.get("name") or path.stem, models=tuple(models), path=path,
               source=header.get("source"))


def _read_json(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    data = read_user_json(path, "JSON hub file")
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise InputError(f'{path}: a hub file is a JSON object with a "models" list')
    if not all(isinstance(row, dict) for row in data["models"]):
        raise InputError(f'{path}: every entry of "models" must be a JSON object')
    header = {k: data.get(k) for k in ("name", "source") if isinstance(data.get(k), str)}
    return header, data["models"]


def _read_csv(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    table = read_user_csv(path, "CSV hub file")
    # Empty cells are missing values, as null is in JSON.
    return {}, [{k: v or None for k, v in row.items()} for row in table.rows]


def _parse_model(row: dict[str, Any], path: Path, position: int) -> HubModel:
    """One entry of a hub file, checked for structure; paths resolved against the file's folder."""
    raw_id = row.get("id")
    where = f"{path}: model {raw_id!r}" if isinstance(raw_id, str) and raw_id else f"{path}: model #{position}"
    unknown = sorted(k for k in row if k not in HUB_FIELDS)
    if unknown:
        raise InputError(f"{where}: unknown field(s) {unknown}; valid fields: {list(HUB_FIELDS)}")
    for name in ("id", "arch"):
        value = row.get(name)
        if value is None or value == "":
            raise InputError(f"{where}: missing field {name!r}")
        if not isinstance(value, str):
            raise InputError(f"{where}: field {name!r} must be a string, not {value!r}")
    for name in ("pretrained", "checkpoint", "config", "licence"):
        if row.get(name) is not None and not isinstance(row[name], str):
            raise InputError(f"{where}: field {name!r} must be a string or null, not {row[name]!r}")
    if bool(row.get("pretrained")) == bool(row.get("checkpoint")):
        state = "both" if row.get("pretrained") else "neither"
        raise InputError(f"{where}: give exactly one of 'pretrained' (an open_clip tag) and "
                         f"'checkpoint' (a weights file); it has {state}")
    checkpoint = _resolve_file(row.get("checkpoint"), path, where, "checkpoint")
    config = _resolve_file(row.get("config"), path, where, "config")
    if config is not None:
        _check_config_file(config, row["arch"], where)
    numbers = {name: _number(row.get(name), name, where) for name in NUMBER_FIELDS}
    return HubModel(id=row["id"], arch=row["arch"], pretrained=row.get("pretrained") or None,
                    checkpoint=checkpoint, config=config, licence=row.get("licence") or None, **numbers)


def _resolve_file(value: str | None, hub_path: Path, where: str, name: str) -> Path | None:
    if not value:
        return None
    if "\0" in value:
        raise InputError(f"{where}: {name} file {value!r} holds a NUL character")
    file = Path(value).expanduser()
    if not file.is_absolute():
        file = hub_path.parent / file
    file = file.resolve()
    if not file.exists():
        raise InputError(f"{where}: {name} file {file} does not exist")
    if not file.is_file():     # a folder, a device such as /dev/zero, a FIFO: never opened as weights
        raise InputError(f"{where}: {name} file {file} is not a regular file")
    return file


def _number(value: Any, name: str, where: str) -> float | None:
    """A hub entry's number field: None, or a finite float within `userfiles.NUMBER_RANGES[name]`.

    Raises:
        InputError: naming the entry (`where`: the file and model), the field and the value.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise InputError(f"{where}: field {name!r} must be a number or null, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: field {name!r} must be a number or null, not {value!r}") from None
    if number_in_range(name, number) is None:
        low, high = NUMBER_RANGES.get(name, (-math.inf, math.inf))
        raise InputError(f"{where}: field {name!r} must be a finite number from {low:g} to {high:g}, not {value!r}")
    return number


def _check_config_file(config: Path, arch: str, where: str) -> None:
    """A custom architecture file must be an open_clip model config named after the arch.

    open_clip registers a config under its file name and silently ignores files without
    `embed_dim`, `vision_cfg` and `text_cfg`, so both are checked here.
    """
    if config.stem != arch:
        raise InputError(f"{where}: config file {config.name} must be named after its arch ({arch}.json): "
                         "open_clip registers an architecture under its file name")
    try:
        data = read_user_json(config, "open_clip model config")
    except InputError as exc:
        raise InputError(f"{where}: config file {exc}") from None
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if not isinstance(data, dict) or k not in data]
    if missing:
        raise InputError(f"{where}: config file {config} is not an open_clip model config (missing {missing})")


def _validate_with_open_clip(model: HubModel, path: Path) -> None:
    """The arch is known to open_clip (or custom, without clashing) and the tag exists for it."""
    import open_clip

    where = f"{path}: model {model.id!r}"
    if model.config is not None:
        registered = open_clip.get_model_config(model.arch)
        if registered is not None and registered != _read_config(model.config):
            raise InputError(f"{where}: arch {model.arch!r} is already an open_clip architecture with another "
                             f"config than {model.config}; give the custom architecture its own name")
    elif model.arch not in open_clip.list_models():
        close = difflib.get_close_matches(model.arch, open_clip.list_models(), n=5, cutoff=0.6)
        hint = f"; close names: {close}" if close else ""
        raise InputError(f"{where}: unknown open_clip architecture {model.arch!r}{hint} "
                         "(see open_clip.list_models(), or give a 'config' file for a custom one)")
    if model.pretrained and not open_clip.get_pretrained_cfg(model.arch, model.pretrained):
        tags = open_clip.list_pretrained_tags_by_model(model.arch)
        if tags:
            raise InputError(f"{where}: open_clip has no pretrained tag {model.pretrained!r} for {model.arch}; "
                             f"available tags: {tags}")
        raise InputError(f"{where}: open_clip has no pretrained weights for {model.arch} "
                         f"(tag {model.pretrained!r}); give a 'checkpoint' file instead")


def _read_config(config: Path) -> dict[str, Any]:
    return read_user_json(config, "open_clip model config")  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------
# Preprocessing keys


def _preprocess_cfg(model: HubModel) -> dict[str, Any]:
    """The image preprocessing open_clip builds for a model, from its configs alone (no weights).

    Mirrors `open_clip.create_model`: PreprocessCfg defaults, overlaid with the pretrained
    tag's config (a checkpoint file keeps the defaults), with the vision tower's image size.
    """
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = _read_config(model.config) if model.config else open_clip.get_model_config(model.arch)
    if cfg is None:
        raise InputError(f"model {model.id!r}: unknown open_clip architecture {model.arch!r}")
    preprocess = merge_preprocess_dict(PreprocessCfg(), {})
    if model.pretrained:
        preprocess = merge_preprocess_dict(preprocess, open_clip.get_pretrained_cfg(model.arch, model.pretrained))
    # The vision towers default to 224 when their config gives no size (CLIPVisionCfg).
    preprocess["size"] = cfg.get("vision_cfg", {}).get("image_size", 224)
    return preprocess


def format_preprocess_key(cfg: dict[str, Any]) -> str:
    """A short stable name for an open_clip preprocess config, e.g. `224px-bicubic-shortest-openai`.

    Args:
        cfg: keys size (int or (h, w)), mean, std, interpolation, resize_mode, fill_color.
    """
    size = cfg["size"]
    if isinstance(size, (list, tuple)):
        size = size[0] if len(size) == 2 and size[0] == size[1] else "x".join(str(s) for s in size)
    mean = tuple(round(float(v), 6) for v in cfg["mean"])
    std = tuple(round(float(v), 6) for v in cfg["std"])
    norm = next((name for name, (m, s) in NAMED_NORMALISATIONS.items()
                 if mean == tuple(round(v, 6) for v in m) and std == tuple(round(v, 6) for v in s)), None)
    if norm is None:
        norm = "norm" + hashlib.sha1(repr((mean, std)).encode()).hexdigest()[:8]
    key = f"{size}px-{cfg['interpolation']}-{cfg['resize_mode']}-{norm}"
    # The fill colour only shows when 'longest' pads the image.
    if cfg["resize_mode"] == "longest":
        key += f"-fill{cfg.get('fill_color', 0)}"
    return key


def preprocess_key(model: HubModel) -> str:
    """A short stable string naming the model's image preprocessing, computed without loading weights.

    Models with equal keys take identical input tensors: image size, interpolation, resize
    mode, mean and std (e.g. `224px-bicubic-shortest-openai`).
    """
    return format_preprocess_key(_preprocess_cfg(model))


def group_by_preprocess(hub: Hub) -> dict[str, list[HubModel]]:
    """The hub's models grouped by preprocess key, groups and members in hub order."""
    groups: dict[str, list[HubModel]] = {}
    for model in hub:
        groups.setdefault(preprocess_key(model), []).append(model)
    return groups


# ---------------------------------------------------------------------------------------
# Loading models


def _reachable(host: str, port: int = 443, timeout_s: float = REACH_TIMEOUT_S) -> bool:
    """Whether a host answers a TCP connection within the timeout."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _hf_host() -> str:
    from huggingface_hub import constants

    return urlparse(constants.ENDPOINT).hostname or "huggingface.co"


@contextlib.contextmanager
def _hf_offline(offline: bool) -> Iterator[None]:
    """Put the Hugging Face hub client in offline mode for the block.

    Unreachable, the client retries every file for ~45 s before failing; offline it serves
    cached files and fails at once on others. `HF_HUB_OFFLINE` is read once at import, but
    the client checks this module constant on every request, so it is set here.
    """
    if not offline:
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _needs_hf(model_cfg: dict[str, Any], pretrained_cfg: dict[str, Any]) -> bool:
    """Whether building the model may fetch files from the Hugging Face hub (weights, text model, tokenizer)."""
    text_cfg = model_cfg.get("text_cfg", {})
    return bool(pretrained_cfg.get("hf_hub") or text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"))


def _check_url_weights(model: HubModel, pretrained_cfg: dict[str, Any]) -> None:
    """URL-only weights (no Hugging Face copy) must be cached or their host reachable.

    open_clip downloads them with urllib and no timeout, which can hang on a dead network.
    """
    url = pretrained_cfg.get("url", "")
    if not url or pretrained_cfg.get("hf_hub") or "file" in pretrained_cfg:
        return
    cached = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
    host = urlparse(url).hostname or ""
    if not cached.is_file() and not _reachable(host):
        raise ModelLoadError(f"cannot load model {model.id!r}: weights {model.weights} are not in the cache "
                             f"({cached}) and {host} cannot be reached")


def _register_config(model: HubModel) -> None:
    """Register a custom architecture with open_clip, refusing to replace another config of that name."""
    import open_clip

    assert model.config is not None
    wanted = _read_config(model.config)
    registered = open_clip.get_model_config(model.arch)
    if registered is None:
        open_clip.add_model_config(model.config)
    elif registered != wanted:
        raise ModelLoadError(f"cannot load model {model.id!r}: arch {model.arch!r} is already registered with "
                             f"open_clip with another config than {model.config}")


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def load_model(model: HubModel, device: str = "cpu") -> LoadedModel:
    """Build a hub model with its weights, eval transform and tokenizer.

    Weights that are not cached and cannot be downloaded (no network) fail within seconds.

    Raises:
        ModelLoadError: one line naming the model id and the cause (download, checkpoint
            tensors that do not match the config, unknown device, ...).
    """
    import open_clip

    if model.config is not None:
        _register_config(model)
    model_cfg = open_clip.get_model_config(model.arch) or {}
    pretrained_cfg = open_clip.get_pretrained_cfg(model.arch, model.pretrained) if model.pretrained else {}
    offline = _needs_hf(model_cfg, pretrained_cfg) and (
        os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or not _reachable(_hf_host()))
    _check_url_weights(model, pretrained_cfg)
    try:
        with _hf_offline(offline):
            net, _, preprocess = open_clip.create_model_and_transforms(
                model.arch, pretrained=model.pretrained or str(model.checkpoint), device=device)
            tokenizer = open_clip.get_tokenizer(model.arch)
    except Exception as exc:  # noqa: BLE001 - every cause is reported the same way, in one line
        if offline:
            raise ModelLoadError(
                f"cannot load model {model.id!r} ({model.weights}): files it needs are not in the local cache "
                f"and the Hugging Face hub ({_hf_host()}) cannot be reached [{_one_line(exc, 200)}]") from None
        raise ModelLoadError(f"cannot load model {model.id!r} ({model.weights}): {_one_line(exc)}") from None
    net.eval()
    return LoadedModel(hub_model=model, model=net, preprocess=preprocess, tokenizer=tokenizer,
                       preprocess_key=format_preprocess_key(net.visual.preprocess_cfg))
