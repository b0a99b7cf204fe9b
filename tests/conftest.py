"""Shared, session-scoped fixtures: a hermetic cache, the real WordNet taxonomy, the real
MiniLM text model and one small node index built with them (no mocks anywhere)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from mll_index.index import embed as embed_mod
from mll_index.index import graph as graph_mod
from mll_index.index import node_index as index_mod

REPO = Path(__file__).resolve().parent.parent

DOG = "n02084071"
TENCH = "n01440764"
GOLDFISH = "n01443537"
LAPTOP = "n03642806"
TIGER = "n02129604"
PIZZA = "n07873807"
CRANE_BIRD = "n02012849"
CRANE_MACHINE = "n03126707"
GOLDEN_RETRIEVER = "n02099601"
POMERANIAN = "n02112018"
OTHERS = [TENCH, GOLDFISH, LAPTOP, TIGER, PIZZA, CRANE_BIRD, CRANE_MACHINE]


# The emoji art tarballs that set-up fetched with npm (`mll-index world fetch`); read in
# place, since tests are offline.
USER_NPM_DIR = Path(os.environ.get("MLL_INDEX_NPM_DIR") or os.path.join(
    os.environ.get("MLL_INDEX_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                                      "mll-index"), "world", "npm"))


@pytest.fixture(scope="session", autouse=True)
def hermetic_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point $MLL_INDEX_CACHE at a fresh folder so no test touches ~/.cache/mll-index."""
    cache = tmp_path_factory.mktemp("mll-index-cache")
    saved = os.environ.get("MLL_INDEX_CACHE")
    saved_npm = os.environ.get("MLL_INDEX_NPM_DIR")
    os.environ["MLL_INDEX_CACHE"] = str(cache)
    os.environ["MLL_INDEX_NPM_DIR"] = str(USER_NPM_DIR)
    try:
        yield cache
    finally:
        if saved is None:
            os.environ.pop("MLL_INDEX_CACHE", None)
        else:
            os.environ["MLL_INDEX_CACHE"] = saved
        if saved_npm is None:
            os.environ.pop("MLL_INDEX_NPM_DIR", None)
        else:
            os.environ["MLL_INDEX_NPM_DIR"] = saved_npm


@pytest.fixture(scope="session")
def taxonomy(hermetic_cache: Path) -> graph_mod.Graph:
    """The whole WordNet 3.0 noun taxonomy, read with nltk once (~15 s) and cached in the session cache."""
    with warnings.catch_warnings():
        # nltk warns that Debian's WordNet lacks the multilingual (OMW) data, which is not used.
        warnings.filterwarnings("ignore", message="The multilingual functions are not available")
        return graph_mod.load_taxonomy()


def descendants(taxonomy: graph_mod.Graph, wnid: str) -> list[str]:
    """`wnid` and every hyponym below it, through the public children()."""
    seen: dict[str, None] = {}
    stack = [wnid]
    while stack:
        w = stack.pop()
        if w not in seen:
            seen[w] = None
            stack.extend(taxonomy.children(w))
    return list(seen)


@pytest.fixture(scope="session")
def small_wnids(taxonomy: graph_mod.Graph) -> list[str]:
    """dog.n.01 and everything below it, plus tench, goldfish, laptop, tiger, pizza and both cranes."""
    return descendants(taxonomy, DOG) + OTHERS


@pytest.fixture(scope="session")
def small_graph(taxonomy: graph_mod.Graph, small_wnids: list[str]) -> graph_mod.Graph:
    return graph_mod.resolve_node_set(taxonomy, graph_mod.wnid_node_set(small_wnids))


@pytest.fixture(scope="session")
def embedder() -> embed_mod.TextEmbedder:
    """The real all-MiniLM-L6-v2 (fp32 through ONNX Runtime, the default), loaded once."""
    return embed_mod.load_embedder("minilm")


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory, small_graph: graph_mod.Graph,
              embedder: embed_mod.TextEmbedder) -> Path:
    """One small node index (~200 nodes, flat search), built once. Tests must not modify it:
    those that damage an index work on `index_copy`."""
    root = tmp_path_factory.mktemp("index")
    path = root / "small"
    cache = embed_mod.EmbeddingCache(root / "embeddings.sqlite")
    index_mod.build_index(path, small_graph, embedder, cache=cache)
    cache.close()
    return path


@pytest.fixture(scope="session")
def node_index(index_dir: Path) -> index_mod.NodeIndex:
    return index_mod.load_index(index_dir)


@pytest.fixture()
def index_copy(index_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session index, free to damage."""
    target = tmp_path / "index-copy"
    shutil.copytree(index_dir, target)
    return target


def free_port() -> int:
    """A local port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m mll_index.cli ARGS` in a subprocess with the session's $MLL_INDEX_CACHE."""
    env = dict(os.environ)
    env.pop("MLL_INDEX_HOME", None)
    return subprocess.run([sys.executable, "-m", "mll_index.cli", *args], input=stdin if stdin is not None else "",
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory, taxonomy: graph_mod.Graph):  # type: ignore[no-untyped-def]
    """The small emoji world (4 tasks of 5 classes, 3 briefly trained models), built once (~15 s).

    Needs the emoji art tarballs that set-up fetches; the tests are offline, so without them
    the world's tests fail with the message that says to run set-up.
    """
    from mll_index.world import build_world

    tarballs = list(USER_NPM_DIR.glob("*.tgz"))
    assert len(tarballs) >= 3, (f"the emoji art tarballs are not in {USER_NPM_DIR}; "
                                "run `bash setup.sh --install-only` (it runs `mll-index world fetch`)")
    return build_world("small", tmp_path_factory.mktemp("world") / "small")


@pytest.fixture(scope="session")
def world_index(tmp_path_factory: pytest.TempPathFactory, small_world, taxonomy: graph_mod.Graph,  # type: ignore[no-untyped-def]
                embedder: embed_mod.TextEmbedder) -> Path:
    """A node index around the small world's concepts (them, their hypernyms and hyponyms), its
    hub labeled into it. Tests must not modify it (copy it first)."""
    from mll_index.labeling.run import label_models
    from mll_index.models.hub import load_hub

    concepts = {c["wnid"] for c in small_world.concepts}
    nodes = set(concepts)
    for wnid in concepts:
        nodes |= taxonomy.ancestors(wnid) | set(taxonomy.children(wnid))
    path = tmp_path_factory.mktemp("world-index") / "index"
    index_mod.build_index(path, graph_mod.resolve_node_set(taxonomy, graph_mod.wnid_node_set(sorted(nodes))), embedder)
    label_models(path, load_hub(small_world.hub_path), small_world.samples_dir)
    return path


@pytest.fixture(autouse=True)
def _fresh_memory_vectors():  # type: ignore[no-untyped-def]
    """Each test starts with an empty in-process vector cache (index.embed.memory_vectors), as a new
    process does: a test that checks what gets embedded must not see another test's texts."""
    from mll_index.index.embed import memory_vectors

    memory_vectors.cache_clear()
    yield
