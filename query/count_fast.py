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
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq

from archiver.archive import schema
from archiver.archive.layout import NS_PER_HOUR
from archiver.archive.navigator import ArchiveFile
from archiver.errors import BadFileError, ObjectNotFoundError
from query import kernels as pc  # not pyarrow.compute: see query.kernels
from query.decode import check_schema, row_groups_in_range
from query.filters import Filters
from query.modes import CountSpec
from query.plan import HourFiles
from query.scan import Reader

#: Files counted per thread job.
FILES_PER_JOB = 64


def applies(spec: CountSpec, every_ns: int, filters: Filters) -> bool:
    """Whether hours can be counted without their rows (an edge hour may still need them, see above)."""
    return spec.by_field is None and every_ns % NS_PER_HOUR == 0 and not filters.selective()


class _Straddles(Exception):
    """A row group holds rows on both sides of an edge of the range: the hour needs the ordinary scan."""


def _file_counts(
    source: str | pa.Buffer,
    planned: ArchiveFile,
    column: str | None,
    fs: pa.fs.FileSystem | None,
    bounds: tuple[int | None, int | None],
) -> Counter[str | None]:
    """Rows in range of one file per value of ``column`` (None: all rows under the partition value or None)."""
    opened: Any
    if isinstance(source, pa.Buffer):
        opened = pa.BufferReader(source)
    elif planned.length_ns > NS_PER_HOUR:  # a day file: its footer and this hour's row groups only
        opened = (fs or pa.fs.LocalFileSystem()).open_input_file(source)
    else:
        with (fs or pa.fs.LocalFileSystem()).open_input_file(source) as f:
            opened = pa.BufferReader(f.read_buffer())
    # The app, and the region of a v1 file (its key names it; a v2 file holds a column), are the same
    # for every row.
    from_key = {None: None, schema.APP: planned.app, schema.REGION: planned.region}
    by_key = column in from_key and (column is None or from_key[column] is not None)
    pf = None if by_key else pq.ParquetFile(opened, read_dictionary=[column])
    metadata = pq.read_metadata(opened) if pf is None else pf.metadata
    # ParquetFile.schema_arrow is built anew on each access: once per file.
    file_schema = metadata.schema.to_arrow_schema() if pf is None else pf.schema_arrow
    check_schema(file_schema, () if by_key or column is None else (column,))
    groups, inside = row_groups_in_range(metadata, file_schema, *bounds)
    if not inside:
        raise _Straddles
    if pf is None or column not in file_schema.names:
        rows = sum(metadata.row_group(i).num_rows for i in groups)
        return Counter({from_key[column] if by_key else None: rows})
    assert column is not None
    values = pf.read_row_groups(groups, columns=[column], use_threads=False)[column]
    counts: Counter[str | None] = Counter()
    for chunk in values.chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = pc.call("dictionary_encode", chunk)
        dictionary = chunk.dictionary.to_pylist()
        found = pc.call("value_counts", chunk.indices)  # not Array.value_counts: it imports pyarrow.compute
        for index, n in zip(found.field(0).to_pylist(), found.field(1).to_pylist(), strict=True):
            counts[None if index is None else dictionary[index]] += n
    return counts


def _job(
    items: Sequence[tuple[str | pa.Buffer, ArchiveFile]],
    column: str | None,
    fs: pa.fs.FileSystem | None,
    bounds: tuple[int | None, int | None],
    hour: tuple[int, int],
) -> Counter[str | None] | None:
    total: Counter[str | None] = Counter()
    try:
        for source, planned in items:
            # A day file holds every hour of its day: only the scanned hour's rows are counted.
            edges = hour if planned.length_ns > NS_PER_HOUR else bounds
            total.update(_file_counts(source, planned, column, fs, edges))
    except (_Straddles, BadFileError, FileNotFoundError, pa.ArrowException, OSError, ValueError):
        return None  # the ordinary scan handles (and reports) it
    return total


async def hour_counts(
    reader: Reader, group: HourFiles, spec: CountSpec, filters: Filters
) -> Counter[str | None] | None:
    """The hour's rows in range per group value; None when the hour must go through the ordinary scan."""
    loop = asyncio.get_running_loop()
    bounds, hour = filters.time_bounds(group.hour_ns), filters.hour_window(group.hour_ns)
    local = reader.filesystem is not None and reader.filesystem.type_name == "local"
    if not local and any(f.length_ns > NS_PER_HOUR for f in group.files):
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
            return await loop.run_in_executor(
                reader.pool, _job, items, column, reader.filesystem, bounds, hour
            )
        sources = await asyncio.gather(*(source(f) for f in part))
        if any(s is None for s in sources):
            return None
        fetched = [(s, f) for s, f in zip(sources, part, strict=True) if s is not None]
        return await loop.run_in_executor(reader.pool, _job, fetched, column, None, bounds, hour)

    files = group.files
    parts = [files[i : i + FILES_PER_JOB] for i in range(0, len(files), FILES_PER_JOB)]
    results = await asyncio.gather(*(job(part) for part in parts))
    if any(r is None for r in results):
        return None
    total: Counter[str | None] = Counter()
    for result in results:
        assert result is not None
        total.update(result)
    return total
