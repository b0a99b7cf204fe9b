"""Probe images through the service: only regular files under the probe roots are read, nothing blocks
on a FIFO, errors name paths as the client wrote them, the probe cache follows the files' content,
deep JSON and slow clients are 4xx answers, and SIGTERM stops the server promptly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mll_index.images.decoding import UnreadableImageError, open_image
from mll_index.service.app import create_app
from mll_index.service.settings import ServiceSettings
from tests.conftest import REPO, free_port


def _pngs(small_world, n: int) -> list[Path]:  # type: ignore[no-untyped-def]
    nodes = sorted(p for p in Path(small_world.samples_dir).iterdir() if p.is_dir())
    return [next(iter(sorted(n.glob("noto-*.png")))) for n in nodes if any(n.glob("noto-*.png"))][:n]


@pytest.fixture(scope="module")
def root(small_world, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("probe-root")
    (out / "D").mkdir()
    for i, png in enumerate(_pngs(small_world, 2)):
        shutil.copy(png, out / "D" / f"{'ab'[i]}.png")
    (out / "link").symlink_to("/etc")
    return out


@pytest.fixture(scope="module")
def client(world_index: Path, root: Path):  # type: ignore[no-untyped-def]
    settings = ServiceSettings(probe_roots=(str(root),), max_probe_files=8, max_probe_bytes=1 << 20,
                               request_timeout_s=30)
    with TestClient(create_app(world_index, settings, watch=False)) as c:
        yield c


def _post(client: TestClient, path: str, body, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    """The answer, from a thread: a request that blocks fails the test instead of hanging it."""
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("r", client.post(path, **body)), daemon=True)
    thread.start()
    thread.join(timeout)
    assert "r" in out, f"{path} did not answer within {timeout} s"
    return out["r"]


def test_a_fifo_is_never_opened_and_blocks_nothing(client: TestClient, root: Path, tmp_path: Path) -> None:
    """A FIFO where a PNG was (swapped in after the listing: open_image gets its path) is refused at once
    with no writer on it; through the service the request answers promptly, and a plain select after it."""
    fifo = tmp_path / "a.png"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(UnreadableImageError, match="a FIFO, not an image file"):
        open_image(fifo)
    assert time.monotonic() - started < 1
    folder = root / "F"
    shutil.copytree(root / "D", folder)
    (folder / "a.png").unlink()
    os.mkfifo(folder / "a.png")
    for _ in range(4):  # four stalled requests stalled the whole service before
        r = _post(client, "/v1/select", {"json": {"task": {"classes": ["tiger", "lion"], "probe_images": "F"}}})
        assert r.status_code == 200, r.text
        assert r.json()["probe"]["images"] == 1
    single = _post(client, "/v1/select", {"json": {"task": {"classes": ["tiger", "lion"], "probe_images": "F/a.png"}}})
    assert single.status_code == 422 and single.json()["error"].endswith("F/a.png: not a regular file or folder")
    plain = _post(client, "/v1/select", {"json": {"task": ["tiger", "lion"]}}, timeout=10)
    assert plain.status_code == 200, plain.text


@pytest.mark.parametrize(("path", "status", "said"), [
    ("../D", 400, "'..' is not allowed"),
    ("/etc", 403, "/etc: outside the folders"),
    ("link/passwd", 403, "link/passwd: outside the folders"),
    ("nosuchdir", 422, "nosuchdir: no such file or folder under the probe roots"),
    ("x" * 300, 400, "a name in it is over 255 bytes"),
    ("a/" * 600, 400, "a path of 1200 characters; at most 1024"),
])
def test_paths_outside_the_roots_or_malformed_are_4xx_naming_only_what_was_sent(
        client: TestClient, root: Path, path: str, status: int, said: str) -> None:
    for route, body, field in (("/v1/select", {"json": {"task": {"classes": ["cow", "pig"], "probe_images": path}}},
                                "task.probe_images"),
                               ("/v1/select/batch", {"content": json.dumps([{"classes": ["cow", "pig"],
                                                                             "probe_images": path}])},
                                "body[0].probe_images")):
        r = _post(client, route, body)
        assert r.status_code == status and r.json()["field"] == field, r.text
        error = r.json()["error"]
        assert said in error and len(error.splitlines()) == 1
        for fact in (str(root), os.getcwd(), str(os.getpid()), "passwd.", "subfolder", "/etc/"):
            assert fact not in error, (fact, error)


def test_answers_name_probe_files_as_the_client_wrote_them(client: TestClient, root: Path) -> None:
    (root / "G").mkdir()
    shutil.copy(root / "D" / "a.png", root / "G" / "a.png")
    (root / "G" / "broken.png").write_bytes(b"not an image")
    r = _post(client, "/v1/select", {"json": {"task": {"classes": ["tiger", "lion"], "probe_images": ["G"]}}})
    assert r.status_code == 200, r.text
    assert r.json()["probe"]["skipped"][0][0] == "G/broken.png"
    assert str(root) not in r.text


def test_the_probe_cache_follows_the_files_not_the_path(client: TestClient, root: Path, small_world) -> None:  # type: ignore[no-untyped-def]
    """Images replaced under the same path are encoded again; a deleted folder is a 422, never the cached answer."""
    folder = root / "C"
    folder.mkdir()
    first, other = _pngs(small_world, 5)[3:5]
    shutil.copy(first, folder / "a.png")
    task = {"json": {"task": {"classes": ["tiger", "lion"], "probe_images": "C"}, "k": 2}}
    before = _post(client, "/v1/select", task).json()
    again = _post(client, "/v1/select", task).json()
    assert again["probe"]["seconds"] == before["probe"]["seconds"]      # unchanged files: from the cache
    with Image.open(other) as image:
        image.convert("L").resize((40, 60)).save(folder / "a.png.new", format="PNG")
    os.replace(folder / "a.png.new", folder / "a.png")
    after = _post(client, "/v1/select", task).json()
    assert after["probe"]["seconds"] != before["probe"]["seconds"]      # encoded again
    shutil.rmtree(folder)
    gone = _post(client, "/v1/select", task)
    assert gone.status_code == 422 and "C: no such file or folder" in gone.json()["error"]


def test_limits_on_files_and_bytes_per_request(client: TestClient, root: Path) -> None:
    many = root / "many"
    many.mkdir()
    for i in range(9):
        shutil.copy(root / "D" / "a.png", many / f"{i}.png")
    r = _post(client, "/v1/select", {"json": {"task": {"classes": ["cow", "pig"], "probe_images": "many"}}})
    assert r.status_code == 413 and "more than 8 image files" in r.json()["error"]
    (root / "big.png").write_bytes(b"\0" * ((1 << 20) + 1))
    r = _post(client, "/v1/select", {"json": {"task": {"classes": ["cow", "pig"], "probe_images": "big.png"}}})
    assert r.status_code == 413 and r.json()["error"].endswith("big.png: 1048577 bytes; at most 1048576 per image")


def test_deeply_nested_batch_is_a_400(client: TestClient) -> None:
    for body in ("[" * 3000, "[" * 3000 + "]" * 3000, "[" + "[" * 3000 + "]" * 3000 + "]"):
        for content_type in ("application/json", "application/x-ndjson"):
            r = client.post("/v1/select/batch", content=body, headers={"content-type": content_type})
            assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])
            assert set(r.json()) == {"error", "field"}


def test_models_show_no_server_paths(client: TestClient, world_index: Path) -> None:
    models = client.get("/v1/models").json()["models"]
    text = json.dumps(models)
    assert models and str(world_index.parent) not in text and os.path.expanduser("~") + "/" not in text
    assert str(world_index.parent) not in client.get("/v1/index").text


def _serve(world_index: Path, port: int, **options: object) -> subprocess.Popen[str]:
    code = ("import sys; from pathlib import Path; from mll_index.service.server import serve; "
            "from mll_index.service.settings import ServiceSettings; "
            f"serve(Path({str(world_index)!r}), port={port}, log_level='warning', "
            f"settings=ServiceSettings(body_timeout_s=2.0), **{options!r})")
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait(port: int, proc: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("the server did not start")


def test_slow_clients_are_cut_and_sigterm_stops_the_server_promptly(world_index: Path, tmp_path: Path) -> None:
    """A client that sends its body a byte at a time gets 408 at the body deadline; SIGTERM with a slow
    client and a request head half sent stops the process within 5 s."""
    port = free_port()
    proc = _serve(world_index, port, probe_roots=[str(tmp_path)])
    try:
        _wait(port, proc)
        slow = socket.create_connection(("127.0.0.1", port), timeout=60)
        slow.sendall(b"POST /v1/select HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        half = socket.create_connection(("127.0.0.1", port), timeout=60)
        half.sendall(b"POST /v1/select HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answer = slow.recv(4096)
        assert b" 408 " in answer.split(b"\r\n")[0] and 1.5 < time.monotonic() - started < 6, answer
        assert half.recv(4096) == b""  # the head deadline (10 s) closed it, with nothing to answer
        slow.close()
        half.close()
        again = socket.create_connection(("127.0.0.1", port), timeout=60)
        again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")   # held open, head unfinished
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        proc.wait(timeout=10)
        assert time.monotonic() - started < 5
        again.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
