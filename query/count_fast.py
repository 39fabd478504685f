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

import pyarrow as pa

from archiver.archive.layout import NS_PER_HOUR
from archiver.archive.navigator import ArchiveFile
from archiver.errors import ObjectNotFoundError
from query.count_files import DayHours, day_job, hour_job
from query.filters import Filters
from query.modes import CountSpec
from query.plan import HourFiles
from query.scan import Reader

#: Files counted per thread job.
FILES_PER_JOB = 64


def applies(spec: CountSpec, every_ns: int, filters: Filters) -> bool:
    """Whether hours can be counted without their rows (an edge hour may still need them, see above)."""
    return spec.by_field is None and every_ns % NS_PER_HOUR == 0 and not filters.selective()


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
        that day), each job's values counted in one call; over S3 by ranged reads of the footer and the
        column chunks, not by a GET of the whole file.
        """
        where = await reader.day_filesystem(files)
        if where is None:
            return [None] * len(files)  # no ranged reader for them: the ordinary scan reads them
        fs, base = where
        new = [f for f in files if f.key not in self._counts]  # after the await: other hours ran meanwhile
        # As many jobs as threads: the hours after a day's first wait for its files, so a day is read by
        # every thread at once (over S3 a file a job: its time is round trips).
        pool = reader.pool_for(fs)
        size = max(1, -(-len(new) // reader.threads)) if pool is reader.pool else 1
        for part in (new[i : i + size] for i in range(0, len(new), size)):
            items = [(f"{base}/{f.key}" if base else f.key, f) for f in part]
            job = asyncio.get_running_loop().run_in_executor(
                pool, day_job, items, column, fs, (filters.since_ns, filters.until_ns)
            )
            for i, f in enumerate(part):
                self._counts[f.key], self._index[f.key] = job, i
        out: list[Counter[str | None] | None] = []
        for f in files:
            hours = (await asyncio.shield(self._counts[f.key]))[self._index[f.key]]
            out.append(None if hours is None else hours.get(hour_ns, Counter()))
        return out


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
            return await loop.run_in_executor(reader.pool, hour_job, items, column, reader.filesystem, bounds)
        sources = await asyncio.gather(*(source(f) for f in part))
        if any(s is None for s in sources):
            return None
        fetched = [(s, f) for s, f in zip(sources, part, strict=True) if s is not None]
        return await loop.run_in_executor(reader.pool, hour_job, fetched, column, None, bounds)

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
