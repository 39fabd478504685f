"""``archiver query``, ``ls`` and ``stats`` read what the Delta table's snapshot holds, locally and on SeaweedFS.

Each step changes the table the way the service, the compactor, prune and upkeep do (appends, a
compaction whose inputs stay in storage, a prune not vacuumed yet, an upload not committed, a
checkpoint and log clean-up), then checks that every command's answer is delta-rs's snapshot:
the rows of exactly the live files, each once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from harness import archive_env
from table_files import ids, put_v2, v2_bytes
from test_query_follow import Follow
from v1_files import to_v1

from archiver.archive.layout import v1_object_key
from archiver.cli.main import main
from archiver.config import ArchiveSettings
from archiver.storage.open import open_storage
from archiver.table import upkeep
from archiver.table.bootstrap import create_table
from archiver.table.files import LiveFile, TableFile
from archiver.table.log_cache import SAVE_AFTER
from archiver.table.stats import file_stats
from archiver.table.writer import ArchiveTable

D0, D1 = "2024-01-01", "2024-01-02"
RANGE = ("--since", "2024-01-01T00:00", "--until", "2024-01-03T00:00")


def cli(settings: ArchiveSettings, *args: str) -> Result:
    """``archiver ARGS`` in process against the archive of ``settings``."""
    env: dict[str, str | None] = {"ARCHIVE_URL": None, "BUCKET_NAME": None, **archive_env(settings)}
    return CliRunner().invoke(main, list(args), env=env)


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest) -> ArchiveSettings:
    """An empty archive on each backend."""
    found: ArchiveSettings = request.getfixturevalue(f"{request.param}_settings")
    return found


class Archive:
    """The test's archive: files uploaded (with their message ids) and the table they may be in."""

    def __init__(self, settings: ArchiveSettings) -> None:
        self.settings = settings
        self.messages: dict[str, list[str]] = {}
        self.sequence = 0

    def upload(
        self,
        app: str,
        date: str,
        count: int = 3,
        messages: Sequence[str] | None = None,
        start: dt.datetime | None = None,
    ) -> TableFile:
        """A v2 flush file of ``start`` (hour 03 of ``date`` by default), uploaded (not committed)."""
        self.sequence += 1
        rows = list(messages) if messages is not None else ids(f"{app}{self.sequence}", count)
        if start is not None:
            date = f"{start:%Y-%m-%d}"
        name = f"{date.replace('-', '')}T030000Z-w-{self.sequence:08d}"

        async def put() -> TableFile:
            storage = open_storage(self.settings)
            try:
                if start is None:
                    return await put_v2(storage, app, date, name, rows)
                data = v2_bytes(rows, start)
                key = f"app={app}/date={date}/{start:%Y%m%dT%H%M%S}Z-w-{self.sequence:08d}.parquet"
                await storage.put(key, data)
                stats = file_stats(pq.read_metadata(io.BytesIO(data)))
                return TableFile(key, len(data), app, date, stats, time.time_ns() // 1_000_000)
            finally:
                await storage.close()

        file = asyncio.run(put())
        self.messages[file.key] = rows
        return file

    def table(self) -> ArchiveTable:
        """The table, refreshed."""
        table = ArchiveTable.open(self.settings)
        assert table is not None
        table.refresh()
        return table

    def live_messages(self) -> list[str]:
        """The messages of delta-rs's snapshot's files, sorted."""
        return sorted(m for key in self.table().live_keys() for m in self.messages[key])

    def check(self) -> None:
        """query (text and counts), ls and stats agree with delta-rs's snapshot."""
        expected = self.live_messages()
        result = cli(self.settings, "query", *RANGE, "--format", "json")
        assert result.exit_code == 0, result.output
        assert "warning" not in result.stderr, result.stderr
        printed = sorted(orjson.loads(line)["message"] for line in result.stdout_bytes.splitlines())
        assert printed == expected
        count = cli(self.settings, "query", *RANGE, "--count", "--format", "json")
        assert count.exit_code == 0, count.output
        assert sum(orjson.loads(line)["count"] for line in count.stdout_bytes.splitlines()) == len(expected)
        top = cli(self.settings, "query", *RANGE, "--top", "50", "--format", "json")
        assert sum(orjson.loads(line)["count"] for line in top.stdout_bytes.splitlines()) == len(expected)
        tail = cli(self.settings, "query", *RANGE, "--tail", "2", "--format", "json")
        tail_messages = [orjson.loads(line)["message"] for line in tail.stdout_bytes.splitlines()]
        assert len(tail_messages) == min(2, len(expected)) and set(tail_messages) <= set(expected)
        live = self.table().live_keys()
        for app in sorted({key.split("/")[0][4:] for key in self.messages}):
            ls = cli(self.settings, "ls", "--app", app)
            assert ls.exit_code == 0, ls.output
            app_keys = [key for key in live if key.startswith(f"app={app}/")]
            rows = sum(len(self.messages[key]) for key in app_keys)
            if app_keys:
                assert _column_sums(ls.stdout) == (len(app_keys), rows), ls.stdout
        apps = cli(self.settings, "ls")
        assert apps.stdout.split() == sorted({key.split("/")[0][4:] for key in live})
        stats = cli(self.settings, "stats", "--since", D0)
        assert stats.exit_code == 0, stats.output
        total = next(line.split() for line in stats.stdout.splitlines() if line.startswith("total"))
        assert (int(total[1]), int(total[2])) == (len(live), len(expected)), stats.stdout


def _column_sums(table: str) -> tuple[int, int]:
    """(FILES, ROWS) summed over the rows of ``archiver ls --app X``."""
    lines = table.splitlines()
    header = lines[0].replace("HOUR (UTC)", "HOUR").split()
    files, rows = header.index("FILES"), header.index("ROWS")
    cells = [line.split() for line in lines[1:]]
    return sum(int(c[files]) for c in cells), sum(int(c[rows]) for c in cells)


def _live(file: TableFile) -> LiveFile:
    return LiveFile(file.key, file.size, file.app, file.date)


def test_commands_agree_with_the_tables_snapshot(settings: ArchiveSettings) -> None:
    archive = Archive(settings)
    first = [archive.upload("web", D0), archive.upload("web", D1), archive.upload("api", D1)]
    assert create_table(settings, first[:1])
    table = archive.table()
    # Appends, as the service's committer makes them.
    assert table.commit_adds(first[1:], "w", 1)
    more = [archive.upload("web", D1), archive.upload("web", D1)]
    assert table.commit_adds(more, "w", 2)
    archive.check()

    # An upload not committed (a flush waiting for its commit, or a compaction's abandoned output).
    archive.upload("web", D1)
    archive.check()

    # A compaction: one commit removes its inputs and adds the merged file; the inputs stay in
    # storage until vacuum. Its name is a live file's (no `archiver.replaces`): only the table can tell.
    inputs = [first[1], *more]
    merged = archive.upload("web", D1, messages=[m for f in inputs for m in archive.messages[f.key]])
    archive.table().commit_compaction([_live(f) for f in inputs], [merged])
    archive.check()

    # A prune of day D0: removed, not vacuumed.
    archive.table().commit_removes([_live(first[0])])
    archive.check()

    # A checkpoint, commits after it, then log clean-up (the commits the checkpoint covers deleted).
    version = upkeep.checkpoint(archive.table())
    late = archive.upload("api", D1)
    assert archive.table().commit_adds([late], "w", 3)
    archive.table().commit_removes([_live(first[2])])
    asyncio.run(_delete_commits_before(settings, version))
    archive.check()

    # More commits since the readers' cached snapshot than it replays without writing it again.
    table = archive.table()
    for sequence in range(4, 4 + SAVE_AFTER + 1):
        assert table.commit_adds([archive.upload("web", D1, count=1)], "w", sequence)
    archive.check()


async def _delete_commits_before(settings: ArchiveSettings, version: int) -> None:
    storage = open_storage(settings)
    try:
        keys = [f"_delta_log/{v:020d}.json" for v in range(version)]
        await storage.delete(keys)
        listed = {info.key for info in await storage.list("_delta_log/")}
        assert not listed & set(keys) and f"_delta_log/{version:020d}.checkpoint.parquet" in listed
    finally:
        await storage.close()


def test_a_damaged_log_warns_once_and_reads_by_listing(settings: ArchiveSettings) -> None:
    archive = Archive(settings)
    files = [archive.upload("web", D1), archive.upload("web", D1)]
    assert create_table(settings, files[:1])
    assert archive.table().commit_adds(files[1:], "w", 1)

    async def damage() -> None:
        storage = open_storage(settings)
        try:
            await storage.delete(["_delta_log/00000000000000000001.json"])
            await storage.put("_delta_log/00000000000000000001.json", b"{not json\n")
        finally:
            await storage.close()

    asyncio.run(damage())
    damaged = "_delta_log/00000000000000000001.json"
    result = cli(settings, "query", *RANGE, "--format", "json")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and damaged in warnings[0] and "listing" in warnings[0]
    printed = sorted(orjson.loads(line)["message"] for line in result.stdout_bytes.splitlines())
    assert printed == sorted(m for f in files for m in archive.messages[f.key])
    for args in (["query", *RANGE], ["ls", "--app", "web"], ["stats", "--since", D0]):
        strict = cli(settings, *args, "--strict")
        assert strict.exit_code != 0
        assert damaged in strict.output and "Traceback" not in strict.output
        lenient = cli(settings, *args)
        assert lenient.exit_code == 0, lenient.output
        assert sum(damaged in line for line in lenient.stderr.splitlines()) == 1, lenient.stderr


def test_an_archive_that_is_not_a_table_is_read_by_listing(settings: ArchiveSettings) -> None:
    archive = Archive(settings)
    files = [archive.upload("web", D1), archive.upload("api", D0)]
    result = cli(settings, "query", *RANGE, "--format", "json")
    assert result.exit_code == 0 and not result.stderr, result.output
    printed = sorted(orjson.loads(line)["message"] for line in result.stdout_bytes.splitlines())
    assert printed == sorted(m for f in files for m in archive.messages[f.key])
    assert cli(settings, "ls").stdout.split() == ["api", "web"]


def json_messages(lines: list[str]) -> list[str]:
    """The ``message`` of each ``--format json`` line, sorted."""
    return sorted(orjson.loads(line)["message"] for line in lines)


def test_follow_on_a_table_prints_a_file_once_when_it_is_uploaded(settings: ArchiveSettings) -> None:
    """--follow lists, table or not: a file is printed when uploaded (not a commit interval later), once."""
    archive = Archive(settings)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    first = archive.upload("web", "", start=now - dt.timedelta(minutes=10))
    assert create_table(settings, [first])
    follow = Follow(None, "--since", "1h", "--format", "json", env=archive_env(settings))
    try:
        assert json_messages(follow.take(3)) == archive.messages[first.key]
        # Uploaded, not committed yet: printed now, and not again at its commit.
        second = archive.upload("web", "", start=dt.datetime.now(dt.UTC))
        assert json_messages(follow.take(3)) == sorted(archive.messages[second.key])
        assert archive.table().commit_adds([second], "w", 1)
        assert follow.quiet(2.5) == []
    finally:
        code, stderr = follow.interrupt()
    assert code == 0
    assert "3 logs at start, 3 new in 1 new files" in stderr and stderr.count("\n") == 1, stderr


def test_the_snapshot_cache_is_exact_for_a_table_created_again(
    settings: ArchiveSettings, user_cache: Path
) -> None:
    archive = Archive(settings)
    first = [archive.upload("web", D1), archive.upload("web", D1)]
    assert create_table(settings, first[:1])
    assert archive.table().commit_adds(first[1:], "w", 1)
    archive.check()
    cached = list((user_cache / "archiver" / "snapshots").iterdir())
    assert cached, "the readers cache the table's snapshot"
    # The same place, the table deleted and created again: the same versions, other files.
    asyncio.run(_delete_everything(settings))
    again = Archive(settings)
    again.sequence = 10
    second = [again.upload("web", D1), again.upload("web", D1)]
    assert create_table(settings, second[:1])
    assert again.table().commit_adds(second[1:], "w", 1)
    again.check()
    # A damaged cache file only makes the read uncached.
    for path in (user_cache / "archiver" / "snapshots").iterdir():
        path.write_bytes(b"not json")
    again.check()


async def _delete_everything(settings: ArchiveSettings) -> None:
    storage = open_storage(settings)
    try:
        await storage.delete([info.key for info in await storage.list("")])
        assert await storage.list("") == []
    finally:
        await storage.close()


def test_v1_files_beside_the_table_are_read(settings: ArchiveSettings) -> None:
    """v1 files are never in the table (the compactor rewrites them as v2): query still reads them, once."""
    archive = Archive(settings)
    v2 = archive.upload("web", D1)
    assert create_table(settings, [v2])
    messages = ids("old", 2)
    start = dt.datetime.fromisoformat(f"{D1}T05:00:00+00:00")
    key = v1_object_key("web", "ams", int(start.timestamp()) * 10**9, "20240102T050000Z-w-00000099.parquet")

    async def put_v1() -> None:
        storage = open_storage(settings)
        try:
            await storage.put(key, to_v1(v2_bytes(messages, start)))
        finally:
            await storage.close()

    asyncio.run(put_v1())
    everything = sorted(archive.messages[v2.key] + messages)
    hour = ("--since", f"{D1}T05:00", "--until", f"{D1}T06:00")
    for args, expected in ((RANGE, everything), ((*RANGE, "--app", "web"), everything), (hour, messages)):
        result = cli(settings, "query", *args, "--format", "json")
        assert result.exit_code == 0, result.output
        printed = sorted(orjson.loads(line)["message"] for line in result.stdout_bytes.splitlines())
        assert printed == sorted(expected), args
    ls = cli(settings, "ls", "--app", "web")
    assert ls.exit_code == 0 and _column_sums(ls.stdout) == (2, len(everything)), ls.output
    stats = cli(settings, "stats", "--since", D0)
    total = next(line.split() for line in stats.stdout.splitlines() if line.startswith("total"))
    assert (int(total[1]), int(total[2])) == (2, len(everything)), stats.stdout
