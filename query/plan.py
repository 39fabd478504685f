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
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from archiver.archive.layout import NS_PER_HOUR, NS_PER_SECOND
from archiver.archive.navigator import AppSelection, ArchiveFile, Span, day_spans, list_files
from archiver.errors import StorageError, VanishedError
from archiver.storage.interface import Storage
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

    async def _list_window(self, window: Sequence[Span]) -> dict[int, HourFiles]:
        self.hours_listed += sum(span.hours for span in window)
        hours = await self._list_window_raw(window)
        resolved = await asyncio.gather(*(self._resolve(group) for group in hours.values()))
        return {group.hour_ns: group for group in resolved}

    async def _list_window_raw(self, window: Sequence[Span]) -> dict[int, HourFiles]:
        prefixes = [p for span in window for segment in self.apps.segments for p in span.prefixes(segment)]
        hours: dict[int, HourFiles] = {}
        found = await list_files(self.storage, prefixes, self.since_ns, self.until_ns, apps=self.apps)
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
        """List one hour again (a file of it vanished: compacted or deleted) and resolve it afresh."""
        window = [Span(hour_ns, hour_ns + NS_PER_HOUR)]
        for _ in range(RELIST_ATTEMPTS):
            group = (await self._list_window_raw(window)).get(hour_ns, HourFiles(hour_ns))
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
