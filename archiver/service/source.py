"""The NATS side: connect with the shipper's settings, subscribe, reconnect forever, watch for stalls.

:class:`NatsConnection` is what every source shares (the connection, its
state for /health, the two-step stop); :class:`NatsSource` is core NATS, one
subscription delivering to a callback; JetStream's pull consumer is the other
kind (:mod:`archiver.service.jetstream`). :class:`StallWatchdog` renews a
subscription that went silent.

nats-py drops messages when a subscription's pending queue is full and
reports each drop to ``error_cb`` as a SlowConsumerError: they are counted
per message in :class:`~archiver.service.metrics.Stats` and logged rate-limited, so
no loss is silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import SlowConsumerError

from archiver.config import RunConfig
from archiver.errors import SourceError
from archiver.logs import RateLimitedLog, event
from archiver.redact import redact, safe_url
from archiver.service.metrics import Stats
from archiver.service.nats_direct import Deliver, DirectClient, usable

#: The callback only appends, so a deep queue absorbs bursts (GC pauses, flushes) without drops.
PENDING_MSGS_LIMIT = 512 * 1024
PENDING_BYTES_LIMIT = 128 * 1024 * 1024
RECONNECT_WAIT_S = 1.0

MessageCallback = Callable[[Msg], Awaitable[None]]


class NatsConnection:
    """One NATS connection, reconnecting forever, and its state for /health; subclasses subscribe.

    The stages a source hands messages to are its constructor arguments; every source
    stops in two steps, :meth:`drain` (no more messages) and :meth:`close` (once the
    uploads are over: nothing left to send).
    """

    def __init__(self, config: RunConfig, stats: Stats) -> None:
        self._config = config
        self._stats = stats
        self._nc: Client | None = None
        self.connected = False
        self.ever_connected = False
        self.subscribed = False
        self._draining = False
        #: Monotonic time of the last (re)subscription.
        self.subscribed_at_s = 0.0
        #: Monotonic time of the last change of ``connected``.
        self.state_since_s = time.monotonic()
        self.last_error: str | None = None
        self._log_slow = RateLimitedLog("slow consumer: NATS client dropped messages", level=logging.ERROR)
        self._log_error = RateLimitedLog("NATS error")

    async def start(self) -> None:
        """Connect (retrying until it works) and subscribe."""
        attempt = 0
        while True:
            try:
                client = self._new_client()
                await client.connect(**self._connect_options())
                self._nc = client
                break
            except (NatsError, OSError, TimeoutError) as exc:
                attempt += 1
                self.last_error = describe_error(exc)
                self._log_error(url=safe_url(self._config.nats_url), error=self.last_error, attempt=attempt)
                await asyncio.sleep(min(30.0, RECONNECT_WAIT_S * 2 ** min(attempt, 5)))
        self._set_connected(True)
        await self.subscribe()
        event(logging.INFO, "subscribed", url=safe_url(self._config.nats_url),
              subject=self._config.subject, queue=self._config.queue)  # fmt: skip

    async def subscribe(self) -> None:
        """(Re)create the subscription (each kind of source its own)."""
        raise NotImplementedError

    async def reconnect(self) -> None:
        """Drop the connection and make a new one (the watchdog's second step)."""
        if self._nc is not None:
            with contextlib.suppress(NatsError, OSError, TimeoutError):
                await self._nc.close()
        self.subscribed = False
        self._set_connected(False)
        await self.start()

    async def drain(self) -> None:
        """Stop receiving: deliver what is pending to the callback, then close."""
        if self._nc is None:
            return
        self._draining = True  # a disconnect we asked for is neither a warning nor a metric
        try:
            if self._nc.is_connected:
                await self._nc.drain()
            else:
                await self._nc.close()
        except (NatsError, OSError, TimeoutError) as exc:
            event(logging.WARNING, "NATS drain failed", error=describe_error(exc))
            await self._nc.close()
        self.subscribed = False
        self._set_connected(False)

    async def close(self) -> None:
        """Close the connection if :meth:`drain` left it open."""
        if self._nc is not None and not self._nc.is_closed:
            self._draining = True  # a disconnect we asked for is neither a warning nor a metric
            with contextlib.suppress(NatsError, OSError, TimeoutError):
                await self._nc.close()
        self._set_connected(False)

    @property
    def pending_bytes(self) -> int:
        """Bytes nats-py has received and queued for the archiver (held in memory outside the cap)."""
        return 0

    def _new_client(self) -> Client:
        """A nats-py client, not yet connected."""
        return Client()

    @property
    def client(self) -> Client | None:
        """The nats-py client, for tests and the watchdog."""
        return self._nc

    def _set_connected(self, connected: bool) -> None:
        self.ever_connected = self.ever_connected or connected
        if connected != self.connected:
            self.connected = connected
            self.state_since_s = time.monotonic()

    def _connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "servers": [self._config.nats_url],
            "name": "archiver",
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,  # forever: the default 60 gives up after two minutes
            "reconnect_time_wait": RECONNECT_WAIT_S,
            "connect_timeout": 5,
            "error_cb": self._error_cb,
            "disconnected_cb": self._disconnected_cb,
            "reconnected_cb": self._reconnected_cb,
            "closed_cb": self._closed_cb,
        }
        # Credentials travel as options, never in the server URL: nats-py puts the URL in errors.
        config = self._config
        if config.access_token:  # ORG/ACCESS_TOKEN win over NATS_URL's userinfo, as in nats-py
            options["user"] = config.org
            options["password"] = config.access_token
        elif config.nats_url_password is not None:
            options["user"] = config.nats_url_user
            options["password"] = config.nats_url_password
        elif config.nats_url_user:
            options["token"] = config.nats_url_user
        return options

    async def _error_cb(self, exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            self._stats.slow_consumer_events += 1
            self._stats.dropped["slow_consumer"] += 1
            self._log_slow(dropped_total=self._stats.dropped["slow_consumer"])
            return
        self.last_error = describe_error(exc)
        self._log_error(error=self.last_error)

    async def _disconnected_cb(self) -> None:
        if self.connected and not self._draining:
            self._stats.nats_disconnects += 1
            event(logging.WARNING, "disconnected from NATS", url=safe_url(self._config.nats_url))
        self._set_connected(False)

    async def _reconnected_cb(self) -> None:
        self._stats.nats_reconnects += 1
        self._set_connected(True)
        event(logging.INFO, "reconnected to NATS", url=safe_url(self._config.nats_url))

    async def _closed_cb(self) -> None:
        self._set_connected(False)


class NatsSource(NatsConnection):
    """Core NATS: one (queue) subscription delivering each message to ``on_message``.

    With ``on_payload`` (a function that never waits), its messages go to it as
    subject and payload bytes instead, past nats-py's per-message objects
    (:mod:`archiver.service.nats_direct`), where this nats-py allows it.
    """

    def __init__(
        self, config: RunConfig, on_message: MessageCallback, stats: Stats, on_payload: Deliver | None = None
    ) -> None:
        super().__init__(config, stats)
        self._on_message = on_message
        self._on_payload = usable(on_payload)
        self._sub: Subscription | None = None

    def _new_client(self) -> Client:
        return DirectClient() if self._on_payload is not None else Client()

    async def subscribe(self) -> None:
        """(Re)create the subscription."""
        assert self._nc is not None
        if self._sub is not None:
            with contextlib.suppress(NatsError):
                await self._sub.unsubscribe()
        try:
            self._sub = await self._nc.subscribe(
                self._config.subject,
                queue=self._config.queue or "",
                cb=self._on_message,
                pending_msgs_limit=PENDING_MSGS_LIMIT,
                pending_bytes_limit=PENDING_BYTES_LIMIT,
            )
            if isinstance(self._nc, DirectClient) and self._on_payload is not None:
                self._nc.direct(self._sub, self._on_payload)
            self.subscribed = True
            self.subscribed_at_s = time.monotonic()
        except NatsError as exc:
            raise SourceError(
                f"cannot subscribe to {self._config.subject!r}: {describe_error(exc)}"
            ) from None

    async def reconnect(self) -> None:
        """Drop the connection and make a new one; the subscription is made anew."""
        self._sub = None
        await super().reconnect()

    @property
    def pending_bytes(self) -> int:
        """Bytes nats-py has received and queued for the callback (held in memory outside the cap)."""
        return int(self._sub.pending_bytes) if self._sub is not None else 0


class StallWatchdog:
    """Re-subscribe, then reconnect, when connected but silent for STALL_TIMEOUT.

    The Fly Log Shipper's users report a shipper that silently stops receiving: a
    subscription the server forgot is indistinguishable from a quiet org from inside,
    so after STALL_TIMEOUT of silence the subscription is renewed (cheap, harmless
    when the org is just quiet), and if that brings nothing either, the connection.
    """

    def __init__(self, source: NatsConnection, stats: Stats, timeout_s: float) -> None:
        self._source = source
        self._stats = stats
        self._timeout_s = timeout_s
        self._stage = 0
        self._reconnecting: asyncio.Task[None] | None = None

    async def check(self) -> None:
        """Called by the ticker: act on a silence longer than the timeout."""
        timeout = self._timeout_s
        source = self._source
        if not timeout or not source.connected or not source.subscribed:
            return
        now = time.monotonic()
        last_message = self._stats.last_message_monotonic
        last = max(last_message or 0.0, source.subscribed_at_s)
        if now - last < timeout:
            if last_message and last_message > source.subscribed_at_s:
                self._stage = 0  # messages flow again: a new episode may be logged
            return
        self._stats.stall_recoveries += 1
        if self._stage == 0:
            event(logging.WARNING, "no message while connected: re-subscribing (stall watchdog)",
                  silent_for_s=round(now - last, 1), stall_timeout_s=timeout)  # fmt: skip
            self._stage = 1
            await source.subscribe()
        elif self._reconnecting is None or self._reconnecting.done():
            self._stage = 2
            # A task of its own: reconnecting may take long, and the ticker must keep flushing.
            self._reconnecting = asyncio.create_task(source.reconnect())

    async def close(self) -> None:
        """Cancel and await a reconnection under way."""
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            await asyncio.gather(self._reconnecting, return_exceptions=True)
            self._reconnecting = None


def describe_error(exc: BaseException) -> str:
    """One line naming a nats-py error, safe for logs and /health."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
