"""The selection service: answers equal to local selection, limits and errors, version swaps, and a real server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mll_index.selection.selector import open_selector
from mll_index.selection.task import task_from_json
from mll_index.service.app import create_app
from mll_index.service.settings import ServiceSettings
from mll_index.service.version import index_version
from tests.cli.runner import HEAVY, assert_one_line_error, modules_of
from tests.conftest import GOLDFISH, LAPTOP, PIZZA, REPO, TENCH, free_port, run_cli

TOKEN = "s3cret-token"


def _json(selector, task, **settings) -> dict:  # type: ignore[no-untyped-def]
    """The selection as the CLI prints it (`answer.answer_task`), read back (tuples become lists)."""
    from mll_index.selection.answer import answer_task

    return json.loads(json.dumps(answer_task(selector, task, **settings)))


@pytest.fixture(scope="module")
def selector(world_index: Path, embedder):  # type: ignore[no-untyped-def]
    return open_selector(world_index, embedder)


@pytest.fixture(scope="module")
def client(world_index: Path):  # type: ignore[no-untyped-def]
    app = create_app(world_index, ServiceSettings(batch_chunk=2, max_classes=50, max_batch=20,
                                                  max_body_bytes=64 * 1024), watch=False)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def locked(world_index: Path):  # type: ignore[no-untyped-def]
    with TestClient(create_app(world_index, ServiceSettings(api_key=TOKEN), watch=False)) as c:
        yield c


TASKS = [
    ["tiger", "lion", "banana"],
    {"name": "farm", "classes": ["cow", {"name": "pig", "captions": ["a pink farm animal"]}], "domain": "noto"},
    ["golden retriever", "cat"],
]


@pytest.mark.parametrize("task", TASKS)
def test_select_equals_select_models(client: TestClient, selector, task) -> None:  # type: ignore[no-untyped-def]
    options = {"k": 2, "alpha": 0.5, "mode": "restricted", "explain": True, "ranking": 3}
    r = client.post("/v1/select", json={"task": task, **options})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body.pop("index_version") == r.headers["x-index-version"] == index_version(selector.index.path)
    expected = _json(selector, task_from_json(task), k=2, alpha=0.5, mode="restricted", explain=True, ranking_size=3)
    assert body == expected
    plain = client.post("/v1/select", json={"task": task}).json()
    plain.pop("index_version")
    assert plain == _json(selector, task_from_json(task))


def test_select_takes_the_rule(client: TestClient, selector) -> None:  # type: ignore[no-untyped-def]
    """`rule` as `select --rule`: the paper's rule answers as locally; the calibrated one where the index
    holds none is a 4xx naming `mll-index calibrate` (the batch's query: its error line)."""
    r = client.post("/v1/select", json={"task": ["tiger", "lion"], "rule": "mll", "k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    body.pop("index_version")
    assert body == _json(selector, task_from_json(["tiger", "lion"]), k=2, rule="mll") and body["rule"] == "mll"
    refused = client.post("/v1/select", json={"task": ["tiger", "lion"], "rule": "calibrated"})
    assert 400 <= refused.status_code < 500 and "calibrate" in refused.text, refused.text
    batch = client.post("/v1/select/batch?rule=calibrated", json=[["tiger", "lion"]])   # refused as it is selected:
    assert json.loads(batch.text.splitlines()[-1])["error"].count("mll-index calibrate") == 1  # the stream's last line
    bad = client.post("/v1/select", json={"task": ["tiger"], "rule": "fancy"})
    assert bad.status_code == 422 and "rule" in bad.text


def test_select_takes_the_label_source(client: TestClient, selector) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/v1/select", json={"task": TASKS[0], "labels": "image"})
    assert r.status_code == 200, r.text
    body = r.json()
    body.pop("index_version")
    assert body == _json(selector, task_from_json(TASKS[0]), labels="image")
    missing = client.post("/v1/select", json={"task": TASKS[0], "labels": "published"})
    assert 400 <= missing.status_code < 500 and "no published labels" in missing.text


def test_batch_answers_in_input_order(client: TestClient, selector) -> None:  # type: ignore[no-untyped-def]
    tasks = TASKS + [["tench", "goldfish"], ["pizza", "banana", "apple"]]   # 5 tasks in chunks of 2
    expected = [_json(selector, task_from_json(t), k=2, ranking_size=None) for t in tasks]
    as_array = client.post("/v1/select/batch?k=2&ranking=0", content=json.dumps(tasks))
    as_jsonl = client.post("/v1/select/batch?k=2&ranking=0", content="\n".join(json.dumps(t) for t in tasks) + "\n\n",
                           headers={"content-type": "application/x-ndjson"})
    one = client.post("/v1/select/batch", content=json.dumps(tasks[0]) + "\n",
                      headers={"content-type": "application/x-ndjson"})   # one JSONL line: one task, not an array
    assert one.status_code == 200 and len(one.text.splitlines()) == 1, one.text
    for r in (as_array, as_jsonl):
        assert r.status_code == 200, r.text
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert {line.pop("index_version") for line in lines} == {r.headers["x-index-version"]}
        assert lines == expected


def test_probe_images_are_refused_without_a_probe_root(client: TestClient, tmp_path: Path) -> None:
    """A service started without probe roots reads no client path: the batch is refused before its first
    line (403, naming the task's field), and so is one task; nothing about the path is said."""
    (tmp_path / "empty").mkdir()
    tasks = [["tiger", "lion"], {"classes": ["cow", "pig"], "probe_images": str(tmp_path / "empty")}]
    for r, field in ((client.post("/v1/select/batch", content=json.dumps(tasks)), "body[1].probe_images"),
                     (client.post("/v1/select", json={"task": tasks[1]}), "task.probe_images")):
        assert r.status_code == 403 and r.json()["field"] == field, r.text
        assert "--probe-root" in r.json()["error"] and str(tmp_path) not in r.text


def test_select_answers_keep_to_the_openapi_schema(client: TestClient, tmp_path: Path) -> None:
    """Every key of a selection answer (the task's and each class's) is in the documented schema."""
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    r = client.post("/v1/select", json={"task": ["tiger", "lion"], "mode": "counts"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert "predicted_accuracy" in answer and "predicted_accuracy_about" in answer
    assert set(answer) <= set(schemas["SelectionAnswer"]["properties"])
    assert set(answer["predicted_accuracy"]) <= set(schemas["Interval"]["properties"])
    class_schema = schemas["SelectionAnswer"]["properties"]["classes"]["items"]["$ref"].rsplit("/", 1)[1]
    assert all(set(c) <= set(schemas[class_schema]["properties"]) for c in answer["classes"])
    assert "predicted_accuracy" in answer["classes"][0]


def test_match_answers_as_the_cli_prints(client: TestClient, world_index: Path) -> None:
    names = ["tench", "crane", "golden_retrievers"]
    r = client.post("/v1/match", json={"names": names, "k": 3})
    assert r.status_code == 200, r.text
    cli = run_cli("match", "--index", str(world_index), "--format", "jsonl", "-k", "3", *names)
    assert cli.returncode == 0, cli.stderr
    assert r.json()["results"] == [json.loads(line) for line in cli.stdout.splitlines()]
    lemma = client.post("/v1/match", json={"names": ["tiger"], "method": "lemma"}).json()["results"][0]
    assert lemma["matches"] and all(m["lemma_match"] for m in lemma["matches"]) and lemma["low_confidence"] is False


def test_models_index_health_and_metrics(client: TestClient, selector, world_index: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    version = ready.json()["index_version"]
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["models"]] == sorted(selector.store.model_ids)
    assert all(m["labels"] == ["counts", "image"] for m in models["models"])
    info = client.get("/v1/index")
    summary = info.json()
    assert summary["nodes"] == selector.index.size and summary["index_version"] == version
    assert summary["embedder"]["dim"] == 384 and summary["format_versions"]["index"] in (1, 2)
    assert info.headers["x-index-version"] == version
    openapi = client.get("/openapi.json").json()
    assert openapi["paths"].keys() >= {"/v1/select", "/v1/select/batch", "/v1/match", "/v1/models", "/v1/index"}
    assert openapi["components"]["schemas"].keys() >= {"SelectRequest", "SelectionAnswer", "MatchAnswer", "ErrorAnswer"}
    assert client.get("/docs").status_code == 200
    client.post("/v1/select", json={"task": ["dog"]})   # a 422, counted by status
    metrics = client.get("/metrics").text
    assert 'mll_index_requests_total{method="GET",route="/healthz",status="200"}' in metrics
    assert 'mll_index_requests_total{method="POST",route="/v1/select",status="422"}' in metrics
    assert 'mll_index_request_seconds_bucket{le="0.5",route="/v1/select"}' in metrics
    assert f'version="{version}"' in metrics


def test_metrics_name_every_route_of_the_app_and_no_stray_path(client: TestClient) -> None:
    """The routers' paths and FastAPI's own (/openapi.json) are route labels; any other path is "unmatched"."""
    client.get("/openapi.json")
    client.post("/v1/match", json={"names": ["tench"], "k": 1})
    client.get("/no/such/path")
    metrics = client.get("/metrics").text
    assert 'mll_index_requests_total{method="GET",route="/openapi.json",status="200"}' in metrics
    assert 'mll_index_requests_total{method="POST",route="/v1/match",status="200"}' in metrics
    assert 'mll_index_requests_total{method="GET",route="unmatched",status="404"}' in metrics
    assert "/no/such/path" not in metrics


BAD = [  # (route, body, status, field, words in the message)
    ("/v1/select", b'{"task": ["a", "b"', 400, "body", "malformed JSON"),
    ("/v1/select", b'[1, 2]', 422, "body", "valid dictionary"),
    ("/v1/select", {"task": ["dog"]}, 422, "task.classes", "at least 2 classes"),
    ("/v1/select", {"task": ["dog", "dog"]}, 422, "task.classes", "duplicate"),
    ("/v1/select", {"task": "dog, cat"}, 422, "task", "list of class names"),
    ("/v1/select", {"task": {"classes": ["cow", 7]}}, 422, "task.classes", "a class is a name"),
    ("/v1/select", {"task": {"classes": ["cow", "pig"], "domain": 3}}, 422, "task.domain", "must be a string"),
    ("/v1/select", {"task": {"classes": [{"name": "cow", "captions": 5}, "pig"]}}, 422, "task.classes[0].captions",
     "list of strings"),
    ("/v1/select", {"task": {"classes": ["cow", {"name": "pig", "captions": "pink"}]}}, 422,
     "task.classes[1].captions", "list of strings"),
    ("/v1/select", {"task": {"classes": ["cow", "pig"], "colour": "red"}}, 422, "task.colour", "unknown keys"),
    ("/v1/select", {"task": {"classes": ["cow", "pig"], "probe_images": 5}}, 422, "task.probe_images",
     "'probe_images' must be"),
    ("/v1/select", {"task": [f"class {i}" for i in range(51)]}, 413, "task.classes", "at most 50"),
    ("/v1/select", {"task": ["cow", "pig"], "k": "2"}, 422, "k", "valid integer"),
    ("/v1/select", {"task": ["cow", "pig"], "k": 0}, 422, "k", "greater than or equal to 1"),
    ("/v1/select", {"task": ["cow", "pig"], "alpha": 1.5}, 422, "alpha", "less than or equal to 1"),
    ("/v1/select", {"task": ["cow", "pig"], "mode": "magic"}, 422, "mode", "'auto', 'restricted' or 'counts'"),
    ("/v1/select", {"task": ["cow", "pig"], "explain": "yes"}, 422, "explain", "valid boolean"),
    ("/v1/select", {"task": ["cow", "pig"], "labels": "mine"}, 422, "labels", "'auto', 'image'"),
    ("/v1/select", {"task": ["cow", "pig"], "top": 3}, 422, "top", "Extra inputs"),
    ("/v1/select", {"k": 2}, 422, "task", "field required"),
    ("/v1/select", {"classes": ["tiger", "lion"]}, 422, "task", "the body is {\"task\""),
    ("/v1/select", {"task": ["x" * 70_000, "b"]}, 413, "body", "at most 65536"),
    ("/v1/select/batch", b'["cow", "pig"]\n{"classes": ', 400, "line 2", "malformed JSON"),
    ("/v1/select/batch", b'["cow", "pig"]', 422, "body", "one task"),
    ("/v1/select/batch", b'[["cow", "pig"], ["hen"]]', 422, "body[1].classes", "at least 2 classes"),
    ("/v1/select/batch", b"", 422, "body", "no tasks"),
    ("/v1/select/batch", json.dumps([["cow", "pig"]] * 21).encode(), 413, "body", "at most 20"),
    ("/v1/select/batch?mode=magic", b'[["cow", "pig"]]', 422, "mode", "'auto'"),
    ("/v1/match", {"names": ["tench", "  "]}, 422, "names", "empty"),
    ("/v1/match", {"names": "tench"}, 422, "names", "valid list"),
    ("/v1/match", {"names": ["tench"], "method": "magic"}, 422, "method", "'combined'"),
]


@pytest.mark.parametrize("route, body, status, field, words", BAD)
def test_a_bad_request_is_a_4xx_naming_the_field(client: TestClient, route: str, body, status: int, field: str,  # type: ignore[no-untyped-def]
                                                 words: str) -> None:
    if isinstance(body, bytes):
        r = client.post(route, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(route, json=body)
    assert r.status_code == status, r.text
    error = r.json()
    assert error["field"] == field and words in error["error"], error
    assert "Traceback" not in r.text


def test_a_chunked_body_over_the_limit_is_refused(client: TestClient) -> None:
    def chunks():  # no Content-Length: the limit is kept while reading
        for _ in range(40):
            yield b" " * 4096
    r = client.post("/v1/select", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body"


def test_the_time_limit_is_a_503_or_a_last_error_line(world_index: Path) -> None:
    with TestClient(create_app(world_index, ServiceSettings(request_timeout_s=0), watch=False)) as c:
        # 40 names never embedded before: the text model runs for far longer than one turn of the event loop.
        r = c.post("/v1/select", json={"task": [f"unseen thing {i} {os.getpid()}" for i in range(40)]})
        assert r.status_code == 503 and "took over" in r.json()["error"]
        r = c.post("/v1/select/batch", content=json.dumps([["tiger", "lion"]]))
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert r.status_code == 200 and len(lines) == 1 and "took over" in lines[0]["error"]


def test_the_token_is_required_everywhere_but_healthz(locked: TestClient) -> None:
    assert locked.get("/healthz").status_code == 200
    for method, route in [("get", "/readyz"), ("get", "/metrics"), ("get", "/v1/models"), ("get", "/openapi.json"),
                          ("post", "/v1/select")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            r = getattr(locked, method)(route, headers=headers)
            assert r.status_code == 401 and r.json()["field"] == "Authorization", (route, headers)
            assert r.headers["www-authenticate"] == "Bearer"
    r = locked.post("/v1/select", json={"task": ["tiger", "lion"]}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["classes"][0]["name"] == "tiger"


def test_a_new_index_version_is_picked_up_and_a_broken_one_never_served(world_index: Path, tmp_path: Path,
                                                                         embedder) -> None:  # type: ignore[no-untyped-def]
    from mll_index.core.artifacts import atomic_file
    from mll_index.index.node_index import add_nodes, load_index

    path = tmp_path / "index"
    shutil.copytree(world_index, path)
    app = create_app(path, watch=False)
    holder = app.state.holder
    with TestClient(app) as c:
        first = c.post("/v1/select", json={"task": ["tiger", "lion"]})
        v1 = first.json()["index_version"]
        assert holder.check() is False                       # nothing changed: nothing reopened
        present = set(load_index(path).graph.nodes)
        add_nodes(path, _new_node(path), embedder)
        v2 = index_version(path)
        assert v2 != v1
        assert c.post("/v1/select", json={"task": ["tiger", "lion"]}).json()["index_version"] == v1  # not yet
        assert holder.check() is True
        second = c.post("/v1/select", json={"task": ["tiger", "lion"]})
        assert second.json()["index_version"] == second.headers["x-index-version"] == v2
        assert c.get("/v1/index").json()["nodes"] == len(present) + 1

        good = (path / "manifest.json").read_bytes()
        with atomic_file(path / "manifest.json") as handle:   # a torn manifest: the new version does not open
            handle.write(good.decode()[: len(good) // 2])
        assert holder.check() is False
        r = c.post("/v1/select", json={"task": ["tiger", "lion"]})
        assert r.status_code == 200 and r.json()["index_version"] == v2
        assert c.get("/readyz").json()["pending_version_error"]
        with atomic_file(path / "manifest.json") as handle:
            handle.write(good.decode())
        assert holder.check() is True
        assert c.get("/readyz").json()["pending_version_error"] is None


def test_labels_compacted_under_a_served_state_still_answer(world_index: Path, tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    """`labels compact` deletes the shards an opened state read: its answers stay whole (memory maps, or
    a retry on the new version), and equal to a fresh local selection."""
    from mll_index.labels.matrix import compact_matrix
    from mll_index.labels.sync import sync_matrix

    path = tmp_path / "index"
    shutil.copytree(world_index, path)
    with TestClient(create_app(path, watch=False)) as c:
        before = c.post("/v1/select", json={"task": ["tiger", "lion", "banana"], "mode": "counts", "k": 2})
        assert before.status_code == 200
        sync_matrix(path)
        compact_matrix(path)
        assert index_version(path) != before.json()["index_version"]
        for mode in ("counts", "restricted"):
            r = c.post("/v1/select", json={"task": ["tiger", "lion", "banana"], "mode": mode, "k": 2})
            assert r.status_code == 200, r.text
            body = r.json()
            body.pop("index_version")
            assert body == _json(open_selector(path, embedder), task_from_json(["tiger", "lion", "banana"]),
                                 mode=mode, k=2)


def _new_node(path: Path) -> list[str]:
    """One wnid the index lacks."""
    from mll_index.index.node_index import load_index

    present = set(load_index(path).graph.nodes)
    new = [w for w in (TENCH, GOLDFISH, LAPTOP, PIZZA) if w not in present][:1]
    assert new, "the world index already holds every candidate node"
    return new


def test_the_watcher_swaps_in_a_new_version_by_itself(world_index: Path, tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from mll_index.index.node_index import add_nodes

    path = tmp_path / "index"
    shutil.copytree(world_index, path)
    with TestClient(create_app(path, ServiceSettings(poll_s=0.1))) as c:
        v1 = c.get("/readyz").json()["index_version"]
        add_nodes(path, _new_node(path), embedder)
        deadline = time.monotonic() + 120      # a bound, not a timing claim: the poll is every 0.1 s
        while c.get("/readyz").json()["index_version"] == v1:
            assert time.monotonic() < deadline, "the new index version was not picked up"
            time.sleep(0.1)
        answer = c.post("/v1/select", json={"task": ["tiger", "lion"]}).json()
        assert answer["index_version"] == index_version(path) != v1


def _wait_ready(url: str, proc: subprocess.Popen, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            with urllib.request.urlopen(urllib.request.Request(url + "/readyz", headers=headers), timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url}: the service did not become ready")


@pytest.mark.slow
def test_a_real_server_answers_select_server_like_local_select(world_index: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLL_TEST_SERVICE_KEY": TOKEN}
    env.pop("MLL_INDEX_HOME", None)
    proc = subprocess.Popen([sys.executable, "-m", "mll_index.cli", "serve", "--index", str(world_index), "--port",
                             str(port), "--api-key-env", "MLL_TEST_SERVICE_KEY"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(url, proc, {"Authorization": f"Bearer {TOKEN}"})
        task = tmp_path / "farm.json"
        task.write_text(json.dumps({"name": "farm", "classes": ["tiger", "lion", "qwzx blorf"]}))
        local = run_cli("select", "--index", str(world_index), "--task", str(task), "-k", "2", "--explain")
        assert local.returncode == 0, local.stderr

        refused = run_cli("select", "--server", url, "--task", str(task))
        assert_one_line_error(refused, "401", "bearer token")
        monkeypatch.setenv("MLL_INDEX_API_KEY", TOKEN)
        remote, modules = modules_of("select", "--server", url, "--task", str(task), "-k", "2", "--explain")
        assert remote.returncode == 0, remote.stderr
        assert remote.stdout == local.stdout
        warnings = [line for line in remote.stderr.splitlines() if line.startswith("mll-index: warning")]
        assert warnings and warnings == local.stderr.strip().splitlines()
        assert not modules & {*HEAVY, "onnxruntime", "faiss", "sklearn"}, modules
        batch = tmp_path / "tasks.jsonl"
        batch.write_text('["tiger", "lion"]\n{"classes": ["cow", "pig"]}\n')
        local_batch = run_cli("select", "--index", str(world_index), "--batch", str(batch))
        remote_batch = run_cli("select", "--server", url, "--batch", str(batch))
        assert remote_batch.returncode == 0 and remote_batch.stdout == local_batch.stdout
        _five_front_ends_answer_alike(world_index, url, tmp_path)

        in_use = run_cli("serve", "--index", str(world_index), "--port", str(port))
        assert_one_line_error(in_use, f"127.0.0.1:{port}", "already in use")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _post(url: str, body: bytes, content_type: str) -> bytes:
    request = urllib.request.Request(url, data=body, headers={"Authorization": f"Bearer {TOKEN}",
                                                               "Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read()


def _five_front_ends_answer_alike(world_index: Path, url: str, tmp_path: Path) -> None:
    """`select`, `select --batch`, `/v1/select`, `/v1/select/batch` and `select --server` print one
    answer per task (the one builder, `answer.answer_tasks`), warnings included; the service adds
    only "index_version"."""
    from mll_index.selection.answer import answer_warning_lines

    tasks = [{"name": "zoo", "classes": ["tiger", "lion", "qwzx blorf"]},
             {"name": "farm", "classes": ["cow", {"name": "pig", "captions": ["a pink farm animal"]}],
              "domain": "noto"},
             {"name": "food", "classes": ["banana", "pizza"]}]
    batch = tmp_path / "five.jsonl"
    batch.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    options = ["-k", "2", "--explain", "--ranking", "5"]
    local_batch = run_cli("select", "--index", str(world_index), "--batch", str(batch), *options)
    remote_batch = run_cli("select", "--server", url, "--batch", str(batch), *options)
    assert local_batch.returncode == 0 and remote_batch.returncode == 0, local_batch.stderr + remote_batch.stderr
    from_batch = [json.loads(line) for line in local_batch.stdout.splitlines()]
    assert [json.loads(line) for line in remote_batch.stdout.splitlines()] == from_batch
    streamed = _post(f"{url}/v1/select/batch?k=2&explain=true&ranking=5", batch.read_bytes(), "application/x-ndjson")
    lines = [json.loads(line) for line in streamed.decode().splitlines()]
    assert all(line.pop("index_version") for line in lines) and lines == from_batch
    warned = []
    for number, task in enumerate(tasks):
        one = tmp_path / f"task{number}.json"
        one.write_text(json.dumps(task))
        local = run_cli("select", "--index", str(world_index), "--task", str(one), *options)
        remote = run_cli("select", "--server", url, "--task", str(one), *options)
        answer = json.loads(local.stdout)
        assert answer == from_batch[number] and remote.stdout == local.stdout
        served = json.loads(_post(f"{url}/v1/select", json.dumps({"task": task, "k": 2, "explain": True,
                                                                    "ranking": 5}).encode(), "application/json"))
        assert served.pop("index_version") and served == answer
        stderr = [line for line in local.stderr.splitlines() if line.startswith("mll-index: warning")]
        assert stderr == answer_warning_lines(answer) == [
            line for line in remote.stderr.splitlines() if line.startswith("mll-index: warning")]
        warned += stderr
    assert any("qwzx blorf" in line for line in warned)   # the warnings compared are not all empty
    batch_stderr = [line for line in local_batch.stderr.splitlines() if line.startswith("mll-index: warning")]
    assert batch_stderr == list(dict.fromkeys(warned))


def test_a_missing_index_or_key_stops_serve_before_the_port_opens(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("serve", "--index", str(tmp_path / "none"), "--port", str(free_port())),
                          "no index here")
    assert_one_line_error(run_cli("serve", "--index", str(tmp_path), "--api-key-env", "MLL_UNSET_KEY_VARIABLE"),
                          "MLL_UNSET_KEY_VARIABLE")


def test_select_remote_client(world_index: Path) -> None:
    """The documented client function, against an unreachable URL and a bad one (one-line errors)."""
    from mll_index.errors import EndpointError, InputError
    from mll_index.service.client import select_remote

    with pytest.raises(EndpointError, match="no selection service answers"):
        select_remote(f"http://127.0.0.1:{free_port()}", ["tiger", "lion"], timeout=5)
    with pytest.raises(InputError, match="http://"):
        select_remote("ftp://example", ["tiger", "lion"])


# ---------------------------------------------------------------------------------------
# Fuzzing from the OpenAPI schema: whatever a caller sends, the answer is never a 5xx.

FUZZ_EXAMPLES = 12   # per operation and generation mode: ~80 requests in all, a few seconds


@pytest.fixture(scope="module")
def fuzz_schema(world_index: Path):  # type: ignore[no-untyped-def]
    schemathesis = pytest.importorskip("schemathesis")
    app = create_app(world_index, ServiceSettings(api_key=TOKEN, max_classes=50, max_batch=20,
                                                  max_body_bytes=64 * 1024), watch=False)
    return schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_requests_generated_from_the_schema_never_get_a_5xx(fuzz_schema, mode: str) -> None:  # type: ignore[no-untyped-def]
    """Valid and invalid requests (wrong types, missing fields, options out of range), token sent."""
    from schemathesis import GenerationMode

    statuses: list[tuple[str, int, str]] = []
    for result in fuzz_schema.get_all_operations():
        op = result.ok()
        if mode == "negative" and op.method.upper() == "GET":
            continue  # no GET takes a parameter: nothing to make invalid
        _fuzz_operation(op, GenerationMode(mode), statuses)
    assert any(status == 200 for _, status, _ in statuses) or mode == "negative"   # negative: every request is wrong
    assert any(400 <= status < 500 for _, status, _ in statuses)


def _fuzz_operation(op, mode, statuses: list[tuple[str, int, str]]) -> None:  # type: ignore[no-untyped-def]
    """FUZZ_EXAMPLES generated requests for one operation, each answered below 500 (a refusal in the one JSON shape)."""
    from hypothesis import HealthCheck, Phase, given, settings

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True, print_blob=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(case=op.as_strategy(generation_mode=mode))
    def send(case) -> None:  # type: ignore[no-untyped-def]
        response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
        statuses.append((op.label, response.status_code, response.text[:200]))
        assert response.status_code < 500, (op.label, case.body, case.query, response.text[:300])
        if response.status_code >= 400:   # one JSON shape for every refusal
            assert set(response.json()) == {"error", "field"}, response.text[:300]

    send()


@pytest.mark.slow
def test_two_uvicorn_workers_answer(world_index: Path) -> None:
    """`serve --workers 2`: uvicorn's worker processes each open the index and answer from the same version."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.pop("MLL_INDEX_HOME", None)
    proc = subprocess.Popen([sys.executable, "-m", "mll_index.cli", "serve", "--index", str(world_index), "--port",
                             str(port), "--workers", "2"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(url, proc, {})
        answers = []
        for task in (["tiger", "lion"], ["cow", "pig", "banana"]):
            request = urllib.request.Request(url + "/v1/select", data=json.dumps({"task": task}).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as r:
                answers.append((r.headers["X-Index-Version"], json.loads(r.read())))
        assert [a["classes"][0]["name"] for _, a in answers] == ["tiger", "cow"]
        assert {v for v, _ in answers} == {a["index_version"] for _, a in answers} == {index_version(world_index)}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.mark.slow
def test_two_workers_answer_and_metrics_count_every_workers_requests(world_index: Path) -> None:
    """serve --workers 2: both worker processes answer, and /metrics, from whichever worker, sums them
    (prometheus-client's multiprocess mode in a folder serve makes and removes)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("MLL_INDEX_HOME", "PROMETHEUS_MULTIPROC_DIR")}
    proc = subprocess.Popen([sys.executable, "-m", "mll_index.cli", "serve", "--index", str(world_index), "--port",
                             str(port), "--workers", "2"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(url, proc, {})

        def worker_pids() -> set[str]:
            with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
                text = response.read().decode()
            return {row.split('pid="')[1].split('"')[0] for row in text.splitlines()
                    if row.startswith("mll_index_index_reloads{")}

        # One worker answers as soon as it is up; on a busy machine the other may still be opening the index.
        deadline = time.monotonic() + 120
        while len(worker_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        sent = 40
        for _ in range(sent):
            with urllib.request.urlopen(url + "/v1/models", timeout=30) as response:
                assert response.status == 200
        line = 'mll_index_requests_total{method="GET",route="/v1/models",status="200"}'
        pids = set()
        for _ in range(6):                  # scrapes land on either worker; each must show the sum
            with urllib.request.urlopen(url + "/metrics", timeout=30) as response:
                text = response.read().decode()
            counted = [row for row in text.splitlines() if row.startswith(line)]
            assert counted and float(counted[0].split()[-1]) == sent, counted
            pids |= {row.split('pid="')[1].split('"')[0] for row in text.splitlines()
                     if row.startswith("mll_index_index_reloads{")}
        assert len(pids) == 2, pids         # each worker's index gauges, by pid
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert not any(p.name.startswith("mll-index-metrics-") and any(p.iterdir())
                   for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("mll-index-metrics-*")), \
        "serve left its metrics folder behind"
