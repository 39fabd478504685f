"""The ``archiver`` command line: the group, its error handling, and every command registered.

``run`` is :mod:`archiver.cli.run`, ``demo`` :mod:`archiver.cli.demo`, the
management commands :mod:`archiver.cli.manage`; ``query`` and ``ls`` are
wired in from :mod:`query.cli` (the only place archiver/ imports query/).

Every command turns :class:`~archiver.errors.ArchiverError` into one line on
stderr and the error's exit code (2 for bad options, 1 otherwise), never a
traceback. Anything else is a bug: its traceback (without local variables)
and a last ``error:`` line go to stderr, exit code 1. Both pass through
:func:`archiver.redact.redact`, so no secret is printed. ``--help`` shows no
defaults taken from the environment, so no secret's value either.
"""

from __future__ import annotations

import atexit
import gc
import sys
import traceback
from typing import Any

import click

from archiver.cli.demo import demo
from archiver.cli.manage import compact, import_command, prune, stats
from archiver.cli.run import run
from archiver.cli.table import table
from archiver.environment import register_environment_secrets
from archiver.errors import ArchiverError
from archiver.redact import redact

# At exit, exempt every object from the interpreter's final collection, which would walk them all
# (pyarrow, click, asyncio): ~15 ms of a 0.18 s `archiver query`. atexit runs before that collection;
# commands flush and close their output explicitly, nothing relies on it.
atexit.register(gc.freeze)


class ArchiverGroup(click.Group):
    """A click group printing archiver errors as one line with their exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        """Invoke the subcommand, converting errors."""
        register_environment_secrets()  # before parsing: even a usage error may echo a secret
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            # Click's own parse errors (unknown option, bad integer): one line too, not its usage block.
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            if exc.ctx is None and ctx.invoked_subcommand:
                where = f"{where} {ctx.invoked_subcommand}"
            message = " ".join(exc.format_message().split())
            click.echo(redact(f"error: {message} (see '{where} --help')"), err=True)
            sys.exit(2)
        except ArchiverError as exc:
            click.echo(redact(f"error: {exc}"), err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            # A bug: keep the traceback for the report, but only through the redaction.
            click.echo(redact("".join(traceback.format_exception(exc))).rstrip(), err=True)
            click.echo(redact(f"error: internal error: {type(exc).__name__}: {exc}"), err=True)
            sys.exit(1)


@click.group(cls=ArchiverGroup)
@click.version_option(package_name="archiver")
def main() -> None:
    """Archive the Fly.io log stream as zstd Parquet, and search it."""


for _command in (run, demo, compact, prune, import_command, stats, table):
    main.add_command(_command)


def _wire_query_commands() -> None:
    # The only place archiver/ imports query/: the CLI wiring.
    try:
        from query.cli import ls_command, query_command
    except ImportError:  # pragma: no cover - query side not installed
        return
    main.add_command(query_command, "query")
    main.add_command(ls_command, "ls")


_wire_query_commands()
