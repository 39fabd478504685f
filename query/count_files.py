"""Counting archive files without decoding their rows, in a worker thread: what :mod:`query.count_fast` runs.

A file's rows in range come from its footer (the row count, each row group's
``timestamp`` statistics) and, with a ``--by`` column the key does not name,
that one column read dictionary-encoded; the values of many files (and of a
day file's hours) are counted in one kernel call (:func:`_value_counts`).
"""

from __future__ import annotations

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
from archiver.archive.timestamps import row_group_spans
from archiver.errors import BadFileError
from query import kernels as pc  # not pyarrow.compute: see query.kernels
from query.decode import check_schema, row_groups_in_range

_REE_INT64 = pa.run_end_encoded(pa.int32(), pa.int64())


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
    remote = False
    if isinstance(source, pa.Buffer):
        opened = pa.BufferReader(source)
    elif planned.length_ns > NS_PER_HOUR:  # a day file: its footer and the row groups in range only
        fs = fs or pa.fs.LocalFileSystem()
        opened, remote = fs.open_input_file(source), fs.type_name != "local"
    else:
        with (fs or pa.fs.LocalFileSystem()).open_input_file(source) as f:
            opened = pa.BufferReader(f.read_buffer())
    # The app, and the region of a v1 file (its key names it; a v2 file holds a column), are the same
    # for every row.
    from_key = {None: None, schema.APP: planned.app, schema.REGION: planned.region}
    by_key = column in from_key and (column is None or from_key[column] is not None)
    # Pre-buffering only for ranged reads over S3 (its column chunks fetched concurrently): locally its
    # asynchronous reads cost ~1.4 ms a day file (24 column chunks read in 1.1 ms without), and every other
    # source here is a buffer already in memory.
    pf = None if by_key else pq.ParquetFile(opened, read_dictionary=[column], pre_buffer=remote)
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


def hour_job(
    items: Sequence[tuple[str | pa.Buffer, ArchiveFile]],
    column: str | None,
    fs: pa.fs.FileSystem | None,
    bounds: tuple[int | None, int | None],
) -> Counter[str | None] | None:
    """The rows in ``bounds`` of several files of one hour per value; None when the ordinary scan must count it."""
    total: Counter[str | None] = Counter()
    values: list[pa.Array] = []
    try:
        for source, planned in items:
            _file_counts(source, planned, column, fs, bounds, total, values)
        _value_counts(values, [(sum(len(v) for v in values), total)])
    except (_Straddles, BadFileError, FileNotFoundError, pa.ArrowException, OSError, ValueError):
        return None  # the ordinary scan handles (and reports) it
    return total


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


def day_job(
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
