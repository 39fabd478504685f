"""Functions the table concurrency tests run in spawned processes (deltalake panics in a forked child)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from archiver.config import ArchiveSettings
from archiver.errors import TableConflictError
from archiver.table.files import LiveFile, TableFile
from archiver.table.writer import ArchiveTable


def warm_up() -> None:
    """Import what the workers use, so that a race starts when asked, not after an import."""


def open_table(settings: ArchiveSettings) -> ArchiveTable:
    table = ArchiveTable.open(settings)
    assert table is not None
    return table


def wait_until(go_at: float) -> None:
    while time.time() < go_at:
        time.sleep(0.0005)


def append(
    settings: ArchiveSettings, writer_id: str, batches: Sequence[Sequence[TableFile]], go_at: float
) -> list[bool]:
    """Commit each batch as the next version of ``writer_id``, starting at ``go_at``; commit_adds' answers."""
    table = open_table(settings)
    wait_until(go_at)
    return [table.commit_adds(batch, writer_id, version) for version, batch in enumerate(batches, 1)]


def compact(settings: ArchiveSettings, inputs: Sequence[LiveFile], output: TableFile, go_at: float) -> str:
    """Commit the compaction of ``inputs`` into ``output`` at ``go_at``: "won" or "lost: <why>"."""
    table = open_table(settings)
    table.refresh()
    wait_until(go_at)
    try:
        table.commit_compaction(inputs, [output])
    except TableConflictError as exc:
        return f"lost: {exc}"
    return "won"


def storm(settings: ArchiveSettings, writer_id: str, stop_at: float) -> int:
    """Commit empty transactions of ``writer_id`` as fast as the table takes them until ``stop_at``; how many landed."""
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import CommitProperties, Transaction

    from archiver.table.schema import PARTITION_COLUMNS, TABLE_SCHEMA
    from archiver.table.writer import NO_HOOKS

    table = open_table(settings)
    landed = 0
    while time.time() < stop_at:
        table.delta.update_incremental()
        try:
            table.delta.create_write_transaction(
                [], mode="append", schema=TABLE_SCHEMA, partition_by=list(PARTITION_COLUMNS),
                commit_properties=CommitProperties(app_transactions=[Transaction(writer_id, landed + 1)]),
                post_commithook_properties=NO_HOOKS,
            )  # fmt: skip
            landed += 1
        except CommitFailedError:  # another stormer or the service got there first
            pass
    return landed
