"""``archiver import`` into an archive that is a Delta table: the imported files are added, exactly once.

An import file's name is a digest of its content (:mod:`archiver.manage.importer`), so importing the
same lines again finds the file already there, or, once a compaction merged and deleted it, writes
it again. After the files are written, :func:`add_imports` refreshes the table and adds every
import file of this run that is not live yet, in one commit guarded like a compaction (the app-day's
app transaction: a compaction or prune of the same day committing meanwhile makes it look again),
except those a live compacted group of their hour (or day file of their day) already replaces (``archiver.replaces``, read from
one part's footer per group): those rows are in the table already, and the file just written again
is deleted. A run killed before its commit is finished by running it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from archiver.archive.layout import DAY_FILE_MARK, parse_key
from archiver.archive.supersede import identity, parse_compact_name, replaced_names
from archiver.errors import TableConflictError, TableError
from archiver.storage.interface import Storage
from archiver.table.bootstrap import read_footers
from archiver.table.writer import ArchiveTable

#: Rounds of refresh, check and commit when a compaction or prune of the same days commits meanwhile.
ATTEMPTS = 5


def _live(table: ArchiveTable) -> set[str]:
    with table.lock:
        table.refresh()
        return table.live_keys()


def _replaced(table: ArchiveTable, live: set[str], keys: list[str]) -> set[tuple[str, str]]:
    """(directory, identity) of every name a live compacted group of the hours of ``keys`` replaces."""
    import pyarrow.parquet as pq

    from archiver.storage.open import open_filesystem

    hours = {key[: key.rindex("/") + 12] for key in keys}  # app=X/date=D/YYYYMMDDTHH
    days = {
        hour[:-3] for hour in hours
    }  # a day file (YYYYMMDD-d-...) replaces the files of every hour of its day
    probes: dict[tuple[str, object], str] = {}
    for key in live:
        parsed = parse_compact_name(key.rpartition("/")[2])
        cut = key.rindex("/")
        is_day = key.startswith(DAY_FILE_MARK, cut + 9)
        if parsed is not None and (key[: cut + 12] in hours or (is_day and key[: cut + 9] in days)):
            probes.setdefault((key.rpartition("/")[0], parsed.group), key)
    filesystem, base = open_filesystem(table.settings)
    out = set()
    for (directory, _), key in probes.items():
        names = replaced_names(
            key.rpartition("/")[2], pq.read_metadata(f"{base}/{key}", filesystem=filesystem).metadata
        )
        out |= {(directory, identity(name)) for name in names or ()}
    return out


async def add_imports(storage: Storage, table: ArchiveTable, keys: Collection[str]) -> int:
    """Add the import files ``keys`` (written or found there by this run) not live yet; how many were added."""
    for _ in range(ATTEMPTS):
        live = await asyncio.to_thread(_live, table)
        todo = sorted(k for k in set(keys) if k not in live)
        if not todo:
            return 0
        replaced = await asyncio.to_thread(_replaced, table, live, todo)
        doomed = [k for k in todo if (k.rpartition("/")[0], identity(k.rpartition("/")[2])) in replaced]
        sizes = {}
        for directory in sorted({k.rpartition("/")[0] + "/" for k in todo}):
            sizes.update({info.key: info.size for info in await storage.list(directory)})
        candidates = []
        for key in todo:
            parsed = parse_key(key)
            if key not in doomed and key in sizes and parsed is not None:
                candidates.append((key, sizes[key], parsed.app, key.split("/", 2)[1].removeprefix("date=")))
        files, skipped = await asyncio.to_thread(read_footers, table.settings, candidates)
        if skipped:
            raise TableError(f"cannot add imported file {skipped[0][0]} to the table: {skipped[0][1]}")
        try:
            await asyncio.to_thread(table.commit_compaction, (), files, True)
        except TableConflictError:
            continue  # a compaction or prune of one of these days committed first: look again
        await storage.delete(doomed)
        return len(files)
    raise TableError(
        f"cannot add {len(keys)} imported files to {table.url}: compactions kept committing first"
    )
