"""The floor of the ingest benchmark: a nats-py subscriber on uvloop whose callback only counts.

Same subscription settings as the archiver (subject, pending limits, reconnect
forever), nothing else. Its counts are served on a loopback TCP port as one
JSON line per connection (``{"received": N, "dropped": N, "disconnects": N,
"subscribed": true}``) and printed on stdout at SIGTERM/SIGINT, then it exits 0.

``--direct``: the same count, but through archiver.service.nats_direct's parser
(the archiver's own receive path: no ``Msg``, no queue, no coroutine per message),
to show what the archiver costs beyond the cheapest receive path it has.

Usage: python bench/bare_subscriber.py --url nats://127.0.0.1:4222 --port 9999 [--subject 'logs.>'] [--direct]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

import nats
import uvloop
from nats.errors import SlowConsumerError

# The archiver's own limits (archiver.service.source), so both drop at the same backlog.
PENDING_MSGS_LIMIT = 512 * 1024
PENDING_BYTES_LIMIT = 128 * 1024 * 1024


async def run(url: str, subject: str, port: int, direct: bool = False) -> None:
    counts = {"received": 0, "dropped": 0, "disconnects": 0, "subscribed": False}

    async def on_message(msg: object) -> None:
        counts["received"] += 1

    async def on_error(exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            counts["dropped"] += 1

    async def on_disconnect() -> None:
        counts["disconnects"] += 1

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps(counts).encode() + b"\n")
        await writer.drain()
        writer.close()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    options = {"name": "bare-subscriber", "max_reconnect_attempts": -1, "reconnect_time_wait": 1,
               "error_cb": on_error, "disconnected_cb": on_disconnect}  # fmt: skip
    limits = {"pending_msgs_limit": PENDING_MSGS_LIMIT, "pending_bytes_limit": PENDING_BYTES_LIMIT}
    if direct:
        from archiver.service.nats_direct import DirectClient

        def count(subject: bytes, data: bytes) -> None:
            counts["received"] += 1

        client = DirectClient()
        await client.connect(url, **options)
        client.direct(await client.subscribe(subject, cb=on_message, **limits), count)
        nc = client
    else:
        nc = await nats.connect(url, **options)
        await nc.subscribe(subject, cb=on_message, **limits)
    await nc.flush()
    counts["subscribed"] = True
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    await stop.wait()
    final = json.dumps(counts)  # before close(): closing fires disconnected_cb
    server.close()
    await nc.close()
    print(final, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--subject", default="logs.>")
    parser.add_argument("--direct", action="store_true", help="receive through the archiver's direct parser")
    args = parser.parse_args()
    uvloop.run(run(args.url, args.subject, args.port, args.direct))


if __name__ == "__main__":
    main()
