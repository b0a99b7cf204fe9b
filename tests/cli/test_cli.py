"""Tests of the command line as a whole (mll_index/cli/__init__.py): the root group, the entry point's
exit codes and one-line errors, the logging set-up, and which commands import no vision model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mll_index import __version__
from tests.cli.runner import HEAVY, assert_one_line_error, invoke, modules_of
from tests.conftest import TENCH, run_cli


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert __version__ in result.stdout


@pytest.mark.parametrize("args, fragment", [
    (("select", "-k", "abc", "tench"), "'-k'"),
    (("selectt",), "No such command"),
    (("match", "--method", "nope", "tench"), "'--method'"),
])
def test_malformed_command_line_is_one_line_and_exit_2(args: tuple[str, ...], fragment: str) -> None:
    """A malformed command line is a user's mistake too: one line naming the option, and the usage
    convention's exit status 2 (README), not click's four-line usage block."""
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mll-index: error: ") and fragment in lines[0], proc.stderr
    assert "--help" in lines[0]


def test_console_script_exit_codes(index_dir: Path) -> None:
    script = Path(sys.executable).with_name("mll-index")
    exe = str(script) if script.exists() else shutil.which("mll-index")
    assert exe, "the mll-index console script is installed with the package"
    env = dict(os.environ)
    ok = subprocess.run([exe, "match", "--index", str(index_dir), "--method", "lemma", "--format", "jsonl", "crane"],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert [m["synset"] for m in json.loads(ok.stdout)["matches"]] == ["crane.n.04", "crane.n.05"]
    bad = subprocess.run([exe, "match", "--index", str(index_dir), "--method", "lemma", ""],
                         capture_output=True, text=True, env=env, timeout=120)
    assert_one_line_error(bad, "class name 1 is empty")


def test_commands_without_a_vision_model_never_import_torch(index_dir: Path, world_index: Path) -> None:
    """match, select, info, expand, graph show and hub list answer without torch, open_clip or
    sentence-transformers, with a cold caption cache too (the text model runs on ONNX Runtime)."""
    fresh = f"a never seen class {os.getpid()}"
    commands = [("info", "--index", str(index_dir)), ("match", "--index", str(index_dir), "tench", fresh),
                ("select", "--index", str(world_index), "goldfish", fresh), ("expand", "tiger"),
                ("graph", "show", "--index", str(index_dir), TENCH), ("hub", "list")]
    for command in commands:
        proc, modules = modules_of(*command)
        assert proc.returncode == 0, (command, proc.stderr)
        assert not modules & set(HEAVY), (command, modules & set(HEAVY))


def test_our_warnings_reach_stderr_as_one_line_each(tmp_path: Path, taxonomy) -> None:  # type: ignore[no-untyped-def]
    samples = tmp_path / "samples"
    (samples / TENCH).mkdir(parents=True)
    (samples / "holiday photos").mkdir()
    proc = run_cli("build", "--index", str(tmp_path / "index"), "--folder", str(samples))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("mll-index: warning: ")]
    assert len(warnings) == 1 and "skipped 1 folders not named by a wnid" in warnings[0], proc.stderr
    # Third-party logging stays quiet (open_clip, transformers and the like log through the root logger).
    assert "INFO" not in proc.stderr and "WARNING" not in proc.stderr

