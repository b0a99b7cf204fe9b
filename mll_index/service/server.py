"""`serve`: check everything that can be checked, then hand the app to uvicorn.

Checks come before the port opens, each failing with one line (an MLLIndexError the CLI
prints): the API key's variable is set, the port is free, the index opens, is labeled and
answers a first selection.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mll_index.errors import InputError
from mll_index.service.app import create_app
from mll_index.service.metrics import MULTIPROCESS_ENV
from mll_index.service.protocol import HeadTimeoutProtocol
from mll_index.service.settings import CONFIG_ENV, ServiceSettings, settings_to_env

log = logging.getLogger(__name__)

# uvicorn's settings against slow and many clients (the measurements in brackets):
UVICORN_LIMITS = {
    "timeout_keep_alive": 5,            # s an idle keep-alive connection stays open (uvicorn's default)
    "limit_concurrency": 256,           # connections + tasks at once; beyond: 503 at once (40 slow clients held 40)
    "h11_max_incomplete_event_size": 64 * 1024,  # bytes of an unfinished request head (h11's default is 16 KiB)
    "timeout_graceful_shutdown": 2,     # s requests in flight get after SIGTERM / SIGINT; then they are cancelled
    "backlog": 256,
}
# After uvicorn stops, selections still running in the pool's threads would keep the process alive
# (the interpreter joins them at exit): they get this long, then the process exits anyway.
EXIT_GRACE_S = 1.5


def check_port(host: str, port: int) -> None:
    """Raise InputError naming host:port if it cannot be bound (in use, or not an address of this machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: SO_REUSEADDR, so a port in TIME_WAIT after a restart counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(f"{host}:{port}: port already in use; stop what listens there or give --port") from None
            raise InputError(f"{host}:{port}: cannot listen there ({exc.strerror or exc})") from None


def api_key_from_env(name: str | None) -> str | None:
    """The bearer token from environment variable `name` (None: no token). InputError if it is unset or empty."""
    if not name:
        return None
    value = os.environ.get(name, "").strip()
    if not value:
        raise InputError(f"--api-key-env {name}: the environment variable {name} is not set or empty")
    return value


def serve(index_path: Path, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          api_key_env: str | None = None, settings: ServiceSettings | None = None,
          log_level: str = "info", probe_roots: Sequence[str | Path] = ()) -> None:
    """Serve the index at `index_path` until interrupted (SIGINT or SIGTERM: stopped within 5 s).

    With one worker the app is made here, so the index is open and warm before the port is;
    with several, each uvicorn worker process opens its own (the index is checked here first).

    Args:
        probe_roots: the folders whose images tasks may name as probe_images (`--probe-root`, repeatable);
            none: probe_images from a client are refused (403).

    Raises:
        InputError: the port is in use, the API key's variable is empty, or a probe root is not a folder.
        MLLIndexError: the index is missing, unlabeled or damaged.
    """
    from dataclasses import replace

    import uvicorn

    settings = replace(settings or ServiceSettings(), api_key=api_key_from_env(api_key_env))
    if probe_roots:
        settings = replace(settings, probe_roots=check_probe_roots(probe_roots))
    _log_service_events()
    check_port(host, port)
    app = create_app(index_path, settings)  # opens and warms: a bad index fails here, before the port opens
    if workers > 1:
        del app
        os.environ[CONFIG_ENV] = settings_to_env(index_path, settings, api_key_env)
        # The workers (started by uvicorn's spawn, which passes this environment on) keep their metric
        # values in files there, so that /metrics sums them all (service.metrics); an empty folder per run.
        # Each worker's BLAS (and OpenMP) pool gets its share of the cores: with the default of one
        # thread per core in every worker, N workers oversubscribe the machine N times and a 2-core
        # machine served 30 requests/s with 2 workers, against 41 with one thread each (bench/speed.py).
        # A setting the user made is kept.
        share = str(max(1, len(os.sched_getaffinity(0)) // workers))
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, share)
        own = MULTIPROCESS_ENV not in os.environ
        folder = Path(tempfile.mkdtemp(prefix="mll-index-metrics-")) if own else Path(os.environ[MULTIPROCESS_ENV])
        os.environ[MULTIPROCESS_ENV] = str(folder)
        try:
            uvicorn.run("mll_index.service.app:create_app_from_env", factory=True, host=host, port=port,
                        workers=workers, log_level=log_level, access_log=False, http=HeadTimeoutProtocol,
                        **UVICORN_LIMITS)
        finally:
            if own:
                shutil.rmtree(folder, ignore_errors=True)
                del os.environ[MULTIPROCESS_ENV]
    else:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, http=HeadTimeoutProtocol,
                    **UVICORN_LIMITS)
        _exit_if_busy(app.state.pool)


def check_probe_roots(roots: Sequence[str | Path]) -> tuple[str, ...]:
    """The probe roots as absolute paths; InputError naming one that is not a folder."""
    out = []
    for root in roots:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise InputError(f"--probe-root {root}: not a folder")
        out.append(str(path.resolve()))
    return tuple(out)


def _exit_if_busy(pool: Any) -> None:
    """Exit now if selections still run in the pool once uvicorn has stopped (after EXIT_GRACE_S):
    the interpreter would wait for them at exit, and SIGTERM must stop the service within 5 s."""
    import sys
    import time

    deadline = time.monotonic() + EXIT_GRACE_S
    while time.monotonic() < deadline:
        if not pool.busy():
            return
        time.sleep(0.05)
    log.warning("stopping with selections still running")
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)


def _log_service_events() -> None:
    """Versions swapped in, versions that failed to open, failed requests: on stderr, whatever -v says
    (the CLI keeps other library logging quiet so that an error stays one line)."""
    service_log = logging.getLogger("mll_index.service")
    if not service_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        service_log.addHandler(handler)
        service_log.setLevel(logging.INFO)
        service_log.propagate = False
