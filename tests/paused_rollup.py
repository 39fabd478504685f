"""``archiver compact`` (the real Compactor, with the archive's table when it has one) paused for good at one step
of the first roll-up that reaches it: for kill -9 tests.

Usage: python tests/paused_rollup.py POINT MARKER, the archive given by the environment as for ``archiver``.
POINT as in ``paused_service.py``: ``some-outputs`` (before the commit), ``all-outputs`` (every part uploaded:
with a table, committed, nothing deleted) or ``mid-delete`` (half the inputs deleted).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from paused_service import PausingStorage

from archiver.environment import load_archive_settings
from archiver.manage.compact import compact_archive
from archiver.manage.compact_table import TableLink
from archiver.storage.open import open_storage
from archiver.table.writer import ArchiveTable

FAR_FUTURE_NS = 2**62


async def main(point: str, marker: Path) -> None:
    settings = load_archive_settings(None)
    handle = ArchiveTable.open(settings)
    table = None if handle is None else TableLink(lambda: handle)
    storage = PausingStorage(open_storage(settings), point, marker)
    await compact_archive(storage, (), FAR_FUTURE_NS, int(sys.argv[3]), table=table)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
