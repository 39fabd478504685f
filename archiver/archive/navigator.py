"""Finding an archive's apps, days, hours and files, listing as little as possible (layouts v2 and v1).

The archive is never listed whole. Apps are given, or come from one delimiter listing of the root; an app's
days from one delimiter listing of ``app=X/``. A range of time becomes listing prefixes without listing
anything (:func:`spans`): ``app=X/date=D/`` for a day it covers entirely (both layouts), and at the edges,
per hour, the v2 prefixes (:func:`archiver.archive.layout.hour_prefixes`: the hour's files, and an ended
day's day files, which hold every hour) and the v1 folder ``app=X/date=D/hour=HH/``; :func:`day_spans` lists
the hours of a day covered in part with the day's prefix when they are many (the query planner: one listing
per app and day instead of up to 23 per layout). Files are listed only under the prefixes a command needs,
concurrently under a bound, and come back with the partition values of their keys (and the time they hold:
``length_ns``, a day for a day file). Compaction, prune and stats (:mod:`archiver.manage`) and the query
planner (:mod:`query.plan`) find their files here.

Apps: a listed segment is used as listed, never decoded and encoded again (a shortened name does not
survive that). A name given (``--app``) maps to every segment its files can sit under, in either layout
(:func:`archiver.archive.escaping.segments_of`), and only files whose app value is one of that name's are
kept. Ranges are of event time, half-open ``[since_ns, until_ns)``: a file is in range when its hour (or
day) overlaps it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from archiver.archive.escaping import decoded_values, segment_layouts, segments_of, values_of
from archiver.archive.layout import (
    NS_PER_DAY,
    NS_PER_HOUR,
    NS_PER_SECOND,
    app_prefix,
    day_prefix,
    hour_prefixes,
    hour_start_ns,
    parse_key,
    v1_hour_prefix,
)

if TYPE_CHECKING:
    from archiver.storage.interface import ObjectInfo, Storage

#: Hours of a day covered in part from which :func:`day_spans` lists the whole day once instead of each hour.
DAY_LISTING_MIN_HOURS = 6
#: Concurrent listings by default; S3 endpoints serve this many in parallel without throttling.
LIST_CONCURRENCY = 32
_APP = "app="
# Span, DatedPrefix and AppSelection are NamedTuples: a slotted dataclass costs ~0.4 ms to create at
# import, and `archiver query` imports this module.


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One listed archive file: key, size, the key's partition values (``region``: v1's; None in v2)."""

    key: str
    size: int
    app: str
    region: str | None
    hour_ns: int
    length_ns: int = NS_PER_HOUR
    modified_ns: int | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """The file name: the key's last segment."""
        return self.key.rpartition("/")[2]

    @property
    def date_prefix(self) -> str:
        """``app=<segment>/date=<D>/``: where the file's app and day start."""
        app, date, _ = self.key.split("/", 2)
        return f"{app}/{date}/"

    @property
    def relative_name(self) -> str:
        """The key below :attr:`date_prefix`: the name (v2) or ``hour=HH/region=R/<name>`` (v1)."""
        return self.key.split("/", 2)[2]

    @property
    def hour_prefix(self) -> str:
        """The prefix listing the file's hour in its layout: ``.../YYYYMMDDTHH`` or ``.../hour=HH/``."""
        relative = self.relative_name
        if self.region is None:
            return self.date_prefix + relative[:11]
        return self.date_prefix + relative.partition("/")[0] + "/"


class Span(NamedTuple):
    """Time listed with one prefix per app layout: whole hours of one UTC day (the day's prefix) or a single hour."""

    start_ns: int
    end_ns: int

    @property
    def hours(self) -> int:
        """How many hours it holds (1 to 24)."""
        return (self.end_ns - self.start_ns) // NS_PER_HOUR

    def prefixes(self, app_segment: str) -> list[str]:
        """The listing prefixes of this span for one app segment (already encoded), in its layouts.

        Several hours are listed with their day's prefix (both layouts under it): the files of the
        day's other hours come along and are left out by time (see :func:`list_files`).
        """
        if self.end_ns - self.start_ns > NS_PER_HOUR:
            return [day_prefix(app_segment, self.start_ns)]
        layouts = segment_layouts(app_segment)
        out = hour_prefixes(app_segment, self.start_ns) if 2 in layouts else []
        return [*out, v1_hour_prefix(app_segment, self.start_ns)] if 1 in layouts else out


class DatedPrefix(NamedTuple):
    """A listed day prefix of one app, and the time its files hold."""

    prefix: str
    start_ns: int
    end_ns: int


class AppSelection(NamedTuple):
    """The app segments to list, and the app values wanted among their files (None: every file)."""

    segments: tuple[str, ...]
    values: frozenset[str] | None

    def wants(self, app: str) -> bool:
        """Whether a file whose key gives ``app`` belongs to the selection."""
        return self.values is None or app in self.values


def select_apps(names: Sequence[str]) -> AppSelection:
    """The selection of apps given by name (``--app``): every segment of each, and their values."""
    segments: dict[str, None] = {}
    values: set[str] = set()
    for name in dict.fromkeys(names):
        segments.update(dict.fromkeys(segments_of(name)))
        values |= values_of(name)
    return AppSelection(tuple(segments), frozenset(values))


async def listed_app_segments(storage: Storage) -> list[str]:
    """Every ``app=`` segment of the archive, as listed (one delimiter listing of the root)."""
    out = []
    for entry in await storage.list_dirs(""):
        name = entry.rstrip("/")
        if name.startswith(_APP) and len(name) > len(_APP):
            out.append(name[len(_APP) :])
    return sorted(out)


async def select_all_apps(storage: Storage) -> AppSelection:
    """Every app of the archive: its listed segments, every file under them."""
    return AppSelection(tuple(await listed_app_segments(storage)), None)


async def app_selection(storage: Storage, names: Sequence[str] = ()) -> AppSelection:
    """The apps named, or every app of the archive when none is."""
    return select_apps(names) if names else await select_all_apps(storage)


async def list_apps(storage: Storage) -> list[str]:
    """Every app in the archive as keys give it back (each listed segment decoded in its layout), sorted."""
    apps: set[str] = set()
    for segment in await listed_app_segments(storage):
        values = decoded_values(segment)  # none: not written by archiver, no key under it parses
        if len(values) > 1:
            # Only DEFAULT_PARTITION: v2's empty name or v1's literal one. Its keys tell (rare: one listing).
            values = [f.app for f in await list_files(storage, [app_prefix(segment)])]
        apps.update(values)
    return sorted(apps)


def day_start_ns(prefix: str) -> int | None:
    """Start of the day a listed ``.../date=YYYY-MM-DD/`` prefix names; None when it names none."""
    value = prefix.rstrip("/").rpartition("date=")[2]
    try:
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(day.timestamp()) * NS_PER_SECOND if len(value) == 10 and value.isascii() else None


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


def day_spans(since_ns: int, until_ns: int) -> list[Span]:
    """As :func:`spans`, but the hours of a day covered in part, when there are at least
    :data:`DAY_LISTING_MIN_HOURS`, as one span (listed with the day's prefix)."""
    out: list[Span] = []
    for span in spans(since_ns, until_ns):
        previous = out[-1] if out else None
        if (
            previous is not None
            and span.hours == 1
            and previous.end_ns == span.start_ns
            and previous.hours < 24
            and previous.start_ns // NS_PER_DAY == span.start_ns // NS_PER_DAY
        ):
            out[-1] = Span(previous.start_ns, span.end_ns)
        else:
            out.append(span)
    # A few hours stay hour by hour: each listing is exact, and a day's listing would bring the rest.
    return [
        piece
        for span in out
        for piece in (
            [span]
            if span.hours >= DAY_LISTING_MIN_HOURS
            else [Span(h, h + NS_PER_HOUR) for h in range(span.start_ns, span.end_ns, NS_PER_HOUR)]
        )
    ]


async def list_days(storage: Storage, app_segment: str) -> list[DatedPrefix]:
    """The days of one app segment (one delimiter listing), in time order; entries naming no day skipped."""
    out = []
    for entry in await storage.list_dirs(app_prefix(app_segment)):
        start = day_start_ns(entry)
        if start is not None:
            out.append(DatedPrefix(entry, start, start + NS_PER_DAY))
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
    apps: AppSelection | None = None,
) -> list[ArchiveFile]:
    """The archive files under ``prefixes`` as :func:`archive_file` keeps them, in listing order."""
    listed = await list_each(storage, dict.fromkeys(prefixes), concurrency)
    found = (
        archive_file(i.key, i.size, since_ns, until_ns, apps, i.modified_ns) for li in listed for i in li
    )
    return [f for f in found if f is not None]


def archive_file(
    key: str,
    size: int,
    since: int | None,
    until: int | None,
    apps: AppSelection | None,
    modified_ns: int | None = None,
) -> ArchiveFile | None:
    """The archive file at ``key`` if its span overlaps ``[since, until)`` (open when None) and ``apps`` wants it."""
    parsed = parse_key(key)
    if parsed is None or not _overlaps(parsed.hour_ns, parsed.length_ns, since, until):
        return None
    if apps is not None and not apps.wants(parsed.app):
        return None
    return ArchiveFile(key, size, parsed.app, parsed.region, parsed.hour_ns, parsed.length_ns, modified_ns)


def _overlaps(start_ns: int, length_ns: int, since_ns: int | None, until_ns: int | None) -> bool:
    return (since_ns is None or start_ns + length_ns > since_ns) and (until_ns is None or start_ns < until_ns)


async def files_of_days(
    storage: Storage,
    app_segment: str,
    since_ns: int | None = None,
    until_ns: int | None = None,
    concurrency: int = LIST_CONCURRENCY,
    apps: AppSelection | None = None,
) -> list[ArchiveFile]:
    """One app segment's files whose hour overlaps ``[since, until)``: its days listed, then the days in range."""
    days = await list_days(storage, app_segment)
    wanted = [d.prefix for d in days if _overlaps(d.start_ns, NS_PER_DAY, since_ns, until_ns)]
    return await list_files(storage, wanted, since_ns, until_ns, concurrency, apps)
