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
   once. A compacted file whose rows were all printed is marked seen unread:
   every file its ``archiver.replaces`` names (the supersede rule's relative
   names, either layout, an imported batch by its identity) that is not itself
   compacted was seen, or is named by a compacted file seen in the same
   app-hour; the listing already leaves out files a compaction superseded
   (:mod:`query.supersede`). A file that vanishes between listing
   and reading (compacted meanwhile) is not marked seen: the compacted file
   that replaced it is read at the next poll.

A Delta table is followed the same way, by listing, not by its commits: a
file is printed when it is uploaded, within one flush interval, instead of at
its commit up to ``TABLE_COMMIT_INTERVAL`` later (a minute by default;
measured: 56 s median against 1.4 s). The committer commits every uploaded
file (the spool keeps it until then), and a table compaction names what it
replaces as a plain one does, so the rule above holds.

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
from archiver.archive.navigator import AppSelection, ArchiveFile, app_selection
from archiver.archive.supersede import identity, parse_compact_name, replaced_names
from archiver.errors import VanishedError
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

    def __init__(self, *args: object, follower: Follower, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.follower = follower

    async def hours(
        self, *, newest_first: bool = False, first_window: int = 1, prefetch: bool = True
    ) -> AsyncGenerator[HourFiles, None]:
        """As :meth:`Planner.hours`, recording the files."""
        async for group in super().hours(
            newest_first=newest_first, first_window=first_window, prefetch=prefetch
        ):
            self.follower.mark(group.files)
            yield group

    async def relist(self, hour_ns: int) -> HourFiles:
        """As :meth:`Planner.relist`, recording the files."""
        group = await super().relist(hour_ns)
        self.follower.mark(group.files)
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
        #: Keys of the files seen (printed, or known to hold only printed rows).
        self.seen: set[str] = set()
        #: The same files by app-hour (app value, hour), under the identity of their relative name.
        self.seen_names: dict[tuple[str, int], dict[str, ArchiveFile]] = {}
        #: What a seen compacted file replaces (its footer read when first needed), by key.
        self.replaced: dict[str, frozenset[str]] = {}
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

    def mark(self, files: list[ArchiveFile]) -> None:
        """Record files as seen."""
        for f in files:
            self.seen.add(f.key)
            self.seen_names.setdefault((f.app, f.hour_ns), {})[identity(f.relative_name)] = f

    async def listing(self, apps: AppSelection, now: int) -> list[HourFiles]:
        """The window's hours as the planner resolves them."""
        since, until = window(now, self.request.since_ns)
        planner = Planner(self.storage, apps, since, until, self.request.regions, self.footers, table=False)
        return await planner.all_hours()

    async def apps(self) -> AppSelection:
        """The apps to follow: the given ones, or every app in the archive now."""
        return await app_selection(self.storage, self.request.apps)

    async def poll(self, now: int) -> None:
        """Print the rows of files that appeared since the last poll, in time order."""
        request = dataclasses.replace(self.request, until_ns=window(now, self.request.since_ns)[1])
        filters = request.filters()
        columns = tuple(dict.fromkeys([schema.TIMESTAMP, *COLUMNS[request.output_format]]))
        tables = []
        groups = await self._listed(now)
        for hour_ns, fresh in sorted(groups.items()):
            scan = FileScan(columns, filters, hour_ns)
            for batch in await self.reader.read_files(fresh, scan):
                self.mark(batch.read)
                self.new_files += len(batch.read)
                for planned, problem in batch.skipped:
                    if str(problem) == VANISHED:
                        continue  # compacted meanwhile: the file that replaced it comes next poll
                    self.mark([planned])
                    warn(f"warning: skipped {planned.key}: {problem}")
                if batch.table.num_rows:
                    tables.append(batch.table)
        if tables:
            rows = merge_hour(tables)
            self.new_rows += rows.num_rows
            self.write(rows)

    async def _listed(self, now: int) -> dict[int, list[ArchiveFile]]:
        """Files of the window not seen yet, by hour, as listed."""
        out = {}
        for group in await self.listing(await self.apps(), now):
            fresh = [f for f in group.files if f.key not in self.seen]
            fresh = [f for f in fresh if not await self._printed_already(f)]
            if fresh:
                out[group.hour_ns] = fresh
        return out

    async def _printed_already(self, planned: ArchiveFile) -> bool:
        """Whether a compacted file holds only rows already printed (then it is marked seen)."""
        if parse_compact_name(planned.relative_name) is None:  # the supersede rule's own reading of names
            return False
        replaced = await self._replaced(planned)
        if not replaced:
            return False
        # Its rows are those of the files it replaces that are not compacted themselves (the list is
        # transitive); each was printed if seen, or if a seen compacted file of the app-hour replaces it.
        wanted = {identity(n) for n in replaced if parse_compact_name(n) is None}
        seen = self.seen_names.get((planned.app, planned.hour_ns), {})
        missing = wanted - seen.keys()
        for name, f in list(seen.items()):
            if not missing:
                break
            if parse_compact_name(name) is not None:
                missing -= {identity(n) for n in await self._replaced(f)}
        if missing:
            return False
        self.mark([planned])
        return True

    async def _replaced(self, planned: ArchiveFile) -> frozenset[str]:
        """The relative names a compacted file replaces (empty when unknown: unreadable, or gone)."""
        if planned.key not in self.replaced:
            try:
                names = replaced_names(planned.relative_name, await self.footers(planned))
            except VanishedError:
                return frozenset()  # compacted again meanwhile: asked again if it is listed again
            self.replaced[planned.key] = names or frozenset()
        return self.replaced[planned.key]

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
            follower.mark(group.files)
        until = window(now, request.since_ns)[1]
        initial = dataclasses.replace(request, until_ns=until)
        planner = _Recording(follower.storage, apps, request.since_ns, until, request.regions, follower.footers,
                             table=False, follower=follower)  # fmt: skip
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
