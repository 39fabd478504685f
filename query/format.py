"""Output formats of ``archiver query``: text (the ``fly logs`` layout), json, csv and parquet.

Every writer takes Arrow tables in time order and writes them to a binary
stream as they come. Text and csv are built column-wise in C++ (no Python
per row); json rebuilds each original Fly message, which is per row by nature.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol

import orjson
import pyarrow as pa

from archiver.archive import schema
from archiver.archive.message import rebuild_message
from archiver.archive.timestamps import split_ns
from archiver.errors import UsageError
from query import kernels as pc  # not pyarrow.compute: see query.kernels
from query.decode import OUTPUT_SCHEMA

FORMATS = ("text", "json", "csv", "parquet")
#: File columns each format needs (app and region always come along; ``timestamp`` is the exact time).
_ALL_COLUMNS = schema.V1_COLUMNS
COLUMNS: dict[str, tuple[str, ...]] = {
    "text": (schema.TIMESTAMP, schema.PROVIDER, schema.INSTANCE, schema.LEVEL, schema.MESSAGE),
    "json": _ALL_COLUMNS,
    "csv": _ALL_COLUMNS,
    "parquet": _ALL_COLUMNS,
}


class Writer(Protocol):
    """Writes query results in one format."""

    def write(self, table: pa.Table) -> None:
        """Write rows (in time order)."""

    def close(self) -> None:
        """Finish the output (footer, flush)."""


def check_format(name: str) -> str:
    """The format name, lower-cased; UsageError when unknown."""
    lowered = name.lower()
    if lowered not in FORMATS:
        raise UsageError(f"--format: expected one of {', '.join(FORMATS)}, got {name!r}")
    return lowered


def timestamp_text(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """RFC 3339 UTC text with nanoseconds, as Fly writes it: ``2026-11-24T13:04:05.123456789Z``."""
    # A UTC timestamp cast to a naive one keeps its value, and naive timestamps cast to text as
    # "2026-11-24 13:04:05.123456789": 0.5 ms for 7,000 rows against 20 ms for strftime with the
    # time zone (same text over the whole int64 range, nulls included: tests/test_query_kernels.py).
    text = pc.cast(pc.cast(column, pa.timestamp(column.type.unit)), pa.string())
    return pc.binary_join_element_wise(
        pc.utf8_replace_slice(text, 10, 11, "T"), "Z", "", null_replacement=None
    )


def _write_string_array(stream: BinaryIO, array: pa.StringArray) -> None:
    # The values of a string array are contiguous UTF-8: write the buffer span, no per-row copy.
    if len(array) == 0:
        return
    _, offset_buffer, data = array.buffers()
    offsets = pa.Array.from_buffers(pa.int32(), len(array) + 1, [None, offset_buffer], offset=array.offset)
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    if data is not None:
        stream.write(memoryview(data)[start:end])


class TextWriter:
    """``2026-11-24T13:04:05.123456789Z app[148ed726c12358] dfw [info] GET / 200``, one line per log."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def write(self, table: pa.Table) -> None:
        """Write rows as fly-logs lines."""
        lines = pc.binary_join_element_wise(
            timestamp_text(table[schema.TIMESTAMP]),
            " ",
            table[schema.PROVIDER],
            "[",
            table[schema.INSTANCE],
            "] ",
            table[schema.REGION],
            " [",
            table[schema.LEVEL],
            "] ",
            table[schema.MESSAGE],
            "\n",
            "",  # the separator
        )
        for chunk in lines.chunks:
            _write_string_array(self.stream, chunk)

    def close(self) -> None:
        """Flush."""
        self.stream.flush()


class JsonWriter:
    """One original Fly message per line, nested as Fly sent it, extra fields included."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def write(self, table: pa.Table) -> None:
        """Write rows as JSON lines."""
        # Integer nanoseconds: to_pylist would turn timestamps into microsecond datetimes.
        index = table.schema.get_field_index(schema.TIMESTAMP)
        rows = table.set_column(
            index, schema.TIMESTAMP, pc.cast(table[schema.TIMESTAMP], pa.int64())
        ).to_pylist()
        out = bytearray()
        for row in rows:
            out += orjson.dumps(rebuild_message(row, row[schema.APP], row[schema.REGION]))
            out += b"\n"
        self.stream.write(out)

    def close(self) -> None:
        """Flush."""
        self.stream.flush()


def _flat(table: pa.Table) -> pa.Table:
    return table.select([f.name for f in OUTPUT_SCHEMA])


class CsvWriter:
    """Flat columns with a header; timestamps as RFC 3339 text; empty strings quoted, nulls empty."""

    def __init__(self, stream: BinaryIO) -> None:
        import pyarrow.csv as csv

        self._csv = csv
        self.stream = stream
        self.writer: pa.csv.CSVWriter | None = None

    def write(self, table: pa.Table) -> None:
        """Write rows as CSV."""
        flat = _flat(table)
        flat = flat.set_column(0, schema.TIMESTAMP, timestamp_text(flat[schema.TIMESTAMP]))
        if self.writer is None:
            # all_valid quotes every non-null value, so "" (empty) and nothing (null) stay distinct.
            options = self._csv.WriteOptions(quoting_style="all_valid")
            self.writer = self._csv.CSVWriter(self.stream, flat.schema, write_options=options)
        self.writer.write_table(flat)

    def close(self) -> None:
        """Finish (a header only when no rows came)."""
        if self.writer is None:
            empty = _flat(OUTPUT_SCHEMA.empty_table())
            self.write(empty)
        assert self.writer is not None
        self.writer.close()
        self.stream.flush()


#: What ``--format parquet`` writes: the archive's time columns (µs ``timestamp`` + ``timestamp_nanos``,
#: which every engine reads), then app, region and the other columns.
PARQUET_SCHEMA = pa.schema(
    [
        schema.FILE_SCHEMA.field(schema.TIMESTAMP).with_nullable(True),
        schema.FILE_SCHEMA.field(schema.TIMESTAMP_NANOS).with_nullable(True),
        *(f for f in OUTPUT_SCHEMA if f.name != schema.TIMESTAMP),
    ]
)


class ParquetWriter:
    """Flat columns, zstd, the archive's column types (time as in schema v2) plus app and region."""

    def __init__(self, stream: BinaryIO) -> None:
        import pyarrow.parquet as pq

        self.writer = pq.ParquetWriter(stream, PARQUET_SCHEMA, compression="zstd")
        self.stream = stream

    def write(self, table: pa.Table) -> None:
        """Write rows as a row group."""
        flat = pc.conform(_flat(table), OUTPUT_SCHEMA)
        micros, nanos = split_ns(flat[schema.TIMESTAMP])
        columns = [micros, nanos, *flat.columns[1:]]
        self.writer.write_table(pa.Table.from_arrays(columns, schema=PARQUET_SCHEMA))

    def close(self) -> None:
        """Write the footer."""
        self.writer.close()
        self.stream.flush()


def make_writer(name: str, stream: BinaryIO) -> Writer:
    """A writer of format ``name`` on ``stream``."""
    writers: dict[str, type[TextWriter | JsonWriter | CsvWriter | ParquetWriter]] = {
        "text": TextWriter,
        "json": JsonWriter,
        "csv": CsvWriter,
        "parquet": ParquetWriter,
    }
    return writers[check_format(name)](stream)
