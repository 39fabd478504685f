"""Make an archive a Delta table: version 0 registers the files already there, without rewriting them.

Not ``convert_to_deltalake``, which records ``app=a/b/...`` for an ``app=a%2Fb`` folder (an
unreadable table). Instead: one listing of the archive, every schema v2 data file's footer read
(ranged reads through pyarrow's filesystem, :data:`FOOTER_READERS` at once) for exact stats
(:func:`archiver.table.stats.file_stats`), and version 0 committed with
``create_table_with_add_actions`` (create-only: when two archivers bootstrap at once, one
creates it and the other finds it), followed by a checkpoint so nobody replays a large
version 0. Schema v1 files are not registered (their nanosecond timestamps are not a Delta
``timestamp``): the compactor converts them into v2 files, committed as adds.

Which keys are data files, and of which app and date, is the layout's to say: the caller
passes ``parse_key`` (:mod:`archiver.archive.layout` once layout v2 lands).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from archiver.errors import TableError
from archiver.table.files import TableFile
from archiver.table.location import storage_options, table_uri
from archiver.table.schema import PARTITION_COLUMNS, TABLE_SCHEMA
from archiver.table.stats import file_stats
from archiver.table.upkeep import TABLE_CONFIGURATION, checkpoint
from archiver.table.writer import NO_HOOKS, ArchiveTable, add_action, delta_errors

if TYPE_CHECKING:
    from archiver.config import ArchiveSettings
    from archiver.storage.interface import Storage

#: Footers read at once (each one or two ranged GETs: latency-bound on S3).
FOOTER_READERS = 16
#: (app, date) of a data file's key, or None for keys that are not schema v2 data files.
ParseKey = Callable[[str], "tuple[str, str] | None"]


@dataclass(frozen=True, slots=True)
class Registration:
    """What bootstrap did: whether it created version 0, the files registered, the keys left out and why."""

    created: bool
    registered: int
    skipped: list[tuple[str, str]]


def read_footers(
    settings: ArchiveSettings, candidates: Sequence[tuple[str, int, str, str]]
) -> tuple[list[TableFile], list[tuple[str, str]]]:
    """TableFiles of (key, size, app, date) candidates from their footers; (key, reason) of those left out."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from archiver.storage.open import open_filesystem

    filesystem, base = open_filesystem(settings)
    now_ms = time.time_ns() // 1_000_000

    def one(candidate: tuple[str, int, str, str]) -> TableFile | tuple[str, str]:
        key, size, app, date = candidate
        try:
            stats = file_stats(pq.read_metadata(f"{base}/{key}", filesystem=filesystem))
        except (OSError, pa.ArrowException, TableError) as exc:
            return key, str(exc)
        return TableFile(key, size, app, date, stats, now_ms)

    files: list[TableFile] = []
    skipped: list[tuple[str, str]] = []
    with ThreadPoolExecutor(FOOTER_READERS, thread_name_prefix="footer") as pool:
        for result in pool.map(one, candidates):
            if isinstance(result, TableFile):
                files.append(result)
            else:
                skipped.append(result)
    return files, skipped


def create_table(settings: ArchiveSettings, files: Sequence[TableFile]) -> bool:
    """Commit version 0 holding ``files`` and checkpoint it; False if a table was already there."""
    from deltalake import Schema
    from deltalake.transaction import create_table_with_add_actions

    if ArchiveTable.open(settings) is not None:
        return False
    adds = [add_action(f, data_change=True) for f in files]
    try:
        with delta_errors(f"cannot create the Delta table at {settings.url}"):
            create_table_with_add_actions(
                table_uri(settings),
                Schema.from_arrow(TABLE_SCHEMA),
                adds,
                mode="error",
                partition_by=list(PARTITION_COLUMNS),
                configuration=TABLE_CONFIGURATION,
                storage_options=storage_options(settings),
                post_commithook_properties=NO_HOOKS,
            )
    except TableError:
        if ArchiveTable.open(settings) is not None:
            return False  # another archiver created it first
        raise
    table = ArchiveTable.open(settings)
    if table is None:
        raise TableError(f"the Delta table at {settings.url} was created but cannot be opened")
    checkpoint(table)
    return True


async def register_existing(settings: ArchiveSettings, storage: Storage, parse_key: ParseKey) -> Registration:
    """Bootstrap: list the archive once, read the v2 files' footers, create version 0 with them."""
    import asyncio

    candidates = []
    for info in await storage.list(""):
        if info.key.startswith("_") or not info.key.endswith(".parquet"):
            continue
        partition = parse_key(info.key)
        if partition is not None:
            candidates.append((info.key, info.size, *partition))
    files, skipped = await asyncio.to_thread(read_footers, settings, candidates)
    created = await asyncio.to_thread(create_table, settings, files)
    return Registration(created, len(files) if created else 0, skipped)
