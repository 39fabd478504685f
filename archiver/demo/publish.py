"""NATS publishing of generated logs: :func:`publish` and the benchmark command line.

Split from :mod:`archiver.demo.loadgen`, which keeps only pure, deterministic
generation (no NATS client needed). The command line is
``python -m archiver.demo.publish --rate 10000 --duration 10`` (``--help`` for more).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from archiver.demo.corpus import sample_systems
from archiver.demo.loadgen import FlyLogGenerator
from archiver.units import DURATION_HELP, parse_duration_s

_NS = 1_000_000_000


async def publish(
    url: str,
    source: FlyLogGenerator | Iterable[tuple[str, bytes]],
    rate_per_s: float | None = None,
    duration_s: float | None = None,
    *,
    count: int | None = None,
    user: str | None = None,
    password: str | None = None,
    stop: asyncio.Event | None = None,
    batch_size: int | None = None,
) -> int:
    """Publish at ``rate_per_s`` (None: flat out) until count, duration or stop; return how many were sent."""
    import nats  # deferred: pure generation should not need a NATS client

    if rate_per_s is not None and rate_per_s <= 0:
        raise ValueError("rate_per_s must be positive (None for as fast as possible)")
    # Paced for a duration: send exactly rate x duration (fewer only if the loop cannot keep up),
    # so a benchmark knows how many messages to expect downstream.
    if count is None and rate_per_s is not None and duration_s is not None:
        count = round(rate_per_s * duration_s)
    if batch_size is None:
        # About 100 batches a second when paced: smooth enough, and cheap on the event loop.
        batch_size = 1000 if rate_per_s is None else max(1, min(1000, int(rate_per_s / 100)))
    if isinstance(source, FlyLogGenerator):
        batches: Iterator[list[tuple[str, bytes]]] = source.batches(batch_size)
    else:
        iterator = iter(source)
        batches = iter(lambda: list(islice(iterator, batch_size)), [])

    nc = await nats.connect(
        url, name="archiver-loadgen", user=user, password=password, max_reconnect_attempts=-1
    )
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        start = loop.time()
        deadline = None if duration_s is None else start + duration_s
        while count is None or sent < count:
            if (stop is not None and stop.is_set()) or (deadline is not None and loop.time() >= deadline):
                break
            batch = next(batches, None)
            if not batch:
                break
            if count is not None and sent + len(batch) > count:
                batch = batch[: count - sent]
            for subject, payload in batch:
                await nc.publish(subject, payload)
            sent += len(batch)
            if rate_per_s is None:
                await asyncio.sleep(0)  # let the client's flusher write between batches
                continue
            delay = start + sent / rate_per_s - loop.time()
            if deadline is not None:
                delay = min(delay, deadline - loop.time())
            if delay > 0:
                if stop is None:
                    await asyncio.sleep(delay)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
            else:
                await asyncio.sleep(0)
        await nc.flush(timeout=30)
    finally:
        await nc.close()
    return sent


def _duration_arg(text: str) -> float:
    try:
        return parse_duration_s(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {DURATION_HELP}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line publisher for benchmarks: ``python -m archiver.demo.publish --rate 10000 --duration 10``."""
    parser = argparse.ArgumentParser(prog="python -m archiver.demo.publish", description=main.__doc__)
    parser.add_argument("--url", default="nats://127.0.0.1:4222", help="NATS server (default: %(default)s)")
    parser.add_argument(
        "--rate", type=float, default=None, help="messages per second (default: as fast as possible)"
    )
    parser.add_argument("--duration", type=_duration_arg, default=None, help="stop after this long, e.g. 10s")
    parser.add_argument("--count", type=int, default=None, help="stop after this many messages")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--apps", type=int, default=4)
    parser.add_argument("--regions", type=int, default=3, help="regions per app")
    parser.add_argument("--instances", type=int, default=2, help="machines per app and region")
    parser.add_argument("--json-fraction", type=float, default=0.35)
    parser.add_argument(
        "--corpus", default=None, help="directory of *.log files (default: the shipped sample)"
    )
    parser.add_argument(
        "--spread",
        type=_duration_arg,
        default=None,
        help="event times spread over this much of the past, e.g. 2d",
    )
    parser.add_argument("--dry-run", action="store_true", help="only generate --count messages and time it")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args(argv)
    if args.count is None and args.duration is None and args.dry_run:
        parser.error("--dry-run needs --count")

    start_ns = span_ns = None
    if args.spread is not None:
        span_ns = int(args.spread * _NS)
        start_ns = time.time_ns() - span_ns
    generator = FlyLogGenerator(
        seed=args.seed,
        apps=args.apps,
        regions=args.regions,
        instances=args.instances,
        systems=sample_systems(args.corpus) if args.corpus else None,
        json_fraction=args.json_fraction,
        start_ns=start_ns,
        span_ns=span_ns or 0,
    )
    began = time.perf_counter()
    if args.dry_run:
        sent = 0
        nbytes = 0
        while sent < args.count:
            batch = generator.messages(min(10_000, args.count - sent))
            sent += len(batch)
            nbytes += sum(len(payload) for _, payload in batch)
    else:
        try:
            import uvloop  # the publisher should not be the bottleneck of a benchmark

            run: Callable[[Any], int] = uvloop.run
        except ImportError:
            run = asyncio.run
        sent = run(publish(args.url, generator, args.rate, args.duration, count=args.count))
        nbytes = 0
    seconds = time.perf_counter() - began
    result = {
        "sent": sent,
        "seconds": round(seconds, 3),
        "rate_per_s": round(sent / seconds) if seconds else 0,
    }
    if args.dry_run:
        result["avg_bytes"] = round(nbytes / sent) if sent else 0
    if args.json:
        print(json.dumps(result))
    else:
        verb = "generated" if args.dry_run else "published"
        print(f"{verb} {sent} messages in {seconds:.2f} s ({result['rate_per_s']} msg/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
