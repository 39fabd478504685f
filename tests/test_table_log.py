"""Our read-only log reader on damaged, foreign and unusual logs: one clear error line naming the object."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import orjson
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake
from table_files import ids, put_v2

from archiver.config import ArchiveSettings
from archiver.errors import TableError
from archiver.storage.interface import Storage
from archiver.storage.open import open_storage
from archiver.table import upkeep
from archiver.table.bootstrap import create_table
from archiver.table.location import storage_options, table_uri
from archiver.table.log import read_snapshot
from archiver.table.writer import ArchiveTable

D1 = "2024-01-02"


def log_key(version: int, suffix: str = "json") -> str:
    return f"_delta_log/{version:020d}.{suffix}"


@pytest.fixture(params=["local", "s3"])
async def table(request: pytest.FixtureRequest) -> AsyncIterator[tuple[ArchiveSettings, Storage, set[str]]]:
    """A table at version 2 (v0 with a checkpoint, two commits after it) and its live keys."""
    settings = request.getfixturevalue(f"{request.param}_settings")
    storage = open_storage(settings)
    files = [await put_v2(storage, "web", D1, f"f{i}", ids(f"f{i}", 1)) for i in range(3)]
    assert create_table(settings, files[:1])
    handle = ArchiveTable.open(settings)
    assert handle is not None
    handle.commit_adds(files[1:2], "w", 1)
    handle.commit_adds(files[2:], "w", 2)
    try:
        yield settings, storage, {f.key for f in files}
    finally:
        await storage.close()


async def replace(storage: Storage, key: str, data: bytes) -> None:
    """Overwrite a log object (storage is create-only: delete, then put)."""
    await storage.delete([key])
    await storage.put(key, data)


async def expect_error(storage: Storage, match: str, names: str) -> str:
    with pytest.raises(TableError, match=match) as caught:
        await read_snapshot(storage)
    message = str(caught.value)
    assert names in message and "\n" not in message
    return message


def add_line(path: str) -> bytes:
    add = {
        "path": path,
        "size": 1,
        "partitionValues": {"app": "web", "date": D1},
        "modificationTime": 0,
        "dataChange": True,
    }
    return orjson.dumps({"add": add}) + b"\n"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"this is not a Delta commit\n", "line 1 is not JSON"),
        (b"[1, 2, 3]\n", "not an action object"),
        (b"\n\n", "no actions"),
        (orjson.dumps({"add": {"path": "x"}}) + b"\n", "lacks path, size or partitionValues"),
        (add_line("../../etc/passwd"), "not a valid archive key"),
        (add_line("s3://elsewhere/app=web/x.parquet"), "not relative to the table"),
        (add_line("app=web/%FF.parquet"), "not a valid archive key"),
        (
            orjson.dumps({"protocol": {"minReaderVersion": 3, "readerFeatures": ["deletionVectors"]}}),
            "deletionVectors",
        ),
        (orjson.dumps({"metaData": {"partitionColumns": ["x"]}}), "not an archiver table"),
    ],
)
async def test_a_damaged_or_foreign_commit_is_named(
    table: tuple[ArchiveSettings, Storage, set[str]], content: bytes, match: str
) -> None:
    _, storage, _ = table
    await storage.put(log_key(3), content)
    await expect_error(storage, match, log_key(3))


async def test_delta_rs_errors_are_converted_and_name_the_table(
    table: tuple[ArchiveSettings, Storage, set[str]],
) -> None:
    settings, storage, _ = table
    handle = ArchiveTable.open(settings)
    assert handle is not None
    await storage.put(log_key(3), b"this is not a Delta commit\n")
    # On an event loop's thread, delta-rs's own error (first line, naming the table):
    with pytest.raises(TableError, match="cannot read the Delta log") as caught:
        handle.refresh()
    assert settings.url in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(TableError, match="cannot open the Delta table"):
        ArchiveTable.open(settings)
    # From a worker thread, as the service calls it: our reader names the damaged object.
    with pytest.raises(TableError, match="line 1 is not JSON") as caught:
        await asyncio.to_thread(handle.refresh)
    assert log_key(3) in str(caught.value)
    with pytest.raises(TableError, match="line 1 is not JSON"):
        await asyncio.to_thread(ArchiveTable.open, settings)


async def test_a_damaged_checkpoint_or_hint_is_named(
    table: tuple[ArchiveSettings, Storage, set[str]],
) -> None:
    _, storage, keys = table
    await replace(storage, "_delta_log/_last_checkpoint", b"{not json")
    await expect_error(storage, "not a _last_checkpoint document", "_delta_log/_last_checkpoint")
    await replace(storage, "_delta_log/_last_checkpoint", orjson.dumps({"version": 0, "size": 3}))
    snapshot = await read_snapshot(storage)
    assert snapshot is not None and {f.key for f in snapshot.files} == keys
    await replace(storage, log_key(0, "checkpoint.parquet"), b"PAR1 garbage PAR1")
    await expect_error(storage, "not a readable checkpoint", log_key(0, "checkpoint.parquet"))
    await storage.delete([log_key(0, "checkpoint.parquet")])
    await expect_error(storage, "which is not in the log", "_last_checkpoint")
    await replace(storage, "_delta_log/_last_checkpoint", orjson.dumps({"version": 0, "v2Checkpoint": {}}))
    await expect_error(storage, "V2 checkpoint", "_delta_log/_last_checkpoint")


async def test_a_gap_in_the_log_is_an_error_not_a_partial_answer(
    table: tuple[ArchiveSettings, Storage, set[str]],
) -> None:
    _, storage, _ = table
    await storage.delete([log_key(1)])
    await expect_error(storage, "version 1 is missing", log_key(2))


async def test_unknown_log_objects_are_ignored(table: tuple[ArchiveSettings, Storage, set[str]]) -> None:
    _, storage, keys = table
    for name in (
        "00000000000000000002.crc",
        "notes.txt",
        "00000000000000000001.00000000000000000002.compacted.json",
    ):
        await storage.put(f"_delta_log/{name}", b"whatever")
    snapshot = await read_snapshot(storage)
    assert snapshot is not None and snapshot.version == 2 and {f.key for f in snapshot.files} == keys


async def test_a_multi_part_checkpoint_is_read(table: tuple[ArchiveSettings, Storage, set[str]]) -> None:
    settings, storage, keys = table
    handle = ArchiveTable.open(settings)
    assert handle is not None
    version = upkeep.checkpoint(handle)
    classic = log_key(version, "checkpoint.parquet")
    rows = pq.ParquetFile(io.BytesIO(await storage.get(classic))).read()
    assert rows.num_rows >= 4
    for part, (start, stop) in enumerate(((0, 2), (2, rows.num_rows)), 1):
        buf = io.BytesIO()
        pq.write_table(rows.slice(start, stop - start), buf)
        await storage.put(log_key(version, f"checkpoint.{part:010d}.{2:010d}.parquet"), buf.getvalue())
    await storage.delete([classic])
    await replace(
        storage, "_delta_log/_last_checkpoint", orjson.dumps({"version": version, "size": 1, "parts": 2})
    )
    snapshot = await read_snapshot(storage)
    assert snapshot is not None and snapshot.version == version and {f.key for f in snapshot.files} == keys


async def test_a_foreign_delta_table_is_refused(local_settings: ArchiveSettings) -> None:
    import pyarrow as pa

    write_deltalake(table_uri(local_settings), pa.table({"x": [1], "y": ["a"]}), partition_by=["y"],
                    storage_options=storage_options(local_settings))  # fmt: skip
    storage = open_storage(local_settings)
    await expect_error(storage, "not an archiver table", log_key(0))
