"""Hostile input and faults, end to end through the CLI: does each kind get a right answer or a clear error?

    python bench/robustness.py [--index indexes/default] [--kills 20] [--seed 0]

Every case makes its own input (images, files, models, tables) in a scratch folder, runs the
`mll-index` command a user would, and is judged on what the user sees:

- ok: the right answer (the same as for the clean input, or the documented warning);
- clear_error: exit status non-zero and one `mll-index: error:` line, no traceback;
- wrong: exit status 0 with a different answer, or an error where a right answer was due;
- traceback: a Python traceback on stderr.

Bar: 0 wrong and 0 tracebacks. Then the writer and reader races and the random kills of
bench/faults.py run on a small index: writes lost, reads failed, kills and temporary bytes left
behind (bar: 0, 0, and 0). Writes bench/results/robustness.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package, not an installed one

from common import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUTCOMES = ("ok", "clear_error", "wrong", "traceback")


@dataclass
class Run:
    """One CLI invocation's result."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stderr

    @property
    def clear_error(self) -> bool:
        """Non-zero exit and exactly one error line (warnings before it allowed), no traceback."""
        errors = [line for line in self.stderr.splitlines() if line.startswith("mll-index: error: ")]
        # Warnings (and the indented files they list) and progress bars may come before the error.
        others = [line for line in self.stderr.replace("\r", "\n").splitlines()
                  if line.strip() and not line.startswith(("mll-index: error: ", "mll-index: warning:", "  "))
                  and "%|" not in line]
        return self.returncode != 0 and len(errors) == 1 and not others and not self.traceback

    def json(self) -> Any:
        return json.loads(self.stdout)


def cli(*args: str, cwd: Path | None = None, stdin: str = "", timeout: float = 600) -> Run:
    """`python -m mll_index.cli ARGS` in a fresh process, as a user runs `mll-index ARGS`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "mll_index.cli", *args], capture_output=True, text=True,
                          input=stdin, cwd=cwd, env=env, timeout=timeout, errors="replace")
    return Run(list(args), proc.returncode, proc.stdout, proc.stderr)


@dataclass
class Case:
    """One hostile input: `kind` is the family it belongs to, `run` returns (outcome, detail)."""

    kind: str
    name: str
    run: Callable[[], tuple[str, str]]


def judged(run: Run, right: Callable[[Run], bool], *, error_is_right: bool = False) -> tuple[str, str]:
    """The outcome of a run: traceback first, then right answer, then clear error, else wrong.

    error_is_right: a clear error is the right answer for this input (it cannot be answered).
    """
    said = [line for line in run.stderr.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]
    detail = (said or [""])[-1][:200]
    if run.traceback:
        return "traceback", detail
    if run.returncode == 0 and right(run):
        return "ok", detail
    if run.clear_error:
        return ("ok" if error_is_right else "clear_error"), detail
    return "wrong", f"exit {run.returncode}: {detail or run.stdout.strip()[:200]}"


# --- inputs the cases make -------------------------------------------------------------------

def world_root() -> Path:
    from mll_index.world.build import default_world_dir  # the emoji world the demo builds

    return default_world_dir()


def task_copy(scratch: Path, task: str, convert: Callable[[Any], Any] | None, name: str) -> Path:
    """A copy of one of the world's task folders with every image passed through `convert` (PIL → PIL)."""
    from PIL import Image

    src = world_root() / "tasks" / task
    out = scratch / name
    for image in sorted(src.glob("*/*.png")):
        target = out / image.parent.name / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if convert is None:
            shutil.copy(image, target)
        else:
            with Image.open(image) as im:
                convert(im.convert("RGB")).save(target)
    return out


def to_16bit(im: Any) -> Any:
    """Grayscale at 16 bits per pixel (I;16), as scientific and medical tools save."""
    import numpy as np
    from PIL import Image

    gray = np.asarray(im.convert("L"), np.uint16) * 257
    return Image.fromarray(gray)         # uint16: mode I;16


def white_to_transparent(im: Any, palette: bool) -> Any:
    """The image's near-white background made transparent: RGBA, or a palette PNG with a transparent index."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(im.convert("RGB"))
    alpha = np.where(rgb.min(axis=2) > 245, 0, 255).astype(np.uint8)
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    if not palette:
        return rgba
    quantized = im.convert("RGB").quantize(colors=255)
    pal = np.asarray(quantized).copy()
    pal[alpha == 0] = 255
    out = Image.fromarray(pal, "P")
    colours = quantized.getpalette()[:255 * 3]
    out.putpalette(colours + [0] * (255 * 3 - len(colours)) + [0, 0, 0])   # index 255: the transparent one
    out.info["transparency"] = 255
    return out


def palette_on_white(im: Any) -> Any:
    """What `white_to_transparent(im, palette=True)` shows on white, composed here without Pillow's
    mode conversions: the reference the decoder's answer is compared with (the palette's 255
    colours cost accuracy of their own)."""
    import numpy as np
    from PIL import Image

    pal = white_to_transparent(im, True)
    colours = np.zeros((256, 3), np.uint8)
    listed = np.asarray(pal.getpalette(), np.uint8).reshape(-1, 3)
    colours[: len(listed)] = listed
    index = np.asarray(pal)
    rgb = colours[index]
    rgb[index == pal.info["transparency"]] = 255
    return Image.fromarray(rgb, "RGB")


def reuse_accuracy(folder: Path, hub: Path, names: list[str], *extra: str) -> tuple[Run, float | None]:
    run = cli("reuse", str(folder), "--hub", str(hub), "--names", ",".join(names), "-k", "2", *extra)
    try:
        return run, float(run.json()["accuracy"])
    except (ValueError, KeyError, TypeError):
        return run, None


# --- the cases -------------------------------------------------------------------------------

def image_cases(scratch: Path) -> list[Case]:
    hub = world_root() / "hub" / "hub.json"
    gray_task, colour_task = "vegetables-grayscale", "fruit-twemoji"
    gray_names = sorted(p.name for p in (world_root() / "tasks" / gray_task).iterdir() if p.is_dir())
    colour_names = sorted(p.name for p in (world_root() / "tasks" / colour_task).iterdir() if p.is_dir())
    baseline: dict[str, float | None] = {}

    def reference(task: str, names: list[str]) -> float | None:
        if task not in baseline:
            baseline[task] = reuse_accuracy(task_copy(scratch, task, None, f"{task}-plain"), hub, names)[1]
        return baseline[task]

    def same_accuracy(task: str, names: list[str], convert: Callable[[Any], Any], label: str,
                      flat: Callable[[Any], Any] | None = None) -> tuple[str, str]:
        """Reuse accuracy on the converted images against the plain ones (or against `flat`, the same
        pixels composed on white here)."""
        want = (reference(task, names) if flat is None
                else reuse_accuracy(task_copy(scratch, task, flat, f"{task}-{label}-flat"), hub, names)[1])
        run, got = reuse_accuracy(task_copy(scratch, task, convert, f"{task}-{label}"), hub, names)
        outcome = judged(run, lambda r: got is not None and want is not None and abs(got - want) <= 0.05)
        noisy = [line for line in run.stderr.splitlines() if "UserWarning" in line or "Palette images" in line]
        if outcome[0] == "ok" and noisy:
            return "wrong", f"library warning leaked: {noisy[0][:120]}"
        return outcome[0], f"accuracy {got} against {want} for the plain images; {outcome[1]}"

    def bomb() -> tuple[str, str]:
        from PIL import Image

        folder = task_copy(scratch, colour_task, None, "bomb-task")
        Image.new("1", (20000, 10000)).save(folder / colour_names[0] / "huge.png")
        run, got = reuse_accuracy(folder, hub, colour_names)
        said = "megapixel" in run.stderr.lower() or "pixels" in run.stderr.lower()
        return judged(run, lambda r: got is not None and said)

    return [
        Case("images", "16-bit grayscale PNG", lambda: same_accuracy(gray_task, gray_names, to_16bit, "i16")),
        Case("images", "RGBA PNG, transparent background",
             lambda: same_accuracy(colour_task, colour_names, lambda im: white_to_transparent(im, False), "rgba")),
        Case("images", "palette PNG with a transparent index",
             lambda: same_accuracy(colour_task, colour_names, lambda im: white_to_transparent(im, True), "palette",
                                  palette_on_white)),
        Case("images", "200-megapixel PNG among the task's images", bomb),
    ]


BOM = "\ufeff"


def file_cases(scratch: Path, index: Path) -> list[Case]:
    def match_file(text: str, encoding: str = "utf-8", newline: str = "\n") -> Run:
        path = scratch / f"names-{abs(hash((text, encoding, newline)))}.txt"
        path.write_bytes(text.replace("\n", newline).encode(encoding))
        return cli("match", "--index", str(index), "--file", str(path), "--format", "jsonl", "-k", "1")

    def top1(run: Run) -> list[str]:
        return [json.loads(line)["matches"][0]["wnid"] for line in run.stdout.splitlines() if line.strip()]

    names = "tiger\ngolden retriever\nfire truck\n"
    plain = match_file(names)

    def same_matches(text: str, encoding: str = "utf-8", newline: str = "\n") -> tuple[str, str]:
        run = match_file(text, encoding, newline)
        return judged(run, lambda r: top1(r) == top1(plain))

    def task_json_with_bom() -> tuple[str, str]:
        task = {"name": "zoo", "classes": ["tiger", "lion", "zebra"], "domain": "sketch"}
        path = scratch / "task-bom.json"
        path.write_text(BOM + json.dumps(task, indent=1), encoding="utf-8")
        run = cli("select", "--index", str(index), "--task", str(path), "-k", "1")
        clean = scratch / "task.json"
        clean.write_text(json.dumps(task, indent=1), encoding="utf-8")
        want = cli("select", "--index", str(index), "--task", str(clean), "-k", "1")
        return judged(run, lambda r: r.json() == want.json())

    def nested(where: str) -> tuple[str, str]:
        path = scratch / f"nested-{where}.json"
        path.write_text("[" * 200_000)
        flag = "--task" if where == "task" else "--batch"
        return judged(cli("select", "--index", str(index), flag, str(path)), lambda r: False, error_is_right=True)

    def published_with_bom() -> tuple[str, str]:
        data = ROOT.parent / "shared" / "data"
        results = data / "openclip_results.csv"
        if not results.exists():
            return "ok", "skipped: no published table here"
        copy = scratch / "index-published"
        shutil.copytree(index, copy, ignore=shutil.ignore_patterns("labels"))
        table = scratch / "results-bom.csv"
        table.write_text(BOM + results.read_text(encoding="utf-8"), encoding="utf-8")
        run = cli("published", "import", "--index", str(copy), "--results", str(table),
                  "--classnames", str(data / "clip_benchmark_classnames.json"))
        return judged(run, lambda r: True)

    def hub_csv() -> tuple[str, str]:
        """A hub CSV as a spreadsheet saves it: a BOM, CRLF and a trailing empty column."""
        world_hub = json.loads((world_root() / "hub" / "hub.json").read_text())
        rows = ["id,arch,checkpoint,config,"] + [
            f"{m['id']},{m['arch']},{world_root() / 'hub' / m['checkpoint']},{world_root() / 'hub' / m['config']},"
            for m in world_hub["models"][:3]]
        path = scratch / "hub.csv"
        path.write_bytes((BOM + "\r\n".join(rows) + "\r\n").encode("utf-8"))
        run = cli("hub", "show", str(path))
        return judged(run, lambda r: all(m["id"] in r.stdout for m in world_hub["models"][:3]))

    return [
        Case("text_files", "hub CSV with a BOM, CRLF and a trailing empty column", hub_csv),
        Case("text_files", "names file with a UTF-8 BOM", lambda: same_matches(BOM + names)),
        Case("text_files", "names file with CRLF line ends", lambda: same_matches(names, newline="\r\n")),
        Case("text_files", "names file in UTF-16 with a BOM", lambda: same_matches(BOM + names, "utf-16")),
        Case("text_files", "task JSON with a BOM", task_json_with_bom),
        Case("text_files", "published table with a BOM", published_with_bom),
        Case("hostile_cli", "task file of 200,000 nested brackets", lambda: nested("task")),
        Case("hostile_cli", "batch file of 200,000 nested brackets", lambda: nested("batch")),
    ]


def name_cases(index: Path) -> list[Case]:
    def match(*names: str) -> Run:
        return cli("match", "--index", str(index), "--format", "jsonl", "-k", "1", *names)

    def first(run: Run) -> str:
        return json.loads(run.stdout.splitlines()[0])["matches"][0]["wnid"]

    tiger = first(match("tiger"))
    return [
        Case("names", "a name of one zero-width space",
             lambda: judged(cli("select", "--index", str(index), "tiger", "\u200b"), lambda r: False,
                            error_is_right=True)),
        Case("names", "zero-width space inside a name",
             lambda: judged(match("ti\u200bger"), lambda r: first(r) == tiger)),
        Case("names", "full-width letters (NFKC)",
             lambda: judged(match("ｔｉｇｅｒ"), lambda r: first(r) == tiger)),
        Case("hostile_cli", "a name with an undecodable byte",
             lambda: judged(cli("select", "--index", str(index), "tig\udcffer", "lion"), lambda r: False,
                            error_is_right=True)),
        Case("hostile_cli", "--index /", lambda: judged(cli("info", "--index", "/"), lambda r: False,
                                                        error_is_right=True)),
        Case("hostile_cli", "--index ''", lambda: judged(cli("info", "--index", ""), lambda r: False,
                                                         error_is_right=True)),
        Case("hostile_cli", "-k abc", lambda: judged(cli("select", "--index", str(index), "-k", "abc", "tiger"),
                                                     lambda r: False, error_is_right=True)),
        Case("weak_evidence", "a lent match is flagged weak",
             lambda: judged(cli("select", "--index", str(index), "stork", "violin", "-k", "1"),
                            lambda r: any(c.get("weak") or c.get("low_confidence")
                                          for c in r.json().get("classes", []) if c.get("name") == "stork"))),
    ]


def index_copy(index: Path, target: Path) -> Path:
    """A copy of the index without its labels (published imports and hub checks write into it)."""
    if not target.exists():
        shutil.copytree(index, target, ignore=shutil.ignore_patterns("labels", ".lock"))
    return target


def model_cases(scratch: Path, index: Path) -> list[Case]:
    import numpy as np

    hub_file = world_root() / "hub" / "hub.json"
    task = "fruit-twemoji"
    names = sorted(p.name for p in (world_root() / "tasks" / task).iterdir() if p.is_dir())

    def renamed_task(label: str, rename: Callable[[str], str]) -> tuple[Path, list[str]]:
        src = world_root() / "tasks" / task
        out = scratch / f"{task}-{label}"
        for name in names:
            shutil.copytree(src / name, out / rename(name), dirs_exist_ok=True)
        return out, [rename(n) for n in names]

    def plurals() -> tuple[str, str]:
        want = reuse_accuracy(renamed_task("singular", lambda n: n)[0], hub_file, names)[1]
        folder, plural = renamed_task("plural", lambda n: n + ("es" if n.endswith(("o", "sh", "ch")) else "s"))
        run, got = reuse_accuracy(folder, hub_file, plural)
        return judged(run, lambda r: got is not None and want is not None and got >= want - 0.05)[0], \
            f"accuracy {got} with plural names, {want} with singular"

    def cut_prompts() -> tuple[str, str]:
        prefix = "a very long and carefully written description of the piece of fruit that is seen in this picture namely the "
        folder, long = renamed_task("long", lambda n: prefix + n)
        run, got = reuse_accuracy(folder, hub_file, long)
        # Right: refused with one line (the prompts are cut to the same text), or answered at the short names' level.
        want = reuse_accuracy(renamed_task("singular", lambda n: n)[0], hub_file, names)[1]
        return judged(run, lambda r: got is not None and want is not None and got >= want - 0.05, error_is_right=True)

    def nan_model() -> tuple[str, str]:
        import torch

        hub = json.loads(hub_file.read_text())
        folder = scratch / "nan-hub"
        folder.mkdir(exist_ok=True)
        for entry in hub["models"]:
            for key in ("checkpoint", "config"):
                source = hub_file.parent / entry[key]
                if not (folder / entry[key]).exists():
                    shutil.copy(source, folder / entry[key])
        food = next(e for e in hub["models"] if e["id"] == "food-expert")
        state = torch.load(folder / food["checkpoint"], map_location="cpu", weights_only=False)
        weights = state.get("state_dict", state) if isinstance(state, dict) else state
        for value in weights.values():
            if torch.is_tensor(value) and value.is_floating_point():
                value.fill_(float("nan"))
        torch.save(state, folder / food["checkpoint"])
        (folder / "hub.json").write_text(json.dumps(hub))
        want = reuse_accuracy(renamed_task("singular", lambda n: n)[0], hub_file, names)[1]
        run, got = reuse_accuracy(renamed_task("singular", lambda n: n)[0], folder / "hub.json", names)
        named = "food-expert" in run.stderr
        return judged(run, lambda r: named and got is not None and want is not None and got >= 0.5 * want,
                      error_is_right=named)

    def percent_table() -> tuple[str, str]:
        import csv

        data = ROOT.parent / "shared" / "data"
        results = data / "openclip_results.csv"
        with open(results, encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        header, body = rows[0], rows[1:40]
        column = header.index("Country211")
        body[0][column] = "0.009"                # one model at 0.9 % on the column
        first = 4                                   # name, pretrained, params, FLOPs: not accuracies
        percent = [row[:first] + [f"{float(v) * 100:.2f}" if v else v for v in row[first:]] for row in body]
        tables = {}
        for label, table in (("fraction", body), ("percent", percent)):
            path = scratch / f"results-{label}.csv"
            with open(path, "w", encoding="utf-8", newline="") as handle:
                csv.writer(handle).writerows([header, *table])
            copy = index_copy(index, scratch / f"index-{label}")
            run = cli("published", "import", "--index", str(copy), "--results", str(path),
                      "--classnames", str(data / "clip_benchmark_classnames.json"))
            if run.returncode != 0:
                return judged(run, lambda r: False)
            tables[label] = cli("select", "--index", str(copy), "--mode", "counts", "-k", "3",
                                "flag of France", "flag of Japan", "flag of Brazil")
        want = tables["fraction"].json()["classes"]
        return judged(tables["percent"], lambda r: [c["models"] for c in r.json()["classes"]]
                      == [c["models"] for c in want])

    def reserved_id() -> tuple[str, str]:
        """A hub model whose id is the label matrix's folder name: labeled beside the matrix, never over it."""
        from PIL import Image

        hub = json.loads(hub_file.read_text())
        entry = {**next(e for e in hub["models"] if e["id"] == "food-expert"), "id": "matrix"}
        for key in ("checkpoint", "config"):
            entry[key] = str(hub_file.parent / entry[key])
        path = scratch / "reserved-hub.json"
        path.write_text(json.dumps({"name": "reserved", "models": [entry]}))
        copy = index_copy(index, scratch / "index-reserved")
        from mll_index.labels.matrix import append_labels, open_matrix

        append_labels(copy, ["n07739125"], [("other", {"id": "other"})], np.ones((1, 1, 3), np.int64))
        samples = scratch / "samples-one" / "n07739125"          # apple
        samples.mkdir(parents=True, exist_ok=True)
        source = sorted((world_root() / "tasks" / task / "apple").glob("*.png"))[:2]
        for i, image in enumerate(source):
            Image.open(image).save(samples / f"{i}.png")
        run = cli("label", "--index", str(copy), "--hub", str(path), "--samples", str(samples.parent))
        matrix = open_matrix(copy)
        return judged(run, lambda r: set(matrix.model_ids) == {"other", "matrix"})

    return [
        Case("prompts", "plural class names", plurals),
        Case("prompts", "class names cut to the same prompt", cut_prompts),
        Case("model_outputs", "a model with NaN weights chosen for a class", nan_model),
        Case("published", "a percent table with values below 1", percent_table),
        Case("layout", "a hub model with the id 'matrix'", reserved_id),
    ]


def small_index(folder: Path, source: Path, nodes: int = 300, models: int = 3) -> Path:
    """A small index for the writer races and kills: `nodes` of the source index's nodes, built through
    the CLI, with a label matrix of `models` models' seeded counts (no vision model needed)."""
    import numpy as np

    from mll_index.index.node_index import load_index
    from mll_index.labels.matrix import append_labels

    index = load_index(source)
    every = sorted(index.graph.wnids[r] for r in index.graph.nodes)
    wnids = every[:: max(1, len(every) // nodes)][:nodes]
    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / "wnids.txt"
    listing.write_text("\n".join(wnids) + "\n")
    run = cli("build", "--index", str(folder / "index"), "--wnids", str(listing))
    if run.returncode != 0:
        raise RuntimeError(f"could not build the small index: {run.stderr.strip()[-300:]}")
    rng = np.random.default_rng(0)
    for m in range(models):
        append_labels(folder / "index", wnids, [(f"model-{m}", {"id": f"model-{m}"})],
                      rng.integers(0, 5, (len(wnids), 1, 3)))
    return folder / "index"


def case_list(scratch: Path, index: Path) -> list[Case]:
    return [*image_cases(scratch), *file_cases(scratch, index), *name_cases(index), *model_cases(scratch, index)]


def attack_and_corruption(index: Path, only: str | None) -> dict[str, Any]:
    """The service-attack section (`robustness_service.service_attack`: per kind ok, clear_error, wrong,
    server_error, hang, leak) and the corruption sweep (`robustness_corruption.corruption_sweep`: every
    file kind x flip, truncate, delete; named_by_verify, refused, silent_change), each on its own copy."""
    wanted = set(only.split(",")) if only else {"service_attack", "corruption"}
    out: dict[str, Any] = {}
    if "service_attack" in wanted:
        from robustness_service import service_attack

        out["service_attack"] = service_attack(index)
        print(f"service_attack: {out['service_attack']}", flush=True)
    if "corruption" in wanted:
        from robustness_corruption import corruption_sweep

        out["corruption"] = corruption_sweep(index)
        print(f"corruption: { {k: v for k, v in out['corruption'].items() if not isinstance(v, (list, dict))} }",
              flush=True)
    return out


def extra_lines(extra: dict[str, Any]) -> list[str]:
    """The Markdown of the service-attack and corruption sections."""
    lines: list[str] = []
    attack = extra.get("service_attack")
    if attack:
        keys = ("ok", "clear_error", "wrong", "server_error", "hang", "leak")
        lines += ["", "## Service attacks (bars: 0 wrong, 0 server errors, 0 hangs, 0 leaks)", "",
                  "| kind | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += [f"| {kind} | " + " | ".join(str(row.get(k, 0)) for k in keys) + " |" for kind, row in attack.items()]
    corruption = extra.get("corruption")
    if corruption:
        lines += ["", "## Corruption sweep (bars: every corruption named by --verify, 0 silent answer changes)", "",
                  "```", json.dumps({k: v for k, v in corruption.items() if not isinstance(v, (list, dict))}), "```"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=ROOT / "indexes" / "default")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="Only the kinds named (comma-separated).")
    args = parser.parse_args()

    results: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="mll-robustness-") as tmp:
        scratch = Path(tmp)
        for case in case_list(scratch, args.index):
            if args.only and case.kind not in args.only.split(","):
                continue
            start = time.perf_counter()
            try:
                outcome, detail = case.run()
            except Exception as exc:  # the bench's own failure is reported as such, not as the tool's
                outcome, detail = "wrong", f"bench could not run the case: {type(exc).__name__}: {exc}"
            results.append({"kind": case.kind, "case": case.name, "outcome": outcome, "detail": detail,
                            "seconds": round(time.perf_counter() - start, 1)})
            print(f"{outcome:12s} {case.kind:14s} {case.name}  ({detail[:100]})", flush=True)
        faults: dict[str, Any] = {}
        if not args.only or "faults" in args.only.split(","):
            import faults as fault_bench

            races = fault_bench.run_races(small_index(scratch / "races", args.index))
            kills = fault_bench.run_kills(small_index(scratch / "kills", args.index), args.kills, args.seed)
            faults = {"writes_lost": races["writes_lost"], "reads": races["reads"],
                      "reads_failed": races["reads_failed"], "kills": kills["kills"],
                      "loads_failed": kills["loads_failed"], "verify_failed": kills["verify_failed"],
                      "temp_bytes_seen": kills["temp_bytes_seen"], "temp_bytes_left": kills["temp_bytes_left"],
                      "races": races, "kill_errors": kills["errors"]}
            print(f"faults: writes lost {faults['writes_lost']}, reads failed {faults['reads_failed']} of "
                  f"{faults['reads']}, kills {faults['kills']}, temporary bytes left {faults['temp_bytes_left']}",
                  flush=True)

        extra = attack_and_corruption(args.index, args.only)

    kinds: dict[str, dict[str, int]] = {}
    for r in results:
        kinds.setdefault(r["kind"], dict.fromkeys(OUTCOMES, 0))[r["outcome"]] += 1
    totals = {o: sum(k[o] for k in kinds.values()) for o in OUTCOMES}
    figures = {"cases": len(results), **totals, "kinds": kinds, "results": results,
               **{k: faults.get(k) for k in ("writes_lost", "reads_failed", "kills", "temp_bytes_left")},
               "faults": faults, **extra}
    lines = ["# Robustness: hostile input and faults, end to end", "",
             f"{len(results)} cases: {totals['ok']} ok, {totals['clear_error']} clear errors, "
             f"{totals['wrong']} wrong answers, {totals['traceback']} tracebacks (bar: 0 wrong, 0 tracebacks).", "",
             "| kind | ok | clear error | wrong | traceback |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['ok']} | {v['clear_error']} | {v['wrong']} | {v['traceback']} |" for k, v in kinds.items()]
    lines += ["", "| kind | case | outcome | detail |", "|---|---|---|---|"]
    lines += [f"| {r['kind']} | {r['case']} | {r['outcome']} | {r['detail'][:120].replace('|', '/')} |" for r in results]
    if faults:
        lines += ["", f"Races and kills: writes lost {faults.get('writes_lost')}, reads failed {faults.get('reads_failed')}, "
                      f"kills {faults.get('kills')}, temporary bytes left {faults.get('temp_bytes_left')} (bar: 0, 0, 0)."]
    lines += extra_lines(extra)
    # A partial run (--only) writes beside the full run's results, never over them.
    name = "robustness" if not args.only else "robustness_" + "_".join(args.only.split(","))
    path = write_results(name, figures, "\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
