"""A query benchmark archive made a Delta table with the log history the service leaves (bench/query_speed.py --table).

The archive's files, hard-linked into a new directory, become a table the way the service and its
compactor make one, with the defaults (TABLE_COMMIT_INTERVAL 60 s, a checkpoint every 100 commits):

* version 0 registers the closed hours older than :data:`TOMBSTONE_HOURS` (as ``archiver table init``
  would), with exact stats from each footer;
* each of the :data:`TOMBSTONE_HOURS` closed hours before the live one, per app, is the commit of its
  60 s flush files (one per region and minute: named, never written, as vacuumed ones are) and then
  the compaction commit that removes them and adds the app-hour's compacted file: the checkpoint
  then carries those removes as tombstones (``delta.deletedFileRetentionDuration`` 6 h);
* the live hour's flush files, one commit per minute (what the committer does at a 60 s interval);
* a checkpoint after every :data:`CHECKPOINT_EVERY` commits, as the service's upkeep writes them.

The reader's cost does not depend on how long the history is, only on what the newest checkpoint
holds and on the commits after it: this history ends with a checkpoint holding every live file and
the tombstones, and up to 100 commits after it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from archiver.archive.layout import (
    NS_PER_HOUR,
    hour_start_ns,
    live_name_parts,
    object_key,
    object_name,
    parse_key,
)
from archiver.config import ArchiveSettings
from archiver.table import upkeep
from archiver.table.bootstrap import create_table, read_footers
from archiver.table.files import LiveFile, TableFile
from archiver.table.writer import ArchiveTable

#: Closed hours whose flush files left tombstones (the table's deletedFileRetentionDuration).
TOMBSTONE_HOURS = 6
#: Commits between two checkpoints (the service's upkeep).
CHECKPOINT_EVERY = 100
FLUSHES_PER_HOUR = 60
#: Regions (flush files a minute) of each app-hour's tombstones.
REGIONS = 3
WRITER = "bench0001"


class _Counter:
    """Commits since the last checkpoint; checkpoints every CHECKPOINT_EVERY."""

    def __init__(self, table: ArchiveTable) -> None:
        self.table, self.commits, self.checkpoints = table, 0, 1

    def committed(self) -> None:
        self.commits += 1
        if self.commits % CHECKPOINT_EVERY == 0:
            upkeep.checkpoint(self.table)
            self.checkpoints += 1


def make_table(source: Path, target: Path, now_ns: int) -> dict[str, Any]:
    """``target``: ``source``'s files (hard links) and a Delta log with the service's history up to ``now_ns``."""
    started = time.monotonic()
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, copy_function=os.link)
    settings = ArchiveSettings("file", "", str(target))
    current = hour_start_ns(now_ns)
    candidates = []
    for path in sorted(target.rglob("*.parquet")):
        key = str(path.relative_to(target))
        parsed = parse_key(key)
        assert parsed is not None and parsed.layout == 2, key
        date = time.strftime("%Y-%m-%d", time.gmtime(parsed.hour_ns // 10**9))
        candidates.append((key, path.stat().st_size, parsed.app, date))
    files, skipped = read_footers(settings, candidates)
    assert not skipped, skipped[:3]
    hours = {f.key: parse_key(f.key).hour_ns for f in files}  # type: ignore[union-attr]
    old = [f for f in files if hours[f.key] < current - TOMBSTONE_HOURS * NS_PER_HOUR]
    recent = [f for f in files if current - TOMBSTONE_HOURS * NS_PER_HOUR <= hours[f.key] < current]
    live = [f for f in files if hours[f.key] >= current]
    assert create_table(settings, old)
    table = ArchiveTable.open(settings)
    assert table is not None
    counter = _Counter(table)
    by_app_hour: dict[tuple[str, int], list[TableFile]] = defaultdict(list)
    for f in recent:
        by_app_hour[(f.app, hours[f.key])].append(f)
    sequence = 0
    tombstones = 0
    for (app, hour), compacted in sorted(by_app_hour.items(), key=lambda item: item[0][1]):
        flushes = []
        for region in range(REGIONS):
            for minute in range(FLUSHES_PER_HOUR):
                sequence += 1
                name = object_name(hour + minute * 60 * 10**9 + region, WRITER, sequence)
                key = object_key(compacted[0].key.split("/")[0][4:], hour, name)
                flushes.append(dataclasses.replace(compacted[0], key=key, size=40_000))
        table.commit_adds(flushes, f"{WRITER}-{app}", hour // NS_PER_HOUR)
        counter.committed()
        table.commit_compaction([LiveFile(f.key, f.size, f.app, f.date) for f in flushes], compacted)
        counter.committed()
        tombstones += len(flushes)
    by_minute: dict[int, list[TableFile]] = defaultdict(list)
    for f in live:
        parts = live_name_parts(f.key.rpartition("/")[2])
        assert parts is not None, f.key
        by_minute[int(f.key.rpartition("/")[2][11:13])].append(f)
    for minute, batch in sorted(by_minute.items()):
        table.commit_sequence(WRITER, {minute + 1: batch})
        counter.committed()
    return {
        "live_files": len(files),
        "tombstones": tombstones,
        "commits": counter.commits + 1,
        "checkpoints": counter.checkpoints,
        "commits_after_checkpoint": counter.commits % CHECKPOINT_EVERY,
        "checkpoint_bytes": max(
            p.stat().st_size for p in (target / "_delta_log").glob("*.checkpoint.parquet")
        ),
        "build_s": round(time.monotonic() - started, 1),
    }
