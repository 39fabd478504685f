"""Which files a query reads: partition prefixes from apps and time range, listed concurrently.

The archive is never listed whole. Apps (given, or one delimiter listing of
the archive root, see :mod:`archiver.archive.navigator`) and the UTC hours of
``[since, until)`` become prefixes (:func:`archiver.archive.navigator.day_spans`):
``app=X/date=D/`` for a day the range covers entirely or in good part (one
listing instead of up to 24; the day's hours out of range are left out by
time) and, for the few hours of a day covered in part, the v2 prefix
``app=X/date=D/YYYYMMDDTHH`` and (old data) the v1 folder ``app=X/date=D/hour=HH/``.
Listings run concurrently under a bound and come out grouped by hour, in
time order or newest first, a window at a time, so a ``--tail`` or
``--limit`` that is satisfied early stops listing too.

When the archive is a Delta table, the v2 files are the table's snapshot's instead
(:mod:`archiver.table.log_view`: read once, with the first window's listing
running beside it for an archive that turns out not to be one): a file removed
from the table is never read, one uploaded but not committed is not, and the
snapshot needs no supersede rule (a compaction replaces its inputs in one commit).
v1 files are never in a table (the compactor rewrites them as v2): they are still
listed, under ``hour=`` only, and an hour holding some is resolved as before.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from archiver.archive.escaping import segment_layouts
from archiver.archive.layout import NS_PER_HOUR, NS_PER_SECOND, day_prefix, v1_hour_prefix
from archiver.archive.navigator import AppSelection, ArchiveFile, Span, day_spans, list_files
from archiver.errors import StorageError, VanishedError
from archiver.storage.interface import Storage
from archiver.table.log_view import TableView, read_view
from query.filters import region_values
from query.supersede import FooterReader, Footers, live_files

#: Most spans (days or hours) listed in one window.
MAX_WINDOW = 64
#: Listings of one hour in a row that may find a file gone (compaction running) before giving up.
RELIST_ATTEMPTS = 4


@dataclass(slots=True)
class HourFiles:
    """Every file of one UTC hour that the query reads."""

    hour_ns: int
    files: list[ArchiveFile] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        """Total size of the hour's files."""
        return sum(f.size for f in self.files)


class Planner:
    """Lists the files of a query's apps, regions and time range, hour by hour."""

    def __init__(
        self,
        storage: Storage,
        apps: AppSelection,
        since_ns: int,
        until_ns: int,
        regions: Sequence[str] = (),
        footers: Footers | None = None,
        *,
        strict: bool = False,
        warn: Callable[[str], None] | None = None,
        table: bool = True,
    ) -> None:
        self.storage = storage
        #: Reads compacted files' footers where a partition mixes them with others (query.supersede).
        self.footers = footers or FooterReader(storage)
        self.apps = apps
        # v1 keys name the region: files of other regions are left out before any read (v2 files hold
        # theirs in a column, filtered on the rows, see query.filters).
        self.regions = region_values(tuple(regions))
        self.since_ns = since_ns
        self.until_ns = until_ns
        self.hours_listed = 0
        self.strict = strict
        self.warn = warn or _warn
        #: The table's files (None: no table, read by listing), once the log was read.
        self.view: TableView | None = None
        # table=False: the caller knows the archive is read by listing (--follow's polls of a bare archive).
        self._view_read = not table
        self._view_lock = asyncio.Lock()

    async def table_view(self) -> TableView | None:
        """The table's files of the query (read once); None: the archive is read by listing."""
        async with self._view_lock:
            if not self._view_read:
                self.view = await read_view(
                    self.storage, self.apps, self.since_ns, self.until_ns, strict=self.strict, warn=self.warn
                )
                self._view_read = True
        return self.view

    async def _list_window(self, window: Sequence[Span]) -> dict[int, HourFiles]:
        self.hours_listed += sum(span.hours for span in window)
        hours = await self._list_window_raw(window)
        # The table's snapshot holds nothing superseded; only hours with v1 files need the rule.
        todo = [g for g in hours.values() if self.view is None or any(f.region is not None for f in g.files)]
        for group in await asyncio.gather(*(self._resolve(group) for group in todo)):
            hours[group.hour_ns] = group
        return hours

    async def _list_window_raw(self, window: Sequence[Span]) -> dict[int, HourFiles]:
        if self._view_read:
            if self.view is not None:
                return self._grouped(self.view.in_spans(window) + await self._listed(window, v1=True), window)
            return self._grouped(await self._listed(window), window)
        # The log is read once, beside the first window's listing (used only if there is no table).
        view, listed = await asyncio.gather(self.table_view(), self._listed(window))
        v1 = [f for f in listed if f.region is not None]
        return self._grouped(listed if view is None else view.in_spans(window) + v1, window)

    async def _listed(self, window: Sequence[Span], v1: bool = False) -> list[ArchiveFile]:
        """The window's files as listed (``v1``: its v1 files only, under the ``hour=`` folders)."""
        prefixes = [
            p
            for span in window
            for segment in self.apps.segments
            for p in (_v1_prefixes(span, segment) if v1 else span.prefixes(segment))
        ]
        return await list_files(self.storage, prefixes, self.since_ns, self.until_ns, apps=self.apps)

    def _grouped(self, found: list[ArchiveFile], window: Sequence[Span]) -> dict[int, HourFiles]:
        hours: dict[int, HourFiles] = {}
        for planned in dict.fromkeys(found):
            if not self.regions or planned.region is None or planned.region in self.regions:
                for hour_ns in self._hours_of(planned, window):
                    hours.setdefault(hour_ns, HourFiles(hour_ns)).files.append(planned)
        for group in hours.values():
            group.files.sort(key=lambda f: (f.app, f.key))
        return hours

    def _hours_of(self, planned: ArchiveFile, window: Sequence[Span]) -> list[int]:
        """The hours of ``window`` a file belongs to: its hour, or for a day file each hour of its day in range.

        A day file is in every hour's group, so each hour resolves against the day's group (the
        supersede rule) and reads only that hour's rows of it (:func:`query.decode.read_file`).
        """
        if planned.length_ns <= NS_PER_HOUR:
            return [planned.hour_ns]
        end = planned.hour_ns + planned.length_ns
        return [
            hour
            for span in window
            for hour in range(max(span.start_ns, planned.hour_ns), min(span.end_ns, end), NS_PER_HOUR)
            if hour + NS_PER_HOUR > self.since_ns and hour < self.until_ns
        ]

    async def _resolve(self, group: HourFiles) -> HourFiles:
        """The hour with superseded files left out; listed again if a footer it needs is gone."""
        try:
            group.files = await live_files(group.files, self.footers)
        except VanishedError:
            return await self.relist(group.hour_ns)
        return group

    async def relist(self, hour_ns: int) -> HourFiles:
        """List one hour again (a file of it vanished: compacted or deleted) and resolve it afresh.

        In a table, the hour's files of a fresh snapshot (a live file vanishes only when a removal
        and its vacuum both came after the snapshot read) and its v1 files, listed.
        """
        window = [Span(hour_ns, hour_ns + NS_PER_HOUR)]
        end = hour_ns + NS_PER_HOUR
        view = None
        if self.view is not None:
            view = await read_view(self.storage, self.apps, hour_ns, end, strict=self.strict, warn=self.warn)
        for _ in range(RELIST_ATTEMPTS):
            found = await self._listed(window, v1=view is not None)
            group = self._grouped(found + (view.in_spans(window) if view else []), window).get(
                hour_ns, HourFiles(hour_ns)
            )
            if view is not None and all(f.region is None for f in group.files):
                return group
            try:
                group.files = await live_files(group.files, self.footers)
            except VanishedError:
                continue
            return group
        hour = datetime.fromtimestamp(hour_ns // NS_PER_SECOND, UTC)
        raise StorageError(f"files of hour {hour:%Y-%m-%dT%H}:00Z kept vanishing while being read; try again")

    async def hours(
        self, *, newest_first: bool = False, first_window: int = 1, prefetch: bool = True
    ) -> AsyncGenerator[HourFiles, None]:
        """Hours that have files, in time order (or newest first), listing a growing window at a time.

        With ``prefetch`` the next window is listed while the caller reads the current one.
        """
        todo = day_spans(self.since_ns, self.until_ns) if self.apps.segments else []
        if newest_first:
            todo.reverse()
        size = max(1, first_window)
        position = 0
        pending: asyncio.Task[dict[int, HourFiles]] | None = None

        def start() -> asyncio.Task[dict[int, HourFiles]]:
            nonlocal position, size
            window = todo[position : position + size]
            position += size
            # Windows grow so a short answer lists little and a long one needs few round trips.
            size = min(size * 2, MAX_WINDOW)
            return asyncio.ensure_future(self._list_window(window))

        try:
            while position < len(todo) or pending is not None:
                found = await (pending or start())
                pending = start() if prefetch and position < len(todo) else None
                for hour_ns in sorted(found, reverse=newest_first):
                    yield found[hour_ns]
        finally:
            if pending is not None:
                pending.cancel()

    async def all_hours(self) -> list[HourFiles]:
        """Every hour with files, in time order (listing everything up front)."""
        return [group async for group in self.hours(first_window=MAX_WINDOW)]


def _warn(line: str) -> None:
    sys.stderr.write(f"{line}\n")


def _v1_prefixes(span: Span, segment: str) -> list[str]:
    """Where ``segment``'s v1 files of ``span`` are, and nothing else: its ``hour=`` folders."""
    if 1 not in segment_layouts(segment):
        return []
    return [
        v1_hour_prefix(segment, span.start_ns)
        if span.hours == 1
        else day_prefix(segment, span.start_ns) + "hour="
    ]
