"""Every example command of the README's "Command line" block, run as written on a copy of the index.

    python bench/readme_examples.py [--index indexes/default] [--only SUBSTRING] [--timeout 300]

The block's lines are read from README.md (continuation lines joined, comments dropped). Each
`mll-index ...` command runs in a fresh working folder, with `MLL_INDEX_HOME` pointing at a fresh
full copy of the index (so a command that writes, such as `calibrate`, `add-nodes` or `published
import`, never touches the real one), and the small input files the examples name (`classes.txt`,
`my_task.json`, `tasks.jsonl`, `my_wnids.txt`, `gpt_captions.json`, `my_task_images/`, `./my_images`)
written there first; an example that builds on another (`--labels published` on `published import`)
runs it first in its copy. A command passes on exit status 0 with no traceback. Skipped, each with its reason: commands
that need the network (a hub's published weights, a sentence-transformers download), a GPU, an LLM
or OpenAI-compatible endpoint, a Ray cluster, a user's own data (`/data/samples`, `my_hub.json`), a
server started in the background, or that rebuild a whole index or the world from scratch (minutes
each: set-up runs those). Writes bench/results/readme_examples.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# (pattern in the command, why it is not run here)
SKIPS: tuple[tuple[str, str], ...] = (
    ("--ray", "needs a Ray cluster"),
    ("--device cuda", "needs a GPU"),
    ("openai:", "needs an OpenAI-compatible endpoint"),
    ("MLL_INDEX_LLM_URL", "needs an LLM endpoint"),
    ("st:sentence-transformers/", "downloads a text model"),
    ("label --hub mll49", "downloads the mll49 hub's weights"),
    ("/data/samples", "a user's own sample images"),
    ("my_hub.json", "a user's own hub file"),
    ("serve --port", "starts the server the next example asks (run there, then stopped)"),
    ("--recipe indexes/default.json", "rebuilds the default index (set-up runs it)"),
    ("--search ivf", "builds a second full index (minutes)"),
    ("minilm@bf16", "builds a second full index (minutes), and only where bf16 is native"),
    ("--node-set visual -o", "builds the whole visual graph (set-up runs it)"),
    ("world build --retrain", "retrains the world's 13 models (minutes)"),
    ("mll-index demo", "the main job (set-up runs it)"),
    ("--tasks-dir ./tasks", "a user's own task folders"),
)


def example_lines(readme: Path) -> list[str]:
    """The `mll-index` commands of the README's "Command line" bash block, continuations joined."""
    text = readme.read_text(encoding="utf-8")
    section = text[text.index("## Command line"):text.index("## Python API")]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    if block is None:
        raise SystemExit("README.md: no bash block in the Command line section")
    joined = re.sub(r"\\\n\s*", " ", block.group(1))
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        code = _strip_comment(line)
        if "mll-index" in code:
            out.append(code)
    return out


def _strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a # inside quotes stays)."""
    quote = None
    for i, ch in enumerate(line):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote == ch else ch
        elif ch == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def prepare(work: Path) -> None:
    """The small inputs the examples name, written where they look for them."""
    (work / "classes.txt").write_text("tiger\nlion\nzebra\n")
    (work / "my_wnids.txt").write_text("n02129604\nn02129165\n")
    (work / "my_task.json").write_text(json.dumps({"classes": ["tiger", "lion", "zebra"], "domain": "sketch"}))
    (work / "tasks.jsonl").write_text('{"name": "cats", "classes": ["tiger", "lion"]}\n["cow", "pig", "horse"]\n')
    (work / "gpt_captions.json").write_text(json.dumps({"tiger": ["a large striped wild cat"],
                                                        "lion": ["a big cat with a mane"],
                                                        "zebra": ["a striped wild horse"]}))
    world = Path(os.environ.get("MLL_INDEX_CACHE", Path.home() / ".cache" / "mll-index")) / "world" / "full" / "tasks"
    farm = world / "farm-animals-noto"
    for name in ("my_task_images", "my_images"):
        folder = work / name
        folder.mkdir()
        if farm.is_dir():   # a few of the world's images, flat, as a user's folder of task images
            for image in sorted(farm.rglob("*.png"))[:8]:
                shutil.copy2(image, folder / image.name)


def prerequisite(command: str, commands: list[str]) -> str | None:
    """The README command an example builds on, run first in its copy: `--labels published` needs the
    README's `published import`."""
    if "--labels published" in command:
        return next((c for c in commands if "published import" in c), None)
    if "--server http://127.0.0.1:" in command:
        # The README starts `serve` in the background first: so does the run, waiting for /healthz.
        serve = next((c for c in commands if "mll-index serve" in c), None)
        port = command.split("--server http://127.0.0.1:", 1)[1].split()[0]
        if serve is None:
            return None
        wait = (f"python3 -c \"import time, urllib.request\nfor _ in range(120):\n try:\n  urllib.request.urlopen("
                f"'http://127.0.0.1:{port}/healthz', timeout=2); break\n except Exception: time.sleep(0.5)\"")
        return f"{serve.rstrip('& ')} >/dev/null 2>&1 & trap 'kill %1' EXIT; {wait}"
    return None


def run_one(command: str, index: Path, timeout: float, before: str | None = None) -> dict[str, Any]:
    """Run one example in a fresh folder with a fresh copy of the index; {command, status, seconds, detail}."""
    for pattern, why in SKIPS:
        if pattern in command:
            return {"command": command, "status": "skipped", "detail": why}
    with tempfile.TemporaryDirectory(prefix="mll-readme-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        home = Path(tmp) / "home"
        home.mkdir()
        shutil.copytree(index, home / "default", ignore=shutil.ignore_patterns(".lock"))
        prepare(work)
        # ../shared/data as the README names it: the examples run beside the checkout's shared folder.
        shared = ROOT.parent / "shared"
        if shared.is_dir():
            (Path(tmp) / "shared").symlink_to(shared, target_is_directory=True)
        env = {**os.environ, "MLL_INDEX_HOME": str(home)}
        start = time.perf_counter()
        try:
            script = f"{before} >/dev/null && {command}" if before else command
            done = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"command": command, "status": "failed", "seconds": round(time.perf_counter() - start, 1),
                    "detail": f"timed out after {timeout:g} s"}
        seconds = round(time.perf_counter() - start, 1)
        tail = (done.stderr.strip().splitlines() or [""])[-1][:300]
        if done.returncode == 0 and "Traceback" not in done.stderr:
            return {"command": command, "status": "passed", "seconds": seconds, "detail": ""}
        return {"command": command, "status": "failed", "seconds": seconds,
                "detail": f"exit {done.returncode}: {tail}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=ROOT / "indexes" / "default")
    parser.add_argument("--only", default=None, help="Only the commands holding this text.")
    parser.add_argument("--timeout", type=float, default=300.0, help="Seconds per command.")
    args = parser.parse_args()
    if not (args.index / "manifest.json").is_file():
        raise SystemExit(f"{args.index}: no index (run `bash setup.sh` first)")
    rows = []
    commands = example_lines(ROOT / "README.md")
    for command in commands:
        if args.only and args.only not in command:
            continue
        row = run_one(command, args.index, args.timeout, prerequisite(command, commands))
        rows.append(row)
        print(f"{row['status']:8s} {row.get('seconds', '')!s:>6} {command[:90]}  {row['detail'][:120]}", flush=True)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("passed", "failed", "skipped")}
    lines = ["# The README's example commands, run as written", "",
             f"{len(rows)} commands: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
             "(bar: 0 failed).", "", "| status | seconds | command | detail |", "|---|---|---|---|"]
    lines += [f"| {r['status']} | {r.get('seconds', '')} | `{r['command'].replace('|', '/')}` | "
              f"{r['detail'].replace('|', '/')} |" for r in rows]
    write_results("readme_examples", {**counts, "commands": rows}, "\n".join(lines) + "\n")
    sys.exit(1 if counts["failed"] else 0)


if __name__ == "__main__":
    main()
