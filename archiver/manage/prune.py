"""``archiver prune``: delete whole partitions whose hours are all older than the retention.

Age is event time, read from the key (``date=``/``hour=``), never object age,
so a backfill imported today of last year's logs is pruned like the rest. A
day entirely older than the cutoff goes as one prefix ``app=X/date=D/``; on
the day the cutoff falls in, each hour ``app=X/date=D/hour=H/`` that ended
before it. Only keys listed are deleted, so a file written meanwhile under a
pruned prefix survives (the next run takes it). ``--dry-run`` lists and
prints the same lines, and deletes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from archiver.archive.layout import NS_PER_HOUR, NS_PER_SECOND, app_prefix
from archiver.manage.compact import app_segments
from archiver.storage.interface import Storage
from archiver.units import format_bytes

NS_PER_DAY = 24 * NS_PER_HOUR
#: Concurrent listings of day or hour prefixes.
LIST_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class Doomed:
    """One prefix to delete: a day or an hour of one app, with what is under it."""

    prefix: str
    keys: list[str]
    bytes: int


@dataclass(slots=True)
class PruneStats:
    """What a prune run deleted (or would delete)."""

    prefixes: int = 0
    files: int = 0
    bytes: int = 0


def _segment_value(entry: str, key: str) -> str:
    """The value of the last segment of a prefix such as ``app=a/date=2026-11-24/``."""
    return entry.rstrip("/").rpartition(f"{key}=")[2]


def _day_start_ns(entry: str) -> int | None:
    try:
        when = datetime.strptime(_segment_value(entry, "date"), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(when.timestamp()) * NS_PER_SECOND


def _hour_of(entry: str) -> int | None:
    value = _segment_value(entry, "hour")
    return int(value) if len(value) == 2 and value.isdigit() and int(value) < 24 else None


async def old_prefixes(storage: Storage, app_segment: str, cutoff_ns: int) -> list[str]:
    """Day and hour prefixes of one app that ended at or before ``cutoff_ns``, oldest first."""
    out: list[str] = []
    for day in await storage.list_dirs(app_prefix(app_segment)):
        start = _day_start_ns(day)
        if start is None or start + NS_PER_HOUR > cutoff_ns:
            continue  # not a date, or not even its first hour has ended
        if start + NS_PER_DAY <= cutoff_ns:
            out.append(day)
            continue
        for hour in await storage.list_dirs(day):
            number = _hour_of(hour)
            if number is not None and start + (number + 1) * NS_PER_HOUR <= cutoff_ns:
                out.append(hour)
    return out


async def prune(
    storage: Storage,
    apps: Sequence[str],
    cutoff_ns: int,
    *,
    dry_run: bool,
    say: Callable[[str], None],
) -> PruneStats:
    """Delete (or with ``dry_run`` only print) every partition of ``apps`` older than ``cutoff_ns``."""
    stats = PruneStats()
    limit = asyncio.Semaphore(LIST_CONCURRENCY)

    async def doomed(prefix: str) -> Doomed:
        async with limit:
            infos = await storage.list(prefix)
        return Doomed(prefix, [i.key for i in infos], sum(i.size for i in infos))

    for segment in await app_segments(storage, apps):
        prefixes = await old_prefixes(storage, segment, cutoff_ns)
        for item in await asyncio.gather(*(doomed(p) for p in prefixes)):
            if not item.keys:
                continue
            if not dry_run:
                await storage.delete(item.keys)
            verb = "would delete" if dry_run else "deleted"
            say(
                f"{verb} {item.prefix}  {len(item.keys)} files  {item.bytes} bytes ({format_bytes(item.bytes)})"
            )
            stats.prefixes += 1
            stats.files += len(item.keys)
            stats.bytes += item.bytes
    return stats
