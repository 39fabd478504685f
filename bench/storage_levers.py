"""Storage levers: compacted app-hours re-encoded under writer-option variants, per LogHub system.

Builds each app-hour as the compaction writes it (every region's rows of one
app and hour, parsed by ``parse_batch``, sorted by exact time, stably) from the
traffic of :mod:`storage_text`, then writes it once per variant:
``archiver.codec.encode.writer_options(COMPACT_COMPRESSION_LEVEL)`` with one
change each (zstd level, page size, string encodings, dictionaries, row order,
columns dropped to price them). Reports per variant and system: bytes,
gzip-6 JSON lines (per app, region, hour) over bytes, and write CPU per row.

Usage: .venv/bin/python bench/storage_levers.py [--messages 200000] [--rate 1000] [--systems ...]
       [--variants base,level12,...]
"""

from __future__ import annotations

import argparse
import gzip
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from common import LOGHUB
from storage import APPS, INSTANCES, MIX, REGIONS, event_times
from storage_text import Traffic

from archiver.archive import schema
from archiver.archive.layout import NS_PER_HOUR
from archiver.archive.timestamps import table_ns
from archiver.codec import encode
from archiver.codec.parse import parse_batch
from archiver.codec.payloads import Payloads
from archiver.demo.corpus import sample_systems

Options = dict[str, Any]
Variant = Callable[[pa.Table, Options], tuple[pa.Table, Options]]


def _with(**changes: Any) -> Variant:
    def apply(table: pa.Table, options: Options) -> tuple[pa.Table, Options]:
        return table, {**options, **changes}

    return apply


def _encoding(column: str, encoding: str) -> Variant:
    def apply(table: pa.Table, options: Options) -> tuple[pa.Table, Options]:
        return table, {**options, "column_encoding": {**options["column_encoding"], column: encoding}}

    return apply


def _dictionary(columns: list[str]) -> Variant:
    return _with(use_dictionary=columns)


def _order(*keys: str) -> Variant:
    def apply(table: pa.Table, options: Options) -> tuple[pa.Table, Options]:
        exact = table_ns(table)
        ordered = table.append_column("_ns", exact)
        ordered = ordered.take(pc.sort_indices(ordered, [(k, "ascending") for k in (*keys, "_ns")]))
        return ordered.drop_columns(["_ns"]), options

    return apply


def _both(*variants: Variant) -> Variant:
    def apply(table: pa.Table, options: Options) -> tuple[pa.Table, Options]:
        for one in variants:
            table, options = one(table, options)
        return table, options

    return apply


def _drop(column: str) -> Variant:
    def apply(table: pa.Table, options: Options) -> tuple[pa.Table, Options]:
        kept = table.drop_columns([column])
        options = {**options, "write_statistics": [c for c in options["write_statistics"] if c != column],
                   "use_dictionary": [c for c in options["use_dictionary"] if c != column],
                   "column_encoding": {c: e for c, e in options["column_encoding"].items() if c != column}}  # fmt: skip
        return kept, options

    return apply


MIB = 1024 * 1024
VARIANTS: dict[str, Variant] = {
    "base": _with(),
    "level3": _with(compression_level=3),
    "level12": _with(compression_level=12),
    "level15": _with(compression_level=15),
    "level16": _with(compression_level=16),
    "level17": _with(compression_level=17),
    "level19": _with(compression_level=19),
    "page256k": _with(data_page_size=256 * 1024),
    "page4m": _with(data_page_size=4 * MIB),
    "page16m": _with(data_page_size=16 * MIB),
    "page64m": _with(data_page_size=64 * MIB),
    "rows1m": _with(max_rows_per_page=1 << 20),
    "page4m_rows1m": _with(data_page_size=4 * MIB, max_rows_per_page=1 << 20),
    "page16m_rows1m": _with(data_page_size=16 * MIB, max_rows_per_page=1 << 20),
    "page64m_rows1m": _with(data_page_size=64 * MIB, max_rows_per_page=1 << 20),
    "page16m_rows1m_level12": _with(data_page_size=16 * MIB, max_rows_per_page=1 << 20, compression_level=12),
    "page16m_rows1m_level15": _with(data_page_size=16 * MIB, max_rows_per_page=1 << 20, compression_level=15),
    "page16m_rows1m_msgdict": _with(
        data_page_size=16 * MIB,
        max_rows_per_page=1 << 20,
        use_dictionary=[*schema.DICTIONARY_COLUMNS, schema.MESSAGE],
    ),
    "page16m_rows1m_msgdict16m": _with(
        data_page_size=16 * MIB,
        max_rows_per_page=1 << 20,
        use_dictionary=[*schema.DICTIONARY_COLUMNS, schema.MESSAGE],
        dictionary_pagesize_limit=16 * MIB,
    ),
    "msgdict16m": _with(
        use_dictionary=[*schema.DICTIONARY_COLUMNS, schema.MESSAGE], dictionary_pagesize_limit=16 * MIB
    ),
    "page16m_msgdict16m": _with(
        data_page_size=16 * MIB,
        use_dictionary=[*schema.DICTIONARY_COLUMNS, schema.MESSAGE],
        dictionary_pagesize_limit=16 * MIB,
    ),
    "msg_delta_length": _encoding(schema.MESSAGE, "DELTA_LENGTH_BYTE_ARRAY"),
    "msg_delta_bytes": _encoding(schema.MESSAGE, "DELTA_BYTE_ARRAY"),
    "msg_dictionary": _dictionary([*schema.DICTIONARY_COLUMNS, schema.MESSAGE]),
    "extra_dictionary": _dictionary([*schema.DICTIONARY_COLUMNS, schema.EXTRA]),
    "no_dictionary": _dictionary([]),
    "order_instance": _order(schema.INSTANCE),
    "order_region_instance": _order(schema.REGION, schema.INSTANCE),
    "order_instance_level16": _both(_with(compression_level=16), _order(schema.INSTANCE)),
    "page16m_rows1m_order_region_instance": _both(
        _with(data_page_size=16 * MIB, max_rows_per_page=1 << 20), _order(schema.REGION, schema.INSTANCE)
    ),
    "drop_extra": _drop(schema.EXTRA),
    "drop_level": _drop(schema.LEVEL),
    "drop_nanos": _drop(schema.TIMESTAMP_NANOS),
}


def app_hours(systems: dict[str, list[str]], rate: float, count: int) -> tuple[list[pa.Table], int]:
    """Each app-hour as compaction writes it, and the gzip-6 JSON lines bytes per (app, region, hour)."""
    times = event_times(count, rate)
    traffic = Traffic(systems, apps=APPS, regions=REGIONS, instances=INSTANCES, seed=3)
    partitions: dict[tuple[str, str, int], list[bytes]] = defaultdict(list)
    for (app, region, payload), ns in zip(traffic.messages(times), times, strict=True):
        partitions[(app, region, ns - ns % NS_PER_HOUR)].append(payload)
    gz = sum(len(gzip.compress(b"\n".join(lines) + b"\n", 6)) for lines in partitions.values())
    hours: dict[tuple[str, int], list[pa.Table]] = defaultdict(list)
    for (app, region, hour), payloads in partitions.items():
        hours[(app, hour)].append(parse_batch(app, region, Payloads(payloads), hour + 2 * NS_PER_HOUR).table)
    tables = []
    for parts in hours.values():
        table = pa.concat_tables(parts)
        tables.append(table.take(pc.sort_indices(table_ns(table))))
    return tables, gz


def write(table: pa.Table, options: Options) -> int:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return len(sink.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--systems", default=None, help="comma-separated (default: every system and mix)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    corpus = sample_systems(LOGHUB if LOGHUB.is_dir() else None)
    labels = (args.systems or ",".join([*sorted(corpus), MIX])).split(",")
    variants = args.variants.split(",")
    base_options = encode.writer_options(encode.COMPACT_COMPRESSION_LEVEL)
    print("| variant | " + " | ".join(labels) + " | worst | write µs/row (mean) |")
    print("|" + "---|" * (len(labels) + 3))
    results: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for label in labels:
        tables, gz = app_hours(corpus if label == MIX else {label: corpus[label]}, args.rate, args.messages)
        for name in variants:
            size = 0
            cpu = 0.0
            for table in tables:
                prepared, options = VARIANTS[name](table, base_options)
                began = time.process_time()
                size += write(prepared, options)
                cpu += time.process_time() - began
            results[name][label] = (gz / size, cpu / args.messages * 1e6)
    for name in variants:
        ratios = [results[name][label][0] for label in labels]
        cpu = sum(results[name][label][1] for label in labels) / len(labels)
        cells = " | ".join(f"{r:.3f}" for r in ratios)
        print(f"| {name} | {cells} | {min(ratios):.3f} | {cpu:.2f} |", flush=True)


if __name__ == "__main__":
    main()
