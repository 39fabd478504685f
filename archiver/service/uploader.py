"""Encode detached batches off the event loop and upload them exactly once.

For each batch: encode in a worker thread (pyarrow releases the GIL), fix
the object key of each hour file, journal the intent (with a spool), upload
each file create-only, retrying forever with capped, jittered backoff,
journal *done*, and let the spool trim. See :mod:`archiver.service.spool` for why
this order makes every crash point safe.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING

from archiver.archive.layout import live_name_parts, object_key, object_name
from archiver.codec.encode import EncodedBatch, encode_partition
from archiver.codec.parse_exact import newest_accepted_ns
from archiver.codec.payloads import Payloads
from archiver.errors import ArchiverError, ObjectExistsError, StorageError
from archiver.logs import RateLimitedLog, event
from archiver.service.buffer import Buffers, FlushBatch, Room
from archiver.service.journal import Intent
from archiver.service.memory import trim_heap
from archiver.service.metrics import Stats, Timings
from archiver.service.spool import Spool
from archiver.storage.interface import Storage
from archiver.table.files import TableFile
from archiver.table.stats import table_file

if TYPE_CHECKING:
    from archiver.service.committer import Committer

UPLOAD_CONCURRENCY = 4
#: One encode thread keeps up with ~300k msg/s (~3 us a message, the GIL released in Arrow); a second
#: one gained no rate on 2 cores but held its own encode working set and allocator caches: peak RSS
#: at 110k msg/s 454 MiB with 2 threads, 385 MiB with 1 (BENCHMARKS.md).
ENCODE_THREADS = 1
RETRY_BASE_S = 0.25
RETRY_CAP_S = 15.0


class Uploader:
    """Owns the upload queue and its worker tasks."""

    def __init__(
        self,
        storage: Storage,
        buffers: Buffers,
        room: Room,
        stats: Stats,
        timings: Timings,
        spool: Spool | None,
        journal_executor: Executor,
        on_archived: Callable[[FlushBatch], None] | None = None,
        on_file: Callable[[str, int], None] | None = None,
        committer: Committer | None = None,
    ) -> None:
        """``journal_executor`` runs the journal writes in order (one thread, owned by the pipeline).

        ``on_archived`` is called once a batch's records are settled for good (JetStream acks them),
        ``on_file(app, hour_ns)`` once a file of that app and hour is written (the compactor's due list).
        With a ``committer`` (TABLE on) the uploaded files go to it and it journals done once they are
        in the table; ``on_archived`` (the acks) is still called here once the files are uploaded,
        the spool fsynced and the intent journaled: the spool keeps the records until the commit.
        """
        self.storage = storage
        self.buffers = buffers
        self._room = room
        self.stats = stats
        self._timings = timings
        self.spool = spool
        self._journal_executor = journal_executor
        self._on_archived = on_archived
        self._on_file = on_file
        self._committer = committer
        self.writer_id = secrets.token_hex(5)
        self._sequence = 0
        # Oldest first: after an outage the backlog drains in arrival order.
        self._queue: asyncio.PriorityQueue[tuple[int, int, FlushBatch]] = asyncio.PriorityQueue()
        self._order = 0
        self._encode_pool = ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="archiver-encode")
        self._inflight: dict[int, FlushBatch] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.failing_since_s: float | None = None
        self.last_error: str | None = None
        self._log_error = RateLimitedLog("upload failed, retrying", level=logging.ERROR)

    def submit(self, batch: FlushBatch) -> None:
        """Queue a batch (never blocks: memory is bounded by the buffers' accounting)."""
        self._order += 1
        if (
            self._committer is not None
        ):  # replayed: its files keep the old writer's ids, due before any later one
            for key in (batch.keys or {}).values():
                if (parts := _file_id(key)) is not None:
                    self._committer.expect(*parts)
        self._inflight[id(batch)] = batch
        self._queue.put_nowait((batch.first_seq, self._order, batch))

    def start(self) -> None:
        """Start the worker tasks."""
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(UPLOAD_CONCURRENCY)]

    async def join(self) -> None:
        """Until every queued batch is archived."""
        await self._queue.join()

    async def stop(self) -> None:
        """Cancel and await the workers; shut the encode threads."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._encode_pool.shutdown(wait=True)

    def low_water_seq(self, default: int) -> int:
        """Oldest spool sequence a batch not yet archived still covers."""
        return min([default, *(b.first_seq for b in self._inflight.values())])

    def oldest_pending_ns(self) -> int | None:
        """Arrival time of the oldest payload of a batch not yet archived."""
        return min((b.opened_ns for b in self._inflight.values() if b.opened_ns), default=None)

    async def _worker(self) -> None:
        while True:
            _, _, batch = await self._queue.get()
            try:
                await self._archive(batch)
            finally:
                self._inflight.pop(id(batch), None)
                self.buffers.settle(batch)
                self._queue.task_done()
                self._room.freed()

    async def _archive(self, batch: FlushBatch) -> None:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        rows = len(batch.payloads)
        try:
            encoded: EncodedBatch = await loop.run_in_executor(
                self._encode_pool,
                partial(_encode, newest_ns=newest_accepted_ns(batch.detached_ns)),
                batch.app,
                batch.region,
                batch.payloads,
                batch.detached_ns,
            )
        except ArchiverError as exc:
            # The encoder archives bad input as raw text, so this is a bug; still never silent.
            self.stats.encode_errors += 1
            self.stats.dropped["encode_error"] += len(batch.payloads)
            event(logging.ERROR, "encode failed, batch lost", app=batch.app, region=batch.region,
                  messages=len(batch.payloads), error=str(exc))  # fmt: skip
            if self._committer is not None:
                for key in (batch.keys or {}).values():
                    if (parts := _file_id(key)) is not None:
                        self._committer.forget(*parts)
            if self._on_archived is not None:
                # Counted as dropped; redelivering it forever would stall the consumer.
                self._on_archived(batch)
            return
        self._timings.encode_seconds.observe(time.monotonic() - started)
        # From here on only the files are needed (a retry re-puts them, recovery re-reads the spool).
        batch.payloads = Payloads()
        self.buffers.charge(batch, sum(len(file.data) for file in encoded.files))
        self._room.freed()
        keys = {}
        for file in encoded.files:
            fixed = (batch.keys or {}).get(file.hour_ns)
            if fixed is None:
                self._sequence += 1
                name = object_name(file.min_timestamp_ns, self.writer_id, self._sequence)
                fixed = object_key(batch.app_segment, file.hour_ns, name)
                if self._committer is not None:
                    self._committer.expect(self.writer_id, self._sequence)
            keys[file.hour_ns] = fixed
        intent = Intent(batch.app_segment, batch.region_segment, batch.first_seq, batch.end_seq, keys,
                        batch.detached_ns)  # fmt: skip
        if self.spool is not None and batch.keys is None:
            await loop.run_in_executor(self._journal_executor, self.spool.write_intent, intent)
        written = 0
        for file in encoded.files:
            await self._put_forever(keys[file.hour_ns], file.data)
            written += len(file.data)
            self.stats.files_written += 1
            self.stats.bytes_written += len(file.data)
            self.stats.messages_archived += file.rows
            self.stats.count_app(batch.app, file.rows)
            self.stats.newest_event_ns = max(self.stats.newest_event_ns or 0, file.max_timestamp_ns)
            if self._on_file is not None:
                self._on_file(batch.app, file.hour_ns)
        if self._committer is not None:
            described = await loop.run_in_executor(self._encode_pool, _table_files, batch.app, keys, encoded)
            self._committer.uploaded(batch, intent, described)
            if self._on_archived is not None and self.spool is not None:
                # JetStream acks now, not after the commit (up to TABLE_COMMIT_INTERVAL later: the ack
                # wait would expire and max_ack_pending throttle delivery). Safe: the intent is
                # journaled and the records stay spooled (fsynced first) until the commit's done.
                await loop.run_in_executor(self._journal_executor, self.spool.fsync)
                self._on_archived(batch)
        else:
            if self.spool is not None:
                await loop.run_in_executor(self._journal_executor, self.spool.write_done, intent)
            if self._on_archived is not None:
                self._on_archived(batch)
        self.stats.count_parsed(encoded.malformed_kinds, encoded.wrong_type)
        event(logging.INFO, "flushed", app=batch.app, region=batch.region, files=len(encoded.files),
              rows=rows, raw_bytes=batch.bytes, bytes=written,
              seconds=round(time.monotonic() - started, 3), recovered=batch.keys is not None)  # fmt: skip

    async def _put_forever(self, key: str, data: bytes) -> None:
        attempt = 0
        started = time.monotonic()
        while True:
            try:
                await self.storage.put(key, data)
                break
            except ObjectExistsError:
                # Keys are unique per batch: this exact file is already there (an earlier attempt
                # whose reply was lost, or a run that crashed after uploading).
                break
            except StorageError as exc:
                attempt += 1
                self.stats.upload_errors += 1
                self.last_error = str(exc)
                if self.failing_since_s is None:
                    self.failing_since_s = time.monotonic()
                self._log_error(key=key, attempt=attempt, error=str(exc))
                delay = min(RETRY_CAP_S, RETRY_BASE_S * 2 ** min(attempt, 10))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        if self.failing_since_s is not None:
            event(
                logging.INFO,
                "storage recovered",
                failed_for_s=round(time.monotonic() - self.failing_since_s, 1),
            )
        self.failing_since_s = None
        self._timings.upload_seconds.observe(time.monotonic() - started)


def _encode(app: str, region: str, payloads: Payloads, received_ns: int, newest_ns: int) -> EncodedBatch:
    """:func:`encode_partition`, then glibc's freed heap pages back to the OS (in the encode thread)."""
    try:
        return encode_partition(app, region, payloads, received_ns, newest_ns=newest_ns)
    finally:
        trim_heap()


def _file_id(key: str) -> tuple[str, int] | None:
    """(writer id, sequence) of a live file's key."""
    return live_name_parts(key.rpartition("/")[2])


def _table_files(
    app: str, keys: dict[int, str], encoded: EncodedBatch
) -> list[tuple[tuple[str, int], TableFile]]:
    """Each uploaded file's (writer id, sequence) and its table entry (exact stats from its footer)."""
    now_ms = time.time_ns() // 1_000_000
    out = []
    for file in encoded.files:
        key = keys[file.hour_ns]
        file_id = _file_id(key)
        if file_id is None:
            raise AssertionError(f"not a live file name: {key}")
        out.append((file_id, table_file(key, app, file.data, now_ms)))
    return out
