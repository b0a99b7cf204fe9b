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
    """

    max_body_bytes: int = 10 * 1024 * 1024
    max_classes: int = 1000          # classes per task, names per match request
    max_batch: int = 1000            # tasks per batch request
    request_timeout_s: float = 60.0
    threads: int = 4                 # selections running at once; the others wait (within the time limit)
    poll_s: float = 1.0              # how often the index files are checked for a new version
    batch_chunk: int = 16            # tasks selected together (their distinct classes embedded once) per streamed chunk
    api_key: str | None = None


def settings_to_env(index_path: Path, settings: ServiceSettings, api_key_env: str | None) -> str:
    """The JSON create_app_from_env reads (the key itself stays in its own variable)."""
    values = {k: v for k, v in asdict(settings).items() if k != "api_key"}
    return json.dumps({"index": str(index_path), "settings": values, "api_key_env": api_key_env})
