"""Compaction: files and bytes of a live-written archive before and after ``archiver compact``, against gzip-6.

LogHub text (``../shared/corpus/loghub`` when present, else the package's
sample) as Fly messages from archiver.demo.loadgen (apps skewed 1/(i+1), each in
``--regions`` regions, event times uniform over ``--hours`` hours). The
archive is written as ``archiver run`` would at FLUSH_INTERVAL=60s: one
``encode_partition`` flush per (app, region) and minute of event time, so each
hour partition holds about 60 small files. Then the real
:func:`archiver.manage.compact.compact_archive` runs over the local directory.

gzip-6 JSON lines: one file per (app, region, hour) of the same payloads, one
per line (the best case for the shipper's format: it writes far smaller files).

Usage: .venv/bin/python bench/compact.py [--messages 200000] [--apps 4] [--regions 3] [--hours 2]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from common import LOGHUB

from archiver.archive.escaping import partition_value
from archiver.archive.layout import NS_PER_HOUR, NS_PER_SECOND, object_key, object_name, parse_key
from archiver.archive.message import parse_timestamp
from archiver.codec.encode import encode_partition
from archiver.codec.payloads import Payloads
from archiver.config import DEFAULT_COMPACT_TARGET_BYTES, ArchiveSettings
from archiver.demo.corpus import sample_systems
from archiver.demo.loadgen import FlyLogGenerator
from archiver.manage.compact import compact_archive
from archiver.storage.open import open_storage

START_NS = 1_795_000_000 * NS_PER_SECOND // NS_PER_HOUR * NS_PER_HOUR


def tree_size(root: str) -> tuple[int, int]:
    files = size = 0
    for directory, _, names in os.walk(root):
        for name in names:
            if name.endswith(".parquet"):
                files += 1
                size += os.path.getsize(os.path.join(directory, name))
    return files, size


async def build(root: str, args: argparse.Namespace) -> tuple[int, int]:
    systems = sample_systems(LOGHUB if LOGHUB.is_dir() else None)
    gen = FlyLogGenerator(seed=1, apps=args.apps, regions=args.regions, systems=systems,
                          start_ns=START_NS, span_ns=args.hours * NS_PER_HOUR)  # fmt: skip
    by_minute: dict[tuple[str, str, int], list[bytes]] = defaultdict(list)
    hours: dict[tuple[str, str, int], list[bytes]] = defaultdict(list)
    for subject, payload in gen.messages(args.messages):
        _, app, region, _ = subject.split(".")
        # Event time decides the minute a message is flushed in, as a 60 s flush interval would.
        ns = parse_timestamp(payload.rsplit(b'"timestamp":"', 1)[1][:30].decode()) or 0
        by_minute[(app, region, ns // (60 * NS_PER_SECOND))].append(payload)
        hours[(app, region, ns // NS_PER_HOUR)].append(payload)
    storage = open_storage(ArchiveSettings("file", "", root))
    seq = 0
    for (app, region, _), payloads in sorted(by_minute.items()):
        for f in encode_partition(app, region, Payloads(payloads), START_NS).files:
            seq += 1
            key = object_key(partition_value(app), f.hour_ns, object_name(f.min_timestamp_ns, "w", seq))
            await storage.put(key, f.data)
    gz = sum(len(gzip.compress(b"\n".join(p) + b"\n", 6)) for p in hours.values())
    raw = sum(len(p) + 1 for payloads in hours.values() for p in payloads)
    return gz, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--apps", type=int, default=4)
    parser.add_argument("--regions", type=int, default=3)
    parser.add_argument("--hours", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = str(Path(tmp) / "archive")
        gz, raw = asyncio.run(build(root, args))
        files_before, bytes_before = tree_size(root)
        keys = [str(p.relative_to(root)) for p in Path(root).rglob("*.parquet")]
        partitions = len(
            {(k.split("/")[0], parsed.hour_ns) for k in keys if (parsed := parse_key(k)) is not None}
        )
        began, cpu = time.monotonic(), time.process_time()

        async def compact() -> None:
            storage = open_storage(ArchiveSettings("file", "", root))
            await compact_archive(storage, (), START_NS + 1000 * NS_PER_HOUR, DEFAULT_COMPACT_TARGET_BYTES)

        asyncio.run(compact())
        wall, cpu = time.monotonic() - began, time.process_time() - cpu
        files_after, bytes_after = tree_size(root)
    n = args.messages
    print(f"{n} messages, {partitions} app-hours; raw JSON lines {raw} B ({raw / n:.1f} B/msg)")
    print(f"before: {files_before} files ({files_before / partitions:.0f}/app-hour), {bytes_before} B "
          f"({bytes_before / n:.2f} B/msg)")  # fmt: skip
    print(f"after:  {files_after} files, {bytes_after} B ({bytes_after / n:.2f} B/msg); "
          f"{bytes_before / bytes_after:.2f}x smaller; compaction {wall:.1f} s wall, {cpu / n * 1e6:.1f} us CPU/msg")  # fmt: skip
    print(f"gzip-6 JSON lines per (app, region, hour): {gz} B ({gz / n:.2f} B/msg): "
          f"gzip/compacted {gz / bytes_after:.2f}x, gzip/live {gz / bytes_before:.2f}x, raw/compacted {raw / bytes_after:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
