"""A local cache of table snapshots for readers, so a query reads only the commits made since its last one.

A version of a Delta table never changes, so the live files at version N can be kept and reused:
:func:`archiver.table.log.read_snapshot` then lists the log from its checkpoint as before, but
fetches and replays only the commits after the cached version, instead of the checkpoint (MiBs,
growing with the live files and the tombstones) and every commit after it (up to 100).

One file per table (``$XDG_CACHE_HOME/archiver/snapshots/<sha256 of the archive URL>.json``, else
under ``~/.cache``; :func:`user_cache`): a JSON header line (the version, the SHA-256 of that
version's commit object, where each date's section is), then every live file (key, size, app) in
one JSON section per date, so a query decodes only the sections of its days.
It is used only while it is exact:

* its version is at or after the newest checkpoint (the commits after it are all in the log);
* the commit object of its version, fetched again with the newer ones, has the same bytes: a table
  deleted and created again at the same place (same URL, same version numbers) has other commits
  (each holds its time in ms), so its old cache is never mistaken for it.

Otherwise the log is read whole and the file replaced. It is written again once
:data:`SAVE_AFTER` commits or more were replayed on top of it, atomically (a temporary file
renamed), and the cache holds at most :data:`MAX_BYTES` (the least recently used tables' files
go first). Anything wrong with the cache (unreadable, not writable) only makes a read uncached.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import orjson

from archiver.table.files import LiveFile

#: Commits replayed on top of the cached version before the cache file is written again.
SAVE_AFTER = 8
#: The most the cache directory holds (a table of 30,000 live files takes ~3 MiB).
MAX_BYTES = 64 * 1024**2


@dataclass(slots=True)
class CachedSnapshot:
    """The live files of a table at ``version``, and the SHA-256 of that version's commit object."""

    version: int
    commit_sha256: str
    files: dict[str, LiveFile]


def digest(data: bytes) -> str:
    """The SHA-256 of a commit object, as the cache records it."""
    return hashlib.sha256(data).hexdigest()


class SnapshotCache:
    """Snapshots of tables by archive URL, in one directory."""

    def __init__(self, directory: Path, max_bytes: int = MAX_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def _path(self, url: str) -> Path:
        return self.directory / f"{hashlib.sha256(url.encode()).hexdigest()[:32]}.json"

    def load(self, url: str, dates: Collection[str] | None = None) -> CachedSnapshot | None:
        """The cached snapshot of the table at ``url`` (its files of ``dates`` only, when given); None: none."""
        path = self._path(url)
        try:
            data = path.read_bytes()
            end = data.index(b"\n")
            header = orjson.loads(data[:end])
            sections = header["dates"]
            files = {}
            for date in sections if dates is None else (d for d in dates if d in sections):
                first, last = sections[date]
                for key, size, app in orjson.loads(data[end + 1 + first : end + 1 + last]):
                    files[key] = LiveFile(key, size, app, date)
            found = CachedSnapshot(header["version"], header["commit_sha256"], files)
            os.utime(path)  # recently used: evicted last
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        return found

    def save(self, url: str, snapshot: CachedSnapshot) -> None:
        """Keep ``snapshot`` (every live file) for ``url``, replacing the one kept; then evict beyond the bound."""
        path = self._path(url)
        by_date: dict[str, list[tuple[str, int, str]]] = {}
        for f in snapshot.files.values():
            by_date.setdefault(f.date, []).append((f.key, f.size, f.app))
        sections, body, offset = {}, [], 0
        for date, files in by_date.items():
            section = orjson.dumps(files)
            sections[date] = (offset, offset + len(section))
            body.append(section)
            offset += len(section)
        header = {"version": snapshot.version, "commit_sha256": snapshot.commit_sha256, "dates": sections}
        with contextlib.suppress(OSError):
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_bytes(b"".join([orjson.dumps(header), b"\n", *body]))
            temporary.replace(path)
            self._evict(keep=path)

    def _evict(self, keep: Path) -> None:
        entries = []
        for entry in self.directory.iterdir():
            with contextlib.suppress(OSError):
                stat = entry.stat()
                entries.append((stat.st_mtime, stat.st_size, entry))
        total = sum(size for _, size, _ in entries)
        for _, size, entry in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            if entry != keep:
                with contextlib.suppress(OSError):
                    entry.unlink()
                    total -= size


def user_cache() -> SnapshotCache:
    """The cache of the user running the reader: ``snapshots/`` in archiver's cache directory."""
    from archiver.environment import cache_directory

    return SnapshotCache(cache_directory() / "snapshots")
