"""The service's stages in process for tests: the real spool, buffers, ingest and uploader, a local archive.

Wired as :class:`archiver.service.pipeline.Service` wires them, without NATS:
a test feeds :meth:`Ingest.on_message` (or ``on_tagged``) itself, and reads
back what reached the archive directory.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness import archived_payloads, normalise, read_archive
from nats.aio.msg import Msg

from archiver.config import ArchiveSettings
from archiver.service.buffer import Buffers, FlushBatch, Room
from archiver.service.committer import Committer
from archiver.service.ingest import Ingest
from archiver.service.journal import JOURNAL_NAME
from archiver.service.metrics import Stats, Timings
from archiver.service.spool import Spool
from archiver.service.uploader import Uploader
from archiver.storage.interface import Storage
from archiver.storage.local import LocalStorage


def message(subject: str, payload: bytes) -> Msg:
    """A NATS message as the ingest reads it."""
    return Msg(_client=None, subject=subject, data=payload)


@dataclass
class Stages:
    """Spool, buffers, uploader and ingest of one (simulated) process, and what it archived."""

    spool: Spool
    buffers: Buffers
    room: Room
    stats: Stats
    uploader: Uploader
    ingest: Ingest
    storage: Storage
    journal_executor: ThreadPoolExecutor
    #: Hands a batch to the uploader, noting it in ``handed_on`` (the ingest's ``on_batch``).
    submit: Callable[[FlushBatch], None]
    #: Every batch handed on, as (partition, first_seq, payloads): the uploader empties the batches.
    handed_on: list[tuple[tuple[str, str], int, list[bytes]]] = field(default_factory=list)
    archived: list[FlushBatch] = field(default_factory=list)
    #: TABLE on: the committer the uploader hands its files to (its task not started: tests call flush).
    committer: Committer | None = None

    async def close(self) -> None:
        """Stop the uploader's workers and threads, then close the spool (what a shutdown does)."""
        await self.uploader.stop()
        if self.committer is not None:
            await self.committer.stop()
        self.journal_executor.shutdown(wait=True)
        self.spool.close()
        await self.storage.close()


def build(
    spool_dir: Path,
    archive_dir: Path,
    *,
    flush_bytes: int = 10**9,
    max_buffer_bytes: int = 10**9,
    segment_bytes: int = 32 * 1024**2,
    storage: Storage | None = None,
    on_archived: Callable[[FlushBatch], None] | None = None,
    table: bool = False,
) -> Stages:
    """The stages over ``spool_dir`` (not opened yet) and a local archive in ``archive_dir``."""
    spool = Spool(str(spool_dir), 10**10, segment_bytes)
    buffers = Buffers(flush_bytes, 3600.0, max_buffer_bytes)
    room = Room(buffers)
    stats = Stats()
    executor = ThreadPoolExecutor(1, thread_name_prefix="archiver-journal")
    storage = storage or LocalStorage(str(archive_dir))
    archived: list[FlushBatch] = []

    def settled(batch: FlushBatch) -> None:
        archived.append(batch)
        if on_archived is not None:
            on_archived(batch)

    committer = None
    acks: Callable[[FlushBatch], None] | None = settled
    if table:  # as the pipeline: acks once uploaded; ``archived`` lists the batches once committed
        settings = ArchiveSettings("file", "", str(archive_dir))
        committer = Committer(settings, storage, spool, executor, 3600.0, on_archived=archived.append)
        acks = on_archived
    uploader = Uploader(
        storage, buffers, room, stats, Timings(), spool, executor, on_archived=acks, committer=committer
    )
    handed_on: list[tuple[tuple[str, str], int, list[bytes]]] = []

    def submit(batch: FlushBatch) -> None:
        handed_on.append(((batch.app_segment, batch.region_segment), batch.first_seq, list(batch.payloads)))
        uploader.submit(batch)

    ingest = Ingest(buffers, room, stats, spool, on_batch=submit)
    return Stages(
        spool,
        buffers,
        room,
        stats,
        uploader,
        ingest,
        storage,
        executor,
        submit,
        handed_on,
        archived,
        committer,
    )


async def feed(stages: Stages, messages: list[tuple[str, bytes]]) -> None:
    """Through the ingest, as the NATS callback would, a few per event-loop turn (a group commit each)."""
    for i, (subject, payload) in enumerate(messages):
        await stages.ingest.on_message(message(subject, payload))
        if i % 20 == 19:
            stages.ingest.commit()  # the service commits COMMIT_DELAY_S after a record is queued
            await asyncio.sleep(0)
    stages.ingest.commit()


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` on the event loop until true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def journal_entries(spool_dir: Path) -> list[str]:
    """The kinds of the journal's entries, in order ("intent", "done")."""
    import orjson

    path = spool_dir / JOURNAL_NAME
    return [orjson.loads(line)["t"] for line in path.read_bytes().splitlines()] if path.exists() else []


async def archived_messages(archive_dir: Path) -> Counter[bytes]:
    """Every archived row, rebuilt and normalised (read in a thread: the reader runs its own loop)."""
    settings = ArchiveSettings("file", "", str(archive_dir))
    if not archive_dir.exists():
        return Counter()
    return archived_payloads(await asyncio.to_thread(read_archive, settings))


def expected(messages: list[tuple[str, bytes]]) -> Counter[bytes]:
    """What the archive should hold for ``messages``: each once, normalised like the rows read back."""
    return Counter(normalise(payload) for _, payload in messages)
