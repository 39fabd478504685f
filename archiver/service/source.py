"""The NATS side: connect with the shipper's settings, subscribe, reconnect forever.

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

import nats
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

#: The callback only appends, so a deep queue absorbs bursts (GC pauses, flushes) without drops.
PENDING_MSGS_LIMIT = 512 * 1024
PENDING_BYTES_LIMIT = 128 * 1024 * 1024
RECONNECT_WAIT_S = 1.0

MessageCallback = Callable[[Msg], Awaitable[None]]


class NatsSource:
    """One NATS connection and one (queue) subscription delivering to a callback."""

    def __init__(self, config: RunConfig, on_message: MessageCallback, stats: Stats) -> None:
        self._config = config
        self._on_message = on_message
        self._stats = stats
        self._nc: Client | None = None
        self._sub: Subscription | None = None
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
                self._nc = await nats.connect(**self._connect_options())
                break
            except (NatsError, OSError, TimeoutError) as exc:
                attempt += 1
                self.last_error = _describe(exc)
                self._log_error(url=safe_url(self._config.nats_url), error=self.last_error, attempt=attempt)
                await asyncio.sleep(min(30.0, RECONNECT_WAIT_S * 2 ** min(attempt, 5)))
        self._set_connected(True)
        await self.subscribe()
        event(logging.INFO, "subscribed", url=safe_url(self._config.nats_url),
              subject=self._config.subject, queue=self._config.queue)  # fmt: skip

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
            self.subscribed = True
            self.subscribed_at_s = time.monotonic()
        except NatsError as exc:
            raise SourceError(f"cannot subscribe to {self._config.subject!r}: {_describe(exc)}") from None

    async def reconnect(self) -> None:
        """Drop the connection and make a new one (the watchdog's second step)."""
        if self._nc is not None:
            with contextlib.suppress(NatsError, OSError, TimeoutError):
                await self._nc.close()
        self._sub = None
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
            event(logging.WARNING, "NATS drain failed", error=_describe(exc))
            await self._nc.close()
        self.subscribed = False
        self._set_connected(False)

    @property
    def pending_bytes(self) -> int:
        """Bytes nats-py has received and queued for the callback (held in memory outside the cap)."""
        return int(self._sub.pending_bytes) if self._sub is not None else 0

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
        self.last_error = _describe(exc)
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


def _describe(exc: BaseException) -> str:
    """One line naming a nats-py error, safe for logs and /health."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
