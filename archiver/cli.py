"""The ``archiver`` command line: ``run`` and ``demo`` here; ``query`` and ``ls`` wired in from :mod:`query`.

Every command turns :class:`~archiver.errors.ArchiverError` into one line on
stderr and the error's exit code (2 for bad options, 1 otherwise), never a
traceback.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from archiver.config import RunConfig, load_run_config
from archiver.errors import ArchiverError
from archiver.logs import setup_logging

T = TypeVar("T")


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on uvloop when installed (measured faster for the NATS path), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


class ArchiverGroup(click.Group):
    """A click group printing archiver errors as one line with their exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        """Invoke the subcommand, converting errors."""
        try:
            return super().invoke(ctx)
        except ArchiverError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=ArchiverGroup)
@click.version_option(package_name="archiver")
def main() -> None:
    """Archive the Fly.io log stream as zstd Parquet, and search it."""


def _env_help(text: str, name: str) -> str:
    return f"{text} [env: {name}]"


@main.command()
@click.option("--nats-url", help=_env_help("NATS server URL (default nats://[fdaa::3]:4223).", "NATS_URL"))
@click.option("--org", help=_env_help("NATS user: your Fly org slug (default personal).", "ORG"))
@click.option(
    "--access-token",
    help=_env_help("NATS password: a Fly token. Prefer the variable: options show in `ps`.", "ACCESS_TOKEN"),
)
@click.option(
    "--subject", help=_env_help("Subject to subscribe to, NATS wildcards (default logs.>).", "SUBJECT")
)
@click.option("--queue", help=_env_help("Queue group shared by several archivers for HA.", "QUEUE"))
@click.option(
    "--archive", "archive_url",
    help=_env_help("s3://bucket[/prefix], file:///path or a directory (default s3://$BUCKET_NAME or ./archive).",
                   "ARCHIVE_URL"),
)  # fmt: skip
@click.option(
    "--flush-interval", help=_env_help("Flush a partition after this age (default 60s).", "FLUSH_INTERVAL")
)
@click.option(
    "--flush-bytes", help=_env_help("Flush a partition at this many bytes (default 64MiB).", "FLUSH_BYTES")
)
@click.option(
    "--max-buffer-bytes",
    help=_env_help("Memory cap over all partitions (default 256MiB).", "MAX_BUFFER_BYTES"),
)
@click.option("--http-port", help=_env_help("Port of /health and /metrics (default 8686).", "HTTP_PORT"))
@click.option("--log-level", help=_env_help("debug, info, warning or error (default info).", "LOG_LEVEL"))
@click.option(
    "--workers", help=_env_help("Processes sharing the stream in one queue group (default 1).", "WORKERS")
)
@click.option(
    "--stall-timeout",
    help=_env_help("Re-subscribe after this long without a message while connected; 0 disables (default 10m).",
                   "STALL_TIMEOUT"),
)  # fmt: skip
@click.option(
    "--spool-dir",
    help=_env_help("Write-ahead spool directory; off disables it (default ./spool).", "SPOOL_DIR"),
)
@click.option("--spool-max-bytes", help=_env_help("Disk cap of the spool (default 2GiB).", "SPOOL_MAX_BYTES"))
@click.option(
    "--spool-fsync-interval",
    help=_env_help("fsync the spool this often; 0 = every write (default 200ms).", "SPOOL_FSYNC_INTERVAL"),
)
@click.option(
    "--storage-failure-grace",
    help=_env_help("/health fails once storage has failed this long (default 2m).", "STORAGE_FAILURE_GRACE"),
)
@click.option(
    "--jetstream-stream",
    help=_env_help("Consume SUBJECT from this JetStream stream through a durable consumer (JETSTREAM_DURABLE, "
                   "default archiver), acking once archived.", "JETSTREAM_STREAM"),
)  # fmt: skip
def run(**options: str | None) -> None:
    """Subscribe to the log stream and archive every message until SIGTERM."""
    config = load_run_config(options)
    setup_logging(config.log_level)
    if config.workers > 1:
        from archiver.workers import run_workers

        given = {name: value for name, value in options.items() if value is not None}
        sys.exit(run_async(lambda: run_workers(config, given)))
    run_async(lambda: _run_service(config))


async def _run_service(config: RunConfig) -> None:
    from archiver.service import Service
    from archiver.storage import open_storage

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
    from archiver.demo import run_demo

    sys.exit(run_demo(duration, keep_running, archive_url, http_port))


def _wire_query_commands() -> None:
    # The only place archiver/ imports query/: the CLI wiring.
    try:
        from query.cli import ls_command, query_command
    except ImportError:  # pragma: no cover - query side not installed
        return
    main.add_command(query_command, "query")
    main.add_command(ls_command, "ls")


_wire_query_commands()
