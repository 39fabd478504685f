"""The committer stage in process: uploaded files committed to the Delta table exactly once.

Real spool, buffers, uploader and committer (:mod:`stages`), a real local archive and
delta-rs table: a replay after a crash between commit and *done* adds nothing twice; a
writer's files commit in sequence order; a damaged log keeps the batches in the spool.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from deltalake import DeltaTable
from harness import unique_messages
from stages import build, feed, journal_entries
from table_files import put_v2

from archiver.config import ArchiveSettings
from archiver.service.buffer import FlushBatch
from archiver.service.committer import Committer
from archiver.service.journal import Intent
from archiver.service.recovery import recover
from archiver.storage.local import LocalStorage

MESSAGES = unique_messages(21, 400)  # 3 apps x 2 regions, two hours of event time


def file_messages(archive: Path) -> Counter[str]:
    """Each row's message as the archive's files hold them (read one by one)."""
    import pyarrow.parquet as pq

    return Counter(
        m
        for path in archive.glob("app=*/*/*.parquet")
        for m in pq.read_table(path).column("message").to_pylist()
    )


def table_messages(archive: Path) -> Counter[str]:
    """Each row's message as the Delta table (deltalake/pyarrow) returns them."""
    table = DeltaTable(str(archive)).to_pyarrow_table(columns=["message"])
    return Counter(table.column("message").to_pylist())


async def archive_everything(stages_table: bool, spool_dir: Path, archive: Path, *, done: bool) -> int:
    """One process: ingest MESSAGES, upload every batch, commit; with ``done`` False it dies before journaling done."""
    stages = build(spool_dir, archive, table=stages_table)
    stages.spool.open()
    if not done:
        stages.spool.write_done = lambda intent: None  # type: ignore[method-assign]  # death right after the commit
    stages.uploader.start()
    try:
        await feed(stages, MESSAGES)
        batches = stages.buffers.detach_all()
        for batch in batches:
            stages.uploader.submit(batch)
        await asyncio.wait_for(stages.uploader.join(), 60)
        assert stages.committer is not None
        await asyncio.wait_for(stages.committer.flush(), 60)
        return stages.committer.stats.files
    finally:
        await stages.close()


async def test_a_batch_replayed_after_its_commit_is_not_added_again(tmp_path: Path) -> None:
    spool_dir, archive = tmp_path / "spool", tmp_path / "archive"
    files = await archive_everything(True, spool_dir, archive, done=False)
    rows = table_messages(archive)
    assert sum(rows.values()) == len(MESSAGES) and rows == file_messages(archive)
    assert set(journal_entries(spool_dir)) == {"intent"}  # committed, but died before "done"
    assert files == len(list(archive.glob("app=*/*/*.parquet")))

    # The restarted process (a new writer id) re-sends every batch under its old keys: all already committed.
    second = build(spool_dir, archive, table=True)
    recovered = recover(second.spool, second.buffers, None)
    assert len(recovered.batches) == Counter(journal_entries(spool_dir))["intent"]
    second.uploader.start()
    try:
        for batch in recovered.batches:
            second.uploader.submit(batch)
        await asyncio.wait_for(second.uploader.join(), 60)
        assert second.committer is not None
        await asyncio.wait_for(second.committer.flush(), 60)
        assert (second.committer.stats.files, second.committer.stats.already_committed) == (0, files)
        assert Counter(journal_entries(spool_dir))["done"] == len(recovered.batches)
        assert second.committer.low_water_seq(10**9) == 10**9
    finally:
        await second.close()
    assert table_messages(archive) == rows


async def test_a_writer_commits_in_sequence_order_and_a_damaged_log_keeps_its_batches(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    settings = ArchiveSettings("file", "", str(archive))
    storage = LocalStorage(str(archive))
    executor = __import__("concurrent.futures").futures.ThreadPoolExecutor(1)
    settled: list[FlushBatch] = []
    committer = Committer(settings, storage, None, executor, 3600.0, on_archived=settled.append)
    try:
        assert await committer._open_once()  # an empty archive: version 0 holds no files
        first = await put_v2(storage, "web", "2026-11-30", "20261130T030000Z-aaaaaaaaaa-00000001", ["a", "b"])
        second = await put_v2(storage, "web", "2026-11-30", "20261130T030001Z-aaaaaaaaaa-00000002", ["c"])
        committer.expect("aaaaaaaaaa", 1)
        committer.expect("aaaaaaaaaa", 2)
        batches = [FlushBatch("web", "ams", "web", "ams", None, 0, 0, first_seq=i) for i in (10, 20)]  # type: ignore[arg-type]
        intents = [Intent("web", "ams", b.first_seq, b.first_seq + 5) for b in batches]
        committer.uploaded(batches[1], intents[1], [(("aaaaaaaaaa", 2), second)])
        await committer.flush()
        # Sequence 2 waits for 1 (else a crash now would leave 1 behind a recorded version 2).
        assert (committer.stats.files, committer.uncommitted_files, settled) == (0, 1, [])
        assert committer.low_water_seq(100) == 20

        (archive / "_delta_log" / "00000000000000000001.json").write_bytes(b"not json\n")
        committer.uploaded(batches[0], intents[0], [(("aaaaaaaaaa", 1), first)])
        assert not await committer._commit_ready()
        assert committer.stats.failures == 1 and committer.failing_since_s is not None
        assert "00000000000000000001.json" in (committer.last_error or "")
        assert settled == [] and committer.low_water_seq(100) == 10  # both batches stay in the spool

        (archive / "_delta_log" / "00000000000000000001.json").unlink()
        await committer.flush()
        assert committer.failing_since_s is None and committer.stats.files == 2 and settled == batches
        assert DeltaTable(str(archive)).transaction_version("aaaaaaaaaa") == 2
        assert table_messages(archive) == Counter("abc")
    finally:
        await committer.stop()
        executor.shutdown()
        await storage.close()
