"""Connecting to a Ray cluster: which address, and a failure within seconds that names it.

`ray.init` on an address where nothing answers, or where something that is not Ray answers,
waits for about 40 s and then aborts the process from Ray's C++ core. Users get one line
naming the address instead: the port is tried first (TCP, a few seconds), then `ray.init`
runs in a thread that is given up on after `CONNECT_TIMEOUT_S`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mll_index.errors import InputError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 20.0    # the whole connection, port check included: under the 30 s users are promised
PORT_TIMEOUT_S = 5.0
INSTALL_HINT = "install it with `pip install 'mll-index[cluster]'`"


@dataclass(frozen=True)
class RayAddress:
    """Where the cluster is: `kind` is "auto" (the cluster this machine belongs to), "local" (a
    throwaway cluster started in this process), "gcs" (`host:port` of a head node) or "client"
    (`ray://host:port`, Ray Client); `text` is what the user gave, for messages."""

    kind: str
    text: str
    host: str | None = None
    port: int | None = None


def parse_address(address: str | None) -> RayAddress:
    """Read `--ray`'s value; "auto" (or None) takes RAY_ADDRESS when it is set.

    Raises:
        InputError: an address that is none of auto, local, host:port or ray://host:port.
    """
    text = (address or "auto").strip()
    if text == "auto" and os.environ.get("RAY_ADDRESS"):
        text = os.environ["RAY_ADDRESS"].strip()
    if text in ("auto", "local"):
        return RayAddress(text, text)
    rest = text.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--ray {text!r}: expected auto, local, HOST:PORT (the head node's GCS port, 6379 by default) "
                         "or ray://HOST:PORT (Ray Client, 10001 by default)")
    return RayAddress("client" if text.startswith("ray://") else "gcs", text, host.strip("[]"), int(port))


def import_ray() -> Any:
    """The `ray` module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(f"labeling on a Ray cluster needs Ray, which is not installed; {INSTALL_HINT}") from None
    return ray


def _use_token_if_present() -> bool:
    """Send the cluster token when this machine has one and RAY_AUTH_MODE is unset, as `ray start` does:
    a head started where a token exists requires it, and a cluster without authentication ignores it.
    Returns whether a token will be sent. Must run before `import ray`."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode:
        return mode.lower() == "token"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(path):
        os.environ["RAY_AUTH_MODE"] = "token"
        return True
    return False


def _port_open(host: str, port: int, timeout_s: float) -> str | None:
    """None when something accepts TCP connections at host:port, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def connect(address: str | None, *, num_cpus: int | None = None, timeout_s: float = CONNECT_TIMEOUT_S) -> RayAddress:
    """Connect this process to the Ray cluster at `address` (see `parse_address`); a no-op when connected.

    "local" starts a cluster inside this process with `num_cpus` CPUs (all of them when None), for
    trying the cluster path on one machine.

    Raises:
        InputError: Ray missing, a malformed address, nothing listening there, or no answer from Ray
            within `timeout_s` seconds; always one line naming the address.
    """
    where = parse_address(address)
    # Before Ray is imported: it reads RAY_AUTH_MODE once, at import.
    token = _use_token_if_present() if where.kind != "local" else False
    ray = import_ray()
    if ray.is_initialized():
        return where
    if where.kind in ("gcs", "client"):
        if where.kind == "client":
            try:
                import grpc  # noqa: F401  (Ray Client's transport)
            except ImportError:
                raise InputError(f"--ray {where.text}: ray:// addresses need Ray Client; {INSTALL_HINT}") from None
        started = time.monotonic()
        why = _port_open(where.host or "", where.port or 0, min(PORT_TIMEOUT_S, timeout_s))
        timeout_s = max(1.0, timeout_s - (time.monotonic() - started))
        if why is not None:
            raise InputError(f"cannot reach the Ray cluster at {where.text}: {why} (is `ray start --head` running "
                             "there, and is the port open?)")
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}
    if where.kind == "local":
        kwargs.update(address="local", num_cpus=num_cpus, include_dashboard=False)
    else:
        kwargs["address"] = where.text
    outcome: dict[str, BaseException] = {}

    def init() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as exc:  # noqa: BLE001  (handed to the caller's thread below)
            outcome["error"] = exc

    if where.kind == "local":
        # On this thread: the processes a local cluster starts die with the thread that started them
        # (their parent-death signal follows the thread), and starting one cannot hang on a network.
        init()
        thread = None
    else:
        # A daemon thread: one that never returns does not keep the process alive after the error below.
        # Ray's C++ core logs each retry on stderr meanwhile; users get our one line instead.
        thread = threading.Thread(target=init, name="ray-connect", daemon=True)
        with _stderr_to_log() as said:
            thread.start()
            thread.join(timeout_s)
    if thread is not None and thread.is_alive():
        if "InvalidAuthToken" in said[0] or "Unauthenticated" in said[0]:
            what = "refused this machine's authentication token" if token else "requires an authentication token"
            raise InputError(f"the Ray cluster at {where.text} {what} (set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH, to "
                             "the token of that cluster: `ray get-auth-token` on its head node)")
        raise InputError(f"cannot reach the Ray cluster at {where.text}: no answer from Ray within {timeout_s:.0f} s "
                         "(something listens there, but it is not a Ray head node's GCS port)")
    if "error" in outcome:
        exc = outcome["error"]
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if where.kind == "auto":
            raise InputError("no running Ray cluster found on this machine (--ray auto, RAY_ADDRESS unset); start one "
                             "with `ray start --head`, or give --ray HOST:PORT") from None
        raise InputError(f"cannot connect to the Ray cluster at {where.text}: {first}") from None
    log.info("connected to the Ray cluster at %s", where.text)
    return where


@contextlib.contextmanager
def _stderr_to_log() -> Iterator[list[str]]:
    """Send file descriptor 2 to a temporary file meanwhile (what Ray's C++ core writes there, which
    Python's logging cannot catch); its text goes to this module's debug log and, after the block,
    into the one-element list yielded."""
    said = [""]
    try:
        saved = os.dup(2)
    except OSError:     # no stderr to redirect
        yield said
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            said[0] = sink.read().decode("utf-8", "replace").strip()
            if said[0]:
                log.debug("Ray while connecting: %s", said[0])


def disconnect() -> None:
    """Leave the cluster (stops a `local` one)."""
    ray = import_ray()
    if ray.is_initialized():
        ray.shutdown()
