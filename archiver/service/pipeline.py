"""``archiver run``: the service as a pipeline, from the NATS callback to the object key.

The stages, in the order a message passes them. Each hand-off is a
constructor argument, so :meth:`Service.__init__` reads as the flow (built
from the last stage back, so that each is there for the one before):

1. the source, :class:`~archiver.service.source.NatsSource` (or with
   JETSTREAM_STREAM the pull consumer,
   :class:`~archiver.service.jetstream.JetStreamSource`), calls
   :meth:`Ingest.on_message <archiver.service.ingest.Ingest.on_message>`
   (``on_tagged``) for each message;
2. :class:`~archiver.service.ingest.Ingest` routes it to its partition,
   queues it for the spool's next group commit and appends it to its
   partition buffer (:class:`~archiver.service.buffer.Buffers`); a due
   partition is detached as a batch and handed to ``on_batch``, that is
3. :meth:`Uploader.submit <archiver.service.uploader.Uploader.submit>`:
   encode one Parquet file per hour, journal the intent naming each object
   key, upload create-only; with TABLE on,
   :meth:`Committer.uploaded <archiver.service.committer.Committer.uploaded>`
   commits the files to the Delta table (grouped, exactly once) and only then
   journals *done* (TABLE off: the uploader at once); once uploaded, ``on_archived``:
4. with JetStream, :meth:`AckTracker.archived
   <archiver.service.jetstream_acks.AckTracker.archived>` queues the acks
   the source sends (the spool keeps the records until *done*); and ``on_file``:
5. unless COMPACT_AFTER is off, :meth:`CompactorStage.noted
   <archiver.service.compactor.CompactorStage.noted>` puts the file's
   app-hour on the compactor's list (TABLE on: once the file is committed,
   the committer's ``on_file``): once closed it is merged into one file
   in the background (with what the compactor's scans find).

Back-pressure is a signal, :class:`~archiver.service.buffer.Room`: at the
memory cap ingest spills new records to the spool only (without a spool,
the callback waits), and the uploader, freeing memory, wakes the replay that
feeds them back. At start, :func:`~archiver.service.recovery.recover` reads
the spool once: interrupted batches go straight to the uploader, under the
keys their intents fixed; what the journal does not cover, to the replay.

Owned here, all stopped and awaited on shutdown: the ticker task (group
commit, due partitions, the stall watchdog, spool fsync and trim), the
replay task, the source's tasks, the uploader's workers, the committer's
task and thread, the compactor's task and thread, the HTTP server for ``/health`` and ``/metrics``
(:class:`~archiver.service.health.Health`), and the journal thread.

Shutdown (SIGTERM/SIGINT): drain the source, replay what is spilled, flush
every buffer, wait for every upload (meanwhile the compaction in progress
finishes within a grace, or is abandoned), exit 0. A second signal stops at
once; with a spool nothing is lost, it is archived at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import orjson

from archiver.config import RunConfig
from archiver.logs import event
from archiver.service.buffer import Buffers, Room
from archiver.service.compaction_metrics import CompactionCollector
from archiver.service.compactor import STOP_GRACE_S, CompactorStage
from archiver.service.health import Health
from archiver.service.http import HttpServer
from archiver.service.ingest import Ingest
from archiver.service.jetstream import JetStreamSource
from archiver.service.jetstream_acks import AckTracker
from archiver.service.memory import resident_bytes, use_lean_memory
from archiver.service.metrics import Metrics, Stats, Timings
from archiver.service.recovery import recover
from archiver.service.source import NatsConnection, NatsSource, StallWatchdog
from archiver.service.spool import Spool
from archiver.service.uploader import Uploader
from archiver.storage.interface import Storage

if TYPE_CHECKING:
    from archiver.service.upkeep import UpkeepStage

TICK_MAX_S = 1.0
#: TABLE on: delta-rs's open table, charged against MAX_BUFFER_BYTES (RSS within it + 150 MB: BENCHMARKS.md).
TABLE_RESIDENT_BYTES = 96 * 1024**2


class Service:
    """One archiver process: its stages, wired in the order a message passes them."""

    def __init__(self, config: RunConfig, storage: Storage) -> None:
        self.config = config
        self.storage = storage
        self.stats = Stats()
        self.timings = Timings()
        self.memory_pool = use_lean_memory()  # first: before delta-rs loads (its allocator)
        self.spool = Spool(config.spool_dir, config.spool_max_bytes) if config.spool_dir else None
        self.buffers = Buffers(config.flush_bytes, config.flush_interval_s, config.max_buffer_bytes, resident=resident_bytes)  # fmt: skip
        self.room = Room(self.buffers)
        # One thread for the spool's files: the journal's writes and the trim (which rewrites the
        # journal) must not interleave; the fsync goes there too, off the event loop.
        self.journal_executor = ThreadPoolExecutor(1, thread_name_prefix="archiver-journal")
        # 5. compaction, 4. acks (JetStream) <- 3. table commits <- upload <- 2. ingest <- 1. source
        self.tracker = AckTracker() if config.jetstream_stream else None
        on_archived = None if self.tracker is None else self.tracker.archived
        self.committer = table = None
        self.upkeep: UpkeepStage | None = None
        if config.table:
            from archiver.manage.compact_table import TableLink

            self.buffers.hold(min(TABLE_RESIDENT_BYTES, config.max_buffer_bytes // 2))
            # The compactor commits through the committer's handle (opened, or created, at start).
            table = TableLink(lambda: None if self.committer is None else self.committer.table)
        self.compactor = None
        if config.compact_after_s is not None:
            self.compactor = CompactorStage(storage, config, self.buffers, self.room, table=table)
        noted = None if self.compactor is None else self.compactor.noted
        if config.table:
            from archiver.service.committer import Committer
            from archiver.service.upkeep import UpkeepStage

            committer = self.committer = Committer(config.archive, storage, self.spool, self.journal_executor,
                                                   config.table_commit_interval_s, on_file=noted)  # fmt: skip
            self.upkeep = UpkeepStage(storage, lambda: committer.table, config.table_vacuum_retention_s,
                                      self.buffers, self.room)  # fmt: skip
        self.uploader = Uploader(storage, self.buffers, self.room, self.stats, self.timings, self.spool,
                                 self.journal_executor, on_archived=on_archived,
                                 on_file=None if self.committer is not None else noted,  # TABLE on: once committed
                                 committer=self.committer)  # fmt: skip
        self.ingest = Ingest(self.buffers, self.room, self.stats, self.spool, on_batch=self.uploader.submit,
                             max_message_bytes=config.max_message_bytes)  # fmt: skip
        direct = self.ingest.on_payload if self.spool is not None else None  # spool off: ingest may wait
        self.source: NatsConnection = (
            NatsSource(config, self.ingest.on_message, self.stats, direct) if self.tracker is None
            else JetStreamSource(config, self.ingest.on_tagged, self.tracker, self.stats)
        )  # fmt: skip
        self.watchdog = StallWatchdog(self.source, self.stats, config.stall_timeout_s)
        # What /health and /metrics read, at request time, from every stage.
        self.health = Health(config, self.stats, self.source, self.ingest, self.buffers, self.spool,
                             self.uploader, self.committer)  # fmt: skip
        compaction: list[Any] = []
        if self.compactor is not None:
            stage = self.compactor
            compaction = [
                CompactionCollector(stage.stats, lambda: stage.compactor.cpu_seconds),
                stage.seconds,
            ]
        if self.committer is not None:
            from archiver.service.table_metrics import TableCollector

            compaction += [
                TableCollector(
                    self.committer.stats,
                    self.committer.gauges,
                    None if self.upkeep is None else self.upkeep.stats,
                ),
                self.committer.seconds,
            ]
        self.metrics = Metrics(self.stats, self.timings, gauges=self.health.gauges, collectors=compaction)
        self.http = HttpServer(config.http_host, config.http_port,
                               {"/health": self._health, "/metrics": self._metrics})  # fmt: skip
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, abandon: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set, then drain and flush everything; ``abandon`` cuts that short."""
        try:  # from the first step: a failed start-up check must still close the storage client
            await self.storage.check()
            if self.spool is not None:
                recovered = recover(self.spool, self.buffers, self.tracker)
                for batch in recovered.batches:  # interrupted: re-sent under the keys their intents fixed
                    self.uploader.submit(batch)
                if recovered.replay_from_seq is not None:  # the rest the journal does not cover
                    self.ingest.start_spill(recovered.replay_from_seq, recovered.journal)
            await self.http.start()
            event(logging.INFO, "starting", archive=self.storage.url, writer=self.uploader.writer_id,
                  http_port=self.http.port, spool=self.config.spool_dir, flush_interval_s=self.config.flush_interval_s,
                  flush_bytes=self.config.flush_bytes, max_buffer_bytes=self.config.max_buffer_bytes,
                  arrow_memory_pool=self.memory_pool, table=self.config.table)  # fmt: skip
            self.uploader.start()
            if self.committer is not None:
                self.committer.start()
            if self.upkeep is not None:
                self.upkeep.start()
            if self.compactor is not None:
                self.compactor.start()
            self._tasks = [asyncio.create_task(self._ticker())]
            if self.spool is not None:
                self._tasks.append(asyncio.create_task(self.ingest.replay()))
            if await _first(self.source.start(), stop.wait()):
                await stop.wait()
            event(logging.INFO, "stopping: draining NATS and flushing buffers")
            await self.source.drain()
            self.ingest.commit()
            if await _first(self._flush_everything(), (abandon or asyncio.Event()).wait()):
                event(logging.INFO, "stopped: everything archived", messages=self.stats.messages_archived,
                      files=self.stats.files_written)  # fmt: skip
            else:
                event(logging.ERROR, "stopped before everything was archived",
                      buffered_bytes=self.buffers.buffered_bytes,
                      kept_in_spool=self.spool is not None)  # fmt: skip
        finally:
            await self._close()

    async def _flush_everything(self) -> None:
        # The app-hour being compacted may finish meanwhile (within a grace), then the compactor stops.
        compactor = None if self.compactor is None else asyncio.create_task(self.compactor.stop(STOP_GRACE_S))
        try:
            if self.spool is not None:
                await self.ingest.wait_caught_up()
            for batch in self.buffers.detach_all():
                self.uploader.submit(batch)
            await self.uploader.join()
            if self.committer is not None:
                await self.committer.flush()
            if self.spool is not None:
                await self._trim()
        except BaseException:
            if compactor is not None:
                compactor.cancel()  # a second signal: _close abandons the compaction at once
            raise
        if compactor is not None:
            await compactor

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.watchdog.close()
        if self.compactor is not None:
            await self.compactor.stop()
        with contextlib.suppress(Exception):
            await self.source.drain()
        await self.uploader.stop()
        if self.upkeep is not None:
            await self.upkeep.stop()
        if self.committer is not None:
            await self.committer.stop()
        await self.source.close()  # after the uploads: JetStream sends the acks of what they archived
        self.journal_executor.shutdown(wait=True)  # a trim or fsync under way ends before the spool closes
        if self.spool is not None:
            self.spool.close()
        await self.http.close()
        await self.storage.close()

    # -- periodic work ------------------------------------------------------------------

    async def _ticker(self) -> None:
        tick_s = min(TICK_MAX_S, self.config.flush_interval_s / 4)
        fsync_s = self.config.spool_fsync_interval_s
        last_fsync = time.monotonic()
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(tick_s, fsync_s) if self.spool and fsync_s > 0 else tick_s)
            self.ingest.commit()
            self.ingest.flush_due()
            await self.watchdog.check()
            if self.spool is not None:
                if time.monotonic() - last_fsync >= fsync_s:
                    last_fsync = time.monotonic()
                    await loop.run_in_executor(self.journal_executor, self.spool.fsync)
                await self._trim()

    async def _trim(self) -> None:
        """Delete the spool segments no stage needs: below every stage's low-water mark."""
        assert self.spool is not None
        low = self.uploader.low_water_seq(self.ingest.low_water_seq())
        if self.committer is not None:
            low = self.committer.low_water_seq(low)
        if self.tracker is not None:
            low = self.tracker.low_water_seq(low)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.journal_executor, self.spool.trim, low)

    # -- HTTP -------------------------------------------------------------------------

    def _health(self) -> tuple[int, str, bytes]:
        healthy, report = self.health.report()
        return (200 if healthy else 503), "application/json", orjson.dumps(report) + b"\n"

    def _metrics(self) -> tuple[int, str, bytes]:
        self.stats.buffered_bytes = self.buffers.buffered_bytes
        self.stats.buffered_messages = max(0, self.stats.messages_received - self.stats.messages_archived)
        return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render()


async def _first(main: Any, other: Any) -> bool:
    """Run ``main`` until it or ``other`` finishes; True when ``main`` finished first (re-raising its error)."""
    main_task = asyncio.ensure_future(main)
    other_task = asyncio.ensure_future(other)
    await asyncio.wait({main_task, other_task}, return_when=asyncio.FIRST_COMPLETED)
    for task in (main_task, other_task):
        if not task.done():
            task.cancel()
    await asyncio.gather(main_task, other_task, return_exceptions=True)
    if main_task.done() and not main_task.cancelled():
        main_task.result()
        return True
    return False
