"""Service attacks: a real `serve` on a copy of an index, replayed with what issue 29 found.

`service_attack(index)` starts the service (one worker, a probe root of its own) on a copy of the
index and sends each attack; every answer is counted per kind as one of

    ok            the right answer (200 where one is due)
    clear_error   a 4xx in the error shape {"error", "field"}, one line
    wrong         a 200 that should not be (a stale cache, a path outside the roots read)
    server_error  a 5xx, or a body that is not the error shape
    hang          no answer within the attack's deadline (or the server alive 5 s after SIGTERM)
    leak          an answer naming a server fact: its cwd, the probe root, a symlink's target, its pid,
                  subfolder counts, the home folder

and the counts come back as {kind: {outcome: n}}. Run as a script it prints them as JSON:

    python bench/robustness_service.py --index PATH
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUTCOMES = ("ok", "clear_error", "wrong", "server_error", "hang", "leak")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str, path: str, body: Any, timeout: float = 20.0) -> tuple[int | None, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - our own local server
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (TimeoutError, OSError):
        return None, ""


class _Run:
    """The counts, and the server facts an answer must not name."""

    def __init__(self, url: str, secrets: list[str]) -> None:
        self.url, self.secrets = url, [s for s in secrets if s and len(s) > 3]
        self.counts: dict[str, Counter[str]] = {}

    def count(self, kind: str, outcome: str) -> str:
        self.counts.setdefault(kind, Counter())[outcome] += 1
        return outcome

    def judge(self, kind: str, status: int | None, text: str, want_ok: bool = False) -> str:
        if status is None:
            return self.count(kind, "hang")
        if any(secret in text for secret in self.secrets):
            return self.count(kind, "leak")
        if status >= 500:
            return self.count(kind, "server_error")
        if status == 200:
            if "\n{\"error\"" in "\n" + text and not want_ok:
                return self.count(kind, "clear_error")   # a batch stream's last line
            return self.count(kind, "ok" if want_ok else "wrong")
        try:
            body = json.loads(text)
            shaped = set(body) == {"error", "field"} and "\n" not in body["error"]
        except (ValueError, TypeError):
            shaped = False
        return self.count(kind, "clear_error" if shaped else "server_error")

    def task(self, kind: str, probe_images: Any, want_ok: bool = False, batch: bool = False) -> str:
        task = {"classes": ["tiger", "lion"], "probe_images": probe_images}
        if batch:
            status, text = _post(self.url, "/v1/select/batch", [task])
        else:
            status, text = _post(self.url, "/v1/select", {"task": task})
        return self.judge(kind + ("_batch" if batch else ""), status, text, want_ok)


def _png(path: Path, shade: int) -> None:
    from PIL import Image

    Image.new("RGB", (64, 48), (shade, 255 - shade, 128)).save(path, format="PNG")


def _attacks(run: _Run, root: Path) -> None:
    folder = root / "D"
    folder.mkdir()
    _png(folder / "a.png", 10)
    _png(folder / "b.png", 200)
    (root / "linkdir").symlink_to("/etc")
    run.task("probe_ok", "D", want_ok=True)
    # 1. A FIFO where a PNG was, four times over; then a plain select must still answer.
    (folder / "b.png").unlink()
    os.mkfifo(folder / "b.png")
    for _ in range(4):
        run.task("fifo", "D", want_ok=True)
    run.task("fifo_file", "D/b.png")
    status, text = _post(run.url, "/v1/select", {"task": ["tiger", "lion"]}, timeout=10)
    run.judge("plain_after_fifo", status, text, want_ok=True)
    # 2. Paths outside the roots, malformed or missing; each on both routes.
    for kind, path in (("long_path", "x" * 300), ("long_path_total", "a/" * 600), ("dotdot", "../D"),
                       ("outside", "/etc"), ("symlink", "linkdir/passwd"), ("proc", "/proc/self/environ"),
                       ("missing", "nosuchdir"), ("device", "/dev/zero"), ("root_slash", "/")):
        for batch in (False, True):
            run.task(kind, path, batch=batch)
    # 3. The cache: replaced images are encoded again; a deleted folder is refused.
    (folder / "b.png").unlink()
    first = _post(run.url, "/v1/select", {"task": {"classes": ["tiger", "lion"], "probe_images": "D"}})
    _png(folder / "a.new", 90)
    os.replace(folder / "a.new", folder / "a.png")
    second = _post(run.url, "/v1/select", {"task": {"classes": ["tiger", "lion"], "probe_images": "D"}})
    try:
        same = json.loads(first[1])["probe"]["seconds"] == json.loads(second[1])["probe"]["seconds"]
    except (ValueError, KeyError, TypeError):
        same = True
    run.count("stale_cache", "wrong" if same else "ok")
    shutil.rmtree(folder)
    run.task("deleted_folder", "D")
    # 4. Deep nesting on the batch route.
    status, text = _post(run.url, "/v1/select/batch", b"[" * 3000)
    run.judge("deep_nesting", status, text)
    # 5. What /v1/models and /v1/index say about the server.
    for route in ("/v1/models", "/v1/index"):
        try:
            with urllib.request.urlopen(run.url + route, timeout=10) as response:  # noqa: S310
                status, text = response.status, response.read().decode()
        except OSError:
            status, text = None, ""
        run.judge(route.replace("/v1/", "get_"), status, text, want_ok=True)


def _slow_clients(run: _Run, port: int, n: int = 20, deadline_s: float = 20.0) -> None:
    """n connections with half a request head each: every one must be closed by the server in time."""
    sockets = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=deadline_s)
        sock.sendall(b"POST /v1/select HTTP/1.1\r\nHost: x\r\n")
        sockets.append(sock)
    for sock in sockets:
        try:
            sock.recv(1024)   # b"" once the server closes it (or its 4xx)
            closed = True
        except (TimeoutError, OSError):
            closed = False
        run.count("slow_client", "ok" if closed else "hang")
        sock.close()


def service_attack(index: Path, *, start_timeout_s: float = 180.0) -> dict[str, dict[str, int]]:
    """Start a real service on a copy of `index` and replay the attacks; {kind: {outcome: count}}.

    Needs an index that `serve` opens (labeled); the copy, the probe root and the server are removed after."""
    work = Path(tempfile.mkdtemp(prefix="mll-service-attack-"))
    copy, root = work / "index", work / "probes"
    shutil.copytree(index, copy, symlinks=True)
    root.mkdir()
    port = _free_port()
    code = ("from pathlib import Path; from mll_index.service.server import serve; "
            f"serve(Path({str(copy)!r}), port={port}, log_level='warning', probe_roots=[{str(root)!r}])")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=work, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    secrets = [str(work), str(root.resolve()), str(copy.parent), os.path.expanduser("~") + "/", f"/proc/{proc.pid}",
               "subfolder", "/etc/", str(REPO)]
    run = _Run(url, secrets)
    try:
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(url + "/readyz", timeout=2).read()  # noqa: S310
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"the service on {copy} did not start")
        _attacks(run, root)
        _slow_clients(run, port)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
            run.count("sigterm", "ok")
        except subprocess.TimeoutExpired:
            run.count("sigterm", "hang")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return {kind: {o: counts.get(o, 0) for o in OUTCOMES} for kind, counts in sorted(run.counts.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="a labeled index (copied; never modified)")
    counts = service_attack(parser.parse_args().index)
    totals = {o: sum(c[o] for c in counts.values()) for o in OUTCOMES}
    print(json.dumps({"service_attack": counts, "totals": totals}, indent=1))


if __name__ == "__main__":
    main()
