"""A query benchmark archive as the service leaves it a day later: closed days rolled up (bench/query_speed.py --rolled).

The archive's files, hard-linked into a new directory, then ``archiver compact``'s own pass
(:func:`archiver.manage.compact.compact_archive`, the service's compactor steps) with the service's
defaults at the benchmark's "now": every closed app-hour is already compacted, so what it does is roll
up each app-day that ended ROLLUP_GRACE_S + COMPACT_AFTER before now into one day file (row groups
ending at hours), deleting that day's hour files (hard links: the source archive keeps them).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

from archiver.archive.layout import NS_PER_SECOND
from archiver.config import ArchiveSettings, compact_target_bytes
from archiver.manage.compact import compact_archive
from archiver.storage.open import open_storage

#: The service's default COMPACT_AFTER: a day is rolled up this long after ROLLUP_GRACE_S past its end.
COMPACT_AFTER_S = 600


def make_rolled(source: Path, target: Path, now_ns: int) -> dict[str, Any]:
    """Hard-link ``source`` into ``target`` and roll up its closed days there; what it did."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, copy_function=os.link)
    started = time.monotonic()
    stats = asyncio.run(_roll_up(target, now_ns - COMPACT_AFTER_S * NS_PER_SECOND))
    return {
        "files": sum(1 for _ in target.rglob("*.parquet")),
        "bytes": sum(p.stat().st_size for p in target.rglob("*.parquet")),
        "days_rolled_up": stats.days_rolled_up,
        "seconds": round(time.monotonic() - started, 1),
    }


async def _roll_up(root: Path, before_ns: int) -> Any:
    storage = open_storage(ArchiveSettings("file", "", str(root)))
    try:
        return await compact_archive(storage, [], before_ns, compact_target_bytes(None), now_ns=before_ns)
    finally:
        await storage.close()
