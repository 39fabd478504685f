"""Counting a whole hour without decoding its rows, where the count cannot depend on them.

When no filter looks at a row (no --region, --level, --instance, --contains,
--grep, --where), the buckets are whole hours (``--every`` a multiple of 1h;
they are aligned to the epoch, so an hour falls in exactly one) and the
grouping is not a JSON field, every row of the hour's files that is in the
range counts, in the bucket of the hour the key names. Which rows are in the
range is known without reading them when the hour lies entirely inside it, or,
in the hours at its edges, from each row group's ``timestamp`` statistics: a
row group wholly outside is left out, one wholly inside counts whole (the
last hour's live files usually end before "now"), and one that straddles an
edge sends the hour to the ordinary scan. A file's row count comes from its
Parquet footer (with no ``--by``, or ``--by app``, or
``--by region`` for a v1 file: the key names them), or its one ``--by``
column is read dictionary-encoded and counted per value (a v2 file's
``region`` too). The timestamps are never read.

Any surprise (a file that is not an archive file, one that vanished) sends
the whole hour back to the ordinary scan, which warns, relists and retries as
a query does; so the answer is always the one the ordinary scan would give.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq

from archiver.archive import schema
from archiver.archive.layout import NS_PER_HOUR
from archiver.archive.navigator import ArchiveFile
from archiver.errors import BadFileError, ObjectNotFoundError
from query import kernels as pc  # not pyarrow.compute: see query.kernels
from query.decode import check_schema, row_group_spans, row_groups_in_range
from query.filters import Filters
from query.modes import CountSpec
from query.plan import HourFiles
from query.scan import Reader

_REE_INT64 = pa.run_end_encoded(pa.int32(), pa.int64())
#: Files counted per thread job.
FILES_PER_JOB = 64


def applies(spec: CountSpec, every_ns: int, filters: Filters) -> bool:
    """Whether hours can be counted without their rows (an edge hour may still need them, see above)."""
    return spec.by_field is None and every_ns % NS_PER_HOUR == 0 and not filters.selective()


class _Straddles(Exception):
    """A row group holds rows on both sides of an edge of the range: the hour needs the ordinary scan."""


class _Opened(NamedTuple):
    """One file opened for counting: its footer, and the reader of its ``--by`` column if it must be read."""

    pf: pq.ParquetFile | None
    metadata: pq.FileMetaData
    file_schema: pa.Schema
    #: The value of every row when the count needs no column (the key names it, or there is no --by).
    every_row: str | None


def _open(
    source: str | pa.Buffer, planned: ArchiveFile, column: str | None, fs: pa.fs.FileSystem | None
) -> _Opened:
    opened: Any
    if isinstance(source, pa.Buffer):
        opened = pa.BufferReader(source)
    elif planned.length_ns > NS_PER_HOUR:  # a day file: its footer and the row groups in range only
        opened = (fs or pa.fs.LocalFileSystem()).open_input_file(source)
    else:
        with (fs or pa.fs.LocalFileSystem()).open_input_file(source) as f:
            opened = pa.BufferReader(f.read_buffer())
    # The app, and the region of a v1 file (its key names it; a v2 file holds a column), are the same
    # for every row.
    from_key = {None: None, schema.APP: planned.app, schema.REGION: planned.region}
    by_key = column in from_key and (column is None or from_key[column] is not None)
    # No pre-buffering: its coalesced asynchronous reads cost ~1.4 ms a local day file (24 column chunks
    # read in 1.1 ms without it); every other source here is a buffer already in memory.
    pf = None if by_key else pq.ParquetFile(opened, read_dictionary=[column], pre_buffer=False)
    metadata = pq.read_metadata(opened) if pf is None else pf.metadata
    # ParquetFile.schema_arrow is built anew on each access: once per file.
    file_schema = metadata.schema.to_arrow_schema() if pf is None else pf.schema_arrow
    check_schema(file_schema, () if by_key or column is None else (column,))
    if pf is not None and column not in file_schema.names:
        pf = None  # a column this file does not have: every row counts under null
    return _Opened(pf, metadata, file_schema, from_key[column] if by_key else None)


def _file_counts(
    source: str | pa.Buffer,
    planned: ArchiveFile,
    column: str | None,
    fs: pa.fs.FileSystem | None,
    bounds: tuple[int | None, int | None],
    counts: Counter[str | None],
    values: list[pa.Array],
) -> None:
    """Add one file's rows in range to ``counts`` (None: all rows under the partition value or None), or
    its ``column`` values (dictionary-encoded) to ``values`` when they must be read."""
    pf, metadata, file_schema, every_row = _open(source, planned, column, fs)
    groups, inside = row_groups_in_range(metadata, file_schema, *bounds)
    if not inside:
        raise _Straddles
    if pf is None:
        counts[every_row] += sum(metadata.row_group(i).num_rows for i in groups)
        return
    values.extend(pf.read_row_groups(groups, columns=[column], use_threads=False)[column].chunks)


#: A day file's rows in range per hour; an hour is None where the ordinary scan must count it.
DayHours = dict[int, Counter[str | None] | None]


def _day_counts(
    source: str,
    planned: ArchiveFile,
    column: str | None,
    fs: pa.fs.FileSystem | None,
    bounds: tuple[int, int],
    values: list[pa.Array],
    slots: list[tuple[int, Counter[str | None]]],
) -> DayHours | None:
    """Rows of a day file in ``bounds`` per hour, its footer read once for all its hours (the roll-up ends
    a row group at every hour); the ``--by`` column of the row groups counted is added to ``values`` and
    each one's rows and hour to ``slots``, for :func:`_value_counts`. An hour is None where a row group
    crosses an hour or an edge of the range, the whole file None when it cannot be counted so."""
    since, until = bounds
    try:
        pf, metadata, file_schema, every_row = _open(source, planned, column, fs)
        out: DayHours = {}
        groups: list[int] = []
        mine: list[tuple[int, Counter[str | None]]] = []
        for i, span in enumerate(row_group_spans(metadata, file_schema)):
            if span is None:
                return None
            low, high = span
            if high < since or low >= until:
                continue
            hour = low - low % NS_PER_HOUR
            if high >= hour + NS_PER_HOUR or low < since or high >= until:
                out.update(dict.fromkeys(range(hour, high + 1, NS_PER_HOUR)))
                continue
            counts = out.setdefault(hour, Counter())
            if counts is None:
                continue
            rows = metadata.row_group(i).num_rows
            if pf is None:
                counts[every_row] += rows
            elif rows:
                groups.append(i)
                mine.append((rows, counts))
        if pf is not None and groups:  # one read of every row group counted
            values.extend(pf.read_row_groups(groups, columns=[column], use_threads=False)[column].chunks)
            slots.extend(mine)
        return out
    except (BadFileError, FileNotFoundError, pa.ArrowException, OSError, ValueError):
        return None  # the ordinary scan handles (and reports) it


def _day_job(
    items: Sequence[tuple[str, ArchiveFile]],
    column: str | None,
    fs: pa.fs.FileSystem | None,
    bounds: tuple[int, int],
) -> list[DayHours | None]:
    """Several day files counted (:func:`_day_counts`), their ``--by`` values in one kernel call."""
    values: list[pa.Array] = []
    slots: list[tuple[int, Counter[str | None]]] = []
    found = [_day_counts(path, planned, column, fs, bounds, values, slots) for path, planned in items]
    try:
        _value_counts(values, slots)
    except (pa.ArrowException, ValueError):
        return [None] * len(items)
    return found


class DayFiles:
    """Day files' counts per hour for one query: each day file is read once, for every hour it holds."""

    def __init__(self) -> None:
        self._counts: dict[str, asyncio.Future[list[DayHours | None]]] = {}
        self._index: dict[str, int] = {}

    async def hour(
        self, reader: Reader, files: Sequence[ArchiveFile], column: str | None, filters: Filters, hour_ns: int
    ) -> list[Counter[str | None] | None]:
        """The day files' rows of hour ``hour_ns`` in range; None for one that needs the ordinary scan.

        The files not yet read are read in a job per thread (the day files of an hour are every app's of
        that day), each job's values counted in one call.
        """
        new = [f for f in files if f.key not in self._counts]
        base = reader.base_path
        # As many jobs as threads: the hours after a day's first wait for its files, so a day is read by
        # every thread at once.
        size = max(1, -(-len(new) // reader.threads))
        for part in (new[i : i + size] for i in range(0, len(new), size)):
            items = [(f"{base}/{f.key}" if base else f.key, f) for f in part]
            job = asyncio.get_running_loop().run_in_executor(
                reader.pool, _day_job, items, column, reader.filesystem, (filters.since_ns, filters.until_ns)
            )
            for i, f in enumerate(part):
                self._counts[f.key], self._index[f.key] = job, i
        out: list[Counter[str | None] | None] = []
        for f in files:
            hours = (await asyncio.shield(self._counts[f.key]))[self._index[f.key]]
            out.append(None if hours is None else hours.get(hour_ns, Counter()))
        return out


def _value_counts(values: Sequence[pa.Array], slots: Sequence[tuple[int, Counter[str | None]]]) -> None:
    """Add the rows of ``values`` per value to the counter of the slot each row is in (``slots``: rows and
    counter of each, in row order): one kernel call however many files and slots."""
    if not values:
        return
    # Each file has its own dictionary: one common dictionary, then (slot, value) numbers counted at once.
    chunks = [c if pa.types.is_dictionary(c.type) else pc.call("dictionary_encode", c) for c in values]
    unified = pa.chunked_array(chunks).unify_dictionaries()
    dictionary = unified.chunk(0).dictionary.to_pylist()
    width = len(dictionary) + 1  # value number 0 is null, n + 1 is dictionary[n]
    indices = pa.chunked_array([c.indices for c in unified.chunks]).combine_chunks()
    number = pc.call("add", pc.fill_null(pc.cast(indices, pa.int64()), pa.scalar(-1, pa.int64())),
                     pa.scalar(1, pa.int64()))  # fmt: skip
    if len(slots) > 1:
        # Each row's slot, run-end encoded (a run per slot), then decoded in one call.
        ends = pa.array(itertools.accumulate(rows for rows, _ in slots), pa.int32())
        ree = pa.RunEndEncodedArray.from_buffers(
            _REE_INT64, len(indices), [None], 0, 0, [ends, pa.array(range(len(slots)), pa.int64())]
        )
        slot = pc.call("run_end_decode", ree)
        number = pc.call("add", pc.call("multiply", slot, pa.scalar(width, pa.int64())), number)
    found = pc.call("value_counts", number)
    for key, n in zip(found.field(0).to_pylist(), found.field(1).to_pylist(), strict=True):
        which, value = divmod(key, width)
        slots[which][1][None if value == 0 else dictionary[value - 1]] += n


def _job(
    items: Sequence[tuple[str | pa.Buffer, ArchiveFile]],
    column: str | None,
    fs: pa.fs.FileSystem | None,
    bounds: tuple[int | None, int | None],
) -> Counter[str | None] | None:
    total: Counter[str | None] = Counter()
    values: list[pa.Array] = []
    try:
        for source, planned in items:
            _file_counts(source, planned, column, fs, bounds, total, values)
        _value_counts(values, [(sum(len(v) for v in values), total)])
    except (_Straddles, BadFileError, FileNotFoundError, pa.ArrowException, OSError, ValueError):
        return None  # the ordinary scan handles (and reports) it
    return total


async def hour_counts(
    reader: Reader, group: HourFiles, spec: CountSpec, filters: Filters, days: DayFiles
) -> Counter[str | None] | None:
    """The hour's rows in range per group value; None when the hour must go through the ordinary scan.

    ``days`` counts the day files (shared by every hour of the query, so each is read once).
    """
    loop = asyncio.get_running_loop()
    bounds = filters.time_bounds(group.hour_ns)
    local = reader.filesystem is not None and reader.filesystem.type_name == "local"
    day_files = [f for f in group.files if f.length_ns > NS_PER_HOUR]
    if day_files and not local:
        return None  # a day file over S3: the ordinary scan reads its hour by ranged reads, not whole
    column = spec.by_column

    base = reader.base_path

    async def source(planned: ArchiveFile) -> pa.Buffer | None:
        async with reader.fetches:
            try:
                return pa.py_buffer(await reader.storage.get(planned.key))
            except ObjectNotFoundError:
                return None

    async def job(part: Sequence[ArchiveFile]) -> Counter[str | None] | None:
        if local:
            # Paths made in the worker: no coroutine per file on the event loop (it competes for the GIL).
            items: list[tuple[str | pa.Buffer, ArchiveFile]] = [
                (f"{base}/{f.key}" if base else f.key, f) for f in part
            ]
            return await loop.run_in_executor(reader.pool, _job, items, column, reader.filesystem, bounds)
        sources = await asyncio.gather(*(source(f) for f in part))
        if any(s is None for s in sources):
            return None
        fetched = [(s, f) for s, f in zip(sources, part, strict=True) if s is not None]
        return await loop.run_in_executor(reader.pool, _job, fetched, column, None, bounds)

    files = [f for f in group.files if f.length_ns <= NS_PER_HOUR]
    parts = [files[i : i + FILES_PER_JOB] for i in range(0, len(files), FILES_PER_JOB)]
    results = await asyncio.gather(*(job(part) for part in parts))
    if day_files:
        results += await days.hour(reader, day_files, column, filters, group.hour_ns)
    if any(r is None for r in results):
        return None
    total: Counter[str | None] = Counter()
    for result in results:
        assert result is not None
        total.update(result)
    return total
