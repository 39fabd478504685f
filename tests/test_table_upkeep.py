"""The service's table upkeep in process: one elected process checkpoints and collects leftovers.

A real local archive and delta-rs table. The upkeep claim makes a second process (here one of
another host) wait while the first holds it; a checkpoint appears once enough commits followed the
last; the vacuum deletes exactly the files removed from the table and left behind (never a live
file, nor one uploaded and not committed), and reads each commit's removes once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from table_files import ids, live, put_v2

from archiver.config import ArchiveSettings
from archiver.manage import claims
from archiver.service.upkeep import CLAIM_PREFIX, UpkeepStage
from archiver.storage.local import LocalStorage
from archiver.table.bootstrap import create_table
from archiver.table.log import read_snapshot
from archiver.table.writer import ArchiveTable

D1 = "2024-01-02"


async def test_one_process_checkpoints_and_vacuums_leftovers(tmp_path: Path) -> None:
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    storage = LocalStorage(settings.prefix)
    files = [await put_v2(storage, "web", D1, f"f{i}", ids(f"f{i}", 2)) for i in range(6)]
    assert create_table(settings, [])
    table = ArchiveTable.open(settings)
    assert table is not None
    for n, file in enumerate(files, 1):
        table.commit_adds([file], "writer", n)
    uncommitted = await put_v2(storage, "web", D1, "not-yet", ["u"])
    # A compaction killed between its commit and its delete: removed from the table, still there.
    table.commit_removes([live(files[0]), live(files[1])])

    now = [0.0]
    here = UpkeepStage(
        storage, lambda: table, vacuum_retention_s=0.0, checkpoint_every=5, clock=lambda: now[0]
    )
    other_host = UpkeepStage(storage, lambda: table, vacuum_retention_s=0.0, checkpoint_every=5)
    other_host.owner = claims.Owner("elsewhere", "another-host", 1)
    try:
        await other_host.tick()  # the other process takes the claim first (and does the work)
        assert other_host.stats.leader and other_host.stats.checkpoints == 1
        assert other_host.stats.vacuumed_files == 2
        keys = {info.key for info in await storage.list("app=")}
        assert keys == {f.key for f in files[2:]} | {uncommitted.key}
        await here.tick()  # held by the other: this one waits
        assert not here.stats.leader and here.stats.checkpoints == here.stats.vacuums == 0
        assert len(await storage.list(CLAIM_PREFIX)) == 1
        await other_host.tick()  # renewed: still one claim
        assert len(await storage.list(CLAIM_PREFIX)) == 1
        await other_host.stop()  # released (a crashed holder's claim would expire)
        assert await storage.list(CLAIM_PREFIX) == []

        for file in files[2:4]:  # more commits, more leftovers
            table.commit_removes([live(file)])
        await (
            here.tick()
        )  # a new upkeep process: reads back its LOOKBACK_COMMITS (deleting 2 gone files again)
        assert here.stats.leader and here.stats.vacuumed_files == 4
        assert here.vacuum.through == table.last_version
        keys = {info.key for info in await storage.list("app=")}
        assert keys == {f.key for f in files[4:]} | {uncommitted.key}
        table.commit_removes([live(files[4])])
        await here.tick()  # not due yet (hourly)
        assert here.stats.vacuums == 1
        now[0] += 3601
        await here.tick()
        assert here.stats.vacuums == 2 and here.stats.vacuumed_files == 5  # each commit's removes read once
        assert {info.key for info in await storage.list("app=")} == {files[5].key, uncommitted.key}
        snapshot = await read_snapshot(storage)
        assert snapshot is not None and [f.key for f in snapshot.files] == [files[5].key]
    finally:
        await here.stop()
        await storage.close()


async def test_vacuum_waits_for_the_retention(tmp_path: Path) -> None:
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    storage = LocalStorage(settings.prefix)
    file = await put_v2(storage, "web", D1, "f", ids("f", 1))
    assert create_table(settings, [file])
    table = ArchiveTable.open(settings)
    assert table is not None
    table.commit_removes([live(file)])
    stage = UpkeepStage(storage, lambda: table, vacuum_retention_s=3600.0)
    try:
        await stage.tick()
        assert stage.stats.vacuumed_files == 0 and len(stage.vacuum.waiting) == 1
        assert [i.key for i in await storage.list("app=")] == [file.key]
        run = await stage.vacuum.run(table.last_version, time.time_ns() // 1_000_000 + 3_600_001,
                                     lambda: asyncio.to_thread(table.live_keys))  # fmt: skip
        assert run.deleted == 1 and await storage.list("app=") == []
    finally:
        await stage.stop()
        await storage.close()
