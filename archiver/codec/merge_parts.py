"""Writing merged rows as consecutive part files, each in row groups of bounded rows and bytes.

A row group is written when it holds ``ROW_GROUP_SIZE`` rows (the archive's
writer option) or :data:`ROW_GROUP_BYTES` of decoded rows, whichever comes
first, so a part of long messages never holds a huge row group in memory.
With ``align_ns`` (a day's roll-up: an hour), a row group also ends where the
rows' period does, so a reader of one hour of a day file decodes that hour's
row groups only, and counts them from their statistics.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from archiver.archive.timestamps import table_ns
from archiver.codec.encode import COMPACT_COMPRESSION_LEVEL, ROW_GROUP_SIZE, open_writer

#: A row group is written when it holds ROW_GROUP_SIZE rows or this many decoded bytes (Arrow's).
ROW_GROUP_BYTES = 48 * 1024**2


@dataclass(frozen=True, slots=True)
class MergedPart:
    """One written part: its file, rows, size, and footer (what a table's statistics come from)."""

    path: str
    rows: int
    size: int
    metadata: pq.FileMetaData


class PartWriter:
    """Writes merged chunks into consecutive parts, each in row groups of bounded rows and bytes."""

    def __init__(
        self,
        paths: Sequence[str],
        bounds: list[tuple[int, int]],
        metadata: Mapping[bytes, bytes],
        align_ns: int | None = None,
    ) -> None:
        self.paths, self.bounds, self.metadata, self.align_ns = paths, bounds, metadata, align_ns
        self.group_period = 0
        self.index = 0
        self.position = 0
        self.writer: pq.ParquetWriter | None = None
        self.group: list[pa.Table] = []
        self.group_rows = self.group_bytes = 0
        self.parts: list[MergedPart] = []

    def add(self, chunk: pa.Table) -> None:
        """Append merged rows (cut into parts and row groups as they come)."""
        offset = 0
        stamps = table_ns(chunk) if self.align_ns else None
        while offset < chunk.num_rows:
            end = self.bounds[self.index][1]
            size = min(chunk.num_rows - offset, end - self.position, ROW_GROUP_SIZE - self.group_rows)
            if stamps is not None and self.align_ns:
                period = stamps[offset].as_py() // self.align_ns
                if self.group_rows and period != self.group_period:
                    self._write_group()  # no row group spans two periods
                    continue
                self.group_period = period
                size = _first_at(stamps, (period + 1) * self.align_ns, offset, offset + size) - offset
            piece = chunk.slice(offset, size)
            self.group.append(piece)
            self.group_rows += size
            self.group_bytes += piece.nbytes
            offset += size
            self.position += size
            if self.group_rows >= ROW_GROUP_SIZE or self.group_bytes >= ROW_GROUP_BYTES:
                self._write_group()
            if self.position == end:
                self._end_part()

    def finish(self) -> list[MergedPart]:
        """Close the last parts (an empty merge is one part with no rows)."""
        while self.index < len(self.paths):
            self._end_part()
        return self.parts

    def _write_group(self) -> None:
        if self.writer is None:
            self.writer = open_writer(self.paths[self.index], COMPACT_COMPRESSION_LEVEL, self.metadata)
        if self.group:
            self.writer.write_table(pa.concat_tables(self.group), row_group_size=ROW_GROUP_SIZE)
        self.group, self.group_rows, self.group_bytes = [], 0, 0

    def _end_part(self) -> None:
        self._write_group()
        assert self.writer is not None
        self.writer.close()
        self.writer = None
        path = self.paths[self.index]
        footer = pq.read_metadata(path)
        self.parts.append(MergedPart(path, footer.num_rows, os.path.getsize(path), footer))
        self.index += 1

    def close(self) -> None:
        """Close a part left open (an abandoned merge)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _first_at(stamps: Any, value: int, low: int, high: int) -> int:
    """The first index in ``[low, high)`` of sorted ``stamps`` at or after ``value`` (``high`` if none)."""
    while low < high:
        middle = (low + high) // 2
        if stamps[middle].as_py() < value:
            low = middle + 1
        else:
            high = middle
    return low
