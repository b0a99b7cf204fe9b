"""The selection's commands: select (here, or asking a running service with --server) and serve."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mll_index.cli.options import (
    PositiveFinite, echo_or_write, embedding_cache, index_option, read_names, read_task, selection_options,
)
from mll_index.errors import InputError


@click.command()
@click.argument("names", nargs=-1)
@click.option("--file", "file", default=None, help="File of class names, one per line ('-' for stdin).")
@click.option("--task", "task_file", type=click.Path(path_type=Path), default=None,
              help="A task file: JSON (classes, optional captions, domain, description) or one name per line.")
@click.option("--batch", "batch", type=click.Path(path_type=Path), default=None,
              help="JSONL of tasks, one per line; writes JSONL selections (to --out or stdout).")
@click.option("--skip-bad", is_flag=True, help="With --batch: answer the good lines and list the bad ones on stderr "
              "(file:line and why) instead of refusing the whole file, which is the default.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None, help="Write the output here.")
@index_option
@selection_options
@click.option("--domain", default=None, help="The task's image domain (e.g. sketch): only sample images tagged "
              "with it count, where there are such.")
@click.option("--explain", is_flag=True, help="Show why each model won (F1, counts, smoothing).")
@click.option("--ranking", "ranking_size", default=100, show_default=True, type=click.IntRange(0),
              help="Models listed in the task-level ranking (0: all).")
@click.option("--images", "probe_images", type=click.Path(path_type=Path), default=None,
              help="A folder of a few unlabeled images of the task: sample images like them count most "
                   "(restricted mode; one labeled model encodes them).")
@click.option("--probe", default=16, show_default=True, type=click.IntRange(0),
              help="Probe images of --images (or the task's probe_images) used at most (0: ignore them).")
@click.option("--server", default=None, metavar="URL", help="Ask a running `mll-index serve` at URL instead of "
              "opening the index here (bearer token from $MLL_INDEX_API_KEY).")
@click.option("--max-gflops", type=PositiveFinite(0, min_open=True), default=None,
              help="Only models of at most this many GFLOPs per image.")
@click.option("--max-params", type=PositiveFinite(0, min_open=True), default=None,
              help="Only models of at most this many million parameters.")
@click.option("--budget-gflops", type=PositiveFinite(0, min_open=True), default=None,
              help="The ensemble's GFLOPs per image (the sum over its distinct models) at most this.")
@click.option("--pareto", is_flag=True, help="Also list the non-dominated (predicted accuracy, GFLOPs) choices.")
@click.option("--labels", "label_source", type=click.Choice(["auto", "image", "published", "both"]), default="auto",
              show_default=True, help="Labels that rank the models: image-based, published, both merged by rank, or "
              "auto (every source the index holds; warns when the two share few models).")
@click.option("--rule", type=click.Choice(["auto", "calibrated", "mll"]), default="auto", show_default=True,
              help="How image-based labels rank a class's models: the rule `mll-index calibrate` fitted to the index "
              "(calibrated), the paper's alpha / F1 rule (mll), or auto (calibrated where the index has one).")
def select(names: tuple[str, ...], file: str | None, task_file: Path | None, batch: Path | None, skip_bad: bool,
           out: Path | None,
           index_path: Path | None, k: int, alpha: float, n_nodes: int, mode: str, domain: str | None,
           explain: bool, ranking_size: int, probe_images: Path | None, probe: int, server: str | None,
           max_gflops: float | None, max_params: float | None, budget_gflops: float | None, pareto: bool,
           label_source: str, rule: str) -> None:
    """Choose the top-k models per class for a task, from the index's labels."""
    from mll_index.selection.budget import Budget

    budget = Budget(max_gflops, max_params, budget_gflops)
    if server is not None and (budget.active or pareto):
        raise InputError("budgets and --pareto are answered by a local index; drop --server or the budget")
    if server is not None and skip_bad:
        raise InputError("--skip-bad is answered by a local index (the service refuses a batch with a bad task); "
                         "drop --server or --skip-bad")
    if server is not None:
        _select_on_server(server, names, file, task_file, batch, out, index_path, probe_images, k=k, alpha=alpha,
                          nodes=n_nodes, mode=mode, domain=domain, explain=explain, ranking=ranking_size,
                          labels=label_source, rule=rule)
        return
    from mll_index.core.paths import default_index_path
    from mll_index.selection.answer import answer_tasks, answer_warning_lines
    from mll_index.selection.selector import open_selector
    from mll_index.selection.settings import SelectionSettings
    from mll_index.selection.task import read_batch_lines, with_overrides

    path = index_path or default_index_path()
    if skip_bad and batch is None:
        raise InputError("--skip-bad is for --batch files")
    if batch is not None:
        if names or file or task_file:
            raise InputError("--batch takes the tasks from its file; give no class names, --file or --task")
        tasks, refused = read_batch_lines(batch, skip_bad=skip_bad)
        for line in refused:
            click.echo(f"mll-index: skipped {line}", err=True)
        if refused:
            click.echo(f"mll-index: skipped {len(refused)} of {len(tasks) + len(refused)} task lines; "
                       "the output has one line per task answered, in file order", err=True)
    else:
        tasks = [read_task(names, file, task_file)]
    tasks = with_overrides(tasks, domain=domain, probe_images=probe_images)
    settings = SelectionSettings(k=k, alpha=alpha, n_nodes=n_nodes, mode=mode, explain=explain,  # type: ignore[arg-type]
                                 ranking_size=ranking_size or None, probe=probe, labels=label_source,  # type: ignore[arg-type]
                                 rule=rule)  # type: ignore[arg-type]
    answers = answer_tasks(open_selector(path, cache=embedding_cache()), tasks, settings, budget=budget, pareto=pareto)
    # An index-wide line stands in every answer of a batch: printed once.
    for line in dict.fromkeys(line for answer in answers for line in answer_warning_lines(answer)):
        click.echo(line, err=True)
    if batch is not None:
        text = "".join(json.dumps(a) + "\n" for a in answers)
    else:
        text = json.dumps(answers[0], indent=1) + "\n"
    echo_or_write(text, out)


def _select_on_server(server: str, names: tuple[str, ...], file: str | None, task_file: Path | None,
                      batch: Path | None, out: Path | None, index_path: Path | None, probe_images: Path | None,
                      **query: object) -> None:
    """`select --server URL`: the same answer from a running `mll-index serve`, its warnings on stderr.

    `query` holds the selection options under the names `remote_select` takes (k, alpha, nodes, ...).
    """
    # Before any other import: this path loads no numpy-heavy module, no text runtime.
    from mll_index.service.client import remote_select

    if index_path is not None:
        raise InputError("give --server or --index, not both (the service has its own index)")
    if probe_images is not None:
        raise InputError("--images is read where the index is: give the folder in the task file's "
                         "\"probe_images\" (a path the server can read) with --server")
    text, warnings = remote_select(server, None if (task_file or batch) else read_names(names, file),
                                   task_file, batch, bool(names or file), **query)
    for line in warnings:
        click.echo(line, err=True)
    echo_or_write(text, out)


@click.command()
@index_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (127.0.0.1: this machine only).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes, each holding the index open.")
@click.option("--api-key-env", default=None, metavar="NAME",
              help="Require the bearer token held by environment variable NAME on every route but /healthz.")
@click.option("--probe-root", "probe_roots", multiple=True, type=click.Path(path_type=Path),
              help="A folder whose images tasks may name as probe_images (repeatable); none: probe_images are refused.")
def serve(index_path: Path | None, host: str, port: int, workers: int, api_key_env: str | None,
          probe_roots: tuple[Path, ...]) -> None:
    """Serve selection over HTTP (OpenAPI at /docs); new index versions are picked up without a restart."""
    from mll_index.core.paths import default_index_path
    from mll_index.service.server import serve as run_service

    run_service(index_path or default_index_path(), host=host, port=port, workers=workers, api_key_env=api_key_env,
                probe_roots=list(probe_roots))


@click.command()
@index_option
@click.option("--tasks", "n_tasks", default=600, show_default=True, type=click.IntRange(10),
              help="Pseudo-tasks drawn from the index's sample set.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the image split and the draws.")
def calibrate(index_path: Path | None, n_tasks: int, seed: int) -> None:
    """Fit the selection rule to the index's labels on pseudo-tasks (no user data; no model runs)."""
    from mll_index.core.paths import default_index_path
    from mll_index.selection.calibrate import calibrate_rule

    path = index_path or default_index_path()
    report = calibrate_rule(path, tasks=n_tasks, seed=seed, progress=True)
    held = report["held_out"]
    click.echo(f"calibrated the selection rule of {path} on {report['pseudo_tasks']} pseudo-tasks "
               f"({report['models']} models, {report['seconds']} s); on {report['held_out_tasks']} held-out ones: "
               f"F1 error {held['mae']}, vote accuracy k=1 {held['calibrated_k1']} (paper's rule {held['mll_k1']}), "
               f"k=3 {held['calibrated_k3']} (paper's rule {held['mll_k3']})")


COMMANDS = [select, serve, calibrate]
