"""Reading planned files: pushed-down filters, per-file skipping of bad files, hours merged in time order.

Each file is one Parquet fragment read with only the needed columns and a
filter Arrow evaluates while decoding: the timestamp range (row groups outside
it are skipped by their statistics), levels, instances, and ``--contains`` /
``--grep`` on the message (``match_substring`` / ``match_substring_regex``).
Files are read one fragment at a time so a corrupt or foreign file is skipped
with a warning instead of failing the whole scan. The files of an hour come
back sorted by timestamp each; the hour is merged in C++ (see :func:`merge_hour`)
and hours are yielded in time order (or newest first), a few hours read ahead.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs

from archiver import schema
from archiver.errors import ObjectNotFoundError, UsageError
from archiver.layout import NS_PER_HOUR
from archiver.storage import Storage
from query.plan import HourFiles, PlannedFile

#: Columns of every output row: the file columns plus the partition values from the key.
OUTPUT_SCHEMA = pa.schema(
    [
        schema.FILE_SCHEMA.field(schema.TIMESTAMP).with_nullable(True),
        pa.field(schema.APP, pa.string()),
        pa.field(schema.REGION, pa.string()),
        *(schema.FILE_SCHEMA.field(name) for name in schema.FILE_SCHEMA.names if name != schema.TIMESTAMP),
    ]
)
#: Hours scanned ahead of the one being printed: enough to hide latency, little memory.
READ_AHEAD_HOURS = 2
_FORMAT = ds.ParquetFileFormat()


@dataclass(frozen=True, slots=True)
class Filters:
    """Row filters of a query (apps and regions are applied when planning)."""

    since_ns: int
    until_ns: int
    levels: tuple[str, ...] = ()
    instances: tuple[str, ...] = ()
    contains: str | None = None
    grep: str | None = None
    ignore_case: bool = False

    def expression(self, hour_ns: int) -> ds.Expression | None:
        """The Arrow filter for the files of one hour (no timestamp test for hours wholly inside)."""
        parts: list[ds.Expression] = []
        if hour_ns < self.since_ns:
            parts.append(pc.field(schema.TIMESTAMP) >= pa.scalar(self.since_ns, schema.TIMESTAMP_TYPE))
        if hour_ns + NS_PER_HOUR > self.until_ns:
            parts.append(pc.field(schema.TIMESTAMP) < pa.scalar(self.until_ns, schema.TIMESTAMP_TYPE))
        if self.levels:
            # Apps write INFO, info or Info: levels compare case-insensitively.
            parts.append(pc.utf8_lower(pc.field(schema.LEVEL)).isin([level.lower() for level in self.levels]))
        if self.instances:
            parts.append(pc.field(schema.INSTANCE).isin(list(self.instances)))
        message = pc.field(schema.MESSAGE)
        if self.contains is not None:
            parts.append(pc.match_substring(message, self.contains, ignore_case=self.ignore_case))
        if self.grep is not None:
            parts.append(pc.match_substring_regex(message, self.grep, ignore_case=self.ignore_case))
        if not parts:
            return None
        combined = parts[0]
        for part in parts[1:]:
            combined = combined & part
        return combined


def check_regex(pattern: str) -> None:
    """Raise UsageError unless ``pattern`` is a valid RE2 regular expression (what Arrow and DuckDB use)."""
    try:
        pc.match_substring_regex(pa.array([""]), pattern)
    except pa.ArrowInvalid as exc:
        reason = str(exc).split(":", 1)[-1].strip()
        raise UsageError(f"--grep: invalid regular expression {pattern!r}: {reason}") from None


@dataclass(slots=True)
class ScanStats:
    """What a scan has read so far, for the progress line and the final note."""

    hours: int = 0
    files: int = 0
    bytes: int = 0
    rows: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)


class BadFileError(Exception):
    """A file that cannot be read as an archive file; it is skipped with a warning."""


def _check_schema(file_schema: pa.Schema, columns: Sequence[str]) -> None:
    ts = file_schema.field(schema.TIMESTAMP) if schema.TIMESTAMP in file_schema.names else None
    if ts is None or not pa.types.is_timestamp(ts.type):
        raise BadFileError("not an archive file (no timestamp column)")
    for name in columns:
        if name in file_schema.names and name != schema.TIMESTAMP:
            kind = file_schema.field(name).type
            if not (
                pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind)
            ):
                raise BadFileError(f"not an archive file (column {name} is {kind})")


def decode_file(
    source: str | pa.Buffer,
    planned: PlannedFile,
    columns: Sequence[str],
    expression: ds.Expression | None,
    filesystem: pa.fs.FileSystem | None = None,
) -> pa.Table:
    """One file's matching rows as OUTPUT_SCHEMA columns; BadFileError when it is no readable archive file."""
    try:
        if filesystem is None:
            fragment = _FORMAT.make_fragment(pa.BufferReader(source))
        else:
            fragment = _FORMAT.make_fragment(source, filesystem=filesystem, file_size=planned.size)
        physical = fragment.physical_schema
        _check_schema(physical, columns)
        present = [name for name in columns if name in physical.names]
        table = fragment.to_table(columns=present, filter=expression, use_threads=False)
    except BadFileError:
        raise
    except FileNotFoundError:
        raise BadFileError("it vanished after listing (compacted or deleted)") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        # For a local file or an in-memory buffer every failure here is the file's content.
        raise BadFileError(str(exc).splitlines()[0]) from None
    return _conform(table, planned, columns)


def _footer_rows(source: str | pa.Buffer, size: int, filesystem: pa.fs.FileSystem | None) -> int:
    try:
        if filesystem is None:
            fragment = _FORMAT.make_fragment(pa.BufferReader(source))
        else:
            # A fragment with a known size reads just the footer: no HEAD request on S3.
            fragment = _FORMAT.make_fragment(source, filesystem=filesystem, file_size=size)
        return int(fragment.metadata.num_rows)
    except FileNotFoundError:
        raise BadFileError("it vanished after listing (compacted or deleted)") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BadFileError(str(exc).splitlines()[0]) from None


def _conform(table: pa.Table, planned: PlannedFile, columns: Sequence[str]) -> pa.Table:
    rows = table.num_rows
    arrays: list[pa.Array | pa.ChunkedArray] = []
    names: list[str] = []
    for out_field in OUTPUT_SCHEMA:
        name = out_field.name
        if name == schema.APP:
            arrays.append(pa.repeat(pa.scalar(planned.app, pa.string()), rows))
        elif name == schema.REGION:
            arrays.append(pa.repeat(pa.scalar(planned.region, pa.string()), rows))
        elif name not in columns:
            continue
        elif name in table.column_names:
            arrays.append(table[name].cast(out_field.type))
        else:
            arrays.append(pa.nulls(rows, out_field.type))
        names.append(name)
    return pa.Table.from_arrays(arrays, schema=pa.schema([OUTPUT_SCHEMA.field(n) for n in names]))


def merge_hour(tables: Sequence[pa.Table]) -> pa.Table:
    """Merge files of one hour, each sorted by timestamp, into one table in time order.

    Files that do not overlap (one app's consecutive flushes) are just
    concatenated in order. Overlapping ones are merged with Arrow's stable
    sort in C++, which keeps equal timestamps in file order; a Python heap
    merge over rows would be two orders of magnitude slower.
    """
    nonempty = [t for t in tables if t.num_rows]
    if not nonempty:
        return tables[0].slice(0, 0) if tables else pa.table({})
    if len(nonempty) == 1:
        return nonempty[0]
    spans = [(t[schema.TIMESTAMP][0].value, t[schema.TIMESTAMP][-1].value, i) for i, t in enumerate(nonempty)]
    ordered = sorted(spans)
    if all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(ordered)):
        return pa.concat_tables([nonempty[i] for _, _, i in ordered])
    merged = pa.concat_tables(nonempty)
    return merged.take(pc.sort_indices(merged, sort_keys=[(schema.TIMESTAMP, "ascending")]))


Warn = Callable[[str], None]


class Reader:
    """Reads planned files: through a pyarrow filesystem, or by fetching whole objects from Storage."""

    def __init__(
        self,
        storage: Storage,
        filesystem: pa.fs.FileSystem | None = None,
        base_path: str = "",
        *,
        threads: int = 8,
        fetch_concurrency: int = 32,
    ) -> None:
        self.storage = storage
        self.filesystem = filesystem
        self.base_path = base_path.rstrip("/")
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="scan")
        self.fetches = asyncio.Semaphore(fetch_concurrency)

    async def read(
        self, planned: PlannedFile, columns: Sequence[str], expression: ds.Expression | None
    ) -> pa.Table:
        """One file's matching rows; BadFileError to skip it, StorageError when the archive fails."""
        loop = asyncio.get_running_loop()
        if self.filesystem is not None:
            path = f"{self.base_path}/{planned.key}" if self.base_path else planned.key
            return await loop.run_in_executor(
                self.pool, decode_file, path, planned, columns, expression, self.filesystem
            )
        async with self.fetches:
            try:
                data = await self.storage.get(planned.key)
            except ObjectNotFoundError:
                raise BadFileError("it vanished after listing (compacted or deleted)") from None
        return await loop.run_in_executor(
            self.pool, decode_file, pa.py_buffer(data), planned, columns, expression, None
        )

    async def row_count(self, planned: PlannedFile) -> int:
        """Rows in one file, from its Parquet footer; BadFileError when it is not Parquet."""
        loop = asyncio.get_running_loop()
        if self.filesystem is not None:
            path = f"{self.base_path}/{planned.key}" if self.base_path else planned.key
            return await loop.run_in_executor(self.pool, _footer_rows, path, planned.size, self.filesystem)
        async with self.fetches:
            try:
                data = await self.storage.get(planned.key)
            except ObjectNotFoundError:
                raise BadFileError("it vanished after listing (compacted or deleted)") from None
        return await loop.run_in_executor(self.pool, _footer_rows, pa.py_buffer(data), planned.size, None)

    def close(self) -> None:
        """Stop the decoding threads."""
        self.pool.shutdown(wait=False, cancel_futures=True)


async def _read_hour(
    reader: Reader,
    group: HourFiles,
    columns: Sequence[str],
    filters: Filters,
    stats: ScanStats,
    warn: Warn,
) -> pa.Table:
    expression = filters.expression(group.hour_ns)

    async def one(planned: PlannedFile) -> pa.Table | None:
        try:
            table = await reader.read(planned, columns, expression)
        except BadFileError as exc:
            stats.skipped += 1
            warn(f"warning: skipped {planned.key}: {exc}")
            return None
        stats.files += 1
        stats.bytes += planned.size
        return table

    results = await asyncio.gather(*(one(f) for f in group.files))
    stats.hours += 1
    tables = [t for t in results if t is not None]
    merged = merge_hour(tables) if tables else _empty(columns)
    stats.rows += merged.num_rows
    return merged


def _empty(columns: Sequence[str]) -> pa.Table:
    fields = [f for f in OUTPUT_SCHEMA if f.name in columns or f.name in (schema.APP, schema.REGION)]
    return pa.schema(fields).empty_table()


async def scan_hours(
    reader: Reader,
    hours: AsyncIterator[HourFiles],
    columns: Sequence[str],
    filters: Filters,
    stats: ScanStats,
    warn: Warn,
    read_ahead: int = READ_AHEAD_HOURS,
) -> AsyncGenerator[pa.Table, None]:
    """Matching rows hour by hour, in the order ``hours`` yields them, each hour in time order."""
    wanted = list(dict.fromkeys([schema.TIMESTAMP, *columns]))
    in_flight: deque[asyncio.Task[pa.Table]] = deque()
    exhausted = False
    try:
        while True:
            while not exhausted and len(in_flight) <= read_ahead:
                group = await anext(hours, None)
                if group is None:
                    exhausted = True
                    break
                in_flight.append(
                    asyncio.ensure_future(_read_hour(reader, group, wanted, filters, stats, warn))
                )
            if not in_flight:
                return
            table = await in_flight.popleft()
            if table.num_rows:
                yield table
    finally:
        for task in in_flight:
            task.cancel()
