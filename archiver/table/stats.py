"""Exact AddAction statistics from a Parquet file's footer: the one function that computes them.

Readers trust these numbers: DataFusion and ``DeltaTable.count()`` answer ``count(*)`` from
``numRecords``; deltalake's pyarrow dataset and Polars skip files by min/max ``timestamp``.
A wrong stat is a wrong answer, so every value here comes from the footer the writer wrote
(row-group statistics combined), and a value the footer does not state exactly is left out
(readers then treat it as unknown, which is always correct):

* ``numRecords``: the footer's row count;
* ``minValues``/``maxValues`` of ``timestamp`` (ISO 8601 with microseconds and ``Z``),
  ``timestamp_nanos`` and ``region``, only when every non-empty row group has them; a string
  min/max longer than :data:`MAX_EXACT_STRING_BYTES` is left out (a writer may truncate long
  string statistics, and a truncated max does not bound the column);
* ``nullCount`` of every data column, only when every row group states it.

The encoder and the compactor will pass the metadata of the file they just wrote; bootstrap
reads it from the stored file's footer.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import orjson

from archiver.errors import TableError
from archiver.table.files import TableFile
from archiver.table.schema import DATA_COLUMNS, MIN_MAX_COLUMNS, REGION, TIMESTAMP, TIMESTAMP_NANOS

if TYPE_CHECKING:
    import pyarrow.parquet as pq

#: Longer string statistics are not trusted to be exact (Parquet writers may truncate them).
MAX_EXACT_STRING_BYTES = 64

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def iso_microseconds(epoch_us: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` of a count of microseconds since the epoch (UTC)."""
    t = _EPOCH + dt.timedelta(microseconds=epoch_us)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}.{t.microsecond:06d}Z"


def _check_types(metadata: pq.FileMetaData, index: dict[str, int]) -> None:
    """TableError unless the file has schema v2's typed columns (a v1 file's ns timestamp cannot be added)."""
    missing = [name for name in (TIMESTAMP, TIMESTAMP_NANOS, REGION) if name not in index]
    if missing:
        raise TableError(f"not a schema v2 file: no column {', '.join(missing)}")
    timestamp = metadata.schema.column(index[TIMESTAMP]).logical_type.to_json()
    if '"timeUnit":"microseconds"' not in timestamp or '"isAdjustedToUTC":true' not in timestamp:
        raise TableError(f"not a schema v2 file: timestamp is {timestamp}, not UTC microseconds")


def _min_max(name: str, stats: Any) -> tuple[Any, Any] | None:
    """The row group's (min, max) of a min/max column as the stats JSON holds them, or None if not exact."""
    if name == TIMESTAMP:
        return iso_microseconds(stats.min_raw), iso_microseconds(stats.max_raw)
    if name == TIMESTAMP_NANOS:
        return int(stats.min_raw), int(stats.max_raw)
    low, high = stats.min_raw, stats.max_raw
    if len(low) > MAX_EXACT_STRING_BYTES or len(high) > MAX_EXACT_STRING_BYTES:
        return None
    return low.decode(), high.decode()


def file_stats(metadata: pq.FileMetaData) -> str:
    """The AddAction stats JSON of a schema v2 file, from its footer (exact values only; see module doc)."""
    index = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    _check_types(metadata, index)
    nulls: dict[str, int | None] = {name: 0 for name in DATA_COLUMNS if name in index}
    bounds: dict[str, tuple[Any, Any] | None] = {}
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        if group.num_rows == 0:
            continue
        for name in nulls:
            stats = group.column(index[name]).statistics
            count = nulls[name]
            if stats is None or not stats.has_null_count or count is None:
                nulls[name] = None
            else:
                nulls[name] = count + stats.null_count
            if name not in MIN_MAX_COLUMNS or (name in bounds and bounds[name] is None):
                continue
            if stats is None or not stats.has_min_max:
                # All-null in this group (min/max undefined) is fine for the others; anything else is unknown.
                all_null = stats is not None and stats.has_null_count and stats.null_count == group.num_rows
                if not all_null:
                    bounds[name] = None
                continue
            pair = _min_max(name, stats)
            seen = bounds.get(name)
            if pair is None:
                bounds[name] = None
            elif seen is None:
                bounds[name] = pair
            else:
                bounds[name] = (min(seen[0], pair[0]), max(seen[1], pair[1]))
    exact = {name: pair for name, pair in bounds.items() if pair is not None}
    doc = {
        "numRecords": metadata.num_rows,
        "minValues": {name: pair[0] for name, pair in exact.items()},
        "maxValues": {name: pair[1] for name, pair in exact.items()},
        "nullCount": {name: count for name, count in nulls.items() if count is not None},
    }
    return orjson.dumps(doc).decode()


def table_file(key: str, app: str, data: bytes, modification_time_ms: int) -> TableFile:
    """The TableFile of a v2 file about to be (or just) written as ``key``, from its bytes' footer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    date = key.split("/", 2)[1].removeprefix("date=")
    stats = file_stats(pq.read_metadata(pa.BufferReader(data)))
    return TableFile(key, len(data), app, date, stats, modification_time_ms)
