"""``archiver demo``: a local nats-server, Fly-shaped logs, the archiver, then a query, all on loopback.

The archiver runs in this process exactly as ``archiver run`` would (the same
:class:`~archiver.service.pipeline.Service`), fed by :func:`archiver.demo.publish.publish`.
Part of the logs, published during the first third of the run, carry times of
the previous hour (as a backfill or a late machine would), and COMPACT_AFTER
is short, so the service's compactor merges that closed hour's small files
into one file per app while the demo runs; the demo prints what it did.
When the publishing ends (``--duration``, or Ctrl-C with ``--keep-running``)
the archiver stops as on SIGTERM, flushing everything, and the demo then runs
``archiver query`` and ``archiver ls`` as a user would, in subprocesses, so
what is printed is exactly what those commands print.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from archiver.archive.layout import NS_PER_HOUR
from archiver.config import RunConfig
from archiver.demo.corpus import APP_NAMES
from archiver.demo.loadgen import FlyLogGenerator
from archiver.demo.publish import publish
from archiver.demo.servers import HOST, NatsServer, free_port
from archiver.environment import aws_variables, load_run_config
from archiver.errors import ArchiverError
from archiver.service.pipeline import Service
from archiver.storage.open import is_local, open_storage
from archiver.units import duration_option, format_bytes

DEFAULT_ARCHIVE = "demo-archive"
#: Outside the archive directory: the spool is the archiver's private state, not archive data.
DEFAULT_SPOOL = "demo-spool"
APPS, REGIONS, INSTANCES = 4, 3, 2
#: Modest on purpose: enough to fill a few files per partition, light on a laptop.
RATE_PER_S = 250.0
#: Short, so files appear while the demo runs (the production default is 60s).
FLUSH_INTERVAL = "2s"
#: Short, so the previous hour is compacted while the demo runs (the production default is 10m).
COMPACT_AFTER = "2s"
#: Short, so the flushed files are in the Delta table (and compacted) while the demo runs (default 60s).
TABLE_COMMIT_INTERVAL = "2s"
#: Logs of the previous hour, published during the first third of the run (at most this long).
BACKFILL_RATE_PER_S = 100.0
BACKFILL_MAX_S = 10.0
PROGRESS_EVERY_S = 5.0
QUERY_TAIL = 20


@dataclass(slots=True)
class Outcome:
    """What one demo run did, from the publisher's and the service's counters."""

    published: int = 0
    received: int = 0
    archived: int = 0
    files: int = 0
    bytes: int = 0
    dropped: int = 0
    compacted: int = 0
    files_in: int = 0
    bytes_in: int = 0
    files_out: int = 0
    bytes_out: int = 0


def _say(line: str) -> None:
    print(f"demo: {line}", file=sys.stderr, flush=True)


def _shown(path: str) -> str:
    """A path as the user should type it: relative when under the current directory."""
    with contextlib.suppress(ValueError):
        return str(Path(path).relative_to(Path.cwd())) or "."
    return path


def _archiver_command() -> str:
    """How to invoke archiver from this shell: plain ``archiver`` when it is on PATH, else its path."""
    script = Path(sys.executable).parent / "archiver"
    on_path = shutil.which("archiver")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return "archiver"
    return _shown(str(script)) if script.exists() else "archiver"


def make_config(archive: str | None, http_port: str | None, nats_url: str) -> RunConfig:
    """The demo's RunConfig: this nats-server, a short flush, loopback HTTP; only AWS_* read from the env."""
    options = {
        "nats_url": nats_url,
        "archive_url": archive or DEFAULT_ARCHIVE,
        "flush_interval": FLUSH_INTERVAL,
        "compact_after": COMPACT_AFTER,
        "table_commit_interval": TABLE_COMMIT_INTERVAL,
        "spool_dir": DEFAULT_SPOOL,
        "http_port": http_port or str(free_port()),
        "http_host": HOST,
        "log_level": "warning",
    }
    # NATS_URL, ORG, ACCESS_TOKEN, SUBJECT, QUEUE... of a real deployment must not leak into the
    # demo; the AWS variables stay so that --archive s3://... works.
    return load_run_config(options, aws_variables())


async def _until_subscribed(service: Service, task: asyncio.Task[None], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not service.source.subscribed:
        if task.done():
            task.result()  # the service failed at start: raise its error
            raise ArchiverError("the archiver stopped before subscribing")
        if time.monotonic() > deadline:
            raise ArchiverError("the archiver did not subscribe to the local nats-server in time")
        await asyncio.sleep(0.05)
    client = service.source.client
    if client is not None:
        # The SUB must reach the server before the first publish, or core NATS drops those messages.
        await client.flush(timeout=5)


async def _progress(service: Service, began: float) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        s = service.stats
        _say(f"{time.monotonic() - began:4.0f}s  received {s.messages_received}  archived "
             f"{s.messages_archived}  files {s.files_written} ({format_bytes(s.bytes_written)})")  # fmt: skip


async def run_archiver_and_publish(config: RunConfig, duration_s: float | None, outcome: Outcome) -> None:
    """Run the Service, publish Fly logs until the duration ends or Ctrl-C, then stop it with a full flush."""
    service = Service(config, open_storage(config.archive))
    stop, abandon, stop_publishing = asyncio.Event(), asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        if not stop_publishing.is_set():
            stop_publishing.set()
            _say("stopping: flushing everything to the archive (Ctrl-C again to give up)")
        else:
            stop.set()
            abandon.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    began = time.monotonic()
    service_task = asyncio.create_task(service.run(stop, abandon))
    progress_task: asyncio.Task[None] | None = None
    try:
        await _until_subscribed(service, service_task)
        _say(f"archiver subscribed; /health and /metrics on http://{HOST}:{service.http.port}")
        until = "until Ctrl-C" if duration_s is None else f"for {duration_s:g} s (Ctrl-C stops early)"
        _say(f"publishing ~{RATE_PER_S:g} Fly logs/s from {APPS} apps in {REGIONS} regions each {until}")
        progress_task = asyncio.create_task(_progress(service, began))
        generator = FlyLogGenerator(seed=52, apps=APPS, regions=REGIONS, instances=INSTANCES)
        publisher = asyncio.create_task(
            publish(config.nats_url, generator, RATE_PER_S, duration_s, stop=stop_publishing)
        )
        hour = time.time_ns() // NS_PER_HOUR * NS_PER_HOUR - NS_PER_HOUR
        earlier = FlyLogGenerator(seed=53, apps=APPS, regions=REGIONS, instances=INSTANCES, start_ns=hour,
                                  span_ns=NS_PER_HOUR - 1)  # fmt: skip
        backfill_s = min(BACKFILL_MAX_S, (duration_s or BACKFILL_MAX_S * 3) / 3)
        backfill = asyncio.create_task(
            publish(config.nats_url, earlier, BACKFILL_RATE_PER_S, backfill_s, stop=stop_publishing)
        )
        await asyncio.wait({publisher, service_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_publishing.set()  # when the service failed first, the publisher must not go on alone
        outcome.published = await publisher + await backfill
        # publish() flushed to the server; wait (briefly) for delivery before draining.
        deadline = time.monotonic() + 10
        while service.stats.messages_received < outcome.published and time.monotonic() < deadline:
            if service_task.done():
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        if progress_task is not None:
            progress_task.cancel()
        try:
            await service_task
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            s = service.stats
            outcome.received, outcome.archived = s.messages_received, s.messages_archived
            outcome.files, outcome.bytes = s.files_written, s.bytes_written
            outcome.dropped = sum(s.dropped.values())
            if service.compactor is not None:
                c = service.compactor.stats
                outcome.compacted, outcome.files_in, outcome.bytes_in = c.compactions, c.files_in, c.bytes_in
                outcome.files_out, outcome.bytes_out = c.files_out, c.bytes_out


def _show(command: list[str]) -> None:
    """Print ``$ archiver ...`` and run it, its output going straight to the terminal."""
    print(f"\n$ {shlex.join(['archiver', *command])}", flush=True)
    subprocess.run([sys.executable, "-m", "archiver", *command], check=False)
    sys.stdout.flush()


def run_demo(duration: str, keep_running: bool, archive: str | None, http_port: str | None) -> int:
    """Run the whole demo; the exit code."""
    from archiver.logs import setup_logging
    from archiver.service.event_loop import run_async

    duration_s = duration_option("--duration", duration)
    began = time.monotonic()
    setup_logging("warning", stream=sys.stderr)
    outcome = Outcome()
    with tempfile.TemporaryDirectory(prefix="archiver-demo-") as tmp:
        nats = NatsServer(Path(tmp), jetstream=False)
        config = make_config(archive, http_port, nats.url)
        shown_archive = _shown(config.archive.url)
        nats.start(timeout_s=15)
        try:
            _say(f"nats-server on {nats.url}; archiving to {shown_archive} (flush every {FLUSH_INTERVAL})")
            run_async(lambda: run_archiver_and_publish(config, None if keep_running else duration_s, outcome))
        finally:
            nats.stop()
    _say(f"archiver stopped: {outcome.archived} of {outcome.received} messages archived; nats-server stopped")

    archive_arg = ["--archive", shown_archive]
    app = APP_NAMES[0]  # the busiest of the generator's apps
    _show(["query", *archive_arg, "--app", app, "--since", "10m", "--tail", str(QUERY_TAIL)])
    _show(["ls", *archive_arg])
    _show(["ls", *archive_arg, "--app", app, "--since", "2h"])

    cmd = _archiver_command()
    print(f"\npublished {outcome.published} messages; archived {outcome.archived} in {outcome.files} Parquet "
          f"files ({format_bytes(outcome.bytes)}) under {shown_archive}; wall time "
          f"{time.monotonic() - began:.1f} s")  # fmt: skip
    print(f"The service's compactor merged {outcome.files_in} small files of {outcome.compacted} closed app-hours "
          f"(the previous hour's logs) into {outcome.files_out}: {format_bytes(outcome.bytes_in)} -> "
          f"{format_bytes(outcome.bytes_out)}.")  # fmt: skip
    print("Log text: LogHub samples (https://github.com/logpai/loghub), see archiver/demo/sample/README.md.")
    print("\nTry next:")
    print(f"  {cmd} query --archive {shlex.quote(shown_archive)} --app {APP_NAMES[1]} --since 1h "
          "--grep 'error|exception' -i")  # fmt: skip
    print(f"  {cmd} query --archive {shlex.quote(shown_archive)} --level error --since 1h --format json")
    if is_local(config.archive):
        source = f"read_parquet('{shown_archive}/app=*/**/*.parquet', hive_partitioning = true)"
        sql = f"SELECT app, region, level, count(*) AS n FROM {source} GROUP BY ALL ORDER BY n DESC"  # noqa: S608 - printed, not run
        # Double quotes read better around the SQL's single quotes; safe unless it holds $, `, \, or ".
        print(f'  duckdb -c "{sql}"' if not set(sql) & set('$`\\"') else f"  duckdb -c {shlex.quote(sql)}")
    if outcome.archived != outcome.received or outcome.dropped:
        _say(f"warning: {outcome.received - outcome.archived} messages received but not archived, "
             f"{outcome.dropped} dropped")  # fmt: skip
        return 1
    return 0
