"""JetStream mode: consume SUBJECT from a stream through a durable pull consumer, ack once archived.

Exactly once rests on the spool (see :mod:`archiver.service.spool`); JetStream adds
redeliveries, which this module recognises:

* every message is spooled with a *tag* after its subject, its stream
  sequence and ack subject (:mod:`archiver.service.spool_record`), so the
  spool itself knows which stream sequences it holds and how to ack them;
* :class:`~archiver.service.jetstream_acks.AckTracker` indexes the tagged records
  still in the spool. A delivery whose stream sequence is already there is
  never spooled again: if its batch is archived it is acked at once,
  otherwise its ack subject is remembered for when it is. After a restart the
  index is rebuilt from the spool and the journal
  (:mod:`archiver.service.recovery`); archived records are acked
  with their stored ack subject (the server acks by stream sequence, whichever
  delivery the subject came from), the rest when their batch is archived;
* a message is acked only after the *done* of its batch is journaled
  (the uploader's ``on_archived``, :mod:`archiver.service.pipeline`); with TABLE on, once its
  files are uploaded and its intent journaled, before the table commit: the spool keeps the
  records until that commit's *done* (:mod:`archiver.service.committer`). Acks are fire-and-forget;
  the consumer's ack floor (polled every second) says which the server has
  taken, and only records at or below it leave the index, and only a few
  seconds later, once every delivery received is handled: a copy redelivered
  just before the server took our ack must still be recognised. The spool
  keeps every segment holding a record still indexed, so a redelivery is
  always recognised: a lost ack costs a redelivery that is acked again, never
  a row.

A message the spool refuses (full) is nak'ed with a delay: JetStream keeps it,
so it is not counted as dropped. The ack wait of a consumer created here is
``max(60s, 3 × FLUSH_INTERVAL)``; a shorter one (a consumer created by the
user) only causes harmless redeliveries. ``max_ack_pending`` bounds the
messages delivered and not yet archived, hence the throughput at about
``200,000 / FLUSH_INTERVAL`` messages a second for a consumer created here.
Deleting the durable consumer starts over: the stream is archived again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from archiver.config import RunConfig
from archiver.errors import SourceError
from archiver.logs import RateLimitedLog, event
from archiver.service.jetstream_acks import AckTracker, Partition
from archiver.service.metrics import Stats
from archiver.service.source import NatsConnection, describe_error

FETCH_BATCH = 1000
FETCH_TIMEOUT_S = 1.0
MAX_ACK_PENDING = 200_000
MIN_ACK_WAIT_S = 60.0
FLOOR_POLL_S = 1.0
#: Longer than a delivery takes from the server to our subscription's queue.
CONFIRM_GRACE_S = 3.0
SPOOL_FULL_RETRY_S = 5.0
RETRY_S = 1.0


#: Spools a delivery tagged with its stream sequence and ack subject: (spool seq, partition), None when full.
TaggedCallback = Callable[[Msg, int, str], tuple[int, Partition] | None]


class JetStreamSource(NatsConnection):
    """A durable pull consumer feeding ``on_tagged`` (:meth:`~archiver.service.ingest.Ingest.on_tagged`), acking what is archived."""

    def __init__(
        self, config: RunConfig, on_tagged: TaggedCallback, tracker: AckTracker, stats: Stats
    ) -> None:
        super().__init__(config, stats)
        assert config.jetstream_stream is not None
        self.stream = config.jetstream_stream
        self.durable = config.jetstream_durable
        self._on_tagged = on_tagged
        self._tracker = tracker
        self._acks_due = asyncio.Event()
        tracker.wake = self._acks_due.set
        self._psub: JetStreamContext.PullSubscription | None = None
        self._fetching: asyncio.Task[None] | None = None
        self._acking: asyncio.Task[None] | None = None
        self._polled_s = 0.0
        self._log_full = RateLimitedLog("spool full: JetStream will redeliver", level=logging.ERROR)
        self._log_js = RateLimitedLog("JetStream error, retrying")

    async def subscribe(self) -> None:
        """(Re)bind the pull subscription, creating the consumer if needed; start the owned tasks.

        The first binding retries until JetStream answers; a re-binding (the stall watchdog,
        awaited by the ticker) tries once and otherwise keeps the current one.
        """
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
                self.last_error = describe_error(exc)
                self._log_js(stream=self.stream, error=self.last_error, attempt=attempt)
                if self._psub is not None:
                    return
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

    async def reconnect(self) -> None:
        """Drop the connection and make a new one; the pull subscription is bound anew."""
        self._psub = None  # bound to the old connection
        await super().reconnect()

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
                msgs = []
            except Exception as exc:  # the loop must outlive any client error
                self.last_error = describe_error(exc)
                self._log_js(stream=self.stream, error=self.last_error)
                await asyncio.sleep(RETRY_S)
                continue
            for msg in msgs:
                await self._handle(msg)
            if psub.pending_msgs == 0:
                # Every delivery that reached us is handled: floors seen before any copy still
                # in transit could have arrived may now be applied.
                self._tracker.settle(time.monotonic() - CONFIRM_GRACE_S)

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
        spooled = self._on_tagged(msg, stream_seq, reply)
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
                self.last_error = describe_error(exc)
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
        if info.ack_floor is not None:
            # Stamped on arrival: every copy the server sent before taking those acks left it earlier.
            self._tracker.observe_floor(info.ack_floor.stream_seq, time.monotonic())


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
