"""One archive file to an Arrow table of the matching rows, or BadFileError when it is not one.

Only the needed columns are decoded, only the row groups whose ``timestamp``
statistics overlap the range, and the filter runs on the decoded columns
(:meth:`~query.filters.Filters.mask`). The partition values app and region
come from the key and are added as columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs
import pyarrow.parquet as pq

from archiver import schema
from query.filters import Filters
from query.plan import PlannedFile

#: Columns of every output row: the file columns plus the partition values from the key.
OUTPUT_SCHEMA = pa.schema(
    [
        schema.FILE_SCHEMA.field(schema.TIMESTAMP).with_nullable(True),
        pa.field(schema.APP, pa.string()),
        pa.field(schema.REGION, pa.string()),
        *(schema.FILE_SCHEMA.field(name) for name in schema.FILE_SCHEMA.names if name != schema.TIMESTAMP),
    ]
)
VANISHED = "it vanished after listing (compacted or deleted)"
_FORMAT = ds.ParquetFileFormat()


class BadFileError(Exception):
    """A file that cannot be read as an archive file; it is skipped with a warning."""


@dataclass(frozen=True, slots=True)
class FileScan:
    """How to read each file of one hour: the output columns and the query's filters."""

    columns: tuple[str, ...]
    filters: Filters
    hour_ns: int


def check_schema(file_schema: pa.Schema, columns: Sequence[str]) -> None:
    """BadFileError unless the file has a timestamp column and string-typed ``columns`` where present."""
    names = file_schema.names
    if schema.TIMESTAMP not in names or not pa.types.is_timestamp(file_schema.field(schema.TIMESTAMP).type):
        raise BadFileError("not an archive file (no timestamp column)")
    for name in columns:
        if name in names and name != schema.TIMESTAMP:
            kind = file_schema.field(name).type
            if not (
                pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind)
            ):
                raise BadFileError(f"not an archive file (column {name} is {kind})")


def _row_groups(pf: pq.ParquetFile, scan: FileScan) -> list[int]:
    every = list(range(pf.metadata.num_row_groups))
    since, until = scan.filters.time_bounds(scan.hour_ns)
    if (since is None and until is None) or pf.schema_arrow.field(schema.TIMESTAMP).type.unit != "ns":
        return every
    index = pf.schema_arrow.get_field_index(schema.TIMESTAMP)
    keep = []
    for i in every:
        stats = pf.metadata.row_group(i).column(index).statistics
        # Raw INT64 values are the nanoseconds (as_py would round to microseconds).
        low, high = (
            (stats.min_raw, stats.max_raw) if stats is not None and stats.has_min_max else (None, None)
        )
        if (since is not None and high is not None and high < since) or (
            until is not None and low is not None and low >= until
        ):
            continue
        keep.append(i)
    return keep


def _decode(pf: pq.ParquetFile, planned: PlannedFile, scan: FileScan) -> pa.Table:
    names = pf.schema_arrow.names
    check_schema(pf.schema_arrow, scan.columns)
    groups = _row_groups(pf, scan)
    filters = scan.filters
    first = [n for n in filters.filter_columns() if n in names]
    rest = [n for n in scan.columns if n in names and n not in first]
    if not filters.selective() or schema.MESSAGE in first:
        table = pf.read_row_groups(groups, columns=first + rest, use_threads=False)
        mask = filters.mask(table, scan.hour_ns)
        return _conform(table if mask is None else table.filter(mask), planned, scan.columns)
    # Late materialisation for level/instance filters: the message column, the bulk
    # of every file, is decoded only for files where something matched. (With a grep
    # the message is read first anyway and the rest is small: a second read costs more.)
    table = pf.read_row_groups(groups, columns=first, use_threads=False)
    mask = filters.mask(table, scan.hour_ns)
    if mask is None or not pc.any(mask).as_py():
        return _conform(table.slice(0, 0), planned, scan.columns)
    if rest:
        others = pf.read_row_groups(groups, columns=rest, use_threads=False)
        for name in rest:
            table = table.append_column(others.schema.field(name), others[name])
    return _conform(table.filter(mask), planned, scan.columns)


def decode_file(
    source: str | pa.Buffer,
    planned: PlannedFile,
    scan: FileScan,
    filesystem: pa.fs.FileSystem | None = None,
) -> pa.Table:
    """One file's matching rows as OUTPUT_SCHEMA columns; BadFileError when it is no readable archive file.

    ``source`` is the object's bytes, or a path on the local ``filesystem``.
    """
    try:
        if not isinstance(source, pa.Buffer):
            # One read of the whole (small) file, then decoding from memory: measured
            # 0.30 ms per hourly file against 0.42 ms letting Parquet read each column chunk.
            with (filesystem or pa.fs.LocalFileSystem()).open_input_file(source) as f:
                source = f.read_buffer()
        return _decode(pq.ParquetFile(pa.BufferReader(source)), planned, scan)
    except BadFileError:
        raise
    except FileNotFoundError:
        raise BadFileError(VANISHED) from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        # Bytes in memory or a local file: every failure here is the file's content.
        raise BadFileError(str(exc).splitlines()[0]) from None


def decode_files(
    items: Sequence[tuple[str | pa.Buffer | BadFileError, PlannedFile]],
    scan: FileScan,
    filesystem: pa.fs.FileSystem | None = None,
) -> list[pa.Table | BadFileError]:
    """:func:`decode_file` over several files in one call (one thread job instead of one per file)."""
    out: list[pa.Table | BadFileError] = []
    for source, planned in items:
        if isinstance(source, BadFileError):
            out.append(source)
            continue
        try:
            out.append(decode_file(source, planned, scan, filesystem))
        except BadFileError as exc:
            out.append(exc)
    return out


def footer_rows(source: str | pa.Buffer, size: int, filesystem: pa.fs.FileSystem | None) -> int:
    """Rows of one archive file from its footer; BadFileError when it is not one."""
    try:
        if isinstance(source, pa.Buffer):
            fragment = _FORMAT.make_fragment(pa.BufferReader(source))
        else:
            # A fragment with a known size reads just the footer: one ranged GET on S3, no HEAD.
            fragment = _FORMAT.make_fragment(source, filesystem=filesystem, file_size=size)
        metadata = fragment.metadata
        check_schema(metadata.schema.to_arrow_schema(), schema.FILE_SCHEMA.names)
        return int(metadata.num_rows)
    except BadFileError:
        raise
    except FileNotFoundError:
        raise BadFileError(VANISHED) from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BadFileError(str(exc).splitlines()[0]) from None


def _conform(table: pa.Table, planned: PlannedFile, columns: Sequence[str]) -> pa.Table:
    rows = table.num_rows
    arrays: list[pa.Array | pa.ChunkedArray] = []
    fields: list[pa.Field] = []
    for out_field in OUTPUT_SCHEMA:
        name = out_field.name
        if name == schema.APP:
            arrays.append(pa.repeat(pa.scalar(planned.app, pa.string()), rows))
        elif name == schema.REGION:
            arrays.append(pa.repeat(pa.scalar(planned.region, pa.string()), rows))
        elif name not in columns:
            continue
        elif name in table.column_names:
            column = table[name]
            arrays.append(column if column.type == out_field.type else column.cast(out_field.type))
        else:
            arrays.append(pa.nulls(rows, out_field.type))
        fields.append(out_field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def empty_table(columns: Sequence[str]) -> pa.Table:
    """No rows, with the columns a scan of ``columns`` yields."""
    keep = {*columns, schema.APP, schema.REGION}
    return pa.schema([f for f in OUTPUT_SCHEMA if f.name in keep]).empty_table()
