"""Which files a query reads: partition prefixes from apps and time range, listed concurrently.

The archive is never listed whole. Apps (given, or one delimiter listing of
the archive root) and the UTC hours of ``[since, until)`` become prefixes:
``app=X/date=D/`` for a day the range covers entirely (one listing instead of
24) and ``app=X/date=D/hour=H/`` for the partial days at the edges. Listings
run concurrently under a bound and come out grouped by hour, in time order or
newest first, a window at a time, so a ``--tail`` or ``--limit`` that is
satisfied early stops listing too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from archiver.archive.layout import (
    NS_PER_HOUR,
    NS_PER_SECOND,
    ObjectKey,
    decode_value,
    encode_value,
    hour_prefix,
    hour_start_ns,
    parse_key,
    stored_value,
)
from archiver.errors import StorageError
from archiver.storage.interface import ObjectInfo, Storage
from query.supersede import FooterReader, VanishedError, live_files

if TYPE_CHECKING:
    from query.supersede import Footers

NS_PER_DAY = 24 * NS_PER_HOUR
#: Concurrent listings; S3 endpoints serve this many in parallel without throttling.
LIST_CONCURRENCY = 32
#: Most chunks (days or hours) listed in one window.
MAX_WINDOW = 64
#: Listings of one hour in a row that may find a file gone (compaction running) before giving up.
RELIST_ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One archive file to read: its key, size, and the partition values parsed from the key."""

    key: str
    size: int
    app: str
    region: str
    hour_ns: int


@dataclass(slots=True)
class HourFiles:
    """Every file of one UTC hour that the query reads."""

    hour_ns: int
    files: list[PlannedFile] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        """Total size of the hour's files."""
        return sum(f.size for f in self.files)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A span listed with one prefix per app: a whole day or a single hour."""

    start_ns: int
    end_ns: int

    def prefix(self, app_segment: str) -> str:
        """The listing prefix of this chunk for one app."""
        if self.end_ns - self.start_ns == NS_PER_DAY:
            day = datetime.fromtimestamp(self.start_ns // NS_PER_SECOND, UTC)
            return f"app={app_segment}/date={day:%Y-%m-%d}/"
        return hour_prefix(app_segment, self.start_ns)


def chunks(since_ns: int, until_ns: int) -> list[Chunk]:
    """The hours of ``[since, until)`` in time order, days whose every hour is in range merged."""
    out: list[Chunk] = []
    hour = hour_start_ns(since_ns)
    last_hour = hour_start_ns(until_ns - 1)
    while hour <= last_hour:
        if hour % NS_PER_DAY == 0 and hour + NS_PER_DAY - NS_PER_HOUR <= last_hour:
            out.append(Chunk(hour, hour + NS_PER_DAY))
            hour += NS_PER_DAY
        else:
            out.append(Chunk(hour, hour + NS_PER_HOUR))
            hour += NS_PER_HOUR
    return out


async def list_apps(storage: Storage) -> list[str]:
    """Every app in the archive, decoded, from one delimiter listing of the root."""
    apps = []
    for entry in await storage.list_dirs(""):
        name = entry.rstrip("/")
        if name.startswith("app=") and len(name) > 4:
            try:
                apps.append(decode_value(name[4:]))
            except ValueError:
                continue  # not written by archiver: no key under it would parse either
    return sorted(apps)


async def _gather_bounded(jobs: Iterable[Awaitable[list[ObjectInfo]]]) -> list[list[ObjectInfo]]:
    semaphore = asyncio.Semaphore(LIST_CONCURRENCY)

    async def run(job: Awaitable[list[ObjectInfo]]) -> list[ObjectInfo]:
        async with semaphore:
            return await job

    return await asyncio.gather(*(run(job) for job in jobs))


class Planner:
    """Lists the files of a query's apps, regions and time range, hour by hour."""

    def __init__(
        self,
        storage: Storage,
        apps: Sequence[str],
        since_ns: int,
        until_ns: int,
        regions: Sequence[str] = (),
        footers: Footers | None = None,
    ) -> None:
        self.storage = storage
        #: Reads compacted files' footers where a partition mixes them with others (query.supersede).
        self.footers = footers or FooterReader(storage)
        self.apps = list(dict.fromkeys(apps))
        # As keys give them back: a region too long for a key is compared in its shortened form.
        self.regions = frozenset(stored_value(region) for region in regions)
        self.since_ns = since_ns
        self.until_ns = until_ns
        self.hours_listed = 0

    def _keep(self, parsed: ObjectKey | None) -> bool:
        if parsed is None:
            return False
        if parsed.hour_ns + NS_PER_HOUR <= self.since_ns or parsed.hour_ns >= self.until_ns:
            return False
        return not self.regions or parsed.region in self.regions

    async def _list_window(self, window: Sequence[Chunk]) -> dict[int, HourFiles]:
        self.hours_listed += sum((c.end_ns - c.start_ns) // NS_PER_HOUR for c in window)
        hours = await self._list_window_raw(window)
        resolved = await asyncio.gather(*(self._resolve(group) for group in hours.values()))
        return {group.hour_ns: group for group in resolved}

    async def _list_window_raw(self, window: Sequence[Chunk]) -> dict[int, HourFiles]:
        prefixes = [chunk.prefix(encode_value(app)) for chunk in window for app in self.apps]
        results = await _gather_bounded(self.storage.list(p) for p in prefixes)
        hours: dict[int, HourFiles] = {}
        for infos in results:
            for info in infos:
                parsed = parse_key(info.key)
                if not self._keep(parsed):
                    continue
                assert parsed is not None  # _keep said so
                planned = PlannedFile(info.key, info.size, parsed.app, parsed.region, parsed.hour_ns)
                hours.setdefault(parsed.hour_ns, HourFiles(parsed.hour_ns)).files.append(planned)
        for group in hours.values():
            group.files.sort(key=lambda f: (f.app, f.region, f.key))
        return hours

    async def _resolve(self, group: HourFiles) -> HourFiles:
        """The hour with superseded files left out; listed again if a footer it needs is gone."""
        try:
            group.files = await live_files(group.files, self.footers)
        except VanishedError:
            return await self.relist(group.hour_ns)
        return group

    async def relist(self, hour_ns: int) -> HourFiles:
        """List one hour again (a file of it vanished: compacted or deleted) and resolve it afresh."""
        window = [Chunk(hour_ns, hour_ns + NS_PER_HOUR)]
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
        todo = chunks(self.since_ns, self.until_ns) if self.apps else []
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
