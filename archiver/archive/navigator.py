"""Finding an archive's apps, days, hours and files, listing as little as possible.

The archive is never listed whole. Apps are given, or come from one delimiter
listing of the root; an app's days from one delimiter listing of ``app=X/``,
a day's hours from one of ``app=X/date=D/``. A range of time becomes listing
prefixes without listing anything (:func:`spans`): ``app=X/date=D/`` for a
day it covers entirely, one prefix per hour at the edges. Files are listed
only under the prefixes a command needs, concurrently under a bound, and
come back with the partition values of their keys. Keys and their segments
are :mod:`archiver.archive.layout`'s; this module reads them back from
listings. Compaction, prune and stats (:mod:`archiver.manage`) and the query
planner (:mod:`query.plan`) find their files here.

Ranges are of event time, half-open ``[since_ns, until_ns)``: an hour is in
range when it overlaps it (``hour + 1h > since`` and ``hour < until``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from archiver.archive.layout import (
    NS_PER_HOUR,
    NS_PER_SECOND,
    app_prefix,
    decode_value,
    encode_value,
    hour_prefix,
    hour_start_ns,
    parse_key,
)

if TYPE_CHECKING:
    from archiver.storage.interface import ObjectInfo, Storage

NS_PER_DAY = 24 * NS_PER_HOUR
#: Concurrent listings by default; S3 endpoints serve this many in parallel without throttling.
LIST_CONCURRENCY = 32
_APP = "app="
# Span and DatedPrefix are NamedTuples: a slotted dataclass costs ~0.4 ms to create at import, and
# `archiver query` imports this module.


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One listed archive file: its key and size, and the partition values parsed from the key."""

    key: str
    size: int
    app: str
    region: str
    hour_ns: int

    @property
    def name(self) -> str:
        """The file name: the key's last segment."""
        return self.key.rpartition("/")[2]

    @property
    def partition_prefix(self) -> str:
        """The prefix of its partition (app, date, hour, region), ending in ``/``."""
        return self.key.rpartition("/")[0] + "/"


class Span(NamedTuple):
    """Time listed with one prefix per app: a whole UTC day or a single hour."""

    start_ns: int
    end_ns: int

    @property
    def hours(self) -> int:
        """How many hours it holds (24 or 1)."""
        return (self.end_ns - self.start_ns) // NS_PER_HOUR

    def prefix(self, app_segment: str) -> str:
        """The listing prefix of this span for one app (segment already encoded)."""
        if self.end_ns - self.start_ns == NS_PER_DAY:
            return day_prefix(app_segment, self.start_ns)
        return hour_prefix(app_segment, self.start_ns)


class DatedPrefix(NamedTuple):
    """A listed day or hour prefix of one app, and the time its files hold."""

    prefix: str
    start_ns: int
    end_ns: int


def day_prefix(app_segment: str, day_ns: int) -> str:
    """Prefix of one app's objects for the UTC day starting at ``day_ns``."""
    day = datetime.fromtimestamp(day_ns // NS_PER_SECOND, UTC)
    return f"{app_prefix(app_segment)}date={day:%Y-%m-%d}/"


def spans(since_ns: int, until_ns: int) -> list[Span]:
    """The hours of ``[since, until)`` in time order, days whose every hour is in range merged."""
    out: list[Span] = []
    hour = hour_start_ns(since_ns)
    last_hour = hour_start_ns(until_ns - 1)
    while hour <= last_hour:
        if hour % NS_PER_DAY == 0 and hour + NS_PER_DAY - NS_PER_HOUR <= last_hour:
            out.append(Span(hour, hour + NS_PER_DAY))
            hour += NS_PER_DAY
        else:
            out.append(Span(hour, hour + NS_PER_HOUR))
            hour += NS_PER_HOUR
    return out


def _last_value(prefix: str, name: str) -> str:
    """The value of the last segment of a prefix such as ``app=a/date=2026-11-24/``."""
    return prefix.rstrip("/").rpartition(f"{name}=")[2]


def day_start_ns(prefix: str) -> int | None:
    """Start of the day a listed ``.../date=YYYY-MM-DD/`` prefix names; None when it names none."""
    try:
        day = datetime.strptime(_last_value(prefix, "date"), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(day.timestamp()) * NS_PER_SECOND


def hour_of_day(prefix: str) -> int | None:
    """The hour (0-23) a listed ``.../hour=HH/`` prefix names; None when it names none."""
    value = _last_value(prefix, "hour")
    return int(value) if len(value) == 2 and value.isdigit() and int(value) < 24 else None


async def app_segments(storage: Storage, apps: Sequence[str] = ()) -> list[str]:
    """Encoded app segments: of ``apps``, or of every ``app=`` entry of the archive (one delimiter listing)."""
    if apps:
        return [encode_value(app) for app in dict.fromkeys(apps)]
    out = []
    for entry in await storage.list_dirs(""):
        name = entry.rstrip("/")
        if name.startswith(_APP) and len(name) > len(_APP):
            out.append(name[len(_APP) :])
    return sorted(out)


async def list_apps(storage: Storage) -> list[str]:
    """Every app in the archive, decoded, from one delimiter listing of the root."""
    apps = []
    for segment in await app_segments(storage):
        try:
            apps.append(decode_value(segment))
        except ValueError:
            continue  # not written by archiver: no key under it would parse either
    return sorted(apps)


async def list_days(storage: Storage, app_segment: str) -> list[DatedPrefix]:
    """The days of one app (one delimiter listing), in time order; entries that name no day are skipped."""
    out = []
    for entry in await storage.list_dirs(app_prefix(app_segment)):
        start = day_start_ns(entry)
        if start is not None:
            out.append(DatedPrefix(entry, start, start + NS_PER_DAY))
    return out


async def list_hours(storage: Storage, day: DatedPrefix) -> list[DatedPrefix]:
    """The hours of one listed day (one delimiter listing); entries that name no hour are skipped."""
    out = []
    for entry in await storage.list_dirs(day.prefix):
        number = hour_of_day(entry)
        if number is not None:
            start = day.start_ns + number * NS_PER_HOUR
            out.append(DatedPrefix(entry, start, start + NS_PER_HOUR))
    return out


async def list_each(
    storage: Storage, prefixes: Iterable[str], concurrency: int = LIST_CONCURRENCY
) -> list[list[ObjectInfo]]:
    """Every object under each prefix (recursive), in the order of ``prefixes``, at most ``concurrency`` at once."""
    limit = asyncio.Semaphore(concurrency)

    async def listing(prefix: str) -> list[ObjectInfo]:
        async with limit:
            return await storage.list(prefix)

    return list(await asyncio.gather(*(listing(p) for p in prefixes)))


async def list_files(
    storage: Storage,
    prefixes: Iterable[str],
    since_ns: int | None = None,
    until_ns: int | None = None,
    concurrency: int = LIST_CONCURRENCY,
) -> list[ArchiveFile]:
    """The archive files under ``prefixes`` whose hour overlaps ``[since, until)``, in listing order.

    A bound left out is open. Objects whose keys are not archive keys are left out.
    """
    out = []
    for infos in await list_each(storage, prefixes, concurrency):
        for info in infos:
            parsed = parse_key(info.key)
            if parsed is not None and _overlaps(parsed.hour_ns, NS_PER_HOUR, since_ns, until_ns):
                out.append(ArchiveFile(info.key, info.size, parsed.app, parsed.region, parsed.hour_ns))
    return out


def _overlaps(start_ns: int, length_ns: int, since_ns: int | None, until_ns: int | None) -> bool:
    return (since_ns is None or start_ns + length_ns > since_ns) and (until_ns is None or start_ns < until_ns)


async def files_of_days(
    storage: Storage,
    app_segment: str,
    since_ns: int | None = None,
    until_ns: int | None = None,
    concurrency: int = LIST_CONCURRENCY,
) -> list[ArchiveFile]:
    """One app's files whose hour overlaps ``[since, until)``: its days listed, then only the days in range."""
    days = await list_days(storage, app_segment)
    wanted = [d.prefix for d in days if _overlaps(d.start_ns, NS_PER_DAY, since_ns, until_ns)]
    return await list_files(storage, wanted, since_ns, until_ns, concurrency)
