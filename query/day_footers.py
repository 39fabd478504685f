"""The footers of the day files a query reads, parsed once: a day file is read in each hour of its day.

A rolled-up day file's footer (24 row groups and more) was read and parsed
again for every hour of it a query scans; over S3 that is two ranged GETs an
hour. Hours are scanned in time order, so a day's files are needed for a run of
consecutive hours and then not again: a small LRU holds them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import pyarrow.parquet as pq

#: Footers kept (a day file each): enough for every app's day files of the days being scanned.
DAY_FOOTERS = 512


class _Entry:
    """One day file's footer, and the gate its first opening holds so that it is parsed once."""

    __slots__ = ("gate", "metadata")

    def __init__(self) -> None:
        self.gate = threading.Lock()
        self.metadata: pq.FileMetaData | None = None


class DayFooters:
    """Parsed footers by day-file path, the least recently used dropped beyond :data:`DAY_FOOTERS`."""

    def __init__(self, limit: int = DAY_FOOTERS) -> None:
        self.limit = limit
        self._found: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()  # the decoding threads share it

    def open(self, path: str, opener: Callable[[pq.FileMetaData | None], pq.ParquetFile]) -> pq.ParquetFile:
        """``opener(footer)`` for ``path``, given its kept footer; the first caller's footer is kept.

        Two threads scanning two hours of one day file at once wait for one
        parse instead of both missing the cache and parsing it twice.
        """
        with self._lock:
            entry = self._found.get(path)
            if entry is None:
                entry = self._found[path] = _Entry()
            self._found.move_to_end(path)
            while len(self._found) > self.limit:
                self._found.popitem(last=False)
        if entry.metadata is not None:
            return opener(entry.metadata)
        with entry.gate:
            if entry.metadata is not None:  # parsed while this thread waited
                return opener(entry.metadata)
            opened = opener(None)
            entry.metadata = opened.metadata
            return opened
