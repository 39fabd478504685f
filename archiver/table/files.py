"""What a file of the table is to archiver: its key, size and partition, and (to add it) its stats.

No delta-rs here: the read-only log reader returns these too, and ``archiver query`` must not
import deltalake to use it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LiveFile:
    """A file of the table's current snapshot: key relative to the archive root, size, app and date."""

    key: str
    size: int
    #: The true app name ("" for the empty app, which the log may hold as "" or null).
    app: str
    #: ``YYYY-MM-DD``
    date: str


@dataclass(frozen=True, slots=True)
class TableFile:
    """A data file to add to the table: where it is, which partition, and its exact statistics."""

    key: str
    size: int
    app: str
    date: str
    #: The AddAction's stats JSON, from :func:`archiver.table.stats.file_stats` of the file's footer.
    stats: str
    #: When the object was written, ms since the epoch (Delta's modificationTime).
    modification_time_ms: int
