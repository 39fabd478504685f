"""The /health and /metrics HTTP server, attacked with raw sockets.

An in-process :class:`archiver.service.http.HttpServer` on a loopback port serves the
same code as ``archiver run``; the bind-address test runs the real service.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import start_archiver

import archiver.service.http as http_module
from archiver.config import ArchiveSettings
from archiver.demo.servers import NatsServer
from archiver.redact import register_secret
from archiver.service.http import HttpServer

SECRET = "http-test-secret-7f3a9c"


class ServerThread:
    """An HttpServer on its own event loop thread, on 127.0.0.1 and a free port."""

    def __init__(self, host: str = "127.0.0.1", event_loop: str = "asyncio") -> None:
        if event_loop == "uvloop":
            uvloop = pytest.importorskip("uvloop")
            self.loop = uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self.calls = 0

        def health() -> tuple[int, str, bytes]:
            self.calls += 1
            return 200, "application/json", b'{"status":"ok"}\n'

        def leaky() -> tuple[int, str, bytes]:
            return 200, "text/plain", f"token={SECRET} url=nats://u:{SECRET}@h:4222\n".encode()

        def broken() -> tuple[int, str, bytes]:
            raise RuntimeError(f"bug holding {SECRET}")

        routes = {"/health": health, "/metrics": lambda: (200, "text/plain", b"m 1\n"),
                  "/leaky": leaky, "/broken": broken}  # fmt: skip
        self.server = HttpServer(host, 0, routes)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.port = self.server.port

    def stop(self) -> None:
        """Close the server and the loop."""
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    """A running HttpServer with /health, /metrics and two test routes, on each event loop archiver uses."""
    register_secret(SECRET)
    srv = ServerThread(event_loop=request.param)
    try:
        yield srv
    finally:
        srv.stop()


def connect(port: int) -> socket.socket:
    """A TCP connection to the server with a 10 s timeout."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes; the whole answer."""
    with connect(port) as sock:
        sock.sendall(request)
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    """Everything until EOF (a reset after data counts as EOF)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP answer (0 when there is none)."""
    if not answer.startswith(b"HTTP/1.1 "):
        return 0
    return int(answer.split(b" ", 2)[1])


def test_get_health_and_metrics(server: ServerThread) -> None:
    answer = exchange(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(answer) == 200
    head, _, body = answer.partition(b"\r\n\r\n")
    assert body == b'{"status":"ok"}\n'
    assert b"Content-Length: 16\r\n" in head and head.endswith(b"Connection: close")
    assert status_of(exchange(server.port, b"GET /metrics HTTP/1.0\r\n\r\n")) == 200
    assert status_of(exchange(server.port, b"GET /metrics?x=1 HTTP/1.1\r\n\r\n")) == 200


@pytest.mark.parametrize(
    "path", ["/", "/health/", "/HEALTH", "/metrics/x", "/../health", "/%68ealth", "//health", "/favicon.ico"]
)
def test_other_paths_are_404(server: ServerThread, path: str) -> None:
    assert status_of(exchange(server.port, f"GET {path} HTTP/1.1\r\n\r\n".encode())) == 404


@pytest.mark.parametrize(
    "method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "HEAD", "get"]
)
def test_other_methods_are_405(server: ServerThread, method: str) -> None:
    answer = exchange(server.port, f"{method} /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n".encode())
    assert status_of(answer) == 405
    assert b"Allow: GET\r\n" in answer
    assert server.calls == 0


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /health\r\n\r\n",
        b"GET /health HTTP/2.0\r\n\r\n",
        b"GET health HTTP/1.1\r\n\r\n",
        b"GET  /health HTTP/1.1\r\n\r\n",
        b"GET /health HTTP/1.1 extra\r\n\r\n",
        b"G(T /health HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS ClientHello's first bytes
        bytes(range(256)) + b"\r\n\r\n",
    ],
)
def test_garbage_is_400(server: ServerThread, request_bytes: bytes) -> None:
    assert status_of(exchange(server.port, request_bytes)) == 400
    assert server.calls == 0


def test_oversized_head_is_431_and_closed(server: ServerThread) -> None:
    long_line = b"GET /health?" + b"a" * (http_module.MAX_HEAD_BYTES + 10) + b" HTTP/1.1\r\n\r\n"
    assert status_of(exchange(server.port, long_line)) == 431
    headers = b"GET /health HTTP/1.1\r\n" + b"X-Pad: " + b"b" * 1000 + b"\r\n"
    many = headers * 20 + b"\r\n"
    assert status_of(exchange(server.port, many)) == 431
    assert server.calls == 0


def test_endless_head_without_blank_line_is_cut(server: ServerThread) -> None:
    """A client streaming header bytes forever gets 431 and a closed connection, not memory growth."""
    with connect(server.port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        sent = 0
        with contextlib.suppress(ConnectionError, BrokenPipeError):
            while sent < 1024 * 1024:
                sock.sendall(b"X-A: " + b"c" * 1000 + b"\r\n")
                sent += 1007
        answer = read_all(sock)
    assert status_of(answer) in (431, 0)  # 0: the reset of the unread bytes overtook the answer
    assert sent < 1024 * 1024 or status_of(answer) == 431


def test_body_is_ignored(server: ServerThread) -> None:
    body = b"x" * 100_000
    answer = exchange(server.port, b"POST /health HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + body)
    assert status_of(answer) == 405
    answer = exchange(server.port, b"GET /health HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
    assert status_of(answer) == 200


def test_silent_client_is_cut_off(server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_module, "REQUEST_TIMEOUT_S", 0.5)
    with connect(server.port) as sock:
        started = time.monotonic()
        answer = read_all(sock)
        elapsed = time.monotonic() - started
    assert status_of(answer) == 408
    assert 0.4 < elapsed < 3


def test_trickling_client_is_cut_off(server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    """One byte every 0.1 s never completes a request: the total time is bounded, not per byte."""
    monkeypatch.setattr(http_module, "REQUEST_TIMEOUT_S", 0.6)
    with connect(server.port) as sock:
        started = time.monotonic()
        closed = False
        for byte in b"GET /health HTTP/1.1\r\nX-Slow: " + b"z" * 100:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
            sock.setblocking(False)
            try:
                if sock.recv(4096, socket.MSG_PEEK):
                    closed = True
                    break
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
        elapsed = time.monotonic() - started
    assert closed
    assert elapsed < 2.5


def test_idle_connections_do_not_starve_health(server: ServerThread) -> None:
    idle = []
    try:
        for _ in range(3 * http_module.MAX_PENDING_CONNECTIONS):
            sock = connect(server.port)
            sock.sendall(b"GET /hea")  # started, never finished
            idle.append(sock)
        started = time.monotonic()
        assert status_of(exchange(server.port, b"GET /health HTTP/1.1\r\n\r\n")) == 200
        assert time.monotonic() - started < 1
    finally:
        for sock in idle:
            sock.close()


def test_concurrent_requests(server: ServerThread) -> None:
    results: list[int] = []

    def one() -> None:
        results.append(status_of(exchange(server.port, b"GET /metrics HTTP/1.1\r\n\r\n")))

    threads = [threading.Thread(target=one) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [200] * 50


def test_bodies_are_redacted_and_route_errors_are_500(server: ServerThread) -> None:
    answer = exchange(server.port, b"GET /leaky HTTP/1.1\r\n\r\n")
    assert status_of(answer) == 200
    assert SECRET.encode() not in answer
    assert b"nats://***@h:4222" in answer
    answer = exchange(server.port, b"GET /broken HTTP/1.1\r\n\r\n")
    assert status_of(answer) == 500
    assert SECRET.encode() not in answer
    assert status_of(exchange(server.port, b"GET /health HTTP/1.1\r\n\r\n")) == 200


def test_close_cuts_idle_connections_promptly() -> None:
    srv = ServerThread()
    sock = connect(srv.port)
    sock.sendall(b"GET /")
    time.sleep(0.2)  # accepted and waiting for the rest of its request
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 2
    assert read_all(sock) == b""
    sock.close()


def _addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (empty when it has none)."""
    found = set()
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(str(info[4][0]))
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 1))  # no packet is sent: only picks the outgoing interface
        found.add(probe.getsockname()[0])
    return sorted(a for a in found if not a.startswith("127."))


def _has_ipv6_loopback() -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        return True
    return False


def _reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n\r\n")
        return status_of(read_all(sock)) == 200
    return False


def test_http_host_binds_where_asked() -> None:
    """HTTP_HOST=127.0.0.1 listens on loopback only; empty listens on every interface."""
    local = ServerThread("127.0.0.1")
    try:
        assert _reachable("127.0.0.1", local.port)
        for address in _addresses():
            assert not _reachable(address, local.port)
    finally:
        local.stop()
    everywhere = ServerThread("")
    try:
        assert _reachable("127.0.0.1", everywhere.port)
        for address in _addresses():
            assert _reachable(address, everywhere.port)
        if _has_ipv6_loopback():
            assert _reachable("::1", everywhere.port)
    finally:
        everywhere.stop()


def test_bad_http_host_is_one_line_config_error() -> None:
    from archiver.errors import ConfigError

    async def go() -> None:
        await HttpServer("no-such-host.invalid", 0, {}).start()

    with pytest.raises(
        ConfigError, match=r"^HTTP_HOST/HTTP_PORT: cannot listen on no-such-host\.invalid:0: "
    ):
        asyncio.run(go())


def test_service_http_host(nats_server: NatsServer, local_settings: ArchiveSettings, tmp_path: Path) -> None:
    """The real ``archiver run`` honours HTTP_HOST and answers only GET /health and GET /metrics."""
    proc = start_archiver(nats_server.url, local_settings, tmp_path / "logs", HTTP_HOST="127.0.0.1")
    try:
        proc.wait_subscribed()
        assert status_of(exchange(proc.http_port, b"GET /health HTTP/1.1\r\n\r\n")) == 200
        assert status_of(exchange(proc.http_port, b"GET /metrics HTTP/1.1\r\n\r\n")) == 200
        assert status_of(exchange(proc.http_port, b"POST /health HTTP/1.1\r\n\r\n")) == 405
        assert status_of(exchange(proc.http_port, b"GET /debug HTTP/1.1\r\n\r\n")) == 404
        for address in _addresses():
            assert not _reachable(address, proc.http_port)
    finally:
        assert proc.stop() == 0
