"""Running the `mll-index` command line in tests: in process through click's CliRunner, or in a fresh
process that reports the modules it imported; and the one-line error every mistake must be."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner, Result

from mll_index.cli import cli
from tests.conftest import REPO


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit status 1, no traceback, and exactly one line on stderr that holds every fragment."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mll-index: error: ")
    for fragment in fragments:
        assert fragment in lines[0]



HEAVY = ("torch", "open_clip", "sentence_transformers", "transformers")
_LIST_MODULES = ("import atexit, sys\n"
                 "atexit.register(lambda: sys.stderr.write('\\nMODULES ' + ' '.join(sorted(sys.modules)) + '\\n'))\n"
                 "from mll_index.cli import main\n"
                 "sys.argv = ['mll-index', *sys.argv[1:]]\n"
                 "main()\n")


def modules_of(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run a CLI command in a fresh process; its result and the modules it had imported at exit."""
    env = dict(os.environ)
    env.pop("MLL_INDEX_HOME", None)
    proc = subprocess.run([sys.executable, "-c", _LIST_MODULES, *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=REPO)
    listed = [line for line in proc.stderr.splitlines() if line.startswith("MODULES ")]
    assert listed, proc.stderr
    return proc, {name.split(".")[0] for name in listed[-1].split()[1:]}

