"""What a reader reads when the archive is a table: the live files of the table's snapshot, as archive files.

``archiver query``, ``ls`` and ``stats`` ask :func:`read_view` for the apps and time they
need. With a table, the answer is the snapshot's files of those apps and days
(:func:`archiver.table.log.read_snapshot`): a file removed from the table (a compaction's
inputs, a pruned day, not vacuumed yet) is never read, a file added is, and a file uploaded but
not committed yet (or a compaction's output it abandoned) is not. Listing the storage cannot
tell these apart: a listed file not named by the log's tail may be live since before the last
checkpoint or never committed, so the checkpoint's adds are needed either way, and once they are
read they name every live file with its size; readers then need no listing at all.

None means "read by listing, as before": there is no table (TABLE off, an archive of an earlier
version), or its log is damaged (a TableError naming the object: one warning, then listing; with
``strict`` the error). The snapshot is narrowed to the days of the range (every day when the
range is open or longer than :data:`MAX_DAYS`), and to the wanted apps. The user's snapshot cache
(:mod:`archiver.table.log_cache`) spares re-reading the checkpoint and the commits read before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from archiver.archive.layout import NS_PER_HOUR, NS_PER_SECOND
from archiver.archive.navigator import AppSelection, ArchiveFile, Span, archive_file
from archiver.errors import TableError
from archiver.storage.interface import Storage
from archiver.table.log import Snapshot, read_snapshot
from archiver.table.log_cache import user_cache

#: Longest range narrowed to its days in the log read (beyond it, every day is read and filtered by time).
MAX_DAYS = 400
_NS_PER_DAY = 24 * NS_PER_HOUR


@dataclass(frozen=True, slots=True)
class TableView:
    """The archive files of one snapshot that are in a reader's range and apps."""

    version: int
    files: list[ArchiveFile]

    def in_spans(self, spans: Sequence[Span]) -> list[ArchiveFile]:
        """The files whose hour (or day, for a day file) overlaps one of ``spans``."""
        return [
            f
            for f in self.files
            if any(s.start_ns < f.hour_ns + f.length_ns and f.hour_ns < s.end_ns for s in spans)
        ]


def days_of(since_ns: int | None, until_ns: int | None) -> list[str] | None:
    """``YYYY-MM-DD`` of the UTC days overlapping ``[since, until)``; None (all) when open or too long."""
    if since_ns is None or until_ns is None or until_ns - since_ns > MAX_DAYS * _NS_PER_DAY:
        return None
    first, last = since_ns // _NS_PER_DAY, (max(until_ns, since_ns + 1) - 1) // _NS_PER_DAY
    return [
        f"{datetime.fromtimestamp(day * _NS_PER_DAY // NS_PER_SECOND, UTC):%Y-%m-%d}"
        for day in range(first, last + 1)
    ]


def view_of(
    snapshot: Snapshot, apps: AppSelection, since_ns: int | None = None, until_ns: int | None = None
) -> TableView:
    """The snapshot's archive files of ``apps`` whose hour overlaps ``[since, until)``, sorted by key."""
    found = (archive_file(f.key, f.size, since_ns, until_ns, apps) for f in snapshot.files)
    return TableView(snapshot.version, [f for f in found if f is not None])


async def read_view(
    storage: Storage,
    apps: AppSelection,
    since_ns: int | None = None,
    until_ns: int | None = None,
    *,
    strict: bool = False,
    warn: Callable[[str], None] | None = None,
) -> TableView | None:
    """The table's files for a reader; None: read by listing (no table, or a damaged log: warned)."""
    try:
        snapshot = await read_snapshot(storage, apps.values, days_of(since_ns, until_ns), user_cache())
    except TableError as exc:
        if strict:
            raise
        if warn is not None:
            warn(f"warning: {exc}; reading the data files by listing")
        return None
    return None if snapshot is None else view_of(snapshot, apps, since_ns, until_ns)
