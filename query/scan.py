"""Scanning planned files: read an hour's files concurrently, merge them in time order, stream hours.

Each file is decoded on its own (never as one dataset), so a corrupt or
foreign file is skipped with a warning instead of failing the whole answer;
files are handed to the decoding threads in batches (see
:func:`~query.decode.decode_files`). A local archive is read through pyarrow's
local filesystem; an S3 archive by one GET per object through
:class:`~archiver.storage.interface.Storage`, decoded from memory, which measured faster
than pyarrow's S3 filesystem (two or more ranged GETs per file, see
:func:`query.run.open_reader`). Hours come in the order the planner gives
them, a couple of hours read ahead while the current one is written out.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs

from archiver.archive import schema
from archiver.archive.layout import NS_PER_HOUR
from archiver.archive.navigator import ArchiveFile
from archiver.errors import BadFileError, DamagedFileError, ObjectNotFoundError
from archiver.storage.interface import Storage
from query import kernels as pc  # not pyarrow.compute: see query.kernels
from query.day_footers import DayFooters
from query.decode import (
    VANISHED,
    Batch,
    FileScan,
    decode_files,
    empty_table,
    footer_summary,
)
from query.filters import Filters
from query.plan import HourFiles

#: Hours scanned ahead of the one being written: enough to hide latency, little memory.
READ_AHEAD_HOURS = 2
#: Most files per decoding job when they come from S3.
REMOTE_BATCH_FILES = 16
#: Threads for blocking ranged reads of S3 objects (day files): their time is round trips, not CPU.
RANGED_READ_THREADS = 16


@dataclass(slots=True)
class ScanStats:
    """What a scan has read so far, for the progress line and the final note."""

    hours: int = 0
    files: int = 0
    bytes: int = 0
    rows: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)
    #: Day files counted already: one is read in each hour of its day, but is one file of its size.
    days_counted: set[str] = field(default_factory=set)

    def read(self, files: Sequence[ArchiveFile]) -> None:
        """Count ``files`` as read (a day file once, however many of its hours are)."""
        for planned in files:
            if planned.length_ns > NS_PER_HOUR:
                if planned.key in self.days_counted:
                    continue
                self.days_counted.add(planned.key)
            self.files += 1
            self.bytes += planned.size


def merge_hour(tables: Sequence[pa.Table]) -> pa.Table:
    """The rows of one hour in time order (exact), from batches that each hold sorted files one after another.

    When the concatenation is already in order (one file, or files that follow
    each other, as one writer's flushes do) it is returned as is. Otherwise
    Arrow's stable sort in C++ merges the sorted runs, equal timestamps staying
    in file order; a Python heap merge over rows would be two orders of magnitude slower.
    """
    nonempty = [t for t in tables if t.num_rows]
    if not nonempty:
        return tables[0] if tables else pa.table({})
    merged = pa.concat_tables(nonempty) if len(nonempty) > 1 else nonempty[0]
    ts = merged[schema.TIMESTAMP]
    if len(ts) < 2 or pc.all(pc.less_equal(ts.slice(0, len(ts) - 1), ts.slice(1))).as_py():
        return merged
    return pc.take(merged, pc.sort_indices(merged, sort_keys=[(schema.TIMESTAMP, "ascending")]))


Warn = Callable[[str], None]
#: Lists one hour again, as the planner would: see :meth:`query.plan.Planner.relist`.
Replan = Callable[[int], Awaitable[HourFiles]]
#: Times an hour is listed and read again because a file of it vanished (compaction) before warning.
REPLAN_ATTEMPTS = 3


class Reader:
    """Reads planned files: local ones through a pyarrow filesystem, S3 ones by whole-object GETs.

    An S3 ``filesystem`` is used only for :meth:`summary` (footer-only ranged reads).
    """

    def __init__(
        self,
        storage: Storage,
        filesystem: pa.fs.FileSystem | None = None,
        base_path: str = "",
        *,
        threads: int = 8,
        fetch_concurrency: int = 32,
        ranged: Callable[[], tuple[pa.fs.FileSystem, str]] | None = None,
    ) -> None:
        """``ranged`` makes the pyarrow filesystem of an S3 archive, on first need: for day files (below)."""
        self.storage = storage
        self.filesystem = filesystem
        self.base_path = base_path.rstrip("/")
        self._ranged = ranged
        self._day_source: tuple[pa.fs.FileSystem, str] | None = None
        self.threads = threads
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="scan")
        self._ranged_pool: ThreadPoolExecutor | None = None
        self.day_footers = DayFooters()
        self.fetches = asyncio.Semaphore(fetch_concurrency)

    async def read_files(self, files: Sequence[ArchiveFile], scan: FileScan) -> list[Batch]:
        """Each file's matching rows, or the reason to skip it; StorageError when the archive fails.

        Files are decoded in a few batches, one thread job each: a job per file
        costs more in scheduling than a small file costs to decode.
        """
        loop = asyncio.get_running_loop()
        local = self.filesystem is not None and self.filesystem.type_name == "local"
        size = max(1, -(-len(files) // self.threads))
        if not local:
            # Smaller batches over S3, so decoding starts while later GETs are still in flight.
            size = min(size, REMOTE_BATCH_FILES)
        batches = [files[i : i + size] for i in range(0, len(files), size)]
        # A day file is read once per hour of its day: over S3 by ranged reads of its footer and that hour's
        # row groups, not by a GET of the whole file each time.
        days = None if local else await self.day_filesystem(files)

        async def source(planned: ArchiveFile) -> str | pa.Buffer | BadFileError:
            if days is not None and planned.length_ns > NS_PER_HOUR:
                return f"{days[1]}/{planned.key}"
            return await self._get(planned)

        async def batch(part: Sequence[ArchiveFile]) -> Batch:
            sources: list[str | pa.Buffer | BadFileError]
            if local:
                sources = [self._path(f) for f in part]
            else:
                sources = list(await asyncio.gather(*(source(f) for f in part)))
            fs = self.filesystem if local else (days[0] if days is not None else None)
            return await loop.run_in_executor(
                self.pool, decode_files, list(zip(sources, part, strict=True)), scan, fs, self.day_footers
            )

        return list(await asyncio.gather(*(batch(part) for part in batches)))

    async def day_filesystem(self, files: Sequence[ArchiveFile]) -> tuple[pa.fs.FileSystem, str] | None:
        """The filesystem and base to read ``files``' day files from by ranged reads (an S3 archive's pyarrow
        filesystem, made on first need); None when they hold none, or no such filesystem can be had."""
        if not any(f.length_ns > NS_PER_HOUR for f in files):
            return None
        if self._day_source is None:
            if self.filesystem is not None:
                self._day_source = (self.filesystem, self.base_path)
            elif self._ranged is not None:
                self._day_source = await asyncio.to_thread(self._ranged)
        return self._day_source

    def _path(self, planned: ArchiveFile) -> str:
        return f"{self.base_path}/{planned.key}" if self.base_path else planned.key

    async def _get(self, planned: ArchiveFile) -> pa.Buffer | BadFileError:
        async with self.fetches:
            try:
                return pa.py_buffer(await self.storage.get(planned.key))
            except ObjectNotFoundError:
                return BadFileError(VANISHED)

    async def summary(self, planned: ArchiveFile) -> tuple[int, tuple[str, ...]]:
        """Rows and regions of one file, from its Parquet footer; BadFileError when it is not an archive file."""
        loop = asyncio.get_running_loop()
        if self.filesystem is not None:
            found = await loop.run_in_executor(
                self.pool, footer_summary, self._path(planned), planned.size, self.filesystem
            )
        else:
            data = await self._get(planned)
            if isinstance(data, BadFileError):
                raise data
            found = await loop.run_in_executor(self.pool, footer_summary, data, planned.size, None)
        rows, regions = found
        return rows, regions if regions is not None else (planned.region or "",)

    def pool_for(self, filesystem: pa.fs.FileSystem | None) -> ThreadPoolExecutor:
        """The threads to read from ``filesystem`` in: the decoding ones, or for S3's blocking ranged reads
        more of them (made on first need)."""
        if filesystem is None or filesystem.type_name == "local":
            return self.pool
        if self._ranged_pool is None:
            self._ranged_pool = ThreadPoolExecutor(RANGED_READ_THREADS, thread_name_prefix="ranged")
        return self._ranged_pool

    def close(self) -> None:
        """Stop the decoding threads."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self._ranged_pool is not None:
            self._ranged_pool.shutdown(wait=False, cancel_futures=True)


async def _read_hour(
    reader: Reader,
    group: HourFiles,
    columns: Sequence[str],
    filters: Filters,
    stats: ScanStats,
    warn: Warn,
    replan: Replan | None = None,
    strict: bool = False,
    in_order: bool = True,
) -> pa.Table:
    scan = FileScan(tuple(columns), filters, group.hour_ns)

    # The hour's rows are only returned once all its files are read, so a file that vanished
    # (compacted meanwhile) can be answered by listing the hour again before anything is printed.
    batches = await reader.read_files(group.files, scan)
    for _ in range(REPLAN_ATTEMPTS if replan is not None else 0):
        if not any(str(problem) == VANISHED for batch in batches for _, problem in batch.skipped):
            break
        assert replan is not None
        group = await replan(group.hour_ns)
        batches = await reader.read_files(group.files, scan)
    tables = []
    for batch in batches:
        for planned, problem in batch.skipped:
            if strict:
                # Before any row of this hour is yielded: output stops at the previous hour.
                raise DamagedFileError(planned.key, problem)
            stats.skipped += 1
            warn(f"warning: skipped {planned.key}: {problem}")
        stats.read(batch.read)
        tables.append(batch.table)
    stats.hours += 1
    if not in_order:  # counting: the rows' order does not matter, skip the merge
        merged = pa.concat_tables(tables) if tables else empty_table(columns)
    else:
        merged = merge_hour(tables) if tables else empty_table(columns)
    stats.rows += merged.num_rows
    return merged


async def scan_hours(
    reader: Reader,
    hours: AsyncIterator[HourFiles],
    columns: Sequence[str],
    filters: Filters,
    stats: ScanStats,
    warn: Warn,
    read_ahead: int = READ_AHEAD_HOURS,
    replan: Replan | None = None,
    strict: bool = False,
    in_order: bool = True,
) -> AsyncGenerator[pa.Table, None]:
    """Matching rows hour by hour, in the order ``hours`` yields them, each hour in time order.

    A file that is not an archive file is skipped through ``warn``; with ``strict``
    it raises :class:`~archiver.errors.DamagedFileError` instead. Without ``in_order`` an hour's
    rows come in file order (for counting).
    """
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
                    asyncio.ensure_future(
                        _read_hour(reader, group, wanted, filters, stats, warn, replan, strict, in_order)
                    )
                )
            if not in_flight:
                return
            table = await in_flight.popleft()
            if table.num_rows:
                yield table
    finally:
        for task in in_flight:
            task.cancel()
            if task.done() and not task.cancelled():
                task.exception()  # read ahead and failed too: retrieved, so asyncio does not log it at exit
