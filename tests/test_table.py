"""The archive table through delta-rs and our own log reader, on a local directory and on SeaweedFS.

At every step our read-only reader's live set must equal delta-rs's (``file_uris()`` of a
freshly opened table), after checkpoints and with removes after them too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from urllib.parse import unquote

import pytest
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import Transaction
from table_files import ids, live, parse_key, put_v2, v1_bytes

from archiver.config import ArchiveSettings
from archiver.errors import TableConflictError
from archiver.storage.interface import Storage
from archiver.table import upkeep
from archiver.table.bootstrap import create_table, register_existing
from archiver.table.location import storage_options, table_uri
from archiver.table.log import read_snapshot
from archiver.table.writer import ArchiveTable, guard_id, remove_action

D1, D2 = "2024-01-02", "2024-01-03"


def delta_rs_keys(settings: ArchiveSettings) -> set[str]:
    """The live keys as a freshly opened delta-rs table lists them (``get_add_actions``, and locally ``file_uris``)."""
    delta = DeltaTable(table_uri(settings), storage_options=storage_options(settings))
    keys = {unquote(path) for path in delta.get_add_actions(flatten=True).column("path").to_pylist()}
    if settings.scheme == "file":
        # On S3, file_uris() percent-encodes non-ASCII characters only (a URL, not a key): compared locally.
        root = table_uri(settings).rstrip("/") + "/"
        assert {uri.removeprefix(root) for uri in delta.file_uris()} == keys
    return keys


async def assert_reader_agrees(settings: ArchiveSettings, storage: Storage, expected: set[str]) -> int:
    """Our reader's live set == delta-rs's == ``expected``; the version."""
    snapshot = await read_snapshot(storage)
    assert snapshot is not None
    ours = {f.key for f in snapshot.files}
    assert ours == delta_rs_keys(settings) == expected
    table = ArchiveTable.open(settings)
    assert table is not None
    assert table.version == snapshot.version
    assert table.live_keys() == expected
    return snapshot.version


async def test_no_table_reads_as_none(empty_archive: tuple[ArchiveSettings, Storage]) -> None:
    settings, storage = empty_archive
    await storage.put("app=web/date=2024-01-02/x.parquet", b"bare file")
    assert await read_snapshot(storage) is None
    assert ArchiveTable.open(settings) is None


async def test_appends_commit_each_batch_once(empty_archive: tuple[ArchiveSettings, Storage]) -> None:
    settings, storage = empty_archive
    assert create_table(settings, []) is True
    assert create_table(settings, []) is False
    table = ArchiveTable.open(settings)
    assert table is not None
    first = [await put_v2(storage, "web", D1, f"b1-{i}", ids(f"b1-{i}", 2)) for i in range(2)]
    second = [await put_v2(storage, "a/b", D2, "b2", ids("b2", 3))]
    assert table.commit_adds(first, "writer-1", 1) is True
    assert table.commit_adds(first, "writer-1", 1) is False  # replayed after a restart
    assert table.commit_adds(second, "writer-1", 2) is True
    assert table.commit_adds(first, "writer-1", 1) is False  # a lower version is not added again either
    assert table.delta.transaction_version("writer-1") == 2
    keys = {f.key for f in first + second}
    version = await assert_reader_agrees(settings, storage, keys)
    assert version == 2  # v0 and two commits: the replays committed nothing
    other = ArchiveTable.open(settings)
    assert (
        other is not None and other.commit_adds(second, "writer-1", 2) is False
    )  # another handle sees it too


async def test_reader_follows_checkpoints_removes_and_filters(
    empty_archive: tuple[ArchiveSettings, Storage],
) -> None:
    settings, storage = empty_archive
    apps = ["web", "über", "a/b", "", "x:y"]
    files = [await put_v2(storage, app, date, f"f{n}", ids(f"{n}", 1)) for n, (app, date) in enumerate(
        (app, date) for app in apps for date in (D1, D2)
    )]  # fmt: skip
    assert create_table(settings, files[:2])  # v0 + its checkpoint
    table = ArchiveTable.open(settings)
    assert table is not None
    expected = {f.key for f in files[:2]}
    for n in range(2, len(files), 2):
        table.commit_adds(files[n : n + 2], "w", n)
        expected |= {f.key for f in files[n : n + 2]}
        await assert_reader_agrees(settings, storage, expected)
    upkeep.checkpoint(table)
    await assert_reader_agrees(settings, storage, expected)
    table.commit_removes([live(files[0]), live(files[5])])  # removes after the checkpoint
    expected -= {files[0].key, files[5].key}
    await assert_reader_agrees(settings, storage, expected)
    table.commit_adds([files[0]], "w", 100)  # re-added after its remove: live again
    expected.add(files[0].key)
    await assert_reader_agrees(settings, storage, expected)

    snapshot = await read_snapshot(storage, apps=["über", ""], dates=[D2])
    assert snapshot is not None
    assert {(f.app, f.date) for f in snapshot.files} == {("über", D2), ("", D2)}
    by_key = {f.key: f for f in snapshot.files}
    for f in files:
        if f.key in by_key:
            assert by_key[f.key] == live(f)
    upkeep.checkpoint(table)  # the same after a second checkpoint
    again = await read_snapshot(storage, apps=["über", ""], dates=[D2])
    assert again is not None and again.files == snapshot.files


async def test_a_second_compactor_of_the_same_inputs_loses(
    empty_archive: tuple[ArchiveSettings, Storage],
) -> None:
    settings, storage = empty_archive
    inputs = [await put_v2(storage, "web", D1, f"in{i}", ids(f"in{i}", 2)) for i in range(3)]
    assert create_table(settings, inputs)
    first, second = ArchiveTable.open(settings), ArchiveTable.open(settings)
    assert first is not None and second is not None
    merged_a = await put_v2(
        storage, "web", D1, "20240102T03-c-a-1of1", [m for i in range(3) for m in ids(f"in{i}", 2)]
    )
    merged_b = await put_v2(
        storage, "web", D1, "20240102T03-c-b-1of1", [m for i in range(3) for m in ids(f"in{i}", 2)]
    )

    # The guard itself: B read the table (inputs live, guard at 0) before A committed.
    second.refresh()
    first.commit_compaction([live(f) for f in inputs], [merged_a])
    guard = guard_id("web", D1)
    first.refresh()  # a delta-rs handle does not advance by its own commits
    assert first.delta.transaction_version(guard) == 1
    actions = [remove_action(live(f), False, 0) for f in inputs]
    with pytest.raises(CommitFailedError, match="Concurrent transaction"):
        second._commit(actions, [Transaction(guard, 1)])
    # Through the API: the inputs are no longer live.
    with pytest.raises(TableConflictError, match="no longer live"):
        second.commit_compaction([live(f) for f in inputs], [merged_b])
    await assert_reader_agrees(settings, storage, {merged_a.key})
    rows = DeltaTable(table_uri(settings), storage_options=storage_options(settings)).to_pyarrow_table()
    assert sorted(rows.column("message").to_pylist()) == sorted(m for i in range(3) for m in ids(f"in{i}", 2))

    # A prune of the app-day carries the same guard: it moves it on.
    first.commit_removes([live(merged_a)])
    first.refresh()
    assert first.delta.transaction_version(guard) == 2
    await assert_reader_agrees(settings, storage, set())


async def test_prune_and_vacuum_delete_exactly_the_removed_files(
    empty_archive: tuple[ArchiveSettings, Storage],
) -> None:
    settings, storage = empty_archive
    files = [
        await put_v2(storage, app, D1, f"p{i}", ids(f"p{app}{i}", 1))
        for app in ("web", "db")
        for i in range(3)
    ]
    assert create_table(settings, files[:3])
    table = ArchiveTable.open(settings)
    assert table is not None
    table.commit_adds(files[3:], "w", 1)
    untracked = await put_v2(storage, "web", D1, "uploaded-not-committed", ["u"])
    await storage.put(
        "app=web/date=2024-01-02/old-v1.parquet", v1_bytes(["v1"], dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
    )
    before = {o.key for o in await storage.list("app=")}

    table.commit_removes([live(files[0]), live(files[4])])  # the prune
    upkeep.checkpoint(table)  # a checkpoint between the remove and the vacuum
    table.commit_removes([live(files[1])])  # and a remove after it
    assert upkeep.vacuum(table, retention_hours=1) == []  # within the retention: kept for running queries
    assert {o.key for o in await storage.list("app=")} == before
    deleted = upkeep.vacuum(table, retention_hours=0)
    removed = {files[0].key, files[4].key, files[1].key}
    assert {unquote(p) for p in deleted} == removed
    after = {o.key for o in await storage.list("app=")}
    assert after == before - removed
    assert untracked.key in after and "app=web/date=2024-01-02/old-v1.parquet" in after
    await assert_reader_agrees(settings, storage, {f.key for f in files} - removed)
    upkeep.clean_up_log(table)  # nothing expired yet; must not disturb the table
    await assert_reader_agrees(settings, storage, {f.key for f in files} - removed)


async def test_bootstrap_registers_existing_v2_files(empty_archive: tuple[ArchiveSettings, Storage]) -> None:
    settings, storage = empty_archive
    files = [
        await put_v2(storage, app, D1, "20240102T030000Z-w1-1", ids(app or "empty", 3))
        for app in ("web", "a/b", "", "日本")
    ]
    v1_key = "app=old/date=2024-01-01/hour=03/region=ams/20240101T030000Z-w-1.parquet"
    await storage.put(v1_key, v1_bytes(["old"], dt.datetime(2024, 1, 1, tzinfo=dt.UTC)))
    v1_shaped_v2_key = "app=old/date=2024-01-01/20240101T030000Z-w-2.parquet"
    await storage.put(v1_shaped_v2_key, v1_bytes(["old"], dt.datetime(2024, 1, 1, tzinfo=dt.UTC)))
    await storage.put("app=web/date=2024-01-02/notes.txt", b"not data")
    await storage.put("_archiver/claims/web/20240102T03/1", b"{}")

    result = await register_existing(settings, storage, parse_key)
    assert result.created and result.registered == len(files)
    assert [key for key, _ in result.skipped] == [v1_shaped_v2_key]
    assert "not a schema v2 file" in result.skipped[0][1]
    await assert_reader_agrees(settings, storage, {f.key for f in files})
    actions = DeltaTable(table_uri(settings), storage_options=storage_options(settings)).get_add_actions(
        flatten=True
    )
    stats = dict(
        zip(actions.column("path").to_pylist(), actions.column("num_records").to_pylist(), strict=True)
    )
    assert sorted(stats.values()) == [3, 3, 3, 3]
    again = await register_existing(settings, storage, parse_key)
    assert not again.created and again.registered == 0


async def test_log_reads_run_concurrently_with_commits(
    empty_archive: tuple[ArchiveSettings, Storage],
) -> None:
    settings, storage = empty_archive
    assert create_table(settings, [])
    table = ArchiveTable.open(settings)
    assert table is not None
    files = [await put_v2(storage, "web", D1, f"c{i}", [f"c{i}"]) for i in range(6)]

    def commit_all() -> None:
        for i, f in enumerate(files):
            table.commit_adds([f], "w", i + 1)
            if i == 2:
                upkeep.checkpoint(table)

    writer = asyncio.create_task(asyncio.to_thread(commit_all))
    seen = []
    while not writer.done():
        snapshot = await read_snapshot(storage)
        assert snapshot is not None
        keys = [f.key for f in snapshot.files]
        assert keys == [f.key for f in files[: len(keys)]]  # a prefix of the commits, never a mix
        seen.append(len(keys))
    await writer
    assert seen == sorted(seen)
    await assert_reader_agrees(settings, storage, {f.key for f in files})
