"""``archiver run``: the service, configured from options over the environment, until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

import click

from archiver.cli.options import env_help
from archiver.config import RunConfig
from archiver.environment import load_run_config
from archiver.logs import setup_logging
from archiver.service.event_loop import run_async


@click.command()
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
    "--compact-after",
    help=env_help("Compact each app-hour into one file this long after it ended; off disables; at least "
                   "FLUSH_INTERVAL (default 10m).", "COMPACT_AFTER"),
)  # fmt: skip
@click.option(
    "--table",
    help=env_help("on: the archive is a Delta Lake table the service commits its files to; off: plain Parquet "
                   "files only (default on).", "TABLE"),
)  # fmt: skip
@click.option(
    "--table-commit-interval",
    help=env_help(
        "Commit the uploaded files to the Delta table this often (default 60s).", "TABLE_COMMIT_INTERVAL"
    ),
)
@click.option(
    "--table-vacuum-retention",
    help=env_help("Delete a file removed from the Delta table and left behind (a process killed between a "
                   "commit and its delete) this long after its removal (default 1h).", "TABLE_VACUUM_RETENTION"),
)  # fmt: skip
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
