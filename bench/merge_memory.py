"""Peak RSS and time of merging one big app-hour: the streaming file merge against the in-memory Merger it replaced.

The partition: ``--rows`` LogHub lines (``../shared/corpus/loghub`` when
present, else the package's sample) as one app's hour in ``--regions``
regions, written the way the service writes them at FLUSH_INTERVAL=60s: one
file per region and minute of event time (zstd-3, rows sorted), so each
input overlaps the other regions' files of its minute. Each merge runs in a
fresh process with Arrow on jemalloc (as the service sets it), parts of at
most COMPACT_TARGET_BYTES (256 MiB):

* ``file``: :class:`archiver.codec.merge.FileMerge`, today's compactor: inputs
  as local files, parts written to local files;
* ``bytes``: the ``Merger`` of ``archiver/codec/merge.py`` at ``--baseline``
  (cf5a676, before the streaming merge), loaded from git, fed the inputs'
  bytes as the compactor then held them (every input fetched into memory).

Peak RSS is the child's ru_maxrss; "above start" subtracts its RSS after the
imports and before reading anything.

Usage: .venv/bin/python bench/merge_memory.py [--rows 2000000] [--regions 3] [--baseline cf5a676]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, live_files

HOUR_NS = 1_795_000_000 // 3600 * 3600 * 1_000_000_000


def build(directory: Path, rows: int, regions: int) -> int:
    """Write the partition's input files; their total bytes."""
    total = 0
    for minute, region, data in live_files(rows, HOUR_NS, regions):
        (directory / f"{minute:02d}-{region}.parquet").write_bytes(data)
        total += len(data)
    return total


def child(kind: str, directory: Path, out: Path, baseline: str) -> None:
    """One merge in this process; prints a JSON line."""
    from archiver.codec.merge import FileMerge, MergeInput
    from archiver.config import DEFAULT_COMPACT_TARGET_BYTES
    from archiver.manage.compact_plan import part_count
    from archiver.service.memory import use_lean_memory

    use_lean_memory()
    old = None
    if kind == "bytes":
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{baseline}:archiver/codec/merge.py"],
                                check=True, capture_output=True).stdout  # fmt: skip
        path = out / "old_merge.py"
        path.write_bytes(source)
        spec = importlib.util.spec_from_file_location("old_merge", path)
        assert spec is not None and spec.loader is not None
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    rss_start = _rss()
    began, cpu = time.monotonic(), time.process_time()
    paths = sorted(str(p) for p in directory.glob("*.parquet"))
    input_bytes = sum(os.path.getsize(p) for p in paths)
    if old is not None:
        sources = [Path(p).read_bytes() for p in paths]
        merger = old.Merger(sources, {})
        count = part_count(merger.rows, input_bytes, DEFAULT_COMPACT_TARGET_BYTES)
        rows = merger.rows
        size = 0
        for i in range(count):
            data = merger.part(i, count)
            (out / f"part-{i}.parquet").write_bytes(data)
            size += len(data)
    else:
        merge = FileMerge([MergeInput(p) for p in paths], {})
        count = part_count(merge.rows, input_bytes, DEFAULT_COMPACT_TARGET_BYTES)
        parts = merge.write_parts([str(out / f"part-{i}.parquet") for i in range(count)])
        assert parts is not None
        rows, size = merge.rows, sum(p.size for p in parts)
        estimate = merge.working_set_bytes
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    import pyarrow as pa

    arrow_peak = pa.default_memory_pool().max_memory()
    print(json.dumps({"kind": kind, "rows": rows, "inputs": len(paths), "input_bytes": input_bytes,
                      "parts": count, "output_bytes": size, "wall_s": round(time.monotonic() - began, 2),
                      "cpu_s": round(time.process_time() - cpu, 2), "rss_start": rss_start, "peak_rss": peak,
                      "estimate": estimate if old is None else None, "arrow_peak": arrow_peak}))  # fmt: skip


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--regions", type=int, default=3)
    parser.add_argument("--baseline", default="cf5a676")
    parser.add_argument("--kinds", default="file,bytes")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.dir), Path(args.out), args.baseline)
        return
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        inputs = Path(tmp) / "inputs"
        inputs.mkdir()
        began = time.monotonic()
        total = build(inputs, args.rows, args.regions)
        print(f"partition: {args.rows:,} rows in {60 * args.regions} files, {total / 2**20:.1f} MiB "
              f"(built in {time.monotonic() - began:.0f} s)", flush=True)  # fmt: skip
        for kind in args.kinds.split(","):
            out = Path(tmp) / f"out-{kind}"
            out.mkdir()
            argv = [sys.executable, __file__, "--child", kind, "--dir", str(inputs), "--out", str(out),
                    "--baseline", args.baseline]  # fmt: skip
            result = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
            mib = 2**20
            estimate = "" if result["estimate"] is None else f", charged {result['estimate'] / mib:.0f} MiB"
            print(f"{kind:6} peak RSS {result['peak_rss'] / mib:6.0f} MiB ({(result['peak_rss'] - result['rss_start']) / mib:5.0f} "
                  f"above start{estimate}, Arrow's peak {result['arrow_peak'] / mib:.0f} MiB); {result['wall_s']:6.1f} s wall, {result['cpu_s']:6.1f} s CPU; "
                  f"{result['parts']} part(s), {result['output_bytes'] / mib:.1f} MiB", flush=True)  # fmt: skip
            for path in out.iterdir():
                path.unlink()


if __name__ == "__main__":
    main()
