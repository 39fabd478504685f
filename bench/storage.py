"""Storage: archive bytes per message against gzip-6 and zstd-3 JSON lines, live and after compaction.

LogHub text (``../shared/corpus/loghub`` when present, else the sample the
package ships) is wrapped as Fly messages by archiver.demo.loadgen's
FlyLogGenerator: 8 apps (volume skewed 1/(i+1)) x 4 regions x 2 machines, event
times in order. Messages are grouped the way each format would be:

* live archive: what ``archiver run`` writes at the default thresholds. Each
  (app, region) buffer is flushed when its oldest message has waited
  FLUSH_INTERVAL (60 s of event time) or it holds FLUSH_BYTES (64 MiB), and each
  flushed batch goes through ``archiver.codec.encode.encode_partition`` at the live
  settings (one file per UTC hour in the batch);
* compacted: the live files written to a local archive and merged by
  ``archiver.manage.compact.compact_archive`` (what ``archiver compact`` does: one
  file per (app, region, hour) at COMPACT_COMPRESSION_LEVEL); without that
  module, emulated as ``encode.write_parquet`` over the hour's rows;
* gzip-6 JSON lines (the Fly Log Shipper's format) and zstd-3 JSON lines: one
  file per (app, region, hour), the payloads one per line.

How many rows a live file holds depends on the traffic of its partition, so
the comparison is made at several total message rates over the same number of
messages (the span of event time is messages / rate).

Usage: .venv/bin/python bench/storage.py [--quick] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from common import LOGHUB

from archiver.archive.layout import NS_PER_HOUR, NS_PER_SECOND
from archiver.codec import encode
from archiver.codec.payloads import Payloads
from archiver.config import RunConfig
from archiver.demo.corpus import sample_systems
from archiver.demo.loadgen import FlyLogGenerator

DEFAULTS = RunConfig(archive=None)  # type: ignore[arg-type]
HOUR0_NS = 1_767_225_600 * NS_PER_SECOND  # 2026-01-01T00:00Z: any hour start will do
APPS, REGIONS, INSTANCES = 8, 4, 2


def generate(count: int, rate: float, systems: dict[str, list[str]]) -> list[tuple[str, bytes, int]]:
    """``count`` messages at ``rate`` msg/s from HOUR0, in time order: (subject, payload, event ns)."""
    rng = random.Random(7)
    span_ns = int(count / rate * NS_PER_SECOND)
    times = sorted(HOUR0_NS + rng.randrange(span_ns) for _ in range(count))
    clock = iter(times).__next__
    generator = FlyLogGenerator(seed=3, apps=APPS, regions=REGIONS, instances=INSTANCES, systems=systems,
                                clock=clock)  # fmt: skip
    return [(s, p, t) for (s, p), t in zip(generator.messages(count), times, strict=True)]


def live_batches(messages: list[tuple[bytes, int]], interval_ns: int, max_bytes: int) -> list[list[bytes]]:
    """One partition's messages cut as the service flushes them: oldest waited the interval, or bytes full."""
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    opened = 0
    size = 0
    for payload, ns in messages:
        if current and ns - opened >= interval_ns:
            batches.append(current)
            current, size = [], 0
        if not current:
            opened = ns
        current.append(payload)
        size += len(payload)
        if size >= max_bytes:
            batches.append(current)
            current, size = [], 0
    if current:
        batches.append(current)
    return batches


def compact_hour(files: list[bytes]) -> bytes:
    """One compacted file from an hour's live files (emulation of archiver compact)."""
    tables = [pq.read_table(pa.BufferReader(data)) for data in files]
    table = pa.concat_tables(tables)
    table = table.sort_by("timestamp")  # stable; live files of one partition already follow each other
    return encode.write_parquet(table, encode.COMPACT_COMPRESSION_LEVEL)


def run_compact(hour_files: dict[tuple[str, str, int], list[bytes]]) -> int:
    """Bytes after ``archiver compact`` (archiver.manage.compact.compact_archive) over the live files in a local archive."""
    import asyncio
    import shutil
    import tempfile

    from archiver.archive.layout import object_key, object_name
    from archiver.config import DEFAULT_COMPACT_TARGET_BYTES
    from archiver.manage.compact import compact_archive
    from archiver.storage.local import LocalStorage

    root = Path(tempfile.mkdtemp(prefix="bench-compact-"))
    try:
        sequence = 0
        for (app, _region, hour), files in hour_files.items():
            for data in files:
                sequence += 1
                path = root / object_key(app, hour, object_name(hour, "bench0001", sequence))
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        far = HOUR0_NS + 10_000 * NS_PER_HOUR
        storage = LocalStorage(str(root))
        stats = asyncio.run(compact_archive(storage, [], far, DEFAULT_COMPACT_TARGET_BYTES))
        total = sum(p.stat().st_size for p in root.rglob("*.parquet"))
        if stats.rows != sum(pq.read_metadata(p).num_rows for p in root.rglob("*.parquet")):
            raise SystemExit(f"compaction changed the row count: {stats}")
        return total
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(count: int, rate: float, systems: dict[str, list[str]]) -> dict[str, Any]:
    messages = generate(count, rate, systems)
    partitions: dict[tuple[str, str], list[tuple[bytes, int]]] = defaultdict(list)
    for subject, payload, ns in messages:
        _, app, region, _ = subject.split(".")
        partitions[(app, region)].append((payload, ns))

    raw = sum(len(p) for _, p, _ in messages)
    live_bytes = live_files = 0
    live_cpu = 0.0
    hour_files: dict[tuple[str, str, int], list[bytes]] = defaultdict(list)
    hour_lines: dict[tuple[str, str, int], list[bytes]] = defaultdict(list)
    interval_ns = int(DEFAULTS.flush_interval_s * NS_PER_SECOND)
    for (app, region), items in partitions.items():
        for payload, ns in items:
            hour_lines[(app, region, ns - ns % NS_PER_HOUR)].append(payload)
        for batch in live_batches(items, interval_ns, DEFAULTS.flush_bytes):
            payloads = Payloads(batch)  # the live service's batches are laid out so already: not timed
            began = time.process_time()
            encoded = encode.encode_partition(app, region, payloads, HOUR0_NS)
            live_cpu += time.process_time() - began
            for f in encoded.files:
                live_bytes += len(f.data)
                live_files += 1
                hour_files[(app, region, f.hour_ns)].append(f.data)

    began = time.process_time()
    if importlib.util.find_spec("archiver.manage.compact") is not None:
        compacted = run_compact(hour_files)
    else:
        compacted = sum(len(compact_hour(files)) for files in hour_files.values())
    compact_cpu = time.process_time() - began
    gz = sum(len(gzip.compress(b"\n".join(lines) + b"\n", 6)) for lines in hour_lines.values())
    zstd = zstandard.ZstdCompressor(level=3)
    zs = sum(len(zstd.compress(b"\n".join(lines) + b"\n")) for lines in hour_lines.values())

    def per(n: int) -> float:
        return round(n / count, 2)

    # What a live file costs before its rows: a file of one message.
    first_app, first_region = next(iter(partitions))
    one_row = len(encode.encode_partition(first_app, first_region, Payloads([partitions[(first_app, first_region)][0][0]]),
                                          HOUR0_NS).files[0].data)  # fmt: skip
    return {
        "rate_per_s": rate,
        "one_row_file_bytes": one_row,
        "messages": count,
        "span_s": round(count / rate),
        "partitions": len(partitions),
        "hour_groups": len(hour_lines),
        "live_files": live_files,
        "rows_per_live_file": round(count / live_files, 1),
        "bytes_per_message": {
            "raw_json": per(raw),
            "gzip6_jsonl": per(gz),
            "zstd3_jsonl": per(zs),
            "live_parquet": per(live_bytes),
            "compacted_parquet": per(compacted),
        },
        "gzip_over_live": round(gz / live_bytes, 3),
        "gzip_over_compacted": round(gz / compacted, 3),
        "zstd3_over_live": round(zs / live_bytes, 3),
        "zstd3_over_compacted": round(zs / compacted, 3),
        "live_encode_us_per_message": round(live_cpu / count * 1e6, 2),
        "compact_us_per_message": round(compact_cpu / count * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--messages", type=int, default=None, help="messages per rate (default 400k, quick 100k)"
    )
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    count = args.messages or (100_000 if args.quick else 400_000)
    rates = [1000.0] if args.quick else [100.0, 1000.0, 5000.0]
    corpus = LOGHUB if LOGHUB.is_dir() else None
    systems = sample_systems(corpus)
    has_compact = importlib.util.find_spec("archiver.manage.compact") is not None
    started = time.monotonic()
    results = []
    for rate in rates:
        result = measure(count, rate, systems)
        results.append(result)
        b = result["bytes_per_message"]
        print(f"storage @ {rate:>6,.0f} msg/s: {result['rows_per_live_file']:>7,.0f} rows/live file; B/msg raw "
              f"{b['raw_json']}, gzip-6 {b['gzip6_jsonl']}, zstd-3 {b['zstd3_jsonl']}, live {b['live_parquet']}, "
              f"compacted {b['compacted_parquet']}; gzip/live {result['gzip_over_live']}x, "
              f"gzip/compacted {result['gzip_over_compacted']}x", flush=True)  # fmt: skip
    summary = {
        "corpus": str(corpus) if corpus else "archiver/demo/sample (package)",
        "corpus_lines": sum(len(v) for v in systems.values()),
        "systems": sorted(systems),
        "apps": APPS,
        "regions_per_app": REGIONS,
        "flush_interval_s": DEFAULTS.flush_interval_s,
        "flush_bytes": DEFAULTS.flush_bytes,
        "live_level": encode.LIVE_COMPRESSION_LEVEL,
        "compact_level": encode.COMPACT_COMPRESSION_LEVEL,
        "compaction": "archiver.manage.compact.compact_archive over the live files"
        if has_compact
        else "emulated: encode.write_parquet over the hour's rows",
        "results": results,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
