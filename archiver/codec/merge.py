"""Merging sorted archive files into sorted parts, a record batch at a time, whatever the partition's size.

The inputs are local files (the compactor downloads them to a scratch
directory first) and the parts are written to local files (it uploads them
with :meth:`~archiver.storage.interface.Storage.put_file`), so nothing holds a
whole input or a whole part in memory.

A k-way merge in chunks. Every input is sorted by exact time; its footer's
row-group minimum of ``timestamp`` bounds its first row from below. Inputs are
opened in the order of those bounds, and only when the merge reaches them:
files of different minutes of an hour do not overlap, so few are open at
once. Each open input holds its current record batch. A chunk is every row
earlier than the *frontier*, the smallest last time among the open inputs'
batches: no row still unread (in an open input or one not opened, whose
bound is past the frontier) can come before those rows, so the chunk is final
once it is sorted. An input whose batch ends at the frontier reads its next
batch when nothing else is earlier. Memory: one batch per open input (the
batch size shrinks with how many inputs overlap in time, see
:data:`OPEN_ROWS_BUDGET`), one chunk, and one row group being written
(:data:`~archiver.codec.merge_parts.ROW_GROUP_BYTES`): the partition's size does not matter. A run of
rows with one exact time is held whole (malformed rows of one batch share
its receive time): at most one input file's rows.

The order is that of concatenating the inputs in the given order and sorting
by exact time (``timestamp``, then ``timestamp_nanos``) stably: equal times keep
input order, then row order (rows of one time always fall in one chunk,
sorted there stably in input order). An input found not sorted (not written
by archiver) is read whole and sorted in memory, and the merge starts again.
Inputs may be of schema v1 or v2; every part is written as v2 (a v1 input's
region, from its key, is passed in). Parts have nearly equal row counts.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from archiver.archive import schema
from archiver.archive.timestamps import table_ns, to_v2
from archiver.codec.encode import ROW_GROUP_SIZE
from archiver.codec.merge_inputs import is_sorted, time_bounds
from archiver.codec.merge_parts import ROW_GROUP_BYTES, MergedPart, PartWriter

#: Most rows decoded at once from one input.
BATCH_ROWS = 16 * 1024
#: Fewest rows decoded at once from one input, however many overlap.
MIN_BATCH_ROWS = 1024
#: Rows decoded at once over the inputs that overlap in time (each open input's batch is this divided by
#: the most inputs that overlap), so many overlapping inputs do not multiply the memory.
OPEN_ROWS_BUDGET = 64 * 1024
#: Readers' column-chunk buffers, the writer's pages and zstd contexts, Arrow's allocator slack.
FIXED_WORKING_SET_BYTES = 48 * 1024**2
_NO_BOUND = -(2**63)
_NO_BOUND_HIGH = 2**63
_EMPTY = schema.FILE_SCHEMA.remove_metadata().empty_table()


@dataclass(frozen=True, slots=True)
class MergeInput:
    """One input file, and the region of a v1 input (from its key; None for v2)."""

    path: str
    region: str | None = None


class _Sorted:
    """Index access to a sorted int64 (chunked) array for :func:`bisect.bisect_left`."""

    __slots__ = ("values",)

    def __init__(self, values: Any) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: int) -> int:
        return int(self.values[index].as_py())


class _Source:
    """One input being merged: its pending rows (schema v2) and their exact times."""

    def __init__(self, index: int, item: MergeInput, metadata: pq.FileMetaData) -> None:
        self.index = index
        self.item = item
        self.rows: int = metadata.num_rows
        low, high = time_bounds(metadata)
        self.low_ns: int = _NO_BOUND if low is None else low
        self.high_ns: int = _NO_BOUND_HIGH if high is None else high
        self.loaded: int = 0
        self.table: pa.Table | None = None  # a foreign input, not sorted: read whole and sorted
        self._batches: Iterator[pa.RecordBatch] | None = None
        self.buffer = _EMPTY
        self.stamps: Any = pa.chunked_array([], pa.int64())
        self.last_ns = _NO_BOUND

    def open(self, batch_rows: int) -> None:
        """Start reading (the sorted table of a foreign input, else the file a batch at a time)."""
        if self.table is not None:
            self._batches = iter(self.table.to_batches(batch_rows))
        else:
            parquet = pq.ParquetFile(self.item.path, buffer_size=1024**2)
            self._batches = parquet.iter_batches(batch_rows, use_threads=False)

    @property
    def more(self) -> bool:
        """Whether rows remain unread in the file."""
        return self.loaded < self.rows

    def load(self) -> bool:
        """Append the next batch to the pending rows; False when the input turns out not sorted."""
        assert self._batches is not None
        batch = next(self._batches, None)
        if batch is None:  # fewer rows than the footer said: nothing more to read
            self.loaded = self.rows
            return True
        self.loaded += batch.num_rows
        table = to_v2(pa.Table.from_batches([batch]), self.item.region)
        stamps = table_ns(table)
        if len(stamps) and (not is_sorted(stamps) or int(stamps[0].as_py()) < self.last_ns):
            return False
        if len(stamps):
            self.last_ns = int(stamps[len(stamps) - 1].as_py())
        self.buffer = pa.concat_tables([self.buffer, table])
        self.stamps = pa.chunked_array([*self.stamps.chunks, *_chunks(stamps)], pa.int64())
        return True

    def take_before(self, frontier_ns: float) -> tuple[pa.Table, Any]:
        """Remove and return the pending rows earlier than ``frontier_ns`` (and their times)."""
        count = len(self.stamps) if frontier_ns == float("inf") else bisect.bisect_left(
            _Sorted(self.stamps), frontier_ns)  # fmt: skip
        taken = self.buffer.slice(0, count), self.stamps.slice(0, count)
        if count == len(self.stamps):
            self._empty()  # a zero-length slice would still hold the batch's buffers
        else:
            self.buffer, self.stamps = self.buffer.slice(count), self.stamps.slice(count)
        return taken

    def _empty(self) -> None:
        self.buffer = _EMPTY
        self.stamps = pa.chunked_array([], pa.int64())

    def close(self) -> None:
        """Drop the reader and what it holds."""
        self._batches = None
        self.table = None
        self._empty()


def _chunks(values: Any) -> list[pa.Array]:
    return list(values.chunks) if isinstance(values, pa.ChunkedArray) else [values]


def _max_overlap(sources: Sequence[_Source]) -> int:
    """The most inputs whose time bounds overlap at one moment (1 when none do)."""
    events = []
    for source in sources:
        events += [(source.low_ns, 0), (source.high_ns, 1)]  # opens before closes at one time: they overlap
    depth = best = 0
    for _, kind in sorted(events):
        depth += 1 if kind == 0 else -1
        best = max(best, depth)
    return max(1, best)


class FileMerge:
    """The rows of sorted input files in merged order, written as parts of nearly equal row counts."""

    def __init__(
        self,
        inputs: Sequence[MergeInput],
        metadata: Mapping[bytes, bytes],
        stop: threading.Event | None = None,
        align_ns: int | None = None,
    ) -> None:
        """Read the inputs' footers; ``metadata`` is added to every part's, ``stop`` abandons the merge.

        ``align_ns``: row groups end at multiples of it too (:class:`~archiver.codec.merge_parts.PartWriter`).
        """
        self.align_ns = align_ns
        self.inputs = list(inputs)
        self.metadata = metadata
        self.stop = stop or threading.Event()
        self.footers = [pq.read_metadata(item.path) for item in self.inputs]
        self.rows = sum(f.num_rows for f in self.footers)
        #: Inputs found not sorted (read whole and sorted in memory on the next attempt).
        self.unsorted: set[int] = set()
        sources = [
            _Source(i, item, f) for i, (item, f) in enumerate(zip(self.inputs, self.footers, strict=True))
        ]
        self.batch_rows = max(MIN_BATCH_ROWS, min(BATCH_ROWS, OPEN_ROWS_BUDGET // _max_overlap(sources)))

    @property
    def working_set_bytes(self) -> int:
        """Memory the merge needs at most, estimated from the footers (charged against the memory cap)."""
        decoded = sum(_decoded_bytes(f) for f in self.footers)
        row_bytes = decoded / max(1, self.rows)
        group = min(decoded, ROW_GROUP_BYTES, int(ROW_GROUP_SIZE * row_bytes))
        # Open batches, the chunk cut from them and its sorted copy.
        open_rows = min(self.rows, OPEN_ROWS_BUDGET + self.batch_rows)
        return int(FIXED_WORKING_SET_BYTES + group + 3 * open_rows * row_bytes)

    def write_parts(self, paths: Sequence[str]) -> list[MergedPart] | None:
        """Write ``len(paths)`` parts to ``paths`` in order; None when stopped (parts left half-written)."""
        while True:
            found = len(self.unsorted)
            parts = self._attempt(paths)
            if parts is not None or self.stop.is_set() or len(self.unsorted) == found:
                return parts

    def _attempt(self, paths: Sequence[str]) -> list[MergedPart] | None:
        count, sorted_whole = len(paths), len(self.unsorted)
        sources = [
            _Source(i, item, f) for i, (item, f) in enumerate(zip(self.inputs, self.footers, strict=True))
        ]
        for index in self.unsorted:
            source = sources[index]
            table = to_v2(pq.read_table(source.item.path), source.item.region)
            source.table = table.take(pc.sort_indices(table_ns(table)))
            stamps = table_ns(source.table)
            source.low_ns = int(stamps[0].as_py()) if len(stamps) else _NO_BOUND
        writer = PartWriter(paths, [(i * self.rows // count, (i + 1) * self.rows // count) for i in range(count)],
                             self.metadata, self.align_ns)  # fmt: skip
        try:
            for chunk in self._chunks(sources):
                if self.stop.is_set():
                    return None
                writer.add(chunk)
            if len(self.unsorted) > sorted_whole or self.stop.is_set():
                return None  # an input turned out not sorted: start again with it sorted in memory
            return writer.finish()
        finally:
            writer.close()
            for source in sources:
                source.close()

    def _chunks(self, sources: list[_Source]) -> Iterator[pa.Table]:
        """The merged rows in order, a chunk at a time (see the module docstring)."""
        waiting = sorted((s for s in sources if s.rows), key=lambda s: s.low_ns, reverse=True)
        active: list[_Source] = []
        while True:
            for done in [s for s in active if not s.more and not s.buffer.num_rows]:
                done.close()  # its reader holds buffers and decompression contexts until dropped
                active.remove(done)
            if not active and not waiting:
                return
            # Every row before the frontier is pending in an open input: later rows of an open input come
            # after its last row read, and an input not opened starts at its lower bound or later.
            read_to = min((s.last_ns for s in active if s.more), default=float("inf"))
            next_low = waiting[-1].low_ns if waiting else float("inf")
            frontier = min(read_to, next_low)
            taken = [piece for piece in (s.take_before(frontier) for s in active) if piece[0].num_rows]
            if len(taken) == 1:
                yield taken[0][0]
            elif taken:
                stamps = pa.chunked_array([c for _, st in taken for c in st.chunks], pa.int64())
                yield pa.concat_tables([t for t, _ in taken]).take(pc.sort_indices(stamps))
            elif next_low <= read_to:
                source = waiting.pop()  # it may hold rows at the frontier: open it
                source.open(self.batch_rows)
                if not self._load(source):
                    return
                active.append(source)
                active.sort(key=lambda s: s.index)
            else:
                # Every pending row is at the frontier: read on in the inputs whose batch ends there.
                for source in active:
                    if source.more and source.last_ns == frontier and not self._load(source):
                        return

    def _load(self, source: _Source) -> bool:
        if source.load():
            return True
        self.unsorted.add(source.index)
        return False


def _decoded_bytes(footer: pq.FileMetaData) -> int:
    """Arrow bytes of a file's rows, judged by its uncompressed column chunks (dictionaries decode to strings)."""
    encoded = sum(footer.row_group(g).total_byte_size for g in range(footer.num_row_groups))
    # Dictionary-encoded columns (region, instance, host, ...) take a few bytes a row encoded, ~20 decoded.
    return int(encoded + footer.num_rows * 24 * len(schema.DICTIONARY_COLUMNS))
