"""The package's shape: import layers and no cycles (import-linter), the top level, module and
function sizes, the lazy public API, and old module paths gone."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "mll_index"
HEAVY = ("torch", "open_clip", "sentence_transformers", "ray", "onnxruntime")
SUBPACKAGES = ("core", "index", "models", "images", "labels", "labeling", "published", "selection", "reuse",
               "evaluation", "world", "cli", "service", "cluster")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80   # from the `def` line to the end: a click command's option decorators do not count


def test_imports_keep_to_the_layers_and_make_no_cycle() -> None:
    """The contracts of pyproject.toml's [tool.importlinter]: a new upward import, an import between
    siblings (cli / service / cluster, labeling / published) or a cycle fails, naming both modules."""
    lint = Path(sys.executable).with_name("lint-imports")
    command = [str(lint)] if lint.exists() else ["lint-imports"]
    done = subprocess.run([*command, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def test_the_top_level_holds_only_the_entry_points_and_the_subpackages() -> None:
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert modules == ["__init__.py", "__main__.py", "errors.py", "verify.py"]
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name not in ("__pycache__", "data"))
    assert folders == sorted(SUBPACKAGES)
    assert all((PACKAGE / name / "__init__.py").is_file() for name in SUBPACKAGES)


def test_no_module_shadows_the_standard_library() -> None:
    """A file of the package run by path puts its folder first on sys.path: a module named like a
    standard one (`select.py` once did) would then replace it for every import."""
    clashes = [str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if p.stem in sys.stdlib_module_names]
    assert not clashes


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_over_600_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them along their jobs): {long}"


def test_no_function_over_80_lines() -> None:
    long = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1   # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(REPO)}:{node.lineno} {node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("package", ["mll_index", *(f"mll_index.{name}" for name in SUBPACKAGES if name != "cli")])
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__, package
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_import_mll_index_imports_nothing_heavy() -> None:
    """`python -X importtime -c "import mll_index"`: no torch, open_clip, sentence-transformers, ray or
    ONNX Runtime, not even after every public verb is resolved (each module imports them where used)."""
    code = "import mll_index as mll\n[getattr(mll, n) for n in mll.__all__]"
    for program in ("import mll_index", code):
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", program], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()
                    if line.startswith("import time:")}
        assert not imported & set(HEAVY), (program, sorted(imported & set(HEAVY)))


def test_the_public_verbs_are_the_readme_s() -> None:
    import mll_index as mll

    verbs = {"build_index", "load_index", "add_nodes", "match_names", "load_hub", "label_models", "import_published",
             "open_selector", "make_task", "select_models", "select_batch", "answer_tasks", "reuse_models",
             "evaluate_tasks", "build_world", "check_index", "MLLIndexError"}
    assert verbs <= set(mll.__all__)
    assert mll.answer_tasks is importlib.import_module("mll_index.selection.answer").answer_tasks


@pytest.mark.parametrize("old", ["import mll_index.select", "import mll_index.pipeline", "import mll_index.estimate",
                                 "import mll_index.graph", "import mll_index.published_rule",
                                 # labels/ is now the package of stored labels; the run moved to labeling/
                                 "from mll_index.labels import label_models"])
def test_old_module_paths_are_gone(old: str) -> None:
    """No compatibility shims: an old path fails with Python's own error (the README's changelog maps them)."""
    done = subprocess.run([sys.executable, "-c", old], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "ModuleNotFoundError" in done.stderr or "ImportError: cannot import name" in done.stderr, done.stderr
