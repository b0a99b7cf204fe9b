"""What several command families share: option decorators, parameter types, reading names and tasks,
opening the index and the caption cache, and the stderr lines of image runs.

Importing this module costs click and the standard library only; every mll_index module below the
CLI is imported inside the function that needs it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mll_index.errors import InputError

if TYPE_CHECKING:
    from mll_index.index.embed import EmbeddingCache


class PositiveFinite(click.FloatRange):
    """A FloatRange that also refuses nan (it passes every range check) and inf (no JSON number)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def with_options(options):  # type: ignore[no-untyped-def]
    """A decorator applying a list of click options, the first one listed first in --help."""
    def wrap(f):  # type: ignore[no-untyped-def]
        for option in reversed(options):
            f = option(f)
        return f
    return wrap


def index_option(f):  # type: ignore[no-untyped-def]
    return click.option("--index", "index_path", type=click.Path(path_type=Path), default=None,
                        help="Index directory [default: $MLL_INDEX_HOME/default or ./indexes/default].")(f)


def workers_option(f: Any) -> Any:
    return click.option("--workers", default=0, show_default=True, type=click.IntRange(0, 256),
                        help="Processes decoding images ahead of the models (0: decode in this process).")(f)


def selection_options(f):  # type: ignore[no-untyped-def]
    return with_options([
        click.option("-k", "k", default=1, show_default=True, type=click.IntRange(1, 1000), help="Models per class."),
        click.option("--alpha", default=0.7, show_default=True, type=click.FloatRange(0, 1),
                     help="Weight of the class's own F1 against the task's other classes."),
        click.option("--nodes", "n_nodes", default=5, show_default=True, type=click.IntRange(1, 1000),
                     help="Labeled nodes matched per class."),
        click.option("--mode", type=click.Choice(["auto", "restricted", "counts"]), default="auto", show_default=True,
                     help="restricted: confusion recomputed among the task's nodes from image-level labels; "
                          "counts: the label matrix's stored counts; auto: restricted while it is cheap "
                          "(image-level labels, a small hub), counts beyond."),
    ])(f)


def read_names(names: tuple[str, ...], file: str | None, what: str = "class names") -> list[str]:
    """Class names (or other items: `what`) from arguments, a file, or stdin ('-' or nothing), one per line.

    Files and stdin are read by `userfiles` (byte-order marks, UTF-16, CR LF; names normalised).
    """
    from mll_index.core.userfiles import decode_user_bytes, names_from_text, read_names_file

    if names and file:
        raise InputError(f"give {what} as arguments or with --file, not both")
    if names:
        return list(names)
    if file and file != "-":
        return read_names_file(Path(file), what)
    if sys.stdin.isatty():
        raise InputError(f"no {what}: give them as arguments, with --file, or on stdin")
    return names_from_text(decode_user_bytes(sys.stdin.buffer.read(), "stdin"), "stdin", what)


def read_task(names: tuple[str, ...], file: str | None, task_file: Path | None):  # type: ignore[no-untyped-def]
    """The task from class names (arguments, --file or stdin) or a task file, never both."""
    from mll_index.selection.task import make_task, read_task_file

    if task_file is not None:
        if names or file:
            raise InputError("give the task as class names, --file or --task, not several")
        return read_task_file(task_file)
    return make_task(read_names(names, file))


def embedding_cache() -> EmbeddingCache:
    """The user's caption-vector cache (<cache>/embeddings.sqlite), shared by every command."""
    from mll_index.index.embed import EmbeddingCache

    return EmbeddingCache.default()


def existing_index_path(path: Path | None) -> Path:
    """`path` (or the default index's), refused when nothing is there with how to build an index."""
    from mll_index.core.paths import default_index_path

    path = path or default_index_path()
    if not path.exists():
        raise InputError(f"{path}: no index here; build one with `mll-index build --index {path}`")
    return path


def open_index(path: Path | None):  # type: ignore[no-untyped-def]
    """The node index at `path` (or the default one); a missing one says how to build it."""
    from mll_index.index.node_index import load_index

    return load_index(existing_index_path(path))


def echo_or_write(text: str, out: Path | None) -> None:
    """`text` written to `out` (atomically: a reader never sees half of it), else printed as it is."""
    if out:
        from mll_index.core.artifacts import atomic_file

        with atomic_file(out) as handle:
            handle.write(text)
    else:
        click.echo(text, nl=False)


def echo_rates(stats: list[Any]) -> None:
    """The decode and encode rates on stderr, so a user sees which one bounds the run."""
    if stats:
        from mll_index.images.encoding import rates_line

        click.echo(f"mll-index: {rates_line(stats)}", err=True)


def echo_unreadable(paths: list[str], reasons: dict[str, str], root: Path, shown: int = 20) -> None:
    """One warning line per skipped image (the first `shown`), naming the file and why."""
    click.echo(f"mll-index: warning: skipped {len(paths)} unreadable image(s) in {root}:", err=True)
    for rel in paths[:shown]:
        click.echo(f"  {rel}: {reasons.get(rel, 'cannot be decoded')}", err=True)
    if len(paths) > shown:
        click.echo(f"  ... and {len(paths) - shown} more", err=True)
