"""The ``archiver`` command line: ``run`` and ``demo`` here, the management commands from :mod:`archiver.cli.manage`, ``query`` and ``ls`` wired in from :mod:`query`.

Every command turns :class:`~archiver.errors.ArchiverError` into one line on
stderr and the error's exit code (2 for bad options, 1 otherwise), never a
traceback. Anything else is a bug: its traceback (without local variables)
and a last ``error:`` line go to stderr, exit code 1. Both pass through
:func:`archiver.redact.redact`, so no secret is printed. ``--help`` shows no
defaults taken from the environment, so no secret's value either.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import signal
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from archiver.cli.manage import compact, env_help, import_command, prune, stats
from archiver.config import RunConfig
from archiver.environment import load_run_config, register_environment_secrets
from archiver.errors import ArchiverError, ConfigError
from archiver.logs import setup_logging
from archiver.redact import redact

T = TypeVar("T")

# At exit, exempt every object from the interpreter's final collection, which would walk them all
# (pyarrow, click, asyncio): ~15 ms of a 0.18 s `archiver query`. atexit runs before that collection;
# commands flush and close their output explicitly, nothing relies on it.
atexit.register(gc.freeze)


def run_async(main: Callable[[], Coroutine[Any, Any, T]], event_loop: str = "auto") -> T:
    """Run a coroutine on uvloop when installed and not refused (see BENCHMARKS.md), else asyncio."""
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise ConfigError(
                    "EVENT_LOOP: uvloop is not installed (pip install 'archiver[fast]')"
                ) from None
        else:
            return uvloop.run(main())
    return asyncio.run(main())


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


@main.command()
@click.option("--nats-url", help=env_help("NATS server URL (default nats://[fdaa::3]:4223).", "NATS_URL"))
@click.option("--org", help=env_help("NATS user: your Fly org slug (default personal).", "ORG"))
@click.option(
    "--access-token",
    help=env_help("NATS password: a Fly token. Prefer the variable: options show in `ps`.", "ACCESS_TOKEN"),
)
@click.option(
    "--subject", help=env_help("Subject to subscribe to, NATS wildcards (default logs.>).", "SUBJECT")
)
@click.option("--queue", help=env_help("Queue group shared by several archivers for HA.", "QUEUE"))
@click.option(
    "--archive", "archive_url",
    help=env_help("s3://bucket[/prefix], file:///path or a directory (default s3://$BUCKET_NAME or ./archive).",
                   "ARCHIVE_URL"),
)  # fmt: skip
@click.option(
    "--flush-interval", help=env_help("Flush a partition after this age (default 60s).", "FLUSH_INTERVAL")
)
@click.option(
    "--flush-bytes", help=env_help("Flush a partition at this many bytes (default 64MiB).", "FLUSH_BYTES")
)
@click.option(
    "--max-buffer-bytes",
    help=env_help("Memory cap over all partitions (default 256MiB).", "MAX_BUFFER_BYTES"),
)
@click.option(
    "--max-message-bytes",
    help=env_help("Truncate longer messages to this size, marked (default 4MiB).", "MAX_MESSAGE_BYTES"),
)
@click.option("--http-port", help=env_help("Port of /health and /metrics (default 8686).", "HTTP_PORT"))
@click.option("--log-level", help=env_help("debug, info, warning or error (default info).", "LOG_LEVEL"))
@click.option(
    "--workers", help=env_help("Processes sharing the stream in one queue group (default 1).", "WORKERS")
)
@click.option(
    "--stall-timeout",
    help=env_help("Re-subscribe after this long without a message while connected; 0 disables (default 10m).",
                   "STALL_TIMEOUT"),
)  # fmt: skip
@click.option(
    "--spool-dir",
    help=env_help("Write-ahead spool directory; off disables it (default ./spool).", "SPOOL_DIR"),
)
@click.option("--spool-max-bytes", help=env_help("Disk cap of the spool (default 2GiB).", "SPOOL_MAX_BYTES"))
@click.option(
    "--spool-fsync-interval",
    help=env_help("fsync the spool this often; 0 = every write (default 200ms).", "SPOOL_FSYNC_INTERVAL"),
)
@click.option(
    "--storage-failure-grace",
    help=env_help("/health fails once storage has failed this long (default 2m).", "STORAGE_FAILURE_GRACE"),
)
@click.option(
    "--jetstream-stream",
    help=env_help("Consume SUBJECT from this JetStream stream through a durable consumer (JETSTREAM_DURABLE, "
                   "default archiver), acking once archived.", "JETSTREAM_STREAM"),
)  # fmt: skip
def run(**options: str | None) -> None:
    """Subscribe to the log stream and archive every message until SIGTERM."""
    config = load_run_config(options)
    setup_logging(config.log_level)
    if config.workers > 1:
        from archiver.service.workers import run_workers

        given = {name: value for name, value in options.items() if value is not None}
        sys.exit(run_async(lambda: run_workers(config, given), config.event_loop))
    run_async(lambda: _run_service(config), config.event_loop)


async def _run_service(config: RunConfig) -> None:
    from archiver.service.pipeline import Service
    from archiver.storage.open import open_storage

    stop = asyncio.Event()
    abandon = asyncio.Event()

    def on_signal() -> None:
        (abandon if stop.is_set() else stop).set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    service = Service(config, open_storage(config.archive))
    await service.run(stop, abandon)


@main.command()
@click.option("--duration", default="20", show_default=True, help="Publish logs for this long: 20, 45s, 2m.")
@click.option("--keep-running", is_flag=True, help="Publish and archive until Ctrl-C instead.")
@click.option("--archive", "archive_url", help="Where to archive (default ./demo-archive).")
@click.option("--http-port", help="Port of /health and /metrics (default: a free port).")
def demo(duration: str, keep_running: bool, archive_url: str | None, http_port: str | None) -> None:
    """Try it without Fly: local NATS, Fly-shaped logs, the archiver, then a query (loopback only)."""
    from archiver.demo.demo import run_demo

    sys.exit(run_demo(duration, keep_running, archive_url, http_port))


for _command in (compact, prune, import_command, stats):
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
