"""``archiver query --follow``: what matches so far, then new logs as the archive receives them, until Ctrl-C.

It needs only read access to the archive (a laptop with the bucket's keys):
the service makes logs visible when it flushes them, so new logs appear
within one flush interval (``FLUSH_INTERVAL``) plus one poll (:data:`POLL_S`).

No gap, no duplicate: every file is printed once, tracked by key.

1. The hours of the poll window (the previous, current and next UTC hour:
   :func:`window`) are listed first and their files marked seen.
2. The query so far runs as usual (``--tail N`` included) through a planner
   that marks every file it reads seen. Between them, steps 1 and 2 have
   seen every file that existed before step 2 listed, or printed it.
3. Every poll lists the window again (apps too, when none were given); a file
   not seen is read, and the new rows of a poll are printed in time order.
   A file that arrives late for an earlier time is printed when it arrives,
   once. A compacted file whose inputs were all seen is marked seen unread (its
   rows were printed); the listing already leaves out files a compaction
   superseded (:mod:`query.supersede`). A file that vanishes between listing
   and reading (compacted meanwhile) is not marked seen: the compacted file
   that replaced it is read at the next poll.

Limits: rows time-stamped an hour or more ahead of the clock, and files that
arrive for hours before the window, are not printed. The service compacts an
hour only ``COMPACT_AFTER`` after it ended; a compacted file replacing both
printed and unprinted inputs (a file written and compacted within one poll)
would be printed whole.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
import time
from collections.abc import AsyncGenerator
from typing import BinaryIO

import pyarrow as pa

from archiver.archive import schema
from archiver.archive.layout import NS_PER_HOUR, hour_start_ns
from archiver.archive.navigator import ArchiveFile, list_apps
from archiver.archive.supersede import parse_compact_name, replaces_from_metadata
from archiver.storage.open import open_read_storage
from archiver.timespec import now_ns
from query.decode import VANISHED, FileScan
from query.format import COLUMNS, Writer, make_writer
from query.plan import HourFiles, Planner
from query.run import QueryRequest, each_table, open_reader, start, warn, writing
from query.scan import Reader, ScanStats, merge_hour
from query.supersede import FooterReader
from query.terminal import safe_for_terminal
from query.textout import open_output

#: Seconds between two listings of the window.
POLL_S = 1.0


def window(now: int, since_ns: int) -> tuple[int, int]:
    """The hours polled at ``now``: from the previous hour (or ``since``) to the end of the next one."""
    current = hour_start_ns(now)
    return max(since_ns, current - NS_PER_HOUR), current + 2 * NS_PER_HOUR


class _Recording(Planner):
    """A planner that marks every file it hands out as seen."""

    def __init__(self, *args: object, seen: set[str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.seen = seen

    async def hours(
        self, *, newest_first: bool = False, first_window: int = 1, prefetch: bool = True
    ) -> AsyncGenerator[HourFiles, None]:
        """As :meth:`Planner.hours`, recording the files."""
        async for group in super().hours(
            newest_first=newest_first, first_window=first_window, prefetch=prefetch
        ):
            self.seen.update(f.key for f in group.files)
            yield group

    async def relist(self, hour_ns: int) -> HourFiles:
        """As :meth:`Planner.relist`, recording the files."""
        group = await super().relist(hour_ns)
        self.seen.update(f.key for f in group.files)
        return group


class Follower:
    """The state of one ``--follow``: seen files, the output, counts for the summary."""

    def __init__(self, request: QueryRequest, stream: BinaryIO) -> None:
        self.request = request
        self.storage = open_read_storage(request.archive)
        self.reader: Reader = open_reader(request.archive, self.storage)
        self.footers = FooterReader(self.storage, request.archive)
        self.stream = stream
        self.writer: Writer | None = None
        self.seen: set[str] = set()
        self.stats = ScanStats()
        self.initial_rows = 0
        self.new_rows = 0
        self.new_files = 0
        self.tty = request.output is None and sys.stdout.isatty()

    def write(self, table: pa.Table) -> None:
        """Print rows now (names escaped in text; message text too on a terminal)."""
        if not table.num_rows:
            return
        if self.request.output_format == "text":
            table = safe_for_terminal(table, message=self.tty)
        with writing(self.request.output or "the results to stdout"):
            if self.writer is None:
                self.writer = make_writer(self.request.output_format, self.stream)
            self.writer.write(table)
            self.stream.flush()

    async def listing(self, apps: list[str], now: int) -> list[HourFiles]:
        """The window's hours as the planner resolves them."""
        since, until = window(now, self.request.since_ns)
        planner = Planner(self.storage, apps, since, until, self.request.regions, self.footers)
        return await planner.all_hours()

    async def apps(self) -> list[str]:
        """The apps to follow: the given ones, or every app in the archive now."""
        return list(dict.fromkeys(self.request.apps)) or await list_apps(self.storage)

    async def poll(self, now: int) -> None:
        """Print the rows of files that appeared since the last poll, in time order."""
        request = dataclasses.replace(self.request, until_ns=window(now, self.request.since_ns)[1])
        filters = request.filters()
        columns = tuple(dict.fromkeys([schema.TIMESTAMP, *COLUMNS[request.output_format]]))
        tables = []
        for group in await self.listing(await self.apps(), now):
            fresh = [f for f in group.files if f.key not in self.seen]
            fresh = [f for f in fresh if not await self._printed_already(f, group.files)]
            if not fresh:
                continue
            scan = FileScan(columns, filters, group.hour_ns)
            for batch in await self.reader.read_files(fresh, scan):
                self.seen.update(f.key for f in batch.read)
                self.new_files += len(batch.read)
                for planned, problem in batch.skipped:
                    if str(problem) == VANISHED:
                        continue  # compacted meanwhile: the file that replaced it comes next poll
                    self.seen.add(planned.key)
                    warn(f"warning: skipped {planned.key}: {problem}")
                if batch.table.num_rows:
                    tables.append(batch.table)
        if tables:
            rows = merge_hour(tables)
            self.new_rows += rows.num_rows
            self.write(rows)

    async def _printed_already(self, planned: ArchiveFile, listed: list[ArchiveFile]) -> bool:
        """Whether a compacted file only replaces files already seen (then it is marked seen)."""
        if parse_compact_name(planned.name) is None:  # the supersede rule's own reading of names
            return False
        replaces = replaces_from_metadata(await self.footers(planned))
        if not replaces:
            return False
        same_app = [key for key in self.seen if key.startswith(planned.key.split("/", 1)[0] + "/")]
        if all(any(key.endswith("/" + name) for key in same_app) for name in replaces):
            self.seen.add(planned.key)
            return True
        return False

    async def close(self) -> None:
        """Finish the output and release the archive."""
        try:
            if self.writer is not None:
                with writing(self.request.output or "the results to stdout"):
                    self.writer.close()
        finally:
            self.reader.close()
            await self.storage.close()


async def run_follow(request: QueryRequest) -> int:
    """Print what matches so far, then new matching logs as they arrive, until SIGINT/SIGTERM (exit 0)."""
    output = open_output(request.output)
    follower = Follower(request, output or sys.stdout.buffer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    began = time.monotonic()
    try:
        now = now_ns()
        apps = await start(request.archive, follower.storage, request.apps)
        for group in await follower.listing(apps, now):
            follower.seen.update(f.key for f in group.files)
        until = window(now, request.since_ns)[1]
        initial = dataclasses.replace(request, until_ns=until)
        planner = _Recording(follower.storage, apps, request.since_ns, until, request.regions, follower.footers,
                             seen=follower.seen)  # fmt: skip
        async for table in each_table(initial, follower.reader, follower.stats, planner):
            follower.initial_rows += table.num_rows
            follower.write(table)
            if stop.is_set():
                break
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), POLL_S)
            except TimeoutError:
                await follower.poll(now_ns())
        sys.stderr.write(
            f"followed for {time.monotonic() - began:.0f}s: {follower.initial_rows} logs at start, "
            f"{follower.new_rows} new in {follower.new_files} new files\n"
        )
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        try:
            await follower.close()
        finally:
            if output is not None:
                output.close()
