"""Storage: archive bytes per message against gzip-6 JSON lines, live and after the service's compaction.

Per LogHub system (each of the ten in ``../shared/corpus/loghub`` alone, every
app speaking it, and their mix), per total rate, messages from
:mod:`storage_text` (each machine's own lines in order, never repeated
verbatim: see there why not archiver.demo.loadgen), 8 apps (weighted 1/(i+1))
x 4 regions x 2 machines, event times uniform over ``messages / rate``
seconds from an hour's start:

* live archive: what ``archiver run`` writes at its defaults. Each (app,
  region) buffer is flushed when its oldest message has waited FLUSH_INTERVAL
  (60 s) or it holds FLUSH_BYTES, through ``encode_partition`` (one file per
  UTC hour of the batch), under the real keys (layout v2) of a local archive;
* compacted: that archive after :func:`archiver.manage.compact.compact_archive`
  (the compaction the service runs: one file per app-hour, all regions, at
  COMPACT_COMPRESSION_LEVEL), which must keep every row;
* gzip-6 JSON lines (the Fly Log Shipper's format): the payloads one per line,
  one file per (app, region, hour), a generous grouping for the shipper.

The total rate sets how many rows a live file holds (while the span covers at
least FLUSH_INTERVAL: a shorter one, e.g. 100k messages at 5,000 msg/s, cuts
smaller live files than a real hour would); the compacted files hold
the whole span (a full hour at 100 msg/s, less at the higher rates, which only
makes them smaller than a real hour's, never bigger). Reported per run: bytes
per message, gzip-6 bytes over archive bytes (the target is >= 2.0 after
compaction), files per app-hour live (scaled to a full hour when the span is
shorter) and compacted, CPU per message of the
live encode and of the compaction, and each column's compressed bytes per row
in the compacted files; then the worst system at each rate.

Usage: .venv/bin/python bench/storage.py [--quick] [--messages N] [--rates 100,1000,5000]
       [--systems HDFS,mix] [--json-out FILE]   (prints Markdown tables at the end)
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from common import LOGHUB
from storage_text import Traffic

from archiver.archive.escaping import partition_value
from archiver.archive.layout import NS_PER_HOUR, NS_PER_SECOND, object_key, object_name, parse_key
from archiver.codec import encode
from archiver.codec.payloads import Payloads
from archiver.config import DEFAULT_COMPACT_TARGET_BYTES, RunConfig
from archiver.demo.corpus import sample_systems
from archiver.demo.loadgen import FlyLogGenerator
from archiver.manage.compact import compact_archive
from archiver.storage.local import LocalStorage

DEFAULTS = RunConfig(archive=None)  # type: ignore[arg-type]
HOUR0_NS = 1_767_225_600 * NS_PER_SECOND  # 2026-01-01T00:00Z: any hour start will do
APPS, REGIONS, INSTANCES = 8, 4, 2
MIX = "mix"


def event_times(count: int, rate: float, seed: int = 7) -> list[int]:
    """``count`` event times uniform over ``count / rate`` seconds from HOUR0, sorted."""
    rng = random.Random(seed)
    span_ns = int(count / rate * NS_PER_SECOND)
    return sorted(HOUR0_NS + rng.randrange(span_ns) for _ in range(count))


def live_batches(messages: list[tuple[bytes, int]], interval_ns: int, max_bytes: int) -> list[list[bytes]]:
    """One partition's messages cut as the service flushes them: oldest waited the interval, or bytes full."""
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    opened = size = 0
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


def column_bytes(paths: list[Path]) -> dict[str, int]:
    """Compressed bytes of each column over the files (from their footers)."""
    out: dict[str, int] = defaultdict(int)
    for path in paths:
        meta = pq.read_metadata(path)
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                out[column.path_in_schema] += column.total_compressed_size
    return dict(out)


def write_live(root: Path, partitions: dict[tuple[str, str], list[tuple[bytes, int]]]) -> tuple[int, float]:
    """The live archive as the service writes it: files and CPU seconds of encoding."""
    interval_ns = int(DEFAULTS.flush_interval_s * NS_PER_SECOND)
    sequence = 0
    cpu = 0.0
    for (app, region), items in partitions.items():
        for batch in live_batches(items, interval_ns, DEFAULTS.flush_bytes):
            began = time.process_time()
            # Received at the flush: the oldest message has waited the interval.
            encoded = encode.encode_partition(app, region, Payloads(batch), HOUR0_NS + 2 * NS_PER_HOUR)
            cpu += time.process_time() - began
            for f in encoded.files:
                sequence += 1
                path = root / object_key(
                    partition_value(app), f.hour_ns, object_name(f.min_timestamp_ns, "bench01", sequence)
                )
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(f.data)
    return sequence, cpu


def hour_scale(span_ns: int, interval_ns: int) -> float:
    """Factor from files seen over ``span_ns`` to files in a full hour (1 when the span is an hour or more).

    A busy partition flushes once per interval it spans, and a span shorter than one interval
    still costs it one file: so scale by the intervals started, not by the span itself.
    """
    if span_ns >= NS_PER_HOUR:
        return 1.0
    intervals = -(-span_ns // interval_ns)  # ceiling
    return NS_PER_HOUR / (intervals * interval_ns)


def files_per_app_hour(root: Path) -> float:
    """Mean number of files per (app, hour)."""
    hours: dict[tuple[str, int], int] = defaultdict(int)
    for path in root.rglob("*.parquet"):
        key = parse_key(str(path.relative_to(root)))
        assert key is not None, path
        hours[(key.app, key.hour_ns)] += 1
    return sum(hours.values()) / len(hours)


def messages(
    systems: dict[str, list[str]], times: list[int], traffic: str
) -> Iterator[tuple[str, str, bytes]]:
    """(app, region, payload) per event time: from storage_text, or archiver.demo.loadgen's generator."""
    if traffic == "loadgen":  # random lines, 1,024 pre-built JSON lines per system: repeats flatter zstd
        generator = FlyLogGenerator(seed=3, apps=APPS, regions=REGIONS, instances=INSTANCES, systems=systems,
                                    clock=iter(times).__next__)  # fmt: skip
        for subject, payload in generator.messages(len(times)):
            _, app, region, _ = subject.split(".")
            yield app, region, payload
    else:
        yield from Traffic(systems, apps=APPS, regions=REGIONS, instances=INSTANCES, seed=3).messages(times)


def measure(
    label: str, systems: dict[str, list[str]], rate: float, count: int, traffic: str = "text"
) -> dict[str, Any]:
    """One system (or the mix) at one total rate: see the module docstring."""
    times = event_times(count, rate)
    partitions: dict[tuple[str, str], list[tuple[bytes, int]]] = defaultdict(list)
    hour_lines: dict[tuple[str, str, int], list[bytes]] = defaultdict(list)
    raw = 0
    for (app, region, payload), ns in zip(messages(systems, times, traffic), times, strict=True):
        partitions[(app, region)].append((payload, ns))
        hour_lines[(app, region, ns - ns % NS_PER_HOUR)].append(payload)
        raw += len(payload)
    gz = sum(len(gzip.compress(b"\n".join(lines) + b"\n", 6)) for lines in hour_lines.values())

    root = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        live_files, live_cpu = write_live(root, partitions)
        interval_ns = int(DEFAULTS.flush_interval_s * NS_PER_SECOND)
        live_bytes = sum(p.stat().st_size for p in root.rglob("*.parquet"))
        live_per_app_hour = files_per_app_hour(root) * hour_scale(times[-1] - times[0], interval_ns)
        storage = LocalStorage(str(root))
        began = time.process_time()
        stats = asyncio.run(
            compact_archive(storage, [], HOUR0_NS + 1000 * NS_PER_HOUR, DEFAULT_COMPACT_TARGET_BYTES)
        )
        compact_cpu = time.process_time() - began
        compacted_paths = list(root.rglob("*.parquet"))
        compacted = sum(p.stat().st_size for p in compacted_paths)
        rows = sum(pq.read_metadata(p).num_rows for p in compacted_paths)
        if rows != count or stats.rows != count:
            raise SystemExit(f"compaction lost or doubled rows: {rows} / {stats.rows} for {count}")
        columns = column_bytes(compacted_paths)
        compacted_per_app_hour = files_per_app_hour(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def per(n: float) -> float:
        return round(n / count, 2)

    return {
        "system": label if traffic == "text" else f"{label} (loadgen)",
        "rate_per_s": rate,
        "messages": count,
        "span_s": round(count / rate),
        "live_files": live_files,
        "rows_per_live_file": round(count / live_files, 1),
        "live_files_per_app_hour": round(live_per_app_hour, 1),
        "compacted_files_per_app_hour": round(compacted_per_app_hour, 2),
        "bytes_per_message": {
            "raw_json": per(raw),
            "gzip6_jsonl": per(gz),
            "live": per(live_bytes),
            "compacted": per(compacted),
        },
        "gzip_over_live": round(gz / live_bytes, 3),
        "gzip_over_compacted": round(gz / compacted, 3),
        "live_encode_us_per_message": round(live_cpu / count * 1e6, 2),
        "compact_us_per_row": round(compact_cpu / count * 1e6, 2),
        "column_bytes_per_row": {name: round(size / count, 3) for name, size in columns.items()},
    }


def markdown(results: list[dict[str, Any]]) -> str:
    """The tables BENCHMARKS.md gets: every run, then the worst system per rate."""
    head = ("| system | rate msg/s | rows/live file | live files/app-hour | compacted files/app-hour | "
            "B/msg raw | gzip-6 | live | compacted | gzip-6/live | gzip-6/compacted | encode µs/msg | "
            "compaction µs/row |\n|" + "---|" * 13)  # fmt: skip
    lines = [head]
    for r in results:
        b = r["bytes_per_message"]
        lines.append(
            f"| {r['system']} | {r['rate_per_s']:,.0f} | {r['rows_per_live_file']:,.0f} | "
            f"{r['live_files_per_app_hour']} | {r['compacted_files_per_app_hour']} | {b['raw_json']} | "
            f"{b['gzip6_jsonl']} | {b['live']} | {b['compacted']} | {r['gzip_over_live']}× | "
            f"**{r['gzip_over_compacted']}×** | {r['live_encode_us_per_message']} | {r['compact_us_per_row']} |"
        )
    lines += ["", "| rate msg/s | worst gzip-6/compacted (system) | worst gzip-6/live (system) | mix gzip-6/compacted |",
              "|---|---|---|---|"]  # fmt: skip
    for rate in sorted({r["rate_per_s"] for r in results}):
        at = [r for r in results if r["rate_per_s"] == rate]
        worst = min(at, key=lambda r: r["gzip_over_compacted"])
        worst_live = min(at, key=lambda r: r["gzip_over_live"])
        mix = next((f"{r['gzip_over_compacted']}×" for r in at if r["system"] == MIX), "–")
        lines.append(f"| {rate:,.0f} | {worst['gzip_over_compacted']}× ({worst['system']}) | "
                     f"{worst_live['gzip_over_live']}× ({worst_live['system']}) | {mix} |")  # fmt: skip
    columns = sorted({c for r in results for c in r["column_bytes_per_row"]})
    lines += ["", "Compressed bytes per row of each column, compacted files:", "",
              "| system | rate | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 2)]  # fmt: skip
    for r in results:
        cells = " | ".join(str(r["column_bytes_per_row"].get(c, 0)) for c in columns)
        lines.append(f"| {r['system']} | {r['rate_per_s']:,.0f} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="1,000 msg/s only, 100k messages, HDFS and mix")
    parser.add_argument(
        "--messages", type=int, default=None, help="messages per run (default 360k: an hour at 100/s)"
    )
    parser.add_argument("--rates", default=None, help="comma-separated total rates (default 100,1000,5000)")
    parser.add_argument(
        "--systems", default=None, help="comma-separated LogHub systems and/or 'mix' (default all)"
    )
    parser.add_argument("--traffic", choices=["text", "loadgen"], default="text",
                        help="storage_text (default) or archiver.demo.loadgen's random lines, for comparison")  # fmt: skip
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    corpus = sample_systems(LOGHUB if LOGHUB.is_dir() else None)
    count = args.messages or (100_000 if args.quick else 360_000)
    rates = [float(r) for r in (args.rates or ("1000" if args.quick else "100,1000,5000")).split(",")]
    labels = (args.systems or ("HDFS,mix" if args.quick else ",".join([*sorted(corpus), MIX]))).split(",")
    started = time.monotonic()
    results = []
    for label in labels:
        systems = corpus if label == MIX else {label: corpus[label]}
        for rate in rates:
            result = measure(label, systems, rate, count, args.traffic)
            results.append(result)
            b = result["bytes_per_message"]
            print(f"{label:>12} @ {rate:>6,.0f}/s: {result['rows_per_live_file']:>7,.0f} rows/live file; B/msg gzip-6 "
                  f"{b['gzip6_jsonl']}, live {b['live']}, compacted {b['compacted']}; gzip/live "
                  f"{result['gzip_over_live']}x, gzip/compacted {result['gzip_over_compacted']}x; compaction "
                  f"{result['compact_us_per_row']} us/row", flush=True)  # fmt: skip
    summary = {
        "corpus": str(LOGHUB) if LOGHUB.is_dir() else "archiver/demo/sample (package)",
        "apps": APPS, "regions_per_app": REGIONS, "machines_per_region": INSTANCES,
        "flush_interval_s": DEFAULTS.flush_interval_s, "flush_bytes": DEFAULTS.flush_bytes,
        "live_level": encode.LIVE_COMPRESSION_LEVEL, "compact_level": encode.COMPACT_COMPRESSION_LEVEL,
        "results": results, "elapsed_s": round(time.monotonic() - started, 1),
    }  # fmt: skip
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=1))
    print()
    print(markdown(results))


if __name__ == "__main__":
    main()
