"""``archiver prune``: delete whole partitions whose hours are all older than the retention.

Age is event time, read from the key (``date=`` and the hour a file name
starts with, or v1's ``hour=``), never object age, so a backfill imported
today of last year's logs is pruned like the rest. A day entirely older than
the cutoff goes as one prefix ``app=X/date=D/`` (both layouts); on the day
the cutoff falls in, each hour that ended before it: its v2 files
``app=X/date=D/YYYYMMDDTHH*`` and its v1 folder ``app=X/date=D/hour=HH/``
(one listing of the day finds them). Only keys listed are deleted, so a file
written meanwhile under a pruned prefix survives (the next run takes it).
With ``--app``, an app's files are pruned under every segment it has (v1 and
v2 spellings); a segment that also holds another app's files (only
``__HIVE_DEFAULT_PARTITION__``: v2's empty name, v1's literal one) loses only
the named app's. ``--dry-run`` lists and prints the same lines, and deletes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from archiver.archive.escaping import decoded_values
from archiver.archive.layout import NS_PER_HOUR
from archiver.archive.navigator import AppSelection, app_selection, list_days, list_each, list_files
from archiver.storage.interface import ObjectInfo, Storage

if TYPE_CHECKING:
    from archiver.manage.compact_table import TableLink
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


async def old_partitions(
    storage: Storage, app_segment: str, cutoff_ns: int, apps: AppSelection | None = None
) -> list[tuple[str, list[ObjectInfo]]]:
    """Day and hour prefixes of one app segment that ended at or before ``cutoff_ns``, oldest first, listed.

    Only the files of apps ``apps`` wants when given and the segment may hold another's.
    """
    whole = apps is None or all(apps.wants(value) for value in decoded_values(app_segment))
    days: list[str] = []
    out: list[tuple[str, list[ObjectInfo]]] = []
    for day in await list_days(storage, app_segment):
        if day.start_ns + NS_PER_HOUR > cutoff_ns:
            continue  # not even its first hour has ended
        if day.end_ns <= cutoff_ns and whole:
            days.append(day.prefix)
            continue
        hours: dict[str, list[ObjectInfo]] = {}
        for file in await list_files(storage, [day.prefix], until_ns=cutoff_ns - NS_PER_HOUR + 1, apps=apps):
            # A day file (a roll-up) holds every hour of its day: it goes with the whole day only.
            if file.hour_ns + file.length_ns <= cutoff_ns:
                hours.setdefault(file.hour_prefix, []).append(ObjectInfo(file.key, file.size))
        out.extend(sorted(hours.items()))
    listed = await list_each(storage, days, LIST_CONCURRENCY)
    return sorted([*zip(days, listed, strict=True), *out])


async def prune(
    storage: Storage,
    apps: Sequence[str],
    cutoff_ns: int,
    *,
    dry_run: bool,
    say: Callable[[str], None],
    table: TableLink | None = None,
) -> PruneStats:
    """Delete (or with ``dry_run`` only print) every partition of ``apps`` older than ``cutoff_ns``."""
    stats = PruneStats()
    selection = await app_selection(storage, apps)
    for segment in selection.segments:
        for prefix, infos in await old_partitions(storage, segment, cutoff_ns, selection):
            item = Doomed(prefix, [i.key for i in infos], sum(i.size for i in infos))
            if not item.keys:
                continue
            if not dry_run:
                if table is not None:  # out of the table first: it never references a deleted file
                    await table.remove(infos)
                await storage.delete(item.keys)
            verb = "would delete" if dry_run else "deleted"
            say(
                f"{verb} {item.prefix}  {len(item.keys)} files  {item.bytes} bytes ({format_bytes(item.bytes)})"
            )
            stats.prefixes += 1
            stats.files += len(item.keys)
            stats.bytes += item.bytes
    return stats
