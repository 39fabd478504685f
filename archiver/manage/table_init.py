"""Make an existing archive a Delta table: ``archiver table init`` and the service's first start.

Registers every schema v2 data file already in the archive (live flushes, compacted and imported
files), without rewriting them, as version 0 (:func:`archiver.table.bootstrap.register_existing`:
one listing, every footer read for exact stats). Schema v1 files (nanosecond timestamps, the
region in the key) are not registered: a Delta ``timestamp`` cannot hold them. They stay
readable by ``archiver query`` and plain Parquet readers, and the compactor (the service's, or
``archiver compact``) rewrites each of their hours as a v2 file, commits it, and deletes them.

The service passes the writer ids whose files it commits itself (its own and those its spool
recovers), so bootstrap leaves those to its committer. Another archiver's files uploaded while
this one bootstraps may be registered here and committed again by it: Delta reconciles adds of
one path (the later replaces the earlier), so a reader still sees the file once.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from archiver.archive.layout import live_name_parts, parse_key
from archiver.table.bootstrap import Registration, register_existing

if TYPE_CHECKING:
    from archiver.config import ArchiveSettings
    from archiver.storage.interface import Storage


class Partitions:
    """The (app, date) of each key bootstrap may register; counts the v1 files it leaves out."""

    def __init__(self, skip_writers: Collection[str] = ()) -> None:
        self.skip_writers = frozenset(skip_writers)
        self.v1_files = 0

    def __call__(self, key: str) -> tuple[str, str] | None:
        """(app, date) of a schema v2 data file's key; None for anything else."""
        parsed = parse_key(key)
        if parsed is None:
            return None
        if parsed.layout != 2:
            self.v1_files += 1
            return None
        parts = live_name_parts(parsed.name)
        if parts is not None and parts[0] in self.skip_writers:
            return None
        date = key.split("/", 2)[1].removeprefix("date=")
        return parsed.app, date


async def init_table(
    settings: ArchiveSettings, storage: Storage, skip_writers: Collection[str] = ()
) -> tuple[Registration, int]:
    """Create the table's version 0 from the files there (unless one exists); and the v1 files left out."""
    partitions = Partitions(skip_writers)
    registration = await register_existing(settings, storage, partitions)
    return registration, partitions.v1_files


def describe(url: str, registration: Registration, v1_files: int) -> list[str]:
    """What ``archiver table init`` (and the service's log) says about a bootstrap."""
    if not registration.created:
        return [f"{url} already is a Delta table: nothing to do"]
    lines = [f"{url} is now a Delta table: version 0 registers {registration.registered} files"]
    if v1_files:
        lines.append(
            f"{v1_files} schema v1 files are not registered (compaction rewrites them as v2 files and commits those)"
        )
    lines += [f"warning: not registered {key}: {reason}" for key, reason in registration.skipped]
    return lines
