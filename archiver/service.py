"""``archiver run``: receive, buffer per partition, encode off the loop, upload, repeat.

Tasks owned by :class:`Service` (all stopped and awaited on shutdown):

* the NATS subscription, whose callback :meth:`Service.on_message` only
  routes, appends bytes and counts;
* a ticker detaching partitions that are due (:mod:`archiver.buffer`);
* ``UPLOAD_CONCURRENCY`` workers taking detached batches, encoding them in a
  thread pool (pyarrow releases the GIL) and uploading each file with
  create-only writes, retrying forever with capped, jittered backoff;
* the HTTP server for ``/health`` and ``/metrics``.

Shutdown (SIGTERM/SIGINT): drain the subscription, detach every buffer,
wait for every upload, exit 0. A second signal abandons what is left and
says how much.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from nats.aio.msg import Msg

from archiver.buffer import Buffers, FlushBatch, PartitionBuffer
from archiver.config import RunConfig
from archiver.encode import EncodedBatch, encode_partition
from archiver.errors import ArchiverError, ObjectExistsError, StorageError
from archiver.http import HttpServer
from archiver.layout import object_key, object_name
from archiver.logs import RateLimitedLog, event
from archiver.metrics import Metrics, Stats
from archiver.routing import app_region_from_payload, app_region_from_subject
from archiver.source import NatsSource
from archiver.storage import Storage

UPLOAD_CONCURRENCY = 4
ENCODE_THREADS = 2
RETRY_BASE_S = 0.5
RETRY_CAP_S = 30.0
#: Subjects are per instance; the cache is cleared past this so churn cannot grow it forever.
MAX_CACHED_SUBJECTS = 100_000
TICK_MAX_S = 1.0


class Service:
    """One archiver process: NATS in, Parquet out."""

    def __init__(self, config: RunConfig, storage: Storage) -> None:
        self.config = config
        self.storage = storage
        self.stats = Stats()
        self.metrics = Metrics(self.stats)
        self.buffers = Buffers(config.flush_bytes, config.flush_interval_s, config.max_buffer_bytes)
        self.source = NatsSource(config, self.on_message, self.stats)
        self.http = HttpServer(config.http_host, config.http_port,
                               {"/health": self._health, "/metrics": self._metrics})  # fmt: skip
        self.writer_id = secrets.token_hex(5)
        self._sequence = 0
        self._routes: dict[str, PartitionBuffer] = {}
        self._queue: asyncio.Queue[FlushBatch] = asyncio.Queue()
        self._room = asyncio.Event()
        self._room.set()
        self._pool = ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="archiver-encode")
        self._tasks: list[asyncio.Task[None]] = []
        self.storage_failing_since_s: float | None = None
        self._log_upload_error = RateLimitedLog("upload failed, retrying", level=logging.ERROR)

    # -- hot path -----------------------------------------------------------------

    async def on_message(self, msg: Msg) -> None:
        """Route, append, count: nothing else happens per message."""
        subject = msg.subject
        buf = self._routes.get(subject)
        if buf is None:
            buf = self._route(subject, msg.data)
        data = msg.data
        stats = self.stats
        stats.messages_received += 1
        stats.bytes_received += len(data)
        stats.last_message_monotonic = time.monotonic()
        if self.buffers.append(buf, data):
            self._flush_due()
            if not self.buffers.has_room():
                # Back-pressure: nats-py queues behind us, and counts drops if that fills.
                self._room.clear()
                await self._room.wait()

    def _route(self, subject: str, payload: bytes) -> PartitionBuffer:
        app_region = app_region_from_subject(subject)
        if app_region is None:
            return self.buffers.partition(*app_region_from_payload(payload))
        if len(self._routes) >= MAX_CACHED_SUBJECTS:
            self._routes.clear()
        buf = self._routes[subject] = self.buffers.partition(*app_region)
        return buf

    # -- flushing -------------------------------------------------------------------

    def _flush_due(self) -> None:
        for batch in self.buffers.due():
            self._queue.put_nowait(batch)

    async def _ticker(self) -> None:
        tick_s = min(TICK_MAX_S, self.config.flush_interval_s / 4)
        while True:
            await asyncio.sleep(tick_s)
            self._flush_due()
            self._update_gauges()

    async def _upload_worker(self) -> None:
        while True:
            batch = await self._queue.get()
            try:
                await self._archive(batch)
            finally:
                self._queue.task_done()

    async def _archive(self, batch: FlushBatch) -> None:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            encoded: EncodedBatch = await loop.run_in_executor(
                self._pool, encode_partition, batch.app, batch.region, batch.payloads, batch.detached_ns
            )
        except ArchiverError as exc:
            # Should not happen (the encoder archives bad input as raw text); never silent.
            self.stats.encode_errors += 1
            self.stats.dropped["encode_error"] += len(batch.payloads)
            event(logging.ERROR, "encode failed, batch lost", app=batch.app, region=batch.region,
                  messages=len(batch.payloads), error=str(exc))  # fmt: skip
            self._settle(batch)
            return
        self.metrics.encode_seconds.observe(time.monotonic() - started)
        written = 0
        for file in encoded.files:
            self._sequence += 1
            name = object_name(file.min_timestamp_ns, self.writer_id, self._sequence)
            key = object_key(batch.app_segment, batch.region_segment, file.hour_ns, name)
            await self._put_forever(key, file.data)
            written += len(file.data)
            self.stats.files_written += 1
            self.stats.bytes_written += len(file.data)
            self.stats.messages_archived += file.rows
            newest = self.stats.newest_event_ns
            self.stats.newest_event_ns = max(newest or 0, file.max_timestamp_ns)
        self.stats.messages_malformed += encoded.malformed
        self._settle(batch)
        event(logging.INFO, "flushed", app=batch.app, region=batch.region, files=len(encoded.files),
              rows=len(batch.payloads), raw_bytes=batch.bytes, bytes=written,
              seconds=round(time.monotonic() - started, 3))  # fmt: skip

    async def _put_forever(self, key: str, data: bytes) -> None:
        attempt = 0
        started = time.monotonic()
        while True:
            try:
                await self.storage.put(key, data)
                break
            except ObjectExistsError:
                # Names are unique per writer: an earlier attempt whose reply was lost succeeded.
                break
            except StorageError as exc:
                attempt += 1
                self.stats.upload_errors += 1
                if self.storage_failing_since_s is None:
                    self.storage_failing_since_s = time.monotonic()
                self._log_upload_error(key=key, attempt=attempt, error=str(exc))
                delay = min(RETRY_CAP_S, RETRY_BASE_S * 2 ** min(attempt, 10))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        self.storage_failing_since_s = None
        self.metrics.upload_seconds.observe(time.monotonic() - started)

    def _settle(self, batch: FlushBatch) -> None:
        self.buffers.settle(batch)
        if self.buffers.has_room():
            self._room.set()
        self._update_gauges()

    def _update_gauges(self) -> None:
        self.stats.buffered_bytes = self.buffers.buffered_bytes
        self.stats.buffered_messages = self.stats.messages_received - self.stats.messages_archived

    # -- HTTP -----------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, report): each condition and its age."""
        now = time.monotonic()
        last = self.stats.last_message_monotonic
        report: dict[str, Any] = {
            "nats": {"connected": self.source.connected, "subscribed": self.source.subscribed,
                     "for_s": round(now - self.source.state_since_s, 3),
                     "last_error": self.source.last_error},
            "last_message_age_s": None if last is None else round(now - last, 3),
            "storage": {"failing_for_s": None if self.storage_failing_since_s is None
                        else round(now - self.storage_failing_since_s, 3)},
            "buffered_bytes": self.buffers.buffered_bytes,
        }  # fmt: skip
        reasons = []
        if not self.source.connected:
            reasons.append("NATS disconnected")
        elif not self.source.subscribed:
            reasons.append("not subscribed yet")
        report["status"] = "ok" if not reasons else "unhealthy"
        if reasons:
            report["reason"] = "; ".join(reasons)
        return not reasons, report

    def _health(self) -> tuple[int, str, bytes]:
        healthy, report = self.health()
        return (200 if healthy else 503), "application/json", orjson.dumps(report) + b"\n"

    def _metrics(self) -> tuple[int, str, bytes]:
        self._update_gauges()
        return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render()

    # -- lifecycle ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, abandon: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set, then drain and flush everything; ``abandon`` cuts that short."""
        await self.storage.check()
        await self.http.start()
        event(logging.INFO, "starting", archive=self.storage.url, writer=self.writer_id,
              http_port=self.http.port, flush_interval_s=self.config.flush_interval_s,
              flush_bytes=self.config.flush_bytes, max_buffer_bytes=self.config.max_buffer_bytes)  # fmt: skip
        self._tasks = [asyncio.create_task(self._upload_worker()) for _ in range(UPLOAD_CONCURRENCY)]
        self._tasks.append(asyncio.create_task(self._ticker()))
        try:
            connect = asyncio.create_task(self.source.start())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({connect, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not connect.done():
                connect.cancel()
            stopping.cancel()
            await asyncio.gather(connect, stopping, return_exceptions=True)
            if connect.done() and not connect.cancelled() and connect.exception() is not None:
                raise connect.exception()  # type: ignore[misc]
            await stop.wait()
            event(logging.INFO, "stopping: draining NATS and flushing buffers")
            await self.source.drain()
            self._room.set()
            for batch in self.buffers.detach_all():
                self._queue.put_nowait(batch)
            await self._wait_uploaded(abandon)
        finally:
            await self._close()

    async def _wait_uploaded(self, abandon: asyncio.Event | None) -> None:
        joined = asyncio.create_task(self._queue.join())
        waiters: set[asyncio.Task[Any]] = {joined}
        if abandon is not None:
            waiters.add(asyncio.create_task(abandon.wait()))
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in waiters:
            task.cancel()
        if not joined.done() or joined.cancelled():
            event(logging.ERROR, "abandoned unarchived messages on second signal",
                  messages=self.stats.messages_received - self.stats.messages_archived,
                  bytes=self.buffers.buffered_bytes)  # fmt: skip
        else:
            event(logging.INFO, "stopped: everything archived", messages=self.stats.messages_archived,
                  files=self.stats.files_written)  # fmt: skip

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        with contextlib.suppress(Exception):
            await self.source.drain()
        await self.http.close()
        await self.storage.close()
        self._pool.shutdown(wait=True)
