"""Labeling on a real local Ray cluster (`ray start --head` on 127.0.0.1, 2 CPUs), on the small emoji world.

The cluster is started once for the module and stopped after it; the driver runs either in this
process (`label_on_ray`) or as the CLI in a subprocess, which a test kills with SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mll_index.errors import InputError
from mll_index.index.node_index import load_index
from mll_index.labeling.samples import scan_samples
from mll_index.labels.folders import labeled_models, load_label, read_sample_table
from mll_index.models.hub import load_hub
from mll_index.verify import check_index
from tests.conftest import REPO, free_port, run_cli

ray = pytest.importorskip("ray", reason="the cluster extra is not installed (pip install 'mll-index[cluster]')")


def _ray(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # Without token authentication whatever this machine holds: drivers connect with or without a token.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "ray.scripts.scripts", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """The address (127.0.0.1:PORT) of a head node with 2 CPUs, started for this module (its GCS listens on
    every interface; the node registers under the machine's own address)."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")   # short: Ray's socket paths must fit 107 bytes
    started = _ray("start", "--head", f"--port={port}", "--num-cpus=2",
                   "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
                   "--object-store-memory=300000000", f"--temp-dir={temp}")
    assert started.returncode == 0, started.stderr[-2000:]
    address = f"127.0.0.1:{port}"
    try:
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _ray("stop", "--force")
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture()
def fresh_index(world_index: Path, tmp_path: Path) -> Path:
    """The world's node index without any label."""
    path = tmp_path / "index"
    shutil.copytree(world_index, path)
    shutil.rmtree(path / "labels")
    return path


def _hub_with(small_world, tmp_path: Path, copies: int = 0, broken: bool = False) -> Path:  # type: ignore[no-untyped-def]
    """The world's hub file, plus `copies` more ids for each model (same weights) and a model whose
    checkpoint is not a checkpoint."""
    hub = json.loads(small_world.hub_path.read_text())
    base = small_world.hub_path.parent
    models = []
    for m in hub["models"]:
        entry = {**m, "checkpoint": str(base / m["checkpoint"]), "config": str(base / m["config"])}
        models.append(entry)
        models.extend({**entry, "id": f"{m['id']}-copy{c}"} for c in range(copies))
    if broken:
        bad = tmp_path / "broken.pt"
        bad.write_bytes(b"not a checkpoint")
        models.append({**models[0], "id": "broken-weights", "checkpoint": str(bad)})
    path = tmp_path / "hub.json"
    path.write_text(json.dumps({"name": "world-plus", "models": models}))
    return path


def _assert_same_labels(a: Path, b: Path, model_ids: list[str]) -> None:
    """Counts equal; image and node embeddings to cosine >= 0.999 (not one CPU's rounding)."""
    for model_id in model_ids:
        la, lb = load_label(a, model_id, verify=True), load_label(b, model_id, verify=True)
        ta, tb = read_sample_table(a, la.manifest["samples"]), read_sample_table(b, lb.manifest["samples"])
        assert ta.paths == tb.paths and ta.node_wnids == tb.node_wnids
        assert np.array_equal(np.asarray(la.counts), np.asarray(lb.counts)), model_id
        for name in ("image_embeddings", "node_embeddings"):
            x = np.asarray(getattr(la, name), np.float32)
            y = np.asarray(getattr(lb, name), np.float32)
            cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
            assert cos.min() >= 0.999, (model_id, name, float(cos.min()))


def _label_cli(index: Path, hub: Path, samples: Path, address: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mll_index.cli", "label", "--index", str(index), "--hub", str(hub),
                             "--samples", str(samples), "--ray", address, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


def test_ray_labels_equal_single_process_labels(cluster: str, fresh_index: Path, world_index: Path,
                                                small_world) -> None:  # type: ignore[no-untyped-def]
    from mll_index.cluster import label_on_ray

    hub = load_hub(small_world.hub_path)
    report = label_on_ray(fresh_index, hub, small_world.samples_dir, address=cluster, shard_images=64,
                          batch_size=32)
    ids = [m.id for m in hub]
    assert sorted(report.labeled) == sorted(ids) and not report.failed
    # Several tasks per model, on both of the node's workers, and the time accounted for.
    assert report.shards > 2
    assert sum(w["images"] for w in report.workers.values()) == len(ids) * len(scan_samples(small_world.samples_dir))
    assert set(report.phases) == {"decode_s", "encode_s", "load_s", "write_s", "wall_s"}
    assert report.nodes == [ray.util.get_node_ip_address()]
    _assert_same_labels(world_index, fresh_index, ids)
    assert check_index(fresh_index, checksums=True) == []
    # A second run finds every label current and encodes nothing.
    again = label_on_ray(fresh_index, hub, small_world.samples_dir, address=cluster)
    assert sorted(again.skipped) == sorted(ids) and again.labeled == [] and again.shards == 0


def test_unloadable_model_fails_alone(cluster: str, fresh_index: Path, small_world,  # type: ignore[no-untyped-def]
                                      tmp_path: Path) -> None:
    from mll_index.cluster import label_on_ray

    hub = load_hub(_hub_with(small_world, tmp_path, broken=True))
    report = label_on_ray(fresh_index, hub, small_world.samples_dir, address=cluster, shard_images=256)
    assert list(report.failed) == ["broken-weights"]
    why = report.failed["broken-weights"]
    assert "broken-weights" in why and "\n" not in why and "Traceback" not in why
    assert sorted(report.labeled) == sorted(m.id for m in hub if m.id != "broken-weights")
    assert "broken-weights" not in labeled_models(fresh_index)


def test_sample_folder_a_node_cannot_see_is_named_before_labeling(cluster: str, small_world) -> None:  # type: ignore[no-untyped-def]
    from mll_index.cluster.connect import connect
    from mll_index.cluster.labeling import check_nodes
    from mll_index.labeling.run import sample_table

    connect(cluster)
    full = sample_table(scan_samples(small_world.samples_dir))
    lines: list[str] = []
    node = ray.util.get_node_ip_address()
    assert check_nodes(ray, str(small_world.samples_dir.resolve()), full, lines.append) == [node]
    with pytest.raises(InputError, match=f"sample path /nonexistent/samples is not visible on node {node}: "):
        check_nodes(ray, "/nonexistent/samples", full, lines.append)
    # A file the node sees with another size than the driver does (another copy of the folder) is named too.
    stamps = list(full.stamps)
    stamps[0] = "1:0"
    other = type(full)(full.root, full.paths, full.wnids, full.node_wnids, tuple(stamps))
    with pytest.raises(InputError, match=r"bytes where the driver sees 1"):
        check_nodes(ray, str(small_world.samples_dir.resolve()), other, lines.append)


def test_worker_killed_mid_shard_still_leaves_complete_labels(cluster: str, fresh_index: Path, world_index: Path,
                                                              small_world) -> None:  # type: ignore[no-untyped-def]
    proc = _label_cli(fresh_index, small_world.hub_path, small_world.samples_dir, cluster, "--shard-images", "32",
                      "--batch-size", "16")
    killed = None
    deadline = time.time() + 180
    while killed is None and proc.poll() is None and time.time() < deadline:
        killed = _kill_a_running_shard()
        time.sleep(0.02)
    out, err = proc.communicate(timeout=300)
    assert killed is not None, "no Ray worker was seen encoding a shard"
    assert proc.returncode == 0, err[-3000:]
    ids = [m.id for m in load_hub(small_world.hub_path)]
    assert sorted(line.split()[1] for line in out.splitlines() if line.startswith("labeled")) == sorted(ids)
    assert "worker" in err and "images/s" in err     # the per-worker report
    _assert_same_labels(world_index, fresh_index, ids)


def _kill_a_running_shard() -> int | None:
    """SIGKILL one Ray worker process while it runs encode_shard (its process title says so)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::encode_shard"):
            os.kill(int(pid), signal.SIGKILL)
            return int(pid)
    return None


def test_driver_killed_and_rerun_labels_only_what_is_not_done(cluster: str, fresh_index: Path, small_world,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    hub_file = _hub_with(small_world, tmp_path, copies=1)
    ids = [m.id for m in load_hub(hub_file)]
    proc = _label_cli(fresh_index, hub_file, small_world.samples_dir, cluster, "--shard-images", "64")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not labeled_models(fresh_index):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    done = sorted(labeled_models(fresh_index))
    assert done, "no model was labeled before the driver was killed"
    load_index(fresh_index)     # still loadable, and every finished label whole
    for model_id in done:
        load_label(fresh_index, model_id, verify=True)
    rerun = _label_cli(fresh_index, hub_file, small_world.samples_dir, cluster)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-3000:]
    current = sorted(line.split()[1] for line in out.splitlines() if line.startswith("current"))
    labeled = sorted(line.split()[1] for line in out.splitlines() if line.startswith("labeled"))
    assert current == done
    assert sorted(current + labeled) == sorted(ids)
    assert check_index(fresh_index, checksums=True) == []


def test_unreachable_or_malformed_address_is_one_line(fresh_index: Path, small_world) -> None:  # type: ignore[no-untyped-def]
    started = time.time()
    closed = run_cli("label", "--index", str(fresh_index), "--hub", str(small_world.hub_path), "--samples",
                     str(small_world.samples_dir), "--ray", f"127.0.0.1:{free_port()}")
    assert time.time() - started < 30
    assert closed.returncode == 1
    assert closed.stderr.count("\n") == 1 and "cannot reach the Ray cluster at 127.0.0.1:" in closed.stderr
    malformed = run_cli("label", "--index", str(fresh_index), "--hub", str(small_world.hub_path), "--samples",
                        str(small_world.samples_dir), "--ray", "head-without-port")
    assert malformed.returncode == 1 and malformed.stderr.count("\n") == 1 and "HOST:PORT" in malformed.stderr
    together = run_cli("label", "--index", str(fresh_index), "--hub", str(small_world.hub_path), "--samples",
                       str(small_world.samples_dir), "--shard-images", "8")
    assert together.returncode == 2 and "--ray" in together.stderr


def test_the_single_machine_path_never_imports_ray() -> None:
    code = ("import sys, mll_index.cli, mll_index.labels.folders, mll_index.images.loader, mll_index.selection.selector, mll_index.reuse.ensemble; "
            "from mll_index.cluster import connect; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_cluster_with_token_authentication_is_reached_with_the_machines_token(fresh_index: Path, small_world,  # type: ignore[no-untyped-def]
                                                                               tmp_path: Path) -> None:
    """A head started where a token exists requires it (Ray's default): the driver sends it without RAY_AUTH_MODE."""
    import secrets

    token = secrets.token_hex(32)
    port = free_port()
    temp = tempfile.mkdtemp(prefix="rayt", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    started = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
                              "--num-cpus=1", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
                              "--object-store-memory=200000000", f"--temp-dir={temp}"],
                             capture_output=True, text=True, timeout=120, env=env, check=False)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        driver_env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
        model = load_hub(small_world.hub_path).ids[0]
        args = [sys.executable, "-m", "mll_index.cli", "label", "--index", str(fresh_index), "--hub",
                str(small_world.hub_path), "--samples", str(small_world.samples_dir), "--model", model,
                "--ray", f"127.0.0.1:{port}"]
        wrong = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
                               env={**driver_env, "RAY_AUTH_TOKEN": "0" * 64})
        assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1
        assert "authentication token" in wrong.stderr
        right = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
                               env={**driver_env, "RAY_AUTH_TOKEN": token})
        assert right.returncode == 0, right.stderr[-2000:]
        assert f"labeled  {model}" in right.stdout
    finally:
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True,
                       timeout=120, env=env, check=False)
        shutil.rmtree(temp, ignore_errors=True)
