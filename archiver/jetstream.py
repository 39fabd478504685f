"""JetStream mode: consume SUBJECT from a stream through a durable pull consumer, ack once archived.

Exactly once rests on the spool (see :mod:`archiver.spool`); JetStream adds
redeliveries, which this module recognises:

* every message is spooled with a *tag* after its subject,
  ``\\x00<stream seq>\\x00<ack subject>`` (core-NATS records have none), so the
  spool itself knows which stream sequences it holds and how to ack them;
* :class:`AckTracker` indexes the tagged records still in the spool. A
  delivery whose stream sequence is already there is never spooled again: if
  its batch is archived it is acked at once, otherwise its ack subject is
  remembered for when it is. After a restart the index is rebuilt from the
  spool and the journal (:func:`recover`); archived records are acked with
  their stored ack subject (the server acks by stream sequence, whichever
  delivery the subject came from), the rest when their batch is archived;
* a message is acked only after the *done* of its batch is journaled
  (:attr:`archiver.uploader.Uploader.on_archived`). Acks are fire-and-forget;
  the consumer's ack floor (polled every second) says which the server has
  taken, and only records at or below it leave the index. The spool keeps
  every segment holding a record still indexed, so a redelivery can always be
  recognised: a lost ack costs a redelivery that is acked again, never a row.

A message the spool refuses (full) is nak'ed with a delay: JetStream keeps it,
so it is not counted as dropped. The ack wait of a consumer created here is
``max(60s, 3 × FLUSH_INTERVAL)``; a shorter one (a consumer created by the
user) only causes harmless redeliveries. ``max_ack_pending`` bounds the
messages delivered and not yet archived, hence the throughput at about
``200,000 / FLUSH_INTERVAL`` messages a second for a consumer created here.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from archiver.buffer import FlushBatch
from archiver.config import RunConfig
from archiver.errors import SourceError
from archiver.ingest import Ingest
from archiver.journal import Journal
from archiver.layout import partition_value
from archiver.logs import RateLimitedLog, event
from archiver.metrics import Stats
from archiver.routing import app_region_from_payload, app_region_from_subject
from archiver.source import NatsSource
from archiver.spool import Spool

FETCH_BATCH = 1000
FETCH_TIMEOUT_S = 1.0
MAX_ACK_PENDING = 200_000
MIN_ACK_WAIT_S = 60.0
FLOOR_POLL_S = 1.0
SPOOL_FULL_RETRY_S = 5.0
RETRY_S = 1.0

Partition = tuple[str, str]


class AckTracker:
    """Tagged records still in the spool: which stream sequences they hold and when to ack them."""

    def __init__(self) -> None:
        self._spool_seq: dict[int, int] = {}  # stream seq -> spool seq, every indexed record
        self._replies: dict[int, str] = {}  # spool seq -> ack subject, records not archived yet
        self._unarchived: dict[Partition, list[int]] = {}  # spool seqs not archived yet, ascending
        self._order: deque[tuple[int, int]] = deque()  # (spool seq, stream seq), spool order
        self._to_ack: list[str] = []
        #: Called when there is something to ack (set by the source).
        self.wake: Callable[[], None] = lambda: None

    def add(
        self, spool_seq: int, stream_seq: int, reply: str, partition: Partition, archived: bool = False
    ) -> None:
        """Index a spooled record (in spool order); an ``archived`` one is acked at once."""
        self._spool_seq[stream_seq] = spool_seq
        self._order.append((spool_seq, stream_seq))
        if archived:
            self._to_ack.append(reply)
            self.wake()
        else:
            self._replies[spool_seq] = reply
            self._unarchived.setdefault(partition, []).append(spool_seq)

    def redelivered(self, stream_seq: int, reply: str) -> bool:
        """True when ``stream_seq`` is already spooled: ack it now if archived, else on archiving."""
        spool_seq = self._spool_seq.get(stream_seq)
        if spool_seq is None:
            return False
        if spool_seq in self._replies:
            self._replies[spool_seq] = reply
        else:
            self._to_ack.append(reply)
            self.wake()
        return True

    def archived(self, batch: FlushBatch) -> None:
        """The uploader's hook: the batch's records are archived; queue their acks."""
        seqs = self._unarchived.get((batch.app_segment, batch.region_segment))
        if not seqs:
            return
        # A batch holds its partition's records in [first_seq, end_seq) not archived before it.
        lo = bisect.bisect_left(seqs, batch.first_seq)
        hi = bisect.bisect_left(seqs, batch.end_seq)
        if lo == hi:
            return
        replies = self._replies
        self._to_ack.extend(replies.pop(seq) for seq in seqs[lo:hi])
        del seqs[lo:hi]
        self.wake()

    def take_acks(self) -> list[str]:
        """The ack subjects to publish now."""
        out, self._to_ack = self._to_ack, []
        return out

    def requeue(self, replies: list[str]) -> None:
        """Ack subjects that could not be published: try again later."""
        self._to_ack[:0] = replies

    def confirm(self, ack_floor: int) -> None:
        """The server holds every ack up to stream sequence ``ack_floor``: forget those records."""
        order = self._order
        while order and order[0][1] <= ack_floor and order[0][0] not in self._replies:
            spool_seq, stream_seq = order.popleft()
            if self._spool_seq.get(stream_seq) == spool_seq:
                del self._spool_seq[stream_seq]

    def low_water_seq(self, default: int) -> int:
        """Oldest spool sequence still indexed: the spool must keep it to recognise redeliveries."""
        return min(default, self._order[0][0]) if self._order else default

    def __len__(self) -> int:
        return len(self._order)


def tag(stream_seq: int, reply: str) -> bytes:
    """What follows the subject in a JetStream record."""
    return b"\x00%d\x00%s" % (stream_seq, reply.encode())


def recover(tracker: AckTracker, spool: Spool, journal: Journal) -> int:
    """Index the spool's tagged records after a restart, archived per the journal; how many."""
    done: dict[Partition, tuple[list[int], list[int]]] = {}
    for partition, ranges in journal.done.items():
        starts: list[int] = []
        ends: list[int] = []
        for first, end in sorted(ranges):  # merged, so one bisect answers "covered?"
            if ends and first <= ends[-1]:
                ends[-1] = max(ends[-1], end)
            else:
                starts.append(first)
                ends.append(end)
        done[partition] = (starts, ends)
    count = 0
    seq = spool.first_seq
    while seq < spool.written_seq:
        records = spool.read(seq, spool.written_seq, 50_000)
        if not records:
            break
        for rec_seq, tagged, payload in records:
            subject, sep, rest = tagged.partition(b"\x00")
            if not sep:
                continue  # a core-NATS record from an earlier run
            stream_seq, _, reply = rest.partition(b"\x00")
            app_region = app_region_from_subject(subject.decode("utf-8", "replace"))
            app, region = app_region or app_region_from_payload(payload)
            partition = (partition_value(app), partition_value(region))
            starts, ends = done.get(partition, ([], []))
            i = bisect.bisect_right(starts, rec_seq) - 1
            archived = i >= 0 and rec_seq < ends[i]
            tracker.add(rec_seq, int(stream_seq), reply.decode(), partition, archived)
            count += 1
        seq = records[-1][0] + 1
    return count


class JetStreamSource(NatsSource):
    """A durable pull consumer feeding :meth:`Ingest.on_tagged`, acking what the uploader archived."""

    def __init__(self, config: RunConfig, ingest: Ingest, tracker: AckTracker, stats: Stats) -> None:
        super().__init__(config, ingest.on_message, stats)
        assert config.jetstream_stream is not None
        self.stream = config.jetstream_stream
        self.durable = config.jetstream_durable
        self._ingest = ingest
        self._tracker = tracker
        self._acks_due = asyncio.Event()
        tracker.wake = self._acks_due.set
        self._psub: JetStreamContext.PullSubscription | None = None
        self._fetching: asyncio.Task[None] | None = None
        self._acking: asyncio.Task[None] | None = None
        self._polled_s = 0.0
        #: From the last poll of the consumer: messages not yet delivered, delivered and not acked.
        self.num_pending: int | None = None
        self.num_ack_pending: int | None = None
        self._log_full = RateLimitedLog("spool full: JetStream will redeliver", level=logging.ERROR)
        self._log_js = RateLimitedLog("JetStream error, retrying")

    async def subscribe(self) -> None:
        """(Re)bind the pull subscription, creating the consumer if needed; start the owned tasks."""
        assert self._nc is not None
        js = self._nc.jetstream()
        attempt = 0
        while True:
            try:
                await self._ensure_consumer(js)
                psub = await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
                break
            except (NatsError, OSError, TimeoutError) as exc:  # JetStream not ready yet, a timeout
                attempt += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._log_js(stream=self.stream, error=self.last_error, attempt=attempt)
                await asyncio.sleep(min(30.0, RETRY_S * 2 ** min(attempt, 5)))
        old, self._psub = self._psub, psub
        if old is not None:
            with contextlib.suppress(NatsError):
                await old.unsubscribe()
        self.subscribed = True
        self.subscribed_at_s = time.monotonic()
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.create_task(self._fetch_loop())
        if self._acking is None or self._acking.done():
            self._acking = asyncio.create_task(self._ack_loop())

    async def drain(self) -> None:
        """Stop fetching; the connection stays open for the acks of what is still being archived."""
        await _cancel(self._fetching)
        self._fetching = None
        if self._psub is not None:
            with contextlib.suppress(NatsError):
                await self._psub.unsubscribe()
            self._psub = None
        self.subscribed = False

    async def close(self) -> None:
        """Send the acks still due, then close the connection."""
        await self.drain()
        await _cancel(self._acking)
        self._acking = None
        nc = self._nc
        if nc is None:
            return
        with contextlib.suppress(NatsError, OSError, TimeoutError):
            await self._send_acks()
            await nc.flush(timeout=2)
        with contextlib.suppress(NatsError, OSError, TimeoutError):
            await nc.close()
        self._set_connected(False)

    async def _ensure_consumer(self, js: JetStreamContext) -> None:
        url = self._config.nats_url.rpartition("@")[2]
        try:
            await js.stream_info(self.stream)
        except NotFoundError:
            raise SourceError(f"JETSTREAM_STREAM: no stream {self.stream!r} on {url}") from None
        subject = self._config.subject
        try:
            info = await js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            ack_wait = max(MIN_ACK_WAIT_S, 3 * self._config.flush_interval_s)
            await js.add_consumer(self.stream, ConsumerConfig(
                name=self.durable, durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT,
                filter_subject=subject, max_ack_pending=MAX_ACK_PENDING, ack_wait=ack_wait))  # fmt: skip
            event(logging.INFO, "created JetStream consumer", stream=self.stream, durable=self.durable,
                  subject=subject, ack_wait_s=ack_wait, max_ack_pending=MAX_ACK_PENDING)  # fmt: skip
            return
        config = info.config
        if config.ack_policy != AckPolicy.EXPLICIT or config.deliver_subject:
            raise SourceError(f"JETSTREAM_DURABLE: consumer {self.durable!r} must be a pull consumer with "
                              f"explicit acks, got ack policy {config.ack_policy}")  # fmt: skip
        if config.filter_subject and config.filter_subject != subject:
            raise SourceError(f"JETSTREAM_DURABLE: consumer {self.durable!r} filters "
                              f"{config.filter_subject!r}, but SUBJECT is {subject!r}")  # fmt: skip
        if config.max_deliver and config.max_deliver > 0:
            event(logging.WARNING, "JetStream consumer gives up after max_deliver deliveries: messages "
                  "undeliverable that often are lost", durable=self.durable, max_deliver=config.max_deliver)  # fmt: skip

    async def _fetch_loop(self) -> None:
        while True:
            psub = self._psub
            if psub is None:
                await asyncio.sleep(RETRY_S)
                continue
            try:
                msgs = await psub.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT_S)
            except TimeoutError:  # nothing new (nats' TimeoutError derives from it)
                continue
            except Exception as exc:  # the loop must outlive any client error
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._log_js(stream=self.stream, error=self.last_error)
                await asyncio.sleep(RETRY_S)
                continue
            for msg in msgs:
                await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        try:
            metadata = msg.metadata
        except NatsError:
            return  # not a JetStream delivery (a stray status message)
        stream_seq = metadata.sequence.stream
        reply = msg.reply
        if metadata.num_delivered > 1:
            self._stats.jetstream_redeliveries += 1
        if self._tracker.redelivered(stream_seq, reply):
            return
        spooled = self._ingest.on_tagged(msg, tag(stream_seq, reply))
        if spooled is None:
            self._log_full(stream_seq=stream_seq, retry_s=SPOOL_FULL_RETRY_S)
            with contextlib.suppress(NatsError):
                await msg.nak(delay=SPOOL_FULL_RETRY_S)
            return
        self._tracker.add(spooled[0], stream_seq, reply, spooled[1])

    async def _ack_loop(self) -> None:
        while True:
            try:
                await self._send_acks()
                if len(self._tracker) and time.monotonic() - self._polled_s >= FLOOR_POLL_S:
                    await self._poll_floor()
            except Exception as exc:  # acks are retried: the loop must go on
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._log_js(stream=self.stream, error=self.last_error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acks_due.wait(), FLOOR_POLL_S)
            self._acks_due.clear()

    async def _send_acks(self) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            return  # kept until connected: nats-py would only buffer them
        replies = self._tracker.take_acks()
        sent = 0
        try:
            for reply in replies:
                await nc.publish(reply, b"+ACK")
                sent += 1
        finally:
            self._tracker.requeue(replies[sent:])
            self._stats.jetstream_acks += sent

    async def _poll_floor(self) -> None:
        assert self._nc is not None
        self._polled_s = time.monotonic()
        info = await self._nc.jetstream().consumer_info(self.stream, self.durable, timeout=5)
        self.num_pending, self.num_ack_pending = info.num_pending, info.num_ack_pending
        if info.ack_floor is not None:
            self._tracker.confirm(info.ack_floor.stream_seq)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
