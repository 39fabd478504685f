"""Parquet encoding: the one place for writer options, and a batch turned into one file per UTC hour.

Every writer of archive files (live flushes and compaction) takes its options
from :func:`writer_options`, so all files share one layout: zstd, dictionaries
only on the low-cardinality columns (``region`` included), DELTA_BINARY_PACKED
microsecond timestamps sorted ascending (then by ``timestamp_nanos``), row-group
statistics on every column but the free text (min/max on ``timestamp`` is what
readers prune on), the Arrow schema stored, and the schema version in the
key-value metadata (it travels with :data:`~archiver.archive.schema.FILE_SCHEMA`,
which every file is written with).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from archiver.archive import schema
from archiver.archive.layout import hour_start_ns
from archiver.archive.timestamps import table_ns
from archiver.codec.parse import parse_batch
from archiver.codec.payloads import Payloads
from archiver.errors import EncodeError

#: Level for live flushes: zstd-3 costs little CPU on the hot path.
LIVE_COMPRESSION_LEVEL = 3
#: Level for compaction. Measured on the 20k LogHub lines as Fly messages, one file per app
#: (bytes/message; write CPU/row): gzip-6 JSON lines 29.9; zstd-3 22.7 B, ~0.6 us; zstd-9 20.1 B,
#: ~1.4 us; zstd-19 18.4 B, ~40-55 us. 9 is 11% smaller than 3; 19 saves 8% more but costs ~30x
#: the CPU of 9, which a compactor sharing a small machine with the live path cannot afford.
COMPACT_COMPRESSION_LEVEL = 9
#: Rows per row group (~45 MB of ~350-byte messages). 32Ki, 128Ki and 1Mi rows gave sizes within 1%
#: on 256k rows; groups this size still let min/max on timestamp skip parts of a compacted hour.
ROW_GROUP_SIZE = 128 * 1024
#: Target data page size, the unit zstd compresses: 64 KiB pages made files 13% bigger than 1 MiB.
DATA_PAGE_SIZE = 1024 * 1024
_NO_STATISTICS = (schema.MESSAGE, schema.EXTRA)


def writer_options(compression_level: int) -> dict[str, Any]:
    """Keyword arguments for ``pq.write_table``; :func:`open_writer` adapts them for ``ParquetWriter``."""
    return {
        "version": "2.6",  # the INT_16 logical type of timestamp_nanos (2.4 would write INT_32)
        "compression": "zstd",
        "compression_level": compression_level,
        "use_dictionary": list(schema.DICTIONARY_COLUMNS),
        # Sorted timestamps have small deltas. Random nanoseconds (0-999) too, for the bits they need: on
        # bench/query_speed.py's day (712k rows, random ns) 1.66 B/row in live files and 1.46 in compacted
        # ones, against 1.77/1.45 BYTE_STREAM_SPLIT, 2.27/1.90 plain, 2.99/2.20 dictionary; constant
        # ones cost nothing. Allowed because neither column is in use_dictionary.
        "column_encoding": {
            schema.TIMESTAMP: "DELTA_BINARY_PACKED",
            schema.TIMESTAMP_NANOS: "DELTA_BINARY_PACKED",
        },
        # min/max of free text prunes nothing and costs ~1% of a small file in page headers and footer.
        "write_statistics": [name for name in schema.FILE_SCHEMA.names if name not in _NO_STATISTICS],
        "row_group_size": ROW_GROUP_SIZE,
        "data_page_size": DATA_PAGE_SIZE,
        # Also what writes the schema metadata (the version key) into the Parquet key-value metadata.
        "store_schema": True,
    }


def open_writer(
    where: Any, compression_level: int, metadata: Mapping[bytes, bytes] | None = None
) -> pq.ParquetWriter:
    """A streaming writer with :func:`writer_options`; pass ``row_group_size=ROW_GROUP_SIZE`` to write_table.

    ``metadata`` adds key-value metadata to the schema version, as in :func:`write_parquet`.
    """
    options = writer_options(compression_level)
    del options["row_group_size"]  # a write_table argument, not a ParquetWriter one
    file_schema = schema.FILE_SCHEMA
    if metadata:
        file_schema = file_schema.with_metadata({**(file_schema.metadata or {}), **metadata})
    return pq.ParquetWriter(where, file_schema, **options)


@dataclass(frozen=True, slots=True)
class EncodedFile:
    """One Parquet file: the rows of one UTC hour, sorted by time; the exact first and last times."""

    hour_ns: int
    data: bytes
    rows: int
    min_timestamp_ns: int
    max_timestamp_ns: int


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """The files of one flushed (app, region) batch, its malformed count and raw payload bytes."""

    files: list[EncodedFile]
    malformed: int
    raw_bytes: int
    #: Malformed rows by kind and regular rows with a wrong-typed field (see ParsedBatch).
    malformed_kinds: dict[str, int] = field(default_factory=dict)
    wrong_type: int = 0


def write_parquet(
    table: pa.Table,
    compression_level: int = LIVE_COMPRESSION_LEVEL,
    metadata: Mapping[bytes, bytes] | None = None,
) -> bytes:
    """One Parquet file of ``table`` (schema v2, already sorted by time) with the archive's writer options.

    ``metadata`` adds key-value metadata (compaction records what a file replaces) to the schema version.
    """
    try:
        if not table.schema.equals(schema.FILE_SCHEMA, check_metadata=True):
            table = table.cast(schema.FILE_SCHEMA)
        if metadata:
            table = table.replace_schema_metadata({**(schema.FILE_SCHEMA.metadata or {}), **metadata})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, **writer_options(compression_level))
        return bytes(sink.getvalue().to_pybytes())
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise EncodeError(f"cannot write {table.num_rows} rows as Parquet: {exc}") from exc


def split_hours(table: pa.Table) -> list[tuple[int, pa.Table]]:
    """The rows of each UTC hour (start in ns), sorted by exact time (stable), hours ascending."""
    if table.num_rows == 0:
        return []
    stamps = table_ns(table)
    if not pc.all(pc.less_equal(stamps.slice(0, len(stamps) - 1), stamps.slice(1))).as_py():
        # sort_indices is stable: rows with equal times keep their arrival order.
        order = pc.sort_indices(stamps)
        table, stamps = table.take(order), stamps.take(order)
    first, last = hour_start_ns(stamps[0].as_py()), hour_start_ns(stamps[-1].as_py())
    if first == last:  # the common case: skip the per-row hour computation
        return [(first, table)]
    hours = pc.floor_temporal(stamps.cast(schema.NS_TIMESTAMP_TYPE), unit="hour").cast(pa.int64())
    runs = pc.run_end_encode(hours.combine_chunks() if isinstance(hours, pa.ChunkedArray) else hours)
    out: list[tuple[int, pa.Table]] = []
    start = 0
    for end, hour_ns in zip(runs.run_ends.to_pylist(), runs.values.to_pylist(), strict=True):
        out.append((hour_ns, table.slice(start, end - start)))
        start = end
    return out


def _ends_ns(rows: pa.Table) -> tuple[int, int]:
    """Exact times of the first and last row."""
    ends = table_ns(pa.concat_tables([rows.slice(0, 1), rows.slice(rows.num_rows - 1, 1)]))
    return int(ends[0].as_py()), int(ends[1].as_py())


def encode_partition(
    app: str,
    region: str,
    payloads: Payloads,
    received_ns: int,
    compression_level: int = LIVE_COMPRESSION_LEVEL,
    newest_ns: int | None = None,
) -> EncodedBatch:
    """Parse one (app, region) batch (see parse_batch) and encode it as one Parquet file per UTC hour."""
    try:
        parsed = parse_batch(app, region, payloads, received_ns, newest_ns)
        files = []
        for hour_ns, rows in split_hours(parsed.table):
            first_ns, last_ns = _ends_ns(rows)
            files.append(
                EncodedFile(
                    hour_ns=hour_ns,
                    data=write_parquet(rows, compression_level),
                    rows=rows.num_rows,
                    min_timestamp_ns=first_ns,
                    max_timestamp_ns=last_ns,
                )
            )
        return EncodedBatch(files, parsed.malformed, payloads.nbytes, parsed.malformed_kinds,
                            parsed.wrong_type)  # fmt: skip
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise EncodeError(f"cannot encode {len(payloads)} messages of app {app!r}: {exc}") from exc
