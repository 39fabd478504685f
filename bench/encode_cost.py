"""Encode cost per message: parse, and parse + Parquet, through the general path and the envelope slicer.

LogHub lines (``../shared/corpus/loghub``, else the package's sample) as Fly
messages of one (app, region), built with archiver.demo.loadgen's
FlyLogGenerator (the envelope Fly sends, 1% runner messages, event times
sorted within one hour), with 0%, 10% and 50% of the app messages being the
app's own JSON log line carrying its level (zap, GCP, log15, pino, structlog
styles).

Batch sizes are the ones the service makes at 10k and 20k msg/s: the
service's own :class:`~archiver.service.buffer.Buffers` with its defaults
(FLUSH_INTERVAL 60 s, FLUSH_BYTES 64 MiB, MAX_BUFFER_BYTES 256 MiB) fed the
traffic of bench/ingest.py (8 apps x 3 regions x 2 machines, app i weighted
1/(i+1)) for 180 simulated seconds, each batch settled at once; the
message-weighted median batch of each rate is timed.

Per batch, in one process and interleaved, ``--runs`` times (median; CPU time
of the process, the machine is shared): ``parse_batch(slicer=False)`` (today's
general path) and ``parse_batch(slicer=True)``, then ``encode_partition`` (split
by hour, Parquet with the archive's writer options, zstd-3) with each. Outputs
are checked equal first (tables, Parquet bytes). The service's memory set-up
(jemalloc) is used. ``--threshold`` also times parse alone on small batches,
which sets ``SLICE_MIN_PAYLOADS``. ``--profile`` splits the slicer's cost by
phase for every case over the target.

Usage: .venv/bin/python bench/encode_cost.py [--runs 5] [--threshold] [--profile] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from common import LOGHUB

from archiver.codec import encode, envelope, envelope_text
from archiver.codec import parse as parse_module
from archiver.codec.parse import parse_batch
from archiver.codec.parse_exact import newest_accepted_ns
from archiver.codec.payloads import Payloads
from archiver.config import RunConfig
from archiver.demo.corpus import default_app_names, sample_systems
from archiver.demo.loadgen import FlyLogGenerator
from archiver.service.buffer import Buffers
from archiver.service.memory import use_lean_memory

APP, REGION = "web", "ord"
HOUR0_NS = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00Z
RECEIVED = HOUR0_NS + 3600 * 1_000_000_000
NEWEST = newest_accepted_ns(RECEIVED)
TARGET_US = 1.5
#: bench/ingest.py's traffic: bench/publisher.py's defaults.
INGEST_APPS, INGEST_REGIONS, INGEST_INSTANCES = 8, 3, 2


def service_batch_sizes(rate: float, seconds: float = 180.0, payload_bytes: int = 380) -> list[int]:
    """Messages per batch the service's Buffers detach at ``rate`` msg/s of bench/ingest.py's traffic."""
    defaults = RunConfig.__dataclass_fields__
    flush_interval_s = float(defaults["flush_interval_s"].default)
    flush_bytes, max_buffer = int(defaults["flush_bytes"].default), int(defaults["max_buffer_bytes"].default)
    now = [0.0]
    buffers = Buffers(
        flush_bytes, flush_interval_s, max_buffer, clock=lambda: now[0], wall_clock_ns=lambda: 0
    )
    weights = [1 / (i + 1) for i in range(INGEST_APPS) for _ in range(INGEST_REGIONS)]
    parts = [
        buffers.partition(app, f"r{r}")
        for app in default_app_names(INGEST_APPS)
        for r in range(INGEST_REGIONS)
    ]
    rng = random.Random(1)
    payload = b"x" * payload_bytes
    tick_s, sizes = 0.05, []
    for step in range(int(seconds / tick_s)):
        now[0] = step * tick_s
        flush = False
        for buf in rng.choices(parts, weights, k=int(rate * tick_s)):
            flush = buffers.append(buf, payload) or flush
        for batch in buffers.due() if flush or step % 20 == 0 else []:
            sizes.append(len(batch.payloads))
            buffers.settle(batch)
    return sizes


def weighted_median(sizes: list[int]) -> int:
    """The batch size the median message is flushed in."""
    ordered, half, seen = sorted(sizes), sum(sizes) / 2, 0
    for size in ordered:
        seen += size
        if seen >= half:
            return size
    return ordered[-1]


_SYSTEMS: dict[str, list[str]] = {}


def fly_batch(count: int, json_fraction: float, seed: int = 1) -> Payloads:
    """``count`` Fly payloads of (APP, REGION), LogHub text, event times sorted within the hour from HOUR0_NS."""
    if not _SYSTEMS:
        by_system = sample_systems(LOGHUB if LOGHUB.is_dir() else None)
        _SYSTEMS["loghub"] = [line for name in sorted(by_system) for line in by_system[name]]
    rng = random.Random(seed)
    times = iter(sorted(HOUR0_NS + rng.randrange(3_000 * 10**9) for _ in range(count))).__next__
    generator = FlyLogGenerator(seed=seed, apps=[APP], regions=[REGION], instances=2, systems=_SYSTEMS,
                                json_fraction=json_fraction, clock=times)  # fmt: skip
    return Payloads(payload for _subject, payload in generator.messages(count))


def encoder(slicer: bool) -> Callable[[Payloads], Any]:
    """``encode_partition`` with its parse_batch taking the given path."""

    def run(payloads: Payloads) -> Any:
        saved = encode.parse_batch
        encode.parse_batch = functools.partial(parse_batch, slicer=slicer)  # the name encode_partition calls
        try:
            return encode.encode_partition(
                APP, REGION, payloads, RECEIVED, encode.LIVE_COMPRESSION_LEVEL, NEWEST
            )
        finally:
            encode.parse_batch = saved

    return run


def cpu_us_per_message(fn: Callable[[], Any], messages: int, runs: int) -> list[float]:
    """CPU µs per message of each run of ``fn``."""
    out = []
    for _ in range(runs):
        gc.collect()
        start = time.process_time()
        fn()
        out.append((time.process_time() - start) / messages * 1e6)
    return out


def measure(payloads: Payloads, runs: int) -> dict[str, float]:
    """Median µs/message of parse and parse+Parquet, general path and slicer, interleaved."""
    today, fast = (parse_batch(APP, REGION, payloads, RECEIVED, NEWEST, slicer=s) for s in (False, True))
    assert today.table.equals(fast.table) and today.malformed == fast.malformed == 0, "outputs differ"
    files_today, files_fast = ([f.data for f in encoder(s)(payloads).files] for s in (False, True))
    cases: dict[str, Callable[[], Any]] = {
        "parse today": lambda: parse_batch(APP, REGION, payloads, RECEIVED, NEWEST, slicer=False),
        "parse fast": lambda: parse_batch(APP, REGION, payloads, RECEIVED, NEWEST, slicer=True),
        "encode today": lambda: encoder(False)(payloads),
        "encode fast": lambda: encoder(True)(payloads),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, fn in cases.items():  # interleaved: drift on the shared machine hits all alike
            samples[name] += cpu_us_per_message(fn, len(payloads), 1)
    result = {name: round(statistics.median(values), 3) for name, values in samples.items()}
    result["same_parquet_bytes"] = float(files_today == files_fast)
    return result


PHASES = (
    (envelope, "_valid_utf8"), (envelope, "_heads"), (envelope, "_check_heads"), (envelope, "messages"),
    (envelope_text, "_escaped_messages"), (envelope_text, "_unescape"), (envelope_text, "_flat_levels"),
    (envelope, "_timestamps"), (envelope, "split_ns"), (parse_module, "_parse_general"),
    (encode, "split_hours"), (encode, "write_parquet"), (encode, "parse_batch"),
)  # fmt: skip


def profile(payloads: Payloads, runs: int) -> dict[str, float]:
    """Inclusive CPU µs/message of the slicer's phases and of Parquet writing in encode_partition."""
    spent: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.process_time() - start

        return wrapper

    saved = [(module, name, getattr(module, name)) for module, name in PHASES]
    try:
        for module, name, fn in saved:
            if name != "parse_batch":
                setattr(module, name, timed(name, fn))
        encode.parse_batch = timed("parse (slicer)", functools.partial(parse_module.parse_batch, slicer=True))
        total = sum(cpu_us_per_message(lambda: encode.encode_partition(
            APP, REGION, payloads, RECEIVED, encode.LIVE_COMPRESSION_LEVEL, NEWEST), len(payloads), runs))  # fmt: skip
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)
    per = {name: round(seconds / runs / len(payloads) * 1e6, 3) for name, seconds in spent.items()}
    return {"encode_partition": round(total / runs, 3), **per}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rates", default="10000,20000", help="msg/s whose service batch sizes are timed")
    parser.add_argument("--fractions", default="0,0.1,0.5", help="shares of app messages that are JSON logs")
    parser.add_argument("--threshold", action="store_true", help="also time parse alone on small batches")
    parser.add_argument(
        "--profile", action="store_true", help="split the cost by phase where over the target"
    )
    parser.add_argument("--json-out")
    args = parser.parse_args()
    pool = use_lean_memory()
    fractions = [float(f) for f in args.fractions.split(",")]
    out: dict[str, Any] = {
        "runs": args.runs,
        "pool": pool,
        "corpus": str(LOGHUB) if LOGHUB.is_dir() else "sample",
    }
    print(f"python {sys.version.split()[0]}, Arrow pool {pool}, corpus {out['corpus']}; median of {args.runs} "
          "runs, CPU µs per message, today = parse_batch(slicer=False), fast = slicer=True", flush=True)  # fmt: skip
    sizes: dict[str, int] = {}
    for rate in (float(r) for r in args.rates.split(",")):
        batches = service_batch_sizes(rate)
        sizes[f"{rate:.0f}"] = weighted_median(batches)
        print(f"service batches at {rate:,.0f} msg/s: {len(batches)} in 180 s, {min(batches):,}-{max(batches):,} "
              f"messages, the median message's batch {sizes[f'{rate:.0f}']:,}", flush=True)  # fmt: skip
    out["batch_sizes"] = sizes
    print("\n| msg/s | batch | JSON app logs | parse today | parse fast | ratio | parse+Parquet today "
          "| parse+Parquet fast | ratio | ≤ 1.5 µs |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")  # fmt: skip
    rows, over = [], []
    for rate, size in sizes.items():
        for fraction in fractions:
            payloads = fly_batch(size, fraction)
            r = measure(payloads, args.runs)
            rows.append({"rate": int(rate), "batch": size, "json_fraction": fraction, **r})
            met = r["encode fast"] <= TARGET_US
            if not met:
                over.append((rate, size, fraction, payloads))
            print(f"| {int(rate):,} | {size:,} | {fraction:.0%} | {r['parse today']:.2f} | {r['parse fast']:.2f} | "
                  f"{r['parse today'] / r['parse fast']:.2f}x | {r['encode today']:.2f} | {r['encode fast']:.2f} | "
                  f"{r['encode today'] / r['encode fast']:.2f}x | {'met' if met else '**missed**'} |", flush=True)  # fmt: skip
    out["cases"] = rows
    if args.threshold:
        print("\nparse alone on small batches (sets SLICE_MIN_PAYLOADS):\n\n| batch | JSON app logs | parse today "
              "| parse fast | ratio |\n|---:|---:|---:|---:|---:|")  # fmt: skip
        out["threshold"] = []
        for size in (300, 1000, 2000, 4000):
            for fraction in (0.0, 0.5):
                payloads = fly_batch(size, fraction, seed=2)
                runs = max(args.runs, 7)
                today = statistics.median(cpu_us_per_message(
                    lambda p=payloads: parse_batch(APP, REGION, p, RECEIVED, NEWEST, slicer=False), size, runs))  # fmt: skip
                fast = statistics.median(cpu_us_per_message(
                    lambda p=payloads: parse_batch(APP, REGION, p, RECEIVED, NEWEST, slicer=True), size, runs))  # fmt: skip
                out["threshold"].append(
                    {"batch": size, "json_fraction": fraction, "today": today, "fast": fast}
                )
                print(
                    f"| {size:,} | {fraction:.0%} | {today:.2f} | {fast:.2f} | {today / fast:.2f}x |",
                    flush=True,
                )
    if args.profile and over:
        out["profiles"] = []
        for rate, size, fraction, payloads in over:
            phases = profile(payloads, args.runs)
            out["profiles"].append({"rate": int(rate), "batch": size, "json_fraction": fraction, **phases})
            print(f"\nprofile, {int(rate):,} msg/s, batch {size:,}, {fraction:.0%} JSON (inclusive µs/message): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in phases.items()), flush=True)  # fmt: skip
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(out, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
