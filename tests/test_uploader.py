"""The uploader in process: encode, journal the intent, upload create-only, journal done, trim; storage down and back.

Real spool, buffers and uploader (:mod:`stages`), a real local archive directory;
storage fails for a real reason (a file where the archive directory should be).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from harness import unique_messages
from stages import archived_messages, build, expected, feed, journal_entries, wait_until

from archiver.service.journal import JOURNAL_NAME
from archiver.storage.local import LocalStorage

MESSAGES = unique_messages(11, 600)  # 3 apps x 2 regions, two hours of event time


def segments(spool_dir: Path) -> list[Path]:
    return sorted(spool_dir.glob("*.seg"))


class JournalWatchingStorage(LocalStorage):
    """A local archive that notes, at each put, whether the spool's journal already names the key."""

    def __init__(self, root: Path, spool_dir: Path) -> None:
        super().__init__(str(root))
        self.spool_dir = spool_dir
        self.puts: list[tuple[str, bool]] = []

    async def put(self, key: str, data: bytes) -> None:
        """Note, then store."""
        journal = (self.spool_dir / JOURNAL_NAME).read_bytes()
        self.puts.append((key, f'"{key}"'.encode() in journal))
        await super().put(key, data)


async def test_each_batch_is_journaled_uploaded_create_only_done_and_trimmed(tmp_path: Path) -> None:
    spool_dir, archive = tmp_path / "spool", tmp_path / "archive"
    storage = JournalWatchingStorage(archive, spool_dir)
    stages = build(spool_dir, archive, storage=storage, segment_bytes=16 * 1024)
    stages.spool.open()
    stages.uploader.start()
    try:
        await feed(stages, MESSAGES)
        assert stages.stats.messages_received == len(MESSAGES) and len(segments(spool_dir)) > 2
        batches = stages.buffers.detach_all()
        assert len(batches) == 6  # one per (app, region)
        for batch in batches:
            stages.uploader.submit(batch)
        await asyncio.wait_for(stages.uploader.join(), 60)

        # Every file was uploaded after an fsynced intent named its key, and only those files exist.
        assert storage.puts and all(named for _, named in storage.puts)
        keys = sorted(key for key, _ in storage.puts)
        assert sorted(info.key for info in await storage.list("")) == keys
        assert len(keys) > len(batches)  # two hours of event time: a file per hour
        assert Counter(journal_entries(spool_dir)) == {"intent": len(batches), "done": len(batches)}
        assert sorted(map(id, stages.archived)) == sorted(map(id, batches))  # on_archived, once each
        assert await archived_messages(archive) == expected(MESSAGES)
        stats = stages.stats
        assert (stats.messages_archived, stats.files_written, stats.upload_errors) == (
            len(MESSAGES),
            len(keys),
            0,
        )
        assert stages.buffers.buffered_bytes == 0 and all(not b.payloads for b in batches)

        # Nothing in flight or buffered: every closed segment goes, and the journal forgets their batches.
        low = stages.uploader.low_water_seq(stages.ingest.low_water_seq())
        assert low == stages.spool.next_seq
        before = stages.spool.bytes
        assert stages.spool.trim(low) > 0
        assert len(segments(spool_dir)) == 1 and stages.spool.bytes < before
        assert len(journal_entries(spool_dir)) < 2 * len(batches)
        assert not stages.spool.journal.read().open
    finally:
        await stages.close()


async def test_storage_failing_then_recovering_loses_nothing(tmp_path: Path) -> None:
    spool_dir, archive = tmp_path / "spool", tmp_path / "archive"
    archive.write_bytes(b"")  # a file where the archive directory should be: every put fails
    stages = build(spool_dir, archive, segment_bytes=4096)
    stages.spool.open()
    stages.uploader.start()
    try:
        await feed(stages, MESSAGES)
        batches = stages.buffers.detach_all()
        for batch in batches:
            stages.uploader.submit(batch)
        uploader = stages.uploader
        await wait_until(lambda: stages.stats.upload_errors >= 2, 30, "failed uploads")
        assert uploader.failing_since_s is not None and "cannot write" in (uploader.last_error or "")
        # Intents fixed the keys; nothing is done, so the spool keeps every record of every batch.
        assert "intent" in journal_entries(spool_dir) and "done" not in journal_entries(spool_dir)
        low = uploader.low_water_seq(stages.ingest.low_water_seq())
        assert low == min(b.first_seq for b in batches)
        assert stages.spool.trim(low) == 0
        assert stages.buffers.buffered_bytes > 0 and stages.archived == []

        archive.unlink()  # storage is back
        await asyncio.wait_for(uploader.join(), 60)
        assert uploader.failing_since_s is None
        assert await archived_messages(archive) == expected(MESSAGES)
        assert Counter(journal_entries(spool_dir)) == {"intent": len(batches), "done": len(batches)}
        assert stages.stats.messages_archived == len(MESSAGES) and stages.buffers.buffered_bytes == 0
        assert len(stages.archived) == len(batches)
    finally:
        await stages.close()
