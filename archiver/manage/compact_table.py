"""Compaction of an archive that is a Delta table: the unit's view is the table's, and step 6 is one guarded commit.

With a table (design14.md "Exactly once"), :class:`~archiver.manage.compact.Compactor`
changes in three places, all here:

* **the view**: a unit's listing is narrowed to the files live in the table (plus schema v1
  files, which are never registered). A file uploaded and not committed yet is not an input
  (its writer commits it; the next compaction takes it); the inputs of an earlier compaction,
  removed from the table and waiting for vacuum, are not seen again.
* **the commit** (between put and delete): one commit removing every v2 input
  (``data_change=False``) and adding every part with exact stats from its footer, guarded by
  the app-day's app transaction after checking every input is still live
  (:meth:`~archiver.table.writer.ArchiveTable.commit_compaction`). Two compactors of one
  app-day never both commit; the loser's parts stay as unreferenced objects (same inputs give
  the same names, so they may be the winner's own: never deleted here; vacuum does not see them,
  the supersede rule of ``archiver query`` ignores an incomplete or superseded group).
* **prune** (:meth:`TableLink.remove`): the pruned files' removes are committed (guarded like a
  compaction) before the files are deleted, so the table never references a deleted file. They
  are deleted at once, not after the vacuum retention: a Delta query running on an older snapshot
  may then miss them (a prune's files are past retention anyway).
* **orphans** (:func:`orphan_keys`): parts of a compaction or roll-up that never became live
  (killed between its upload and its commit, or it lost the guard race) are invisible to a Delta
  reader but counted by a glob reader. Working an app-hour, the compactor deletes its compacted
  files, working an app-day its day files (never a flush or an import: an uploaded flush may wait
  in a spool for its commit), that are not live and were written more than :data:`ORPHAN_AGE_S`
  ago: a compactor that uploaded parts commits within seconds, so one that old lost its commit for
  good. Each kind by its own unit, whose claim keeps off a rerun that may reuse those very names.
* **the delete**: every input (and every file the new group supersedes, all of them removed by
  the commit) is deleted right after the commit landed, as without a table (the lead's decision:
  issue 13 promises a glob reader ``app=*/**/*.parquet`` never counts a completed compaction
  twice, and a silent double count is worse than a Delta reader whose snapshot predates the
  commit getting a loud, retryable file-not-found). Vacuum only collects leftovers: files of a
  compaction killed between its commit and its delete (:mod:`archiver.table.vacuum`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from archiver.archive.layout import parse_key
from archiver.errors import TableError
from archiver.storage.interface import ObjectInfo

#: A compacted or day file not live in the table and older than this is an orphan (see above).
ORPHAN_AGE_S = 3600.0

if TYPE_CHECKING:
    from archiver.manage.compact_plan import WorkUnit
    from archiver.manage.compact_steps import Work
    from archiver.table.writer import ArchiveTable


def unit_date(unit: WorkUnit) -> str:
    """``YYYY-MM-DD`` of the unit (its files' date partition)."""
    return unit.directory.rstrip("/").rpartition("date=")[2]


def _live_keys(table: ArchiveTable, partition: tuple[str, str] | None) -> set[str]:
    from archiver.table.writer import delta_errors

    with table.lock, delta_errors(f"cannot read the Delta log of {table.url}"):
        table.delta.update_incremental()
        table.last_version = table.delta.version()
        return table.live_keys(None if partition is None else [partition])


def seen(infos: Sequence[ObjectInfo], live: set[str]) -> list[ObjectInfo]:
    """The files of ``infos`` live in the table, and the schema v1 ones (never registered)."""
    return split(infos, live)[0]


def split(infos: Sequence[ObjectInfo], live: set[str]) -> tuple[list[ObjectInfo], list[ObjectInfo]]:
    """(what :func:`seen` keeps, the other v2 files): those not live are candidates for leftovers.

    Not live: uploaded and not committed yet (never touched), or removed by a commit and not deleted
    (a compaction killed between its commit and its delete): the compactor deletes those its unit's
    live group supersedes (:func:`leftover_keys`).
    """
    kept, other = [], []
    for info in infos:
        parsed = parse_key(info.key)
        if info.key in live or (parsed is not None and parsed.layout == 1):
            kept.append(info)
        elif parsed is not None:
            other.append(info)
    return kept, other


class TableLink:
    """The compactor's access to the archive's table (the service's shared handle, or one opened by the command)."""

    def __init__(self, table: Callable[[], ArchiveTable | None]) -> None:
        """``table()``: the open handle, or None while there is none yet (the service bootstraps it)."""
        self._table = table

    def _open(self) -> ArchiveTable:
        table = self._table()
        if table is None:
            raise TableError("the archive's Delta table is not open yet: compaction waits for it")
        return table

    async def view(
        self, unit: WorkUnit, infos: Sequence[ObjectInfo]
    ) -> tuple[list[ObjectInfo], list[ObjectInfo]]:
        """The unit's listed files a table reader sees (and its v1 files); its other v2 files (:func:`split`)."""
        live = await asyncio.to_thread(_live_keys, self._open(), (unit.app, unit_date(unit)))
        return split(infos, live)

    def ready(self) -> bool:
        """Whether the table is open (the service's committer opens or creates it at start)."""
        return self._table() is not None

    async def live_keys(self) -> set[str]:
        """Every live file's key (one read of the table: a scan narrows all its units with it)."""
        return await asyncio.to_thread(_live_keys, self._open(), None)

    async def try_commit(self, work: Work, doomed: Sequence[str]) -> bool:
        """:meth:`commit`; False when another compaction or prune of the app-day won.

        The files are deleted right after (as without a table): a glob reader never counts a
        completed compaction twice; a Delta reader on a snapshot older than this commit gets a
        loud, retryable file-not-found instead (README).
        """
        from archiver.errors import TableConflictError

        try:
            await self.commit(work, doomed)
        except TableConflictError:
            return False
        return True

    async def commit(self, work: Work, doomed: Sequence[str]) -> None:
        """Step 6: remove the v2 files ``doomed`` (names) and add the parts in one guarded commit.

        TableConflictError if another compaction or prune of the app-day won. Nothing to commit
        (only v1 files doomed, no parts): no commit.
        """
        from archiver.table.files import LiveFile, TableFile
        from archiver.table.stats import file_stats

        unit, files = work.unit, work.files
        date = unit_date(unit)
        removed = [
            LiveFile(files.keys[n], files.sizes[n], unit.app, date)
            for n in doomed
            if files.regions[n] is None  # v2: registered; v1 files never were
        ]
        if not removed and not work.parts:
            return
        table = self._open()
        stamp_ms = time.time_ns() // 1_000_000
        added = [
            TableFile(
                f"{unit.directory}{name}", part.size, unit.app, date, file_stats(part.metadata), stamp_ms
            )
            for name, part in zip(work.outputs, work.parts, strict=True)
        ]
        await asyncio.to_thread(table.commit_compaction, removed, added)

    async def remove(self, infos: Sequence[ObjectInfo]) -> None:
        """Prune: remove the live ones of ``infos`` from the table in one guarded commit, before they are deleted."""
        from archiver.table.files import LiveFile

        table = self._open()
        live = await asyncio.to_thread(_live_keys, table, None)
        removed = []
        for info in infos:
            parsed = parse_key(info.key)
            if info.key in live and parsed is not None:
                removed.append(LiveFile(info.key, info.size, parsed.app, info.key.split("/", 2)[1][5:]))
        if removed:
            await asyncio.to_thread(table.commit_removes, removed)


def leftover_keys(work: Work) -> list[str]:
    """Keys of the unit's v2 files not live in the table that a live (or the new) group supersedes.

    They were removed by a committed compaction whose delete a kill cut short (or a replayed batch
    re-uploaded a file compacted since, which its writer's app transaction keeps out of the table):
    deleted now, as that compaction would have. Files not committed yet are never among them.
    """
    from archiver.archive.supersede import superseded_by

    extra = work.extra
    if not extra.names:
        return []
    covered = set(work.decision.covered)
    for replaced in work.replaces.values():  # every live group's inputs, transitively
        covered |= replaced or frozenset()
    return [extra.keys[n] for n in superseded_by(extra.names, work.replaces, frozenset(covered), set())]


def orphan_keys(work: Work, now_ns: int, age_s: float, keep: Sequence[str] = ()) -> list[str]:
    """Keys of the unit's compacted (an hour) or day files (a day) not live in the table, written ``age_s`` or more ago.

    ``keep``: names never to delete (the parts this compaction commits). A file whose write time is
    unknown is kept.
    """
    from archiver.archive.layout import DAY_FILE_MARK
    from archiver.archive.supersede import parse_compact_name

    extra, kept = work.extra, set(keep)
    out = []
    for name in extra.names:
        written = extra.modified.get(name)
        if name in kept or written is None or parse_compact_name(name) is None:
            continue
        if (DAY_FILE_MARK in name) != work.unit.is_day:
            # Only the outputs of the unit's own kind: a rerun of the other kind's unit (which a claim of
            # this unit does not exclude) may be about to commit parts of the same names it found there.
            continue
        if written <= now_ns - int(age_s * 1e9):
            out.append(extra.keys[name])
    return out
