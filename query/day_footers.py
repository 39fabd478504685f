"""The footers of the day files a query reads, parsed once: a day file is read in each hour of its day.

A rolled-up day file's footer (24 row groups and more) was read and parsed
again for every hour of it a query scans; over S3 that is two ranged GETs an
hour. Hours are scanned in time order, so a day's files are needed for a run of
consecutive hours and then not again: a small LRU holds them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import pyarrow.parquet as pq

#: Footers kept (a day file each): enough for every app's day files of the days being scanned.
DAY_FOOTERS = 512


class DayFooters:
    """Parsed footers by day-file path, the least recently used dropped beyond :data:`DAY_FOOTERS`."""

    def __init__(self, limit: int = DAY_FOOTERS) -> None:
        self.limit = limit
        self._found: OrderedDict[str, pq.FileMetaData] = OrderedDict()
        self._lock = threading.Lock()  # the decoding threads share it

    def get(self, path: str) -> pq.FileMetaData | None:
        """The footer of ``path`` if kept."""
        with self._lock:
            found = self._found.get(path)
            if found is not None:
                self._found.move_to_end(path)
            return found

    def put(self, path: str, metadata: pq.FileMetaData) -> None:
        """Keep the footer of ``path``."""
        with self._lock:
            self._found[path] = metadata
            self._found.move_to_end(path)
            while len(self._found) > self.limit:
                self._found.popitem(last=False)
