"""Table upkeep on the service's schedule: checkpoints, log clean-up, vacuum.

Routine commits run with post-commit hooks off (:mod:`archiver.table.writer`), so nothing
checkpoints or cleans up unless called here:

* :func:`checkpoint` every N commits or minutes: without one, opening the table and every
  commit replay all the JSON commits since the last (measured: 0.44 s against 0.12 s per commit
  at 20k files after 1,000 commits, FINDINGS §7); our log reader reads only the commits after it.
* :func:`clean_up_log` deletes log objects older than ``delta.logRetentionDuration``
  (:data:`LOG_RETENTION`, set at creation) that a newer checkpoint covers. It lists all of
  ``_delta_log/``: run it rarely (hourly), never per commit.
* :func:`vacuum` (delta-rs's; the service runs its own, :mod:`archiver.table.vacuum`, from
  :mod:`archiver.service.upkeep`: this one peaked at +179 MB at a simulated year and re-deletes
  every tombstone at each run) deletes the data files removed more than ``retention_hours`` ago (running
  queries on an older snapshot keep finding them until then). It is always the "lite" vacuum
  (``full=False``): only files the log says were removed. A full vacuum deletes every file the
  log does not reference, which would delete schema v1 files (never registered) and files
  uploaded but not yet committed: never run it on an archive.

Tombstones (the log's remove actions) are what the lite vacuum works from, and checkpoints keep
them for ``delta.deletedFileRetentionDuration`` (:data:`TOMBSTONE_RETENTION`). Measured
(bench/table_scale.py): every vacuum run deletes AGAIN every tombstone older than its retention
that the log still holds, and a checkpoint carries them all; at the service's rate (150 flush
files a minute, each removed by a compaction) Delta's default of 7 days is 1.5 M tombstones.
So the table keeps them 6 hours: enough for a vacuum every hour with a 1-hour retention to
miss several runs. A file whose tombstone expired before any vacuum ran (the service down
longer than that) is left behind as an unreferenced file: garbage, never a wrong answer.
"""

from __future__ import annotations

from archiver.table.writer import NO_HOOKS, ArchiveTable, delta_errors

#: Log objects older than this (and covered by a newer checkpoint) are deleted by clean-up.
LOG_RETENTION = "interval 2 days"
#: Removes older than this leave the checkpoints: vacuum must have run by then (see the module doc).
TOMBSTONE_RETENTION = "interval 6 hours"
#: Table properties set when the table is created.
TABLE_CONFIGURATION = {
    "delta.logRetentionDuration": LOG_RETENTION,
    "delta.deletedFileRetentionDuration": TOMBSTONE_RETENTION,
}


def checkpoint(table: ArchiveTable) -> int:
    """Write a checkpoint of the newest version (refreshing first); that version."""
    with table.lock, delta_errors(f"cannot checkpoint the Delta table at {table.url}"):
        table.delta.update_incremental()
        table.delta.create_checkpoint()
        return table.delta.version()


def clean_up_log(table: ArchiveTable) -> None:
    """Delete expired log objects covered by a checkpoint (lists the whole log: run it rarely)."""
    with table.lock, delta_errors(f"cannot clean up the Delta log of {table.url}"):
        table.delta.update_incremental()
        table.delta.cleanup_metadata()


def vacuum(table: ArchiveTable, retention_hours: int) -> list[str]:
    """Delete the files removed from the table more than ``retention_hours`` ago; their paths."""
    if retention_hours < 0:
        raise ValueError("retention_hours must be >= 0")
    with table.lock, delta_errors(f"cannot vacuum the Delta table at {table.url}"):
        table.delta.update_incremental()
        return table.delta.vacuum(
            retention_hours=retention_hours,
            dry_run=False,
            enforce_retention_duration=False,
            full=False,
            post_commithook_properties=NO_HOOKS,
        )
