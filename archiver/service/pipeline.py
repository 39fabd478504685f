"""``archiver run``: NATS in, spool, buffers, Parquet out — and the tasks that tie them.

Tasks owned by :class:`Service` (all stopped and awaited on shutdown):

* the NATS subscription, delivering to :meth:`archiver.service.ingest.Ingest.on_message`
  (with JETSTREAM_STREAM, the pull consumer and its acks: :mod:`archiver.service.jetstream`);
* the spool replay (recovery at start, and spills when memory is full);
* the ticker: due partitions, spool fsync and trim, gauges;
* the uploader's workers (:mod:`archiver.service.uploader`);
* the HTTP server for ``/health`` and ``/metrics``.

Shutdown (SIGTERM/SIGINT): drain the subscription, replay what is spilled,
flush every buffer, wait for every upload, exit 0. A second signal stops at
once; with a spool nothing is lost, it is archived at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson

from archiver.config import RunConfig
from archiver.logs import event
from archiver.service.buffer import Buffers
from archiver.service.http import HttpServer
from archiver.service.ingest import Ingest
from archiver.service.jetstream import JetStreamSource
from archiver.service.jetstream_acks import AckTracker
from archiver.service.memory import use_lean_memory
from archiver.service.metrics import Metrics, Stats
from archiver.service.recovery import recover
from archiver.service.source import NatsSource
from archiver.service.spool import Spool
from archiver.service.uploader import Uploader
from archiver.storage import Storage

TICK_MAX_S = 1.0


class Service:
    """One archiver process."""

    def __init__(self, config: RunConfig, storage: Storage) -> None:
        self.config = config
        self.storage = storage
        self.stats = Stats()
        self.metrics = Metrics(self.stats)
        self.buffers = Buffers(config.flush_bytes, config.flush_interval_s, config.max_buffer_bytes)
        self.spool = Spool(config.spool_dir, config.spool_max_bytes) if config.spool_dir else None
        self.uploader = Uploader(storage, self.buffers, self.metrics, self.spool, self._room_freed)
        self.ingest = Ingest(
            self.buffers, self.stats, self.spool, self.uploader.submit, config.max_message_bytes
        )
        self.source = NatsSource(config, self.ingest.on_message, self.stats)
        self.tracker: AckTracker | None = None
        if config.jetstream_stream:
            self.tracker = AckTracker()
            self.source = JetStreamSource(config, self.ingest, self.tracker, self.stats)
            self.uploader.on_archived = self.tracker.archived
        self.http = HttpServer(config.http_host, config.http_port,
                               {"/health": self._health, "/metrics": self._metrics})  # fmt: skip
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics.extra_gauges = self._extra_gauges
        self._stall_stage = 0
        self._reconnecting: asyncio.Task[None] | None = None

    # -- recovery ---------------------------------------------------------------------

    def _recover(self) -> None:
        """Open the spool: resend open intents under their keys, replay everything else."""
        if self.spool is None:
            return
        recovered = recover(self.spool, self.buffers, self.tracker)
        for batch in recovered.batches:
            self.uploader.submit(batch)
        if recovered.replay_from_seq is not None:
            self.ingest.start_spill(recovered.replay_from_seq, recovered.journal)

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
            await self._watchdog()
            if self.spool is not None:
                if time.monotonic() - last_fsync >= fsync_s:
                    last_fsync = time.monotonic()
                    await loop.run_in_executor(self.uploader.journal_pool, self.spool.fsync)
                await self._trim()

    async def _watchdog(self) -> None:
        """Re-subscribe, then reconnect, when connected but silent for STALL_TIMEOUT.

        The Fly Log Shipper's users report a shipper that silently stops receiving: a
        subscription the server forgot is indistinguishable from a quiet org from inside,
        so after STALL_TIMEOUT of silence the subscription is renewed (cheap, harmless
        when the org is just quiet), and if that brings nothing either, the connection.
        """
        timeout = self.config.stall_timeout_s
        source = self.source
        if not timeout or not source.connected or not source.subscribed:
            return
        now = time.monotonic()
        last = max(self.stats.last_message_monotonic or 0.0, source.subscribed_at_s)
        if now - last < timeout:
            if (
                self.stats.last_message_monotonic
                and self.stats.last_message_monotonic > source.subscribed_at_s
            ):
                self._stall_stage = 0  # messages flow again: a new episode may be logged
            return
        self.stats.stall_recoveries += 1
        if self._stall_stage == 0:
            event(logging.WARNING, "no message while connected: re-subscribing (stall watchdog)",
                  silent_for_s=round(now - last, 1), stall_timeout_s=timeout)  # fmt: skip
            self._stall_stage = 1
            await source.subscribe()
        elif self._reconnecting is None or self._reconnecting.done():
            self._stall_stage = 2
            # A task of its own: reconnecting may take long, and the ticker must keep flushing.
            self._reconnecting = asyncio.create_task(source.reconnect())
            self._tasks.append(self._reconnecting)

    async def _trim(self) -> None:
        assert self.spool is not None
        low = self.uploader.low_water_seq(self.ingest.low_water_seq())
        if self.tracker is not None:
            low = self.tracker.low_water_seq(low)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.uploader.journal_pool, self.spool.trim, low)

    def _room_freed(self) -> None:
        self.ingest.room_freed()

    # -- HTTP -------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, report): each condition and its age."""
        now = time.monotonic()
        last = self.stats.last_message_monotonic
        failing = self.uploader.failing_since_s
        nats_for_s = now - self.source.state_since_s
        report: dict[str, Any] = {
            "nats": {"connected": self.source.connected, "subscribed": self.source.subscribed,
                     "for_s": round(nats_for_s, 3), "last_error": self.source.last_error},
            "last_message_age_s": None if last is None else round(now - last, 3),
            "storage": {"failing_for_s": None if failing is None else round(now - failing, 3),
                        "last_error": self.uploader.last_error if failing is not None else None},
            "buffered_bytes": self.buffers.buffered_bytes,
            "spool": None if self.spool is None else {
                "bytes": self.spool.bytes, "spilling": self.ingest.spilling,
                "oldest_unarchived_age_s": self._oldest_unarchived_age_s()},
        }  # fmt: skip
        reasons = []
        if not self.source.connected and (
            self.source.ever_connected is False or nats_for_s >= self.config.nats_disconnect_grace_s
        ):
            reasons.append(f"NATS disconnected for {nats_for_s:.0f}s")
        elif not self.source.subscribed and self.source.connected:
            reasons.append("not subscribed yet")
        if failing is not None and now - failing >= self.config.storage_failure_grace_s:
            reasons.append(f"storage failing for {now - failing:.0f}s: {self.uploader.last_error}")
        report["status"] = "ok" if not reasons else "unhealthy"
        if reasons:
            report["reason"] = "; ".join(reasons)
        return not reasons, report

    def _oldest_unarchived_age_s(self) -> float:
        candidates = [t for t in (self.buffers.oldest_open_ns(), self.uploader.oldest_pending_ns()) if t]
        if self.ingest.spilling and self.ingest.spill_started_ns:
            candidates.append(self.ingest.spill_started_ns)
        return 0.0 if not candidates else max(0.0, (time.time_ns() - min(candidates)) / 1e9)

    def _extra_gauges(self) -> dict[str, tuple[str, float]]:
        return {
            "spool_bytes": ("Bytes of spool segments on disk (the backlog).", self.spool.bytes if self.spool else 0),
            "oldest_unarchived_age_seconds": ("Age of the oldest message not yet archived.",
                                              self._oldest_unarchived_age_s()),
            "storage_failing_seconds": ("Seconds storage has been failing (0 when healthy).",
                                        0 if self.uploader.failing_since_s is None
                                        else time.monotonic() - self.uploader.failing_since_s),
            "nats_connected": ("1 while connected to NATS.", 1 if self.source.connected else 0),
            "nats_pending_bytes": ("Bytes received from NATS and queued for the archiver (not yet spooled).",
                                   self.source.pending_bytes),
        }  # fmt: skip

    def _health(self) -> tuple[int, str, bytes]:
        healthy, report = self.health()
        return (200 if healthy else 503), "application/json", orjson.dumps(report) + b"\n"

    def _metrics(self) -> tuple[int, str, bytes]:
        self.stats.buffered_bytes = self.buffers.buffered_bytes
        self.stats.buffered_messages = max(0, self.stats.messages_received - self.stats.messages_archived)
        return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render()

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, abandon: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set, then drain and flush everything; ``abandon`` cuts that short."""
        try:  # from the first step: a failed start-up check must still close the storage client
            await self.storage.check()
            memory_pool = use_lean_memory()
            self._recover()
            await self.http.start()
            event(logging.INFO, "starting", archive=self.storage.url, writer=self.uploader.writer_id,
                  http_port=self.http.port, spool=self.config.spool_dir, flush_interval_s=self.config.flush_interval_s,
                  flush_bytes=self.config.flush_bytes, max_buffer_bytes=self.config.max_buffer_bytes,
                  arrow_memory_pool=memory_pool)  # fmt: skip
            self.uploader.start()
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
        if self.spool is not None:
            await self.ingest.wait_caught_up()
        for batch in self.buffers.detach_all():
            self.uploader.submit(batch)
        await self.uploader.join()
        if self.spool is not None:
            await self._trim()

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        with contextlib.suppress(Exception):
            await self.source.drain()
        await self.uploader.stop()
        if isinstance(self.source, JetStreamSource):
            await self.source.close()  # after the uploads: the acks of what they archived
        if self.spool is not None:
            self.spool.close()
        await self.http.close()
        await self.storage.close()


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
