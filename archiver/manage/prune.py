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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from archiver.archive.layout import NS_PER_HOUR
from archiver.archive.navigator import app_segments, list_days, list_each, list_hours
from archiver.storage.interface import Storage
from archiver.units import format_bytes

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


async def old_prefixes(storage: Storage, app_segment: str, cutoff_ns: int) -> list[str]:
    """Day and hour prefixes of one app that ended at or before ``cutoff_ns``, oldest first."""
    out: list[str] = []
    for day in await list_days(storage, app_segment):
        if day.start_ns + NS_PER_HOUR > cutoff_ns:
            continue  # not even its first hour has ended
        if day.end_ns <= cutoff_ns:
            out.append(day.prefix)
            continue
        out.extend(hour.prefix for hour in await list_hours(storage, day) if hour.end_ns <= cutoff_ns)
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
    for segment in await app_segments(storage, apps):
        prefixes = await old_prefixes(storage, segment, cutoff_ns)
        listings = await list_each(storage, prefixes, LIST_CONCURRENCY)
        for prefix, infos in zip(prefixes, listings, strict=True):
            item = Doomed(prefix, [i.key for i in infos], sum(i.size for i in infos))
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
