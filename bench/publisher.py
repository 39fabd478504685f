"""Benchmark publisher: Fly-shaped messages over the raw NATS protocol, paced or flat out, in its own process.

The messages come from archiver.demo.loadgen's FlyLogGenerator and are generated
*before* sending into one pre-encoded block of ``PUB`` frames (cycled when a
run needs more), so sending costs a slice and a ``sendall`` per few hundred
messages: the publisher stays far below one core even flat out and does not
steal CPU from the subscriber being measured.

Protocol with the parent: prints ``ready`` once connected and generated,
waits for one line on stdin, sends, then a PING and waits for the PONG (the
server has processed every PUB), prints one JSON line and exits.

Usage: python bench/publisher.py --url nats://127.0.0.1:4222 --rate 20000 --duration 10
       (--rate 0: as fast as possible)
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from urllib.parse import urlsplit

from archiver.demo.loadgen import FlyLogGenerator

MAX_POOL = 400_000
#: Most messages in one sendall.
MAX_CHUNK = 5_000


def build_pool(count: int, apps: int, regions: int, seed: int) -> tuple[bytes, list[int]]:
    """``count`` PUB frames in one block, with the offset of each frame (and the end)."""
    generator = FlyLogGenerator(seed=seed, apps=apps, regions=regions, instances=2)
    frames = [
        b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload)
        for subject, payload in generator.messages(count)
    ]
    offsets = [0]
    for frame in frames:
        offsets.append(offsets[-1] + len(frame))
    return b"".join(frames), offsets


def read_until(sock: socket.socket, token: bytes, timeout_s: float) -> bytes:
    """Read from the server until ``token`` arrives, answering its PINGs."""
    sock.settimeout(timeout_s)
    data = b""
    while token not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit(
                f"publisher: server closed the connection waiting for {token!r}: {data[-200:]!r}"
            )
        data += chunk
        if b"PING\r\n" in chunk:
            sock.sendall(b"PONG\r\n")
        if b"-ERR" in data:
            raise SystemExit(f"publisher: server error: {data[-200:]!r}")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=0, help="messages per second; 0 = as fast as possible")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--apps", type=int, default=8)
    parser.add_argument("--regions", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    paced = args.rate > 0
    count = round(args.rate * args.duration) if paced else None
    block, offsets = build_pool(min(count or MAX_POOL, MAX_POOL), args.apps, args.regions, args.seed)
    pool = len(offsets) - 1
    view = memoryview(block)

    url = urlsplit(args.url)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 4222))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    read_until(sock, b"\r\n", 10)  # INFO
    sock.sendall(
        b'CONNECT {"verbose":false,"pedantic":false,"name":"bench-publisher","lang":"raw"}\r\nPING\r\n'
    )
    read_until(sock, b"PONG", 10)
    sock.setblocking(True)
    sock.settimeout(None)
    print("ready", flush=True)
    sys.stdin.readline()

    sent = 0
    position = 0
    start = time.perf_counter()
    deadline = start + args.duration
    while True:
        now = time.perf_counter()
        if now >= deadline and (not paced or sent >= (count or 0)):
            break
        if paced:
            assert count is not None
            due = count if now >= deadline else min(count, int((now - start) * args.rate))
            n = min(due - sent, MAX_CHUNK)
            if n <= 0:
                time.sleep(0.001)
                continue
        else:
            n = 2_000
        while n:
            take = min(n, pool - position)
            sock.sendall(view[offsets[position] : offsets[position + take]])
            position = (position + take) % pool
            sent += take
            n -= take
    send_s = time.perf_counter() - start
    sock.sendall(b"PING\r\n")
    read_until(sock, b"PONG", 120)
    sock.close()
    print(json.dumps({"sent": sent, "seconds": round(send_s, 3), "rate": round(sent / send_s)}), flush=True)


if __name__ == "__main__":
    main()
