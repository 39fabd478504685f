"""The day roll-up of one busy app-day: CPU and peak RSS of the merge, run as the service runs it.

Usage: ``.venv/bin/python bench/rollup.py [--mb 100] [--dir DIR]`` (prints one Markdown row and JSON).

Builds one app's 24 hour files of a past day (sorted, disjoint, named and tagged as hour compaction
leaves them) in a local archive, ``--mb`` MB in all (Fly messages of the load generator, one region per hour file's
rows), then, in a fresh child process, rolls the day up with the service's compactor: the
:class:`~archiver.manage.compact.Compactor` with a one-thread executor (the compactor stage's thread),
no table (TABLE=off: the merge is the cost; a table adds one commit). Measured in the child: wall
time, the compactor thread's CPU (``Compactor.cpu_seconds``), the process's CPU, its peak RSS
(VmHWM: ``ru_maxrss`` would carry the parent's over the exec) against its RSS before the roll-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

NS = 1_000_000_000
DAY_NS = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp()) * NS


def vm_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def build(root: str, megabytes: int) -> tuple[int, int, int]:
    """24 hour files of app ``busy`` adding up to about ``megabytes`` MB: (files, bytes, rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from archiver.archive.escaping import partition_value
    from archiver.archive.layout import NS_PER_HOUR, object_key, object_name
    from archiver.archive.supersede import compact_name, input_digest, replaces_metadata
    from archiver.codec.encode import COMPACT_COMPRESSION_LEVEL, encode_partition, write_parquet
    from archiver.codec.payloads import Payloads
    from archiver.demo.loadgen import FlyLogGenerator

    written = rows = files = 0
    per_hour = None
    for hour in range(24):
        start = DAY_NS + hour * NS_PER_HOUR
        n = per_hour or 20_000
        gen = FlyLogGenerator(seed=hour, apps=1, regions=1, start_ns=start, span_ns=NS_PER_HOUR - NS)
        payloads = [p for _, p in gen.messages(n)]
        encoded = encode_partition("busy", "ams", Payloads(payloads), start, COMPACT_COMPRESSION_LEVEL)
        if per_hour is None:  # size the hours from the first: about megabytes / 24 each
            size = sum(len(f.data) for f in encoded.files)
            per_hour = max(1, int(n * megabytes * 1e6 / 24 / size))
            gen = FlyLogGenerator(seed=hour, apps=1, regions=1, start_ns=start, span_ns=NS_PER_HOUR - NS)
            payloads = [p for _, p in gen.messages(per_hour)]
            encoded = encode_partition("busy", "ams", Payloads(payloads), start, COMPACT_COMPRESSION_LEVEL)
        for f in encoded.files:
            # Named and tagged as hour compaction leaves an hour: a compacted group of one part.
            inputs = [object_name(f.min_timestamp_ns, "bench", hour)]
            name = compact_name(f.hour_ns, input_digest(inputs), 0, 1)
            data = write_parquet(pq.read_table(pa.BufferReader(f.data)), COMPACT_COMPRESSION_LEVEL,
                                 replaces_metadata(inputs))  # fmt: skip
            path = os.path.join(root, object_key(partition_value("busy"), f.hour_ns, name))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as out:
                out.write(data)
            written += len(data)
            files += 1
        rows += len(payloads)
    return files, written, rows


async def roll_up(root: str) -> dict[str, float]:
    from archiver.archive.layout import NS_PER_DAY
    from archiver.config import ArchiveSettings
    from archiver.manage.compact import Compactor
    from archiver.manage.compact_plan import WorkUnit
    from archiver.storage.open import open_storage

    storage = open_storage(ArchiveSettings("file", "", root))
    executor = ThreadPoolExecutor(1, thread_name_prefix="archiver-compact")
    rss_before = vm_kib("VmRSS:")
    cpu_before = time.process_time()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        compactor = Compactor(storage, scratch, 256 * 1024**2, executor=executor)
        result = await compactor.compact(WorkUnit("busy", DAY_NS, NS_PER_DAY))
    wall = time.monotonic() - started
    await storage.close()
    executor.shutdown()
    return {"outcome": result.outcome, "files_in": result.files_in, "bytes_in": result.bytes_in,  # type: ignore[dict-item]
            "files_out": result.files_out, "bytes_out": result.bytes_out, "rows": result.rows, "wall_s": wall,
            "thread_cpu_s": compactor.cpu_seconds, "process_cpu_s": time.process_time() - cpu_before,
            "rss_before_mib": rss_before / 1024, "peak_rss_mib": vm_kib("VmHWM:") / 1024}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--dir")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(roll_up(args.child))))
        return
    root = args.dir or tempfile.mkdtemp(prefix="bench-rollup-")
    files, size, rows = build(root, args.mb)
    child = subprocess.run(
        [sys.executable, __file__, "--child", root], capture_output=True, text=True, check=True
    )
    r = json.loads(child.stdout)
    print(json.dumps({"files": files, "bytes": size, "rows": rows, **r}))
    print(f"| {files} hour files, {size / 1e6:.0f} MB, {rows:,} rows | {r['files_out']} part(s), "
          f"{r['bytes_out'] / 1e6:.0f} MB | {r['wall_s']:.1f} | {r['thread_cpu_s']:.1f} | {r['process_cpu_s']:.1f} | "
          f"{r['rss_before_mib']:.0f} → {r['peak_rss_mib']:.0f} |", file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
