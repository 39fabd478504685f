"""The hot path: route, spool, buffer — and replay from the spool when memory is full.

Per message, :meth:`Ingest.on_payload` (called with the subject and payload
bytes by :mod:`archiver.service.nats_direct`'s parser) looks up the partition by subject
(cached), queues the record for the spool's next group commit, and appends
the payload to its partition buffer. Nothing is parsed. The group commit
writes what is queued :data:`COMMIT_DELAY_S` after the first record queued
(at once past ``WRITE_THRESHOLD_BYTES``, and before any batch is handed to
the uploader, which journals it): a write costs ~8 µs of system time besides
its bytes, and committing every event-loop turn made ~900 writes/s of ~20
messages at 20k msg/s. A payload longer
than ``MAX_MESSAGE_BYTES`` (one length compare) is first replaced by its
marked, truncated form (:func:`archiver.archive.message.truncate_payload`), which is
what the spool keeps and routing sees, so a replay treats it alike.

When the buffers reach ``MAX_BUFFER_BYTES`` (storage slow or down, a burst),
ingest *spills*: new records go to the spool only, and :meth:`Ingest.replay`
feeds them to the buffers from disk, oldest first, as memory frees (the
uploader signals it through :class:`~archiver.service.buffer.Room`). After a
restart the same replay buffers again what :mod:`archiver.service.recovery`
leaves to it, skipping what the journal covers. Without a spool (``SPOOL_DIR=off``)
a full memory applies back-pressure instead: nats-py queues behind the
callback and counts the drops if its own limits fill.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nats.aio.msg import Msg

from archiver.archive.message import truncate_payload
from archiver.logs import RateLimitedLog, event
from archiver.service.buffer import Buffers, FlushBatch, PartitionBuffer, Room
from archiver.service.journal import Journal
from archiver.service.metrics import Stats
from archiver.service.routing import app_region_from_payload, app_region_from_subject
from archiver.service.spool import WRITE_THRESHOLD_BYTES, Spool
from archiver.service.spool_record import record_subject, subject_prefix, tagged_prefix

#: How long a queued record waits for the group commit: ~100 records a write at 20k msg/s. A message
#: counts as received once written, so a kill loses at most this much of what NATS had delivered.
COMMIT_DELAY_S = 0.005
#: Subjects are per instance; the cache is cleared past this so churn cannot grow it forever.
MAX_CACHED_SUBJECTS = 100_000
REPLAY_CHUNK_RECORDS = 5_000
#: Default of ``MAX_MESSAGE_BYTES`` (the config's default; repeated so tests can build an Ingest).
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024**2

Route = tuple[PartitionBuffer, bytes, int]


class Ingest:
    """Route, spool and buffer messages; hand due batches to ``on_batch``; wait on ``room`` when memory is full."""

    def __init__(
        self,
        buffers: Buffers,
        room: Room,
        stats: Stats,
        spool: Spool | None,
        on_batch: Callable[[FlushBatch], None],
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.buffers = buffers
        self._room = room
        self.max_message_bytes = max_message_bytes
        self.stats = stats
        self.spool = spool
        self._on_batch = on_batch
        self._routes: dict[bytes, Route] = {}
        self._commit_handle: asyncio.TimerHandle | None = None
        #: True while records go to the spool only; replay_seq is the next record to feed.
        self.spilling = False
        self.replay_seq = 0
        self.spill_started_ns = 0
        self._skip: Journal | None = None
        self._leftover: list[tuple[int, bytes, bytes]] = []
        self._spill = asyncio.Event()
        self._caught_up = asyncio.Event()
        self._caught_up.set()
        self._log_full = RateLimitedLog("spool full: dropping messages", level=logging.ERROR)
        self._log_truncated = RateLimitedLog("message over MAX_MESSAGE_BYTES: truncated")

    # -- hot path -----------------------------------------------------------------

    async def on_message(self, msg: Msg) -> None:
        """nats-py's callback: :meth:`on_payload`; without a spool, buffer and wait while memory is full."""
        subject = msg.subject.encode()
        if self.spool is not None:
            self.on_payload(subject, msg.data)
            return
        data = msg.data
        if len(data) > self.max_message_bytes:
            data = self._truncate(subject, data)
        route = self._routes.get(subject)
        if route is None:
            route = self._route(subject, data)
        stats = self.stats
        stats.messages_received += 1
        stats.bytes_received += len(data)
        stats.last_message_monotonic = time.monotonic()
        if self.buffers.append(route[0], data):
            self.flush_due()
            if not self.buffers.has_room():
                await self._room.wait()

    def on_payload(self, subject: bytes, data: bytes) -> None:
        """Route, spool, append, count: nothing else happens per message (with the spool: it never waits)."""
        if len(data) > self.max_message_bytes:
            data = self._truncate(subject, data)
        route = self._routes.get(subject)
        if route is None:
            route = self._route(subject, data)
        buf, prefix, prefix_crc = route
        spool = self.spool
        stats = self.stats
        assert spool is not None
        pending = spool.append(prefix, prefix_crc, data)
        if not pending:
            stats.dropped["spool_full"] += 1
            self._log_full(dropped_total=stats.dropped["spool_full"], spool_bytes=spool.bytes)
            return
        stats.bytes_received += len(data)
        if self._commit_handle is None:
            self._commit_handle = asyncio.get_running_loop().call_later(COMMIT_DELAY_S, self.commit)
        elif pending >= WRITE_THRESHOLD_BYTES:
            self.commit()
        if self.spilling:
            return
        if self.buffers.append(buf, data, spool.next_seq - 1):
            self.flush_due()
            if not self.buffers.has_room():
                self.start_spill(spool.next_seq)

    def on_tagged(self, msg: Msg, stream_seq: int, reply: str) -> tuple[int, tuple[str, str]] | None:
        """JetStream: spool the record tagged with its stream seq and ack subject; (spool seq, partition), None when full.

        The tail of :meth:`on_message`, repeated rather than shared so the core-NATS path
        pays no extra call. A message refused here is not acked, so JetStream redelivers it:
        not a loss, hence not counted as dropped.
        """
        subject = msg.subject.encode()
        data = msg.data
        if len(data) > self.max_message_bytes:
            data = self._truncate(subject, data)
        route = self._routes.get(subject)
        if route is None:
            route = self._route(subject, data)
        buf = route[0]
        prefix, prefix_crc = tagged_prefix(subject, stream_seq, reply)
        spool = self.spool
        assert spool is not None
        pending = spool.append(prefix, prefix_crc, data)
        if not pending:
            return None
        seq = spool.next_seq - 1
        self.stats.bytes_received += len(data)
        if self._commit_handle is None:
            self._commit_handle = asyncio.get_running_loop().call_later(COMMIT_DELAY_S, self.commit)
        elif pending >= WRITE_THRESHOLD_BYTES:
            self.commit()
        if not self.spilling and self.buffers.append(buf, data, seq):
            self.flush_due()
            if not self.buffers.has_room():
                self.start_spill(spool.next_seq)
        return seq, (buf.app_segment, buf.region_segment)

    def commit(self) -> None:
        """Group commit: write every queued record in one syscall; they now count as received."""
        if self._commit_handle is not None:
            self._commit_handle.cancel()  # a no-op when it is what runs this
            self._commit_handle = None
        if self.spool is not None:
            written = self.spool.write_pending()
            if written:
                self.stats.messages_received += written
                self.stats.last_message_monotonic = time.monotonic()

    def _truncate(self, subject: bytes, data: bytes) -> bytes:
        self.stats.messages_truncated += 1
        self._log_truncated(
            subject=subject.decode("utf-8", "replace"),
            bytes=len(data),
            max_message_bytes=self.max_message_bytes,
        )
        return truncate_payload(data, self.max_message_bytes)

    def _route(self, subject: bytes, payload: bytes) -> Route:
        # Decoded leniently: the direct path hands the server's bytes (nats-py's own decode is strict).
        app_region = app_region_from_subject(subject.decode("utf-8", "replace"))
        prefix, prefix_crc = subject_prefix(subject)
        if app_region is None:
            # Not cached, so counted once per message; the payload names the partition instead.
            self.stats.unrouted["subject_shape"] += 1
            return self.buffers.partition(*app_region_from_payload(payload)), prefix, prefix_crc
        if len(self._routes) >= MAX_CACHED_SUBJECTS:
            self._routes.clear()
        route = self._routes[subject] = (self.buffers.partition(*app_region), prefix, prefix_crc)
        return route

    # -- flushing ---------------------------------------------------------------------

    def flush_due(self) -> None:
        """Hand every due partition to the uploader, their records written to the spool first."""
        batches = self.buffers.due()
        if batches:
            self.commit()  # the uploader journals a batch by its spool sequences: they must be on disk
        for batch in batches:
            self._on_batch(batch)

    def low_water_seq(self) -> int:
        """Oldest spool sequence still needed by a buffer or the replay."""
        assert self.spool is not None
        default = self.replay_seq if self.spilling else self.spool.next_seq
        return min(self.buffers.low_water_seq(default), default)

    # -- spill and replay -----------------------------------------------------------------

    def start_spill(self, from_seq: int, skip: Journal | None = None) -> None:
        """From ``from_seq`` on, records reach the buffers through :meth:`replay` only (minus what ``skip`` covers)."""
        if not self.spilling:
            self.spilling = True
            self.spill_started_ns = time.time_ns()
            self.replay_seq = from_seq
            self._skip = skip
            self._caught_up.clear()
            self._spill.set()
            event(logging.INFO, "spilling to the spool until memory frees", from_seq=from_seq)

    async def wait_caught_up(self) -> None:
        """Until the replay has fed every spooled record to the buffers."""
        await self._caught_up.wait()

    async def replay(self) -> None:
        """Owned task: feed spilled (or recovered) records to the buffers as memory allows."""
        assert self.spool is not None
        spool = self.spool
        loop = asyncio.get_running_loop()
        while True:
            await self._spill.wait()
            if not self.buffers.has_room():
                await self._room.wait()
                continue
            self.commit()
            if self._leftover:
                records, self._leftover = self._leftover, []
                self._feed(records)
                continue
            if self.replay_seq >= spool.written_seq:
                self.spilling = False
                self._skip = None
                self._spill.clear()
                self._caught_up.set()
                event(logging.INFO, "spool replay caught up", seq=self.replay_seq)
                continue
            records = await loop.run_in_executor(
                None, spool.read, self.replay_seq, spool.written_seq, REPLAY_CHUNK_RECORDS
            )
            if not records:  # a torn tail below written_seq cannot happen; guard against a stuck loop
                self.replay_seq = spool.written_seq
                continue
            self._feed(records)

    def _feed(self, records: list[tuple[int, bytes, bytes]]) -> None:
        skip = self._skip
        routes: dict[bytes, PartitionBuffer] = {}
        for i, (seq, field, payload) in enumerate(records):
            subject = record_subject(field)
            buf = routes.get(subject)
            if buf is None:
                app_region = app_region_from_subject(subject.decode("utf-8", "replace"))
                buf = self.buffers.partition(*(app_region or app_region_from_payload(payload)))
                if app_region is not None:
                    routes[subject] = buf
            self.replay_seq = seq + 1
            if skip is not None and skip.covers(buf.app_segment, buf.region_segment, seq):
                continue
            if self.buffers.append(buf, payload, seq):
                self.flush_due()
                if not self.buffers.has_room():
                    # Kept rather than re-read: the spool reader only moves forward cheaply.
                    self._leftover = records[i + 1 :]
                    return
