"""Archive files to Arrow tables of the matching rows; files that are not archive files are reported.

Only the needed columns are decoded, only the row groups whose ``timestamp``
statistics overlap the range, and the filter runs on the decoded columns
(:meth:`~query.filters.Filters.mask`) once per batch of files. Every file is
brought to one form on read: ``timestamp`` the exact time in nanoseconds
(schema v2's microseconds joined with ``timestamp_nanos``,
:func:`archiver.archive.timestamps.with_exact_time`), ``region`` the file's
column (v2) or its key's (v1), and the app from the key.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq

from archiver.archive import schema
from archiver.archive.layout import NS_PER_HOUR
from archiver.archive.navigator import ArchiveFile
from archiver.archive.timestamps import row_group_spans, with_exact_time
from archiver.errors import BadFileError
from query import kernels as pc  # not pyarrow.compute: see query.kernels
from query.day_footers import DayFooters
from query.filters import Filters

#: Columns of every output row: the exact time, the app from the key, the region, the other file columns.
OUTPUT_SCHEMA = pa.schema(
    [
        pa.field(schema.TIMESTAMP, schema.NS_TIMESTAMP_TYPE),
        pa.field(schema.APP, pa.string()),
        pa.field(schema.REGION, pa.string()),
        *(schema.FILE_SCHEMA.field(name) for name in schema.V1_COLUMNS if name != schema.TIMESTAMP),
    ]
)
VANISHED = "it vanished after listing (compacted or deleted)"
_REE_STRING = pa.run_end_encoded(pa.int32(), pa.string())


@dataclass(frozen=True, slots=True)
class FileScan:
    """How to read each file of one hour: the output columns and the query's filters."""

    columns: tuple[str, ...]
    filters: Filters
    hour_ns: int


def _nanos_ok(file_schema: pa.Schema) -> bool:
    names = file_schema.names
    return schema.TIMESTAMP_NANOS not in names or pa.types.is_integer(
        file_schema.field(schema.TIMESTAMP_NANOS).type
    )


def check_schema(file_schema: pa.Schema, columns: Sequence[str]) -> None:
    """BadFileError unless the file has a timestamp column and string-typed ``columns`` where present."""
    names = file_schema.names
    if schema.TIMESTAMP not in names or not pa.types.is_timestamp(file_schema.field(schema.TIMESTAMP).type):
        raise BadFileError("not an archive file (no timestamp column)")
    if not _nanos_ok(file_schema):
        raise BadFileError(f"not an archive file (column {schema.TIMESTAMP_NANOS} is not an integer)")
    for name in columns:
        if name in names and name not in (schema.TIMESTAMP, schema.TIMESTAMP_NANOS):
            kind = file_schema.field(name).type
            if not (
                pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind)
            ):
                raise BadFileError(f"not an archive file (column {name} is {kind})")


def row_groups_in_range(
    metadata: pq.FileMetaData, file_schema: pa.Schema, since: int | None, until: int | None
) -> tuple[list[int], bool]:
    """The row groups whose ``timestamp`` statistics overlap ``[since, until)`` (None: open), and whether
    every row of them lies inside it (from the statistics alone: False when they cannot tell)."""
    if since is None and until is None:
        return list(range(metadata.num_row_groups)), True
    keep = []
    inside = True
    for i, span in enumerate(row_group_spans(metadata, file_schema)):
        if span is None:
            keep.append(i)
            inside = False
            continue
        low, high = span
        if (since is not None and high < since) or (until is not None and low >= until):
            continue
        keep.append(i)
        inside = inside and (since is None or low >= since) and (until is None or high < until)
    return keep, inside


def _row_groups(
    pf: pq.ParquetFile,
    scan: FileScan,
    file_schema: pa.Schema | None = None,
    hour: tuple[int, int] | None = None,
) -> list[int]:
    since, until = scan.filters.time_bounds(scan.hour_ns) if hour is None else hour
    return row_groups_in_range(pf.metadata, file_schema or pf.schema_arrow, since, until)[0]


def _target(columns: Sequence[str]) -> pa.Schema:
    # Columns and types every file's table is brought to before a batch is concatenated.
    return pa.schema([OUTPUT_SCHEMA.field(n) for n in dict.fromkeys(columns)])


def _read(
    pf: pq.ParquetFile, names: list[str], groups: list[int], columns: list[str], region: str | None
) -> pa.Table:
    """Row groups' columns, in the one form: exact time, and the key's region for a v1 file."""
    present = [n for n in columns if n in names]
    if schema.TIMESTAMP in present and schema.TIMESTAMP_NANOS in names:
        present.append(schema.TIMESTAMP_NANOS)
    table = pf.read_row_groups(groups, columns=present, use_threads=False)
    if schema.TIMESTAMP in present:
        table = with_exact_time(table)
    if schema.REGION in columns and schema.REGION not in names and region is not None:
        table = table.append_column(schema.REGION, pa.repeat(pa.scalar(region, pa.string()), table.num_rows))
    return table


def _normalize(table: pa.Table, target: pa.Schema) -> pa.Table:
    if table.schema.equals(target):
        return table
    # A readable file that is not byte-for-byte the form (another writer, a column's order): cast, fill nulls.
    arrays = [
        pc.cast(table[f.name], f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in target
    ]
    return pa.Table.from_arrays(arrays, schema=target.remove_metadata())


def read_file(
    source: str | pa.Buffer,
    scan: FileScan,
    filesystem: pa.fs.FileSystem | None,
    region: str | None = None,
    length_ns: int = NS_PER_HOUR,
    footers: DayFooters | None = None,
) -> pa.Table:
    """The needed and filter columns of one file's row groups in range (not yet filtered).

    ``region``: a v1 file's, from its key (a v2 file holds the column). A day file (``length_ns``
    a day) gives only its rows of the scanned hour in range (the other filters are not applied yet); its
    footer is parsed once per query when ``footers`` keeps it.
    """
    hour = scan.filters.hour_window(scan.hour_ns) if length_ns > NS_PER_HOUR else None
    if isinstance(source, pa.Buffer):
        pf = pq.ParquetFile(pa.BufferReader(source))
    elif hour is not None:  # a day file, read once per hour: that hour's row groups only
        fs = filesystem or pa.fs.LocalFileSystem()
        # Pre-buffering coalesces S3's ranged reads; on a local file its asynchronous reads cost more than
        # they save (a day file's 24 column chunks: 2.5 ms against 1.1 ms).
        remote = fs.type_name != "local"
        day_file = source

        def opener(known: pq.FileMetaData | None) -> pq.ParquetFile:
            return pq.ParquetFile(fs.open_input_file(day_file), metadata=known, pre_buffer=remote)

        pf = footers.open(source, opener) if footers is not None else opener(None)
    else:
        # One read of the whole (small) file, then decoding from memory: measured
        # 0.30 ms per hourly file against 0.42 ms letting Parquet read each column chunk.
        with (filesystem or pa.fs.LocalFileSystem()).open_input_file(source) as f:
            pf = pq.ParquetFile(pa.BufferReader(f.read_buffer()))
    file_schema = pf.schema_arrow  # built anew on each access: once per file
    names = file_schema.names
    check_schema(file_schema, [*scan.columns, schema.REGION])
    groups = _row_groups(pf, scan, file_schema, hour)
    filters = scan.filters
    wanted = list(dict.fromkeys([*filters.filter_columns(), *scan.columns, schema.REGION]))
    first = list(filters.filter_columns())
    rest = [n for n in wanted if n not in first]
    target = _target(wanted)
    if filters.selective() and schema.MESSAGE not in first and rest:
        # Late materialisation for region/level/instance filters: the message column, the bulk
        # of a file, is decoded only if something in the file matched.
        table = _read(pf, names, groups, first, region)
        mask = filters.mask(table, scan.hour_ns)
        if mask is not None and not pc.any(mask).as_py():
            return _normalize(table.slice(0, 0), target)
        others = _read(pf, names, groups, rest, region)
        for name in others.column_names:
            table = table.append_column(others.schema.field(name), others[name])
    else:
        table = _read(pf, names, groups, first + rest, region)
    if hour is not None:
        table = pc.filter(table, Filters.between(table, *hour))
    return _normalize(table.replace_schema_metadata(None), target)


@dataclass(slots=True)
class Batch:
    """The matching rows of several files of one hour, and the files skipped."""

    table: pa.Table
    read: list[ArchiveFile]
    skipped: list[tuple[ArchiveFile, BadFileError]]


def decode_files(
    items: Sequence[tuple[str | pa.Buffer | BadFileError, ArchiveFile]],
    scan: FileScan,
    filesystem: pa.fs.FileSystem | None = None,
    footers: DayFooters | None = None,
) -> Batch:
    """Several files of one hour, filtered as one table (``source`` is bytes or a local path).

    Filtering and adding app/region once per batch instead of once per file
    halves the Python work per file, which is what limits a scan of many small files.
    """
    batch = Batch(empty_table(scan.columns), [], [])
    tables = []
    for source, planned in items:
        try:
            if isinstance(source, BadFileError):
                raise source
            tables.append(read_file(source, scan, filesystem, planned.region, planned.length_ns, footers))
            batch.read.append(planned)
        except BadFileError as exc:
            batch.skipped.append((planned, exc))
        except FileNotFoundError:
            batch.skipped.append((planned, BadFileError(VANISHED)))
        except (pa.ArrowException, OSError, ValueError) as exc:
            # Bytes in memory or a local file: every failure here is the file's content.
            batch.skipped.append((planned, BadFileError(str(exc).splitlines()[0])))
    if not tables:
        return batch
    table = pa.concat_tables(tables)
    # The app, constant per file: run-end encoded, then decoded in one call.
    runs = [(t.num_rows, f) for t, f in zip(tables, batch.read, strict=True) if t.num_rows]
    ends = pa.array(itertools.accumulate(n for n, _ in runs), pa.int32())
    column = values = pa.array([f.app for _, f in runs], pa.string())
    if runs:
        # from_buffers, not from_arrays: that one infers a scalar's type for the length,
        # which imports dateutil (6 ms) on the first call of a process.
        ree = pa.RunEndEncodedArray.from_buffers(_REE_STRING, len(table), [None], 0, 0, [ends, values])
        column = pc.run_end_decode(ree)
    table = table.append_column(schema.APP, column)
    mask = scan.filters.mask(table, scan.hour_ns)
    if mask is not None:
        table = pc.filter(table, mask)
    keep = {*scan.columns, schema.APP, schema.REGION}
    batch.table = pc.conform(
        table.select([f.name for f in OUTPUT_SCHEMA if f.name in keep]),
        pa.schema([f for f in OUTPUT_SCHEMA if f.name in keep]),
    )
    return batch


def footer_summary(
    source: str | pa.Buffer, size: int, filesystem: pa.fs.FileSystem | None
) -> tuple[int, tuple[str, ...] | None]:
    """Rows of one archive file from its footer, and its regions (None: a v1 file, whose key has it).

    The regions come from the ``region`` statistics when every row group holds
    one (a live file); otherwise that column alone is read. BadFileError when
    the file is not an archive file.
    """
    import pyarrow.dataset as ds  # only ls needs it: not imported for queries

    try:
        if isinstance(source, pa.Buffer):
            fragment = ds.ParquetFileFormat().make_fragment(pa.BufferReader(source))
        else:
            # A fragment with a known size reads just the footer: one ranged GET on S3, no HEAD.
            fragment = ds.ParquetFileFormat().make_fragment(source, filesystem=filesystem, file_size=size)
        metadata = fragment.metadata
        file_schema = metadata.schema.to_arrow_schema()
        check_schema(file_schema, [*schema.V1_COLUMNS, schema.REGION])
        rows = int(metadata.num_rows)
        if schema.REGION not in file_schema.names:
            return rows, None
        index = file_schema.get_field_index(schema.REGION)
        found = set()
        for i in range(metadata.num_row_groups):
            stats = metadata.row_group(i).column(index).statistics
            if stats is None or not stats.has_min_max or stats.min != stats.max or stats.null_count:
                column = fragment.to_table(columns=[schema.REGION]).column(0)
                return rows, tuple(sorted(v for v in column.unique().to_pylist() if v is not None))
            found.add(stats.min)
        return rows, tuple(sorted(found))
    except BadFileError:
        raise
    except FileNotFoundError:
        raise BadFileError(VANISHED) from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BadFileError(str(exc).splitlines()[0]) from None


def empty_table(columns: Sequence[str]) -> pa.Table:
    """No rows, with the columns a scan of ``columns`` yields."""
    keep = {*columns, schema.APP, schema.REGION}
    return pa.schema([f for f in OUTPUT_SCHEMA if f.name in keep]).empty_table()
