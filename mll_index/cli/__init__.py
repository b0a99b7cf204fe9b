"""The `mll-index` command line: each command parses options, calls one public function, prints.

One module per command family (index, models, labeling, published, selection, reuse, evaluation,
world), their shared options in `options`; this module holds the root group, the logging set-up
and `main`. Importing it costs click and `mll_index.errors`: every command imports what it needs.
"""

from __future__ import annotations

import logging
import sys

import click

from mll_index import __version__
from mll_index.cli import evaluation, index, labeling, models, published, reuse, selection, world
from mll_index.errors import MLLIndexError

log = logging.getLogger("mll_index")


@click.group()
@click.version_option(__version__, prog_name="mll-index")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def cli(verbose: bool) -> None:
    """Choose vision-language models per class from an index built once."""
    # Without -v, third-party logging (open_clip's root logger, transformers) stays quiet, while
    # mll-index's own warnings (published labels dropped on a rebuild, skipped folders, retries)
    # reach stderr as one line each; -v shows every logger at INFO.
    ours = logging.getLogger("mll_index")
    if verbose:
        ours.removeHandler(_WARNING_LINES)
        ours.setLevel(logging.NOTSET)
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return
    root = logging.getLogger()
    if not root.handlers:
        # No handler on the root: third-party records below CRITICAL are dropped where they are
        # made, and ours still propagate (to a host's handlers, such as pytest's) without printing twice.
        root.setLevel(logging.CRITICAL)
        # A handler that prints nothing, so that a library's module-level `logging.info(...)` (open_clip's
        # create_model) finds one and does not call basicConfig, whose raw stderr handler would print
        # every later warning of ours a second time as `WARNING:mll_index...`.
        root.addHandler(logging.NullHandler())
    if _WARNING_LINES not in ours.handlers:
        ours.addHandler(_WARNING_LINES)
    ours.setLevel(logging.WARNING)


class _WarningLine(logging.Handler):
    """Writes a log record as one `mll-index: warning: ...` line on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(f"mll-index: warning: {' '.join(self.format(record).split())}", err=True)
        except Exception:  # noqa: BLE001 - logging must never raise into the command
            self.handleError(record)


_WARNING_LINES = _WarningLine(logging.WARNING)

# The command families, each listing its commands in COMMANDS; `mll-index --help` sorts them by name.
FAMILIES = (index, models, labeling, published, selection, reuse, evaluation, world)
for _command in (command for family in FAMILIES for command in family.COMMANDS):
    cli.add_command(_command)


def main() -> None:
    """Entry point: a user's mistake is one line on stderr and exit status 1, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("mll-index: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        # One line like every other mistake; click's own four-line usage block buries the cause.
        where = f"{exc.ctx.command_path} --help" if exc.ctx is not None else "mll-index --help"
        click.echo(f"mll-index: error: {exc.format_message()} (see '{where}')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"mll-index: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except MLLIndexError as exc:
        click.echo(f"mll-index: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as exc:
        click.echo(f"mll-index: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
        sys.exit(1)
