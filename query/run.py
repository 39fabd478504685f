"""Running a query: open the archive, plan, scan, write as results come, report on stderr."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import sys
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, TextIO

import pyarrow as pa

from archiver.archive.navigator import AppSelection, select_all_apps, select_apps
from archiver.config import ArchiveSettings
from archiver.errors import OutputError, UsageError
from archiver.storage.interface import Storage
from archiver.storage.open import check_for_reading, is_local, open_filesystem, open_read_storage
from archiver.units import format_bytes
from query.filters import Filters
from query.format import COLUMNS, Writer, make_writer
from query.plan import Planner
from query.scan import Reader, ScanStats, scan_hours
from query.supersede import FooterReader
from query.terminal import safe_for_terminal

if TYPE_CHECKING:
    from query.modes import CountSpec
    from query.where import Condition

#: A scan shows progress on a TTY once it has run this long.
PROGRESS_AFTER_S = 1.0


@contextlib.contextmanager
def writing(where: str) -> Iterator[None]:
    """Output errors as OutputError naming ``where`` (a closed pipe stays BrokenPipeError)."""
    # Writers raise OSError (pyarrow's ArrowIOError included); a closed pipe stays BrokenPipeError
    # for the CLI to end quietly, anything else is one error line instead of a traceback.
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        if exc.errno == errno.EPIPE or "Broken pipe" in str(exc):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe") from None
        reason = exc.strerror or str(exc).splitlines()[0]
        raise OutputError(f"cannot write {where}: {reason}") from None


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """A checked ``archiver query`` invocation."""

    archive: ArchiveSettings
    apps: tuple[str, ...]
    regions: tuple[str, ...]
    instances: tuple[str, ...]
    levels: tuple[str, ...]
    since_ns: int
    until_ns: int
    grep: str | None = None
    contains: str | None = None
    ignore_case: bool = False
    limit: int | None = None
    tail: int | None = None
    output_format: str = "text"
    output: str | None = None
    strict: bool = False
    where: tuple[Condition, ...] = ()
    count: CountSpec | None = None  # --count (query.count)
    top: int | None = None  # --top (query.patterns)
    follow: bool = False  # --follow (query.follow)

    def filters(self) -> Filters:
        """The row filters of this request."""
        return Filters(
            self.since_ns,
            self.until_ns,
            regions=self.regions,
            levels=self.levels,
            instances=self.instances,
            contains=self.contains,
            grep=self.grep,
            ignore_case=self.ignore_case,
            where=self.where,
        )


def open_reader(settings: ArchiveSettings, storage: Storage, *, ranged: bool = False) -> Reader:
    """The reader for the archive: pyarrow's local filesystem, or whole-object GETs through Storage on S3.

    On S3 one GET per file beat pyarrow's S3 filesystem, which needs a footer
    read and then the column chunks: on SeaweedFS behind 20 ms of added latency,
    240 small files took 0.74 s by GET and 0.92-1.65 s through pyarrow (32 or 8
    threads); ``ranged`` asks for the pyarrow filesystem anyway, for footer-only
    reads (``ls``), where a ranged read of the tail beats fetching whole files.
    """
    if is_local(settings):
        filesystem, base = open_filesystem(settings)
        return Reader(storage, filesystem, base, threads=_cpus())
    if ranged:
        filesystem, base = open_filesystem(settings)
        return Reader(storage, filesystem, base, threads=32)
    return Reader(storage, threads=_cpus(), ranged=functools.partial(open_filesystem, settings))


def _cpus() -> int:
    # Decoding is CPU work partly under the GIL: one thread per core measured best (2 cores:
    # 0.77 s for 1920 files against 0.91 s with 4 threads and 1.5 s with one).
    return max(
        1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    )


async def plan_request(request: QueryRequest, storage: Storage) -> Planner:
    """The planner of ``request``'s apps (checked against the archive first), range and regions."""
    apps = await start(request.archive, storage, request.apps)
    footers = FooterReader(storage, request.archive)
    return Planner(storage, apps, request.since_ns, request.until_ns, request.regions, footers,
                   strict=request.strict, warn=warn)  # fmt: skip


async def start(settings: ArchiveSettings, storage: Storage, apps: tuple[str, ...]) -> AppSelection:
    """Check the archive is there and select the apps (all of them, as listed, when none are given), concurrently."""
    if apps:
        await check_for_reading(settings, storage)
        return select_apps(apps)
    _, found = await asyncio.gather(check_for_reading(settings, storage), select_all_apps(storage))
    return found


class Progress:
    """A progress line on a TTY stderr, once a scan has run for a second; nothing when not a TTY."""

    def __init__(self, stats: ScanStats, stream: TextIO) -> None:
        self.stats = stats
        self.stream = stream
        self.enabled = stream.isatty()
        self.shown = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin refreshing the line."""
        if self.enabled:
            self.task = asyncio.ensure_future(self._refresh())

    async def _refresh(self) -> None:
        await asyncio.sleep(PROGRESS_AFTER_S)
        while True:
            s = self.stats
            self.stream.write(
                f"\r\x1b[K{s.files} files, {format_bytes(s.bytes)} read, {s.hours} hours, {s.rows} rows"
            )
            self.stream.flush()
            self.shown = True
            await asyncio.sleep(0.25)

    def clear(self) -> None:
        """Erase the line (before output goes to the same terminal)."""
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False

    def stop(self) -> None:
        """Stop refreshing and erase the line."""
        if self.task is not None:
            self.task.cancel()
        self.clear()


async def each_table(
    request: QueryRequest,
    reader: Reader,
    stats: ScanStats,
    planner: Planner,
    columns: tuple[str, ...] | None = None,
    in_order: bool = True,
) -> AsyncGenerator[pa.Table, None]:
    """The matching rows of the request hour by hour (``columns``: the file columns wanted, else the format's)."""
    scan = functools.partial(
        scan_hours, reader, columns=COLUMNS[request.output_format] if columns is None else columns,
        filters=request.filters(), stats=stats, warn=warn, replan=planner.relist, strict=request.strict,
        in_order=in_order,
    )  # fmt: skip
    if request.tail is None:
        hours = planner.hours()
        async with (
            contextlib.aclosing(hours),
            contextlib.aclosing(scan(hours)) as tables,
        ):
            async for table in tables:
                yield table
        return
    # --tail: newest hours first, one at a time, stopping as soon as N rows are in hand.
    newest: list[pa.Table] = []
    count = 0
    hours = planner.hours(newest_first=True, prefetch=False)
    async with (
        contextlib.aclosing(hours),
        contextlib.aclosing(scan(hours, read_ahead=0)) as tables,
    ):
        async for table in tables:
            newest.append(table)
            count += table.num_rows
            if count >= request.tail:
                break
    if newest:
        merged = pa.concat_tables(reversed(newest))
        yield merged.slice(max(0, merged.num_rows - request.tail))


def warn(line: str) -> None:
    """A warning line on stderr."""
    # On a TTY the line replaces a progress line that may be showing.
    sys.stderr.write(f"\r\x1b[K{line}\n" if sys.stderr.isatty() else f"{line}\n")
    sys.stderr.flush()


async def run_query(request: QueryRequest) -> int:
    """Run a query, writing results as they come; the exit code."""
    storage = open_read_storage(request.archive)
    reader = open_reader(request.archive, storage)
    stats = ScanStats()
    progress = Progress(stats, sys.stderr)
    output: BinaryIO | None = None
    writer: Writer | None = None
    try:
        planner = await plan_request(request, storage)
        where = request.output or "the results to stdout"
        if request.output is not None:
            try:
                output = open(request.output, "wb")  # noqa: SIM115, ASYNC230 - closed in finally; open is instant
            except OSError as exc:
                raise UsageError(f"--output: cannot write {request.output}: {exc.strerror or exc}") from None
            with writing(where):
                writer = make_writer(request.output_format, output)
        progress.start()
        remaining = request.limit
        written = 0
        tables = each_table(request, reader, stats, planner)
        # Names are always shown escaped in text; message text too when it goes to a terminal.
        text, tty = request.output_format == "text", request.output is None and sys.stdout.isatty()
        async for table in tables:
            if remaining is not None:
                # min(): a huge --limit would overflow Arrow's int64 length.
                table = table.slice(0, min(remaining, table.num_rows))
                remaining -= table.num_rows
            if text:
                table = safe_for_terminal(table, message=tty)
            with writing(where):
                if writer is None:
                    # Lazily on stdout: nothing found prints nothing.
                    writer = make_writer(request.output_format, sys.stdout.buffer)
                progress.clear()
                writer.write(table)
            written += table.num_rows
            if remaining == 0:
                await tables.aclose()  # stop listing and reading ahead
                break
        progress.stop()
        if writer is not None:
            finishing, writer = writer, None
            with writing(where):
                finishing.close()
        if not written:
            note_nothing(stats, planner, planner.apps)
        return 0
    finally:
        progress.stop()
        if output is not None:
            if writer is not None:
                with contextlib.suppress(Exception):  # already failing: keep what was written readable
                    writer.close()
            with contextlib.suppress(
                OSError
            ):  # flushed by the writer's close; only fails when failing already
                output.close()
        reader.close()
        await storage.close()


def note_nothing(stats: ScanStats, planner: Planner, apps: AppSelection) -> None:
    """The note on stderr when nothing matched: what was read."""
    if not apps.segments:
        sys.stderr.write("note: no logs found: the archive holds no apps\n")
        return
    skipped = f", {stats.skipped} skipped" if stats.skipped else ""
    sys.stderr.write(
        f"note: no logs found: read {stats.files} files ({format_bytes(stats.bytes)}) in {stats.hours} hours"
        f" with files, of {planner.hours_listed} hours listed{skipped}\n"
    )
