"""The service's limits and options (`ServiceSettings`), and their trip through the environment to
uvicorn's worker processes (`settings_to_env`; `app.create_app_from_env` reads it back)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

CONFIG_ENV = "MLL_INDEX_SERVICE_CONFIG"  # create_app_from_env's settings (uvicorn workers start from it)


@dataclass(frozen=True)
class ServiceSettings:
    """Limits and options of a service. Sizes in bytes, times in seconds.

    api_key: the bearer token every route but /healthz requires (None: no token asked).
    probe_roots: the folders whose images a task's `probe_images` may name (`serve --probe-root`);
        none (the default): probe_images from a client are refused.
    """

    max_body_bytes: int = 10 * 1024 * 1024
    max_classes: int = 1000          # classes per task, names per match request
    max_batch: int = 1000            # tasks per batch request
    request_timeout_s: float = 60.0
    body_timeout_s: float = 30.0     # a request body must arrive whole within this (408 otherwise)
    threads: int = 4                 # selections running at once; the others wait (within the time limit)
    poll_s: float = 1.0              # how often the index files are checked for a new version
    batch_chunk: int = 16            # tasks selected together (their distinct classes embedded once) per streamed chunk
    api_key: str | None = None
    probe_roots: tuple[str, ...] = ()
    max_probe_files: int = 1000        # image files a request's probe_images may list (before `probe` picks some)
    max_probe_entries: int = 20_000    # folder entries looked at per request, images or not
    max_probe_bytes: int = 32 << 20    # bytes per probe image file
    max_path_chars: int = 1024         # characters per probe_images path (and 255 per name in it)

    def __post_init__(self) -> None:
        # From JSON (settings_to_env) a list arrives: kept as a tuple, so the settings stay hashable.
        object.__setattr__(self, "probe_roots", tuple(str(r) for r in self.probe_roots))


def settings_to_env(index_path: Path, settings: ServiceSettings, api_key_env: str | None) -> str:
    """The JSON create_app_from_env reads (the key itself stays in its own variable)."""
    values = {k: v for k, v in asdict(settings).items() if k != "api_key"}
    return json.dumps({"index": str(index_path), "settings": values, "api_key_env": api_key_env})
