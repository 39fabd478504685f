"""Our own vacuum of leftovers: the files the log removed, deleted through the Storage interface.

Why not delta-rs's ``vacuum``: it loads every tombstone of the snapshot and deletes again, at every
run, every one older than its retention (measured at a simulated year: +179 MB peak RSS, 45,000
files re-deleted per run, BENCHMARKS.md). And why so little work: the compactor and ``archiver
prune`` delete a file right after the commit that removed it (README), so a removed file is left
only by a process killed between that commit and its delete, and the compactor's next run of the
unit deletes those of its own units too (:func:`~archiver.manage.compact_table.leftover_keys`).
This is the backstop: it follows the log instead of listing the bucket.

:class:`LeftoverVacuum` remembers the version up to which it has read the commits' ``remove``
actions (in memory: the one process running the table upkeep holds it), so a tombstone is read
once; its first run reads the last :data:`LOOKBACK_COMMITS` commits (older ones were the previous
upkeep process's; a compaction's leftovers are deleted by the compactor's runs anyway, and a file
left behind unnoticed is garbage, never a wrong answer). A remove older than the retention is
deleted unless its path is live again; the younger ones wait in memory (at most the retention's
worth of removes: ~9,000 an hour at 150 compacted flush files a minute). Each run reads at most
:data:`MAX_COMMITS_PER_RUN` commits, one object at a time, and deletes in chunks of
:data:`DELETE_CHUNK` keys: memory does not grow with the table. A commit object already gone
(log clean-up keeps two days) is skipped.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from archiver.errors import ObjectNotFoundError
from archiver.storage.interface import Storage
from archiver.table.log_files import commit_key, decode_path

#: Commits read by one run (the next run goes on from there).
MAX_COMMITS_PER_RUN = 2000
#: Keys per Storage.delete call (S3's DeleteObjects takes 1,000).
DELETE_CHUNK = 1000
#: Commits before the newest whose removes a first run reads (the previous upkeep process's last ones).
LOOKBACK_COMMITS = 200


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A file a commit removed, and when (ms since the epoch, the remove's ``deletionTimestamp``)."""

    key: str
    deleted_ms: int


def removes_of(key: str, data: bytes, default_ms: int) -> list[Tombstone]:
    """The ``remove`` actions of one commit object (``default_ms`` for a remove without a timestamp)."""
    out = []
    for line in data.splitlines():
        if b'"remove"' not in line:
            continue
        with contextlib.suppress(orjson.JSONDecodeError):
            action = orjson.loads(line)
            remove = action.get("remove") if isinstance(action, dict) else None
            if isinstance(remove, dict) and isinstance(remove.get("path"), str):
                stamp = remove.get("deletionTimestamp")
                out.append(
                    Tombstone(
                        decode_path(key, remove["path"]), stamp if isinstance(stamp, int) else default_ms
                    )
                )
    return out


@dataclass(slots=True)
class VacuumRun:
    """What one run did."""

    commits_read: int = 0
    deleted: int = 0
    waiting: int = 0


class LeftoverVacuum:
    """Deletes the files removed from the table more than ``retention_s`` ago (see the module docstring)."""

    def __init__(self, storage: Storage, retention_s: float) -> None:
        self.storage = storage
        self.retention_ms = int(retention_s * 1000)
        #: Newest version whose removes were read (None: not started).
        self.through: int | None = None
        self.waiting: deque[Tombstone] = deque()

    async def run(self, version: int, now_ms: int, live_keys: Callable[[], Awaitable[set[str]]]) -> VacuumRun:
        """Read the removes of the commits up to ``version``; delete those past the retention, not live."""
        result = VacuumRun()
        if self.through is None:
            self.through = max(-1, version - LOOKBACK_COMMITS - 1)
        last = min(version, self.through + MAX_COMMITS_PER_RUN)
        for v in range(self.through + 1, last + 1):
            key = commit_key(v)
            try:
                data = await self.storage.get(key)
            except ObjectNotFoundError:
                data = b""  # cleaned up already, or a version being written: nothing to read
            self.waiting.extend(sorted(removes_of(key, data, now_ms), key=lambda t: t.deleted_ms))
            self.through = v
            result.commits_read += 1
        cutoff = now_ms - self.retention_ms
        # Roughly in time order (commit order): stop at the first one still within the retention.
        due = list(itertools.takewhile(lambda t: t.deleted_ms <= cutoff, self.waiting))
        if due:
            live = await live_keys()
            doomed = [k for k in dict.fromkeys(t.key for t in due) if k not in live]
            for first in range(0, len(doomed), DELETE_CHUNK):
                await self.storage.delete(doomed[first : first + DELETE_CHUNK])
            for _ in due:  # only once deleted: a failed run leaves them for the next
                self.waiting.popleft()
            result.deleted = len(doomed)
        result.waiting = len(self.waiting)
        return result
