"""``archiver import`` into an archive that is a Delta table: the imported files are added exactly once.

A real local archive and delta-rs table: an import adds its files; importing the same lines again
adds nothing; once a compaction merged them, importing them again writes the files again, which
the table's compacted group already replaces: not added, and deleted.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import orjson
from harness import unique_messages
from test_table_readers import read_deltalake

from archiver.config import ArchiveSettings
from archiver.manage.compact import compact_archive
from archiver.manage.compact_table import TableLink
from archiver.manage.importer import run_import
from archiver.storage.local import LocalStorage
from archiver.table.bootstrap import create_table
from archiver.table.writer import ArchiveTable


async def test_import_adds_once_and_never_after_a_compaction(tmp_path: Path) -> None:
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    storage = LocalStorage(settings.prefix)
    assert create_table(settings, [])
    table = ArchiveTable.open(settings)
    assert table is not None
    sent = unique_messages(31, 600)  # closed hours: compacted below
    source = tmp_path / "logs.jsonl"
    source.write_bytes(b"".join(payload + b"\n" for _, payload in sent))
    want = Counter(orjson.loads(payload)["message"] for _, payload in sent)

    def in_table() -> Counter[str]:
        return Counter(message for message, _ in read_deltalake(settings))

    try:
        first = await run_import([str(source)], storage, table=table)
        assert first.written > 0 and first.added == first.written
        assert in_table() == want
        version = table.refresh()
        again = await run_import([str(source)], storage, table=table)
        assert again.existing == first.written and again.added == 0
        assert table.refresh() == version and in_table() == want  # no commit at all

        compacted = await compact_archive(
            storage, (), time.time_ns(), 256 * 1024**2, table=TableLink(lambda: table)
        )
        assert compacted.compacted > 0
        files = {info.key for info in await storage.list("app=")}
        third = await run_import([str(source)], storage, table=table)
        assert third.written == first.written and third.added == 0  # written again, replaced already
        assert in_table() == want
        assert {info.key for info in await storage.list("app=")} == files  # and deleted again
    finally:
        await storage.close()
