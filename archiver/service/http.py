"""A minimal, hardened asyncio HTTP/1.1 server for ``/health`` and ``/metrics``.

Only ``GET`` of a fixed set of paths is served, one request per connection,
so a tiny hand-written server is enough and avoids a web framework
dependency. It is meant for Fly's private network (health checks, the
metrics scraper), never for the internet, and still holds up to a
misbehaving client:

* ``GET`` of a known path: the route's answer; an unknown path: 404; any
  other method, ``HEAD`` included: 405 with ``Allow: GET``; a request line
  that is not ``METHOD /path HTTP/1.x``: 400.
* The request line and headers may hold at most :data:`MAX_HEAD_BYTES`
  (else 431) and must arrive within :data:`REQUEST_TIMEOUT_S` (else 408),
  however slowly they trickle; a request body is never read, only discarded
  (bounded) before closing so the client sees the answer.
* At most :data:`MAX_PENDING_CONNECTIONS` connections may be waiting for
  their request; a new one cuts the oldest, so idle connections cannot
  starve a health check.
* Every body passes through :func:`archiver.redact.redact_bytes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from http import HTTPStatus

from archiver.errors import ConfigError
from archiver.logs import event
from archiver.redact import redact_bytes

#: A route returns (status, content type, body).
Handler = Callable[[], tuple[int, str, bytes]]

#: Request line plus headers, in bytes.
MAX_HEAD_BYTES = 8192
#: The whole request head must arrive within this (a slow or silent client is cut off).
REQUEST_TIMEOUT_S = 5.0
#: Sending the answer may take at most this (a client that does not read is cut off).
WRITE_TIMEOUT_S = 5.0
#: Connections still sending their request; a new one beyond this cuts the oldest.
MAX_PENDING_CONNECTIONS = 64
#: After answering, unread request bytes (a body) are discarded for at most this long / this much,
#: because closing a socket with unread data sends a reset that can destroy the answer in flight.
LINGER_S = 0.5
LINGER_MAX_BYTES = 64 * 1024

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _any_address_socket(port: int) -> socket.socket:
    """One listening socket for every interface: dual-stack IPv6 when possible, else IPv4.

    One socket, not asyncio's one per address family, so that port 0 means one port for both.
    """
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:  # no IPv6 on this host
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port))
        else:
            sock.bind(("0.0.0.0", port))
        sock.listen(100)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """Serve GET routes on host:port until closed."""

    def __init__(self, host: str, port: int, routes: dict[str, Handler]) -> None:
        self._host = host
        self._port = port
        self._routes = routes
        self._server: asyncio.Server | None = None
        #: Every open connection (aborted on close), and those still sending their request, oldest first.
        self._open: set[asyncio.StreamWriter] = set()
        self._pending: dict[asyncio.StreamWriter, None] = {}

    @property
    def port(self) -> int:
        """The bound port (useful when 0 was asked for)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind (``host`` empty: every interface, IPv4 and IPv6) and start accepting."""
        try:
            if self._host:
                self._server = await asyncio.start_server(
                    self._handle, self._host, self._port, limit=MAX_HEAD_BYTES
                )
            else:
                self._server = await asyncio.start_server(
                    self._handle, sock=_any_address_socket(self._port), limit=MAX_HEAD_BYTES
                )
        except OSError as exc:
            raise ConfigError(
                f"HTTP_HOST/HTTP_PORT: cannot listen on {self._host or '*'}:{self._port}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None

    async def close(self) -> None:
        """Stop accepting, cut open connections and wait for the listener to close."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._open):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None

    def _answer(self, head: bytes) -> tuple[int, str, bytes]:
        """(status, content type, body) for a request head."""
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if (
            len(parts) != 3
            or not parts[0]
            or not set(parts[0]) <= _TOKEN_CHARS
            or not parts[1].startswith("/")
            or parts[2] not in ("HTTP/1.0", "HTTP/1.1")
        ):
            return 400, "text/plain", b"bad request\n"
        method, target, _ = parts
        if method != "GET":
            return 405, "text/plain", b"method not allowed: only GET\n"
        route = self._routes.get(target.split("?", 1)[0])
        if route is None:
            return 404, "text/plain", b"not found\n"
        try:
            status, ctype, body = route()
        except Exception as exc:  # a bug in a route must not kill the server or show a traceback
            event(logging.ERROR, "HTTP route failed", path=target.split("?", 1)[0],
                  error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            return 500, "text/plain", b"internal error\n"
        return status, ctype, redact_bytes(body)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        self._pending[writer] = None
        if len(self._pending) > MAX_PENDING_CONNECTIONS:
            oldest = next(iter(self._pending))
            self._pending.pop(oldest)
            oldest.transport.abort()
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
                answer = self._answer(head)
            except asyncio.LimitOverrunError:
                answer = 431, "text/plain", b"request header fields too large\n"
            except TimeoutError:
                answer = 408, "text/plain", b"request timeout\n"
            finally:
                self._pending.pop(writer, None)
            await self._send(reader, writer, *answer)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, OSError):
            pass  # the client went away or stalled: nothing to answer
        finally:
            self._pending.pop(writer, None)
            self._open.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _send(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes
    ) -> None:
        reason = HTTPStatus(status).phrase
        allow = "Allow: GET\r\n" if status == 405 else ""
        header = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"{allow}Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n"
        )
        writer.write(header.encode("latin-1") + body)
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        # Discard what the client still sends (a body) until it closes, bounded in time and bytes.
        discarded = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_S):
                while discarded < LINGER_MAX_BYTES:
                    chunk = await reader.read(LINGER_MAX_BYTES)
                    if not chunk:
                        break
                    discarded += len(chunk)
