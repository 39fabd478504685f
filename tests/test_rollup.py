"""Issue 14: the day roll-up (closed app-days merged into day files) and the orphan sweep, local and on SeaweedFS.

Exactly once for ``archiver query``, deltalake and a plain glob (``app=*/**/*.parquet``) after a finished
roll-up, with a table and without, through kill -9 at three points; a late file merged into its day; the
in-service path once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from harness import archive_env, archived_payloads, read_archive, start_archiver, wait_for
from test_manage import SlowStorage, cli, expected, messages, query_count, write_small_files
from test_service_compaction import glob_count, log_lines
from test_table_readers import read_deltalake, storage_options, table_uri

from archiver.archive.layout import NS_PER_DAY, NS_PER_HOUR, parse_key
from archiver.archive.supersede import parse_compact_name, replaces_from_metadata
from archiver.config import ArchiveSettings
from archiver.manage import compact_steps
from archiver.manage.compact import Compactor, compact_archive
from archiver.manage.compact_plan import WorkUnit
from archiver.manage.compact_result import CompactStats
from archiver.manage.compact_table import TableLink
from archiver.storage.open import open_storage
from archiver.table.writer import ArchiveTable
from archiver.units import format_bytes
from query import count_files
from query.day_footers import DayFooters
from query.textout import iso_time

HERE = Path(__file__).resolve().parent
S = 1_000_000_000
DAY = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp()) * S
#: Hours compacted, the day not rolled up yet (it ends after this).
HOURS_ONLY = "2026-11-20T23:30:00Z"
TARGET = "30000"  # small parts: a day of a few hundred kB is several of them


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> ArchiveSettings:
    if request.param == "local":
        return ArchiveSettings("file", "", str(tmp_path / "archive"))
    return request.getfixturevalue("s3_settings")  # type: ignore[no-any-return]


def names(settings: ArchiveSettings) -> list[str]:
    """The data files' names, from a listing (nothing read: a running compactor may delete them meanwhile)."""

    async def go() -> list[str]:
        storage = open_storage(settings)
        try:
            return [i.key.rpartition("/")[2] for i in await storage.list("") if i.key.startswith("app=")]
        finally:
            await storage.close()

    return sorted(asyncio.run(go()))


def day_files_only(settings: ArchiveSettings) -> bool:
    return all("-d-" in n for n in names(settings))


def seeded(settings: ArchiveSettings, n: int, *, table: bool) -> Counter[bytes]:
    """``n`` messages of 2 apps over 3 hours of a past day as small flush files, hours compacted; the table made."""
    msgs = messages(n, hours=3)
    write_small_files(settings, msgs, flushes=6)
    if table:
        cli(settings, "table", "init")
    cli(settings, "compact", "--before", HOURS_ONLY, "--target-bytes", TARGET)
    assert not any("-d-" in n for n in names(settings))
    assert all("-c-" in n for n in names(settings))
    return expected(msgs)


def check_day_files(settings: ArchiveSettings, rows: int) -> None:
    """Every file a complete day group, rows sorted by time within and across its parts, the rows all there."""
    files = read_archive(settings)
    by_app: dict[str, list[Any]] = {}
    for f in files:
        parsed = parse_key(f.key)
        assert parsed is not None and parsed.length_ns == NS_PER_DAY and parsed.hour_ns == DAY
        by_app.setdefault(f.app, []).append(f)
    assert len(by_app) == 2 and sum(len(f.rows) for f in files) == rows
    for parts in by_app.values():
        parts.sort(key=lambda f: parse_compact_name(f.key.rpartition("/")[2]).part)  # type: ignore[union-attr]
        assert len(parts) == parse_compact_name(parts[0].key.rpartition("/")[2]).count > 1  # type: ignore[union-attr]
        stamps = [r["timestamp"] for f in parts for r in f.rows]  # exact ns
        assert stamps == sorted(stamps)
        assert replaces_from_metadata(parts[0].metadata)  # the hour groups (and their inputs) it supersedes


def micros(value: datetime) -> int:
    return int(value.replace(tzinfo=UTC).timestamp()) * 1_000_000 + value.microsecond


def table_stats_exact(settings: ArchiveSettings) -> int:
    """The table's add actions: exact row counts and time bounds of each day part; the live rows."""
    delta = DeltaTable(table_uri(settings), storage_options=storage_options(settings))
    adds = pa.table(delta.get_add_actions(flatten=True)).to_pylist()
    total = 0
    for add in adds:
        assert "-d-" in add["path"]
        f = next(f for f in read_archive(settings) if f.key == add["path"])
        assert add["num_records"] == len(f.rows)
        low = min(r["timestamp"] for r in f.rows)
        high = max(r["timestamp"] for r in f.rows)
        assert micros(add["min.timestamp"]) == low // 1000 and micros(add["max.timestamp"]) == high // 1000
        total += add["num_records"]
    return total


def test_rollup_with_a_table(settings: ArchiveSettings, tmp_path: Path) -> None:
    want = seeded(settings, 6000, table=True)
    cli(settings, "compact", "--before", "2026-11-30", "--target-bytes", TARGET)
    check_day_files(settings, sum(want.values()))
    assert table_stats_exact(settings) == sum(want.values())
    assert len(read_deltalake(settings)) == sum(want.values())
    assert query_count(settings, tmp_path / "q.parquet") == sum(want.values())
    assert glob_count(settings, tmp_path) == sum(want.values())
    assert archived_payloads(read_archive(settings)) == want
    # Again: nothing to do.
    before = names(settings)
    cli(settings, "compact", "--before", "2026-11-30", "--target-bytes", TARGET)
    assert names(settings) == before


async def _get(settings: ArchiveSettings, key: str) -> pa.BufferReader:
    storage = open_storage(settings)
    try:
        return pa.BufferReader(await storage.get(key))
    finally:
        await storage.close()


def iso(ns: int) -> str:
    return f"{datetime.fromtimestamp(ns // S, UTC):%Y-%m-%dT%H:%M:%S}.{ns % S:09d}Z"


@pytest.mark.parametrize("table", [False, True], ids=["files", "table"])
def test_query_hours_of_a_day_file(settings: ArchiveSettings, tmp_path: Path, table: bool) -> None:
    """--since/--until inside a rolled-up day: exactly the rows of the hours asked (and --count), files or table."""
    msgs = messages(3000, hours=3)
    write_small_files(settings, msgs, flushes=4)
    if table:  # the query then reads the table's snapshot, where the day file is one file of 24 hours
        cli(settings, "table", "init")
    cli(settings, "compact", "--before", "2026-11-30", "--target-bytes", TARGET)
    assert day_files_only(settings)
    for f in read_archive(
        settings
    ):  # a day file's row groups end at hours: a reader of one hour decodes its own
        footer = pq.ParquetFile(asyncio.run(_get(settings, f.key))).metadata
        column = footer.schema.to_arrow_schema().get_field_index("timestamp")
        for i in range(footer.num_row_groups):
            stats = footer.row_group(i).column(column).statistics
            assert stats.min_raw // 3_600_000_000 == stats.max_raw // 3_600_000_000  # µs
    stamps = sorted(r["timestamp"] for f in read_archive(settings) for r in f.rows)
    start = stamps[0]
    for since, until in ((start, start + NS_PER_HOUR), (start + 1800 * S, start + 7200 * S + 17)):
        out = tmp_path / f"{uuid.uuid4().hex}.parquet"
        args = ["query", "--since", iso(since), "--until", iso(until), "--format", "parquet", "-o", str(out)]
        cli(settings, *args)
        want = sum(since <= s < until for s in stamps)
        assert pq.read_metadata(out).num_rows == want
        counted = cli(settings, "query", "--since", iso(since), "--until", iso(until), "--count")
        assert sum(int(line.split()[1]) for line in counted.output.splitlines()[1:]) == want


def test_count_by_level_reads_each_day_file_once(
    settings: ArchiveSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--count --by level over rolled-up days: per hour and level what the rows say; each day file is read
    once for all its hours (over S3 by ranged reads)."""
    assert rolled_up_day(settings)
    rows = [r for f in read_archive(settings) for r in f.rows]
    calls: Counter[str] = Counter()
    original = count_files._day_counts

    def counting(source: str, *args: Any) -> Any:
        calls[source] += 1
        return original(source, *args)

    monkeypatch.setattr(count_files, "_day_counts", counting)
    start = min(r["timestamp"] for r in rows)
    for since, until in ((start - NS_PER_DAY, start + NS_PER_DAY), (start + 1800 * S, start + 7200 * S + 17)):
        calls.clear()
        counted = cli(settings, "query", "--since", iso(since), "--until", iso(until), "--count", "--by", "level",
                      "--every", "1h", "--format", "json")  # fmt: skip
        got = {
            (line["time"], line["level"]): line["count"] for line in map(orjson.loads, counted.output.split())
        }
        want = Counter(
            (iso_time(r["timestamp"] - r["timestamp"] % NS_PER_HOUR), r["level"])
            for r in rows
            if since <= r["timestamp"] < until
        )
        assert got == want, counted.output
        assert calls and set(calls.values()) == {1}, calls  # each day file read once, not once an hour


def test_a_day_of_compacted_hours_is_copied_not_merged(
    settings: ArchiveSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The roll-up copies compacted hours' row groups (no merge is built for the day); a late file is merged."""
    msgs = messages(2000, hours=3)
    write_small_files(settings, msgs, flushes=3)
    cli(settings, "compact", "--before", HOURS_ONLY, "--target-bytes", TARGET)
    hours: dict[str, list[tuple[int, str]]] = {}  # every row of the compacted hours, per app
    for f in read_archive(settings):
        hours.setdefault(f.app, []).extend((r["timestamp"], r["message"]) for r in f.rows)

    class NoDayMerge(compact_steps.FileMerge):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            assert args[3] is None, "a day of compacted hours was merged, not copied"  # align_ns: days only
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(compact_steps, "FileMerge", NoDayMerge)
    cli(settings, "compact", "--before", "2026-11-30", "--target-bytes", "100000000")
    assert day_files_only(settings)
    days = read_archive(settings)
    assert sorted(f.app for f in days) == sorted(hours)
    for f in days:  # the same rows, in time order
        assert [(r["timestamp"], r["message"]) for r in f.rows] == sorted(hours[f.app])
        assert f.metadata[b"archiver.replaces"] != b"[]"
    monkeypatch.undo()
    late = messages(50, hours=3, seed=9)
    write_small_files(settings, late, flushes=1)
    cli(settings, "compact", "--before", "2026-11-30", "--target-bytes", "100000000")
    assert day_files_only(settings)
    assert query_count(settings, tmp_path / "q.parquet") == len(msgs) + len(late)
    assert glob_count(settings, tmp_path) == len(msgs) + len(late)


def test_late_file_without_a_table(settings: ArchiveSettings, tmp_path: Path) -> None:
    """TABLE=off: put then delete; a late flush of a rolled-up day is merged into the day by the next pass."""
    want = seeded(settings, 4000, table=False)
    cli(settings, "compact", "--before", "2026-11-30", "--target-bytes", TARGET)
    assert day_files_only(settings)
    first = names(settings)
    late = messages(300, hours=3, seed=9)
    write_small_files(settings, late, flushes=1)
    assert query_count(settings, tmp_path / "a.parquet") == sum(want.values()) + len(late)
    cli(settings, "compact", "--before", "2026-11-30", "--target-bytes", TARGET)
    assert day_files_only(settings) and not set(names(settings)) & set(first)
    assert archived_payloads(read_archive(settings)) == want + expected(late)
    assert query_count(settings, tmp_path / "b.parquet") == sum(want.values()) + len(late)
    assert glob_count(settings, tmp_path) == sum(want.values()) + len(late)


def _paused(settings: ArchiveSettings, point: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    marker = tmp_path / f"paused-{point}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ARCHIVE_"))}
    env |= {**archive_env(settings), "PYTHONPATH": str(HERE)}
    log = (tmp_path / f"{point}.log").open("wb")
    command = [sys.executable, str(HERE / "paused_rollup.py"), point, str(marker), TARGET]
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / f"{point}.log").read_text()
        time.sleep(0.02)
    return proc


@pytest.mark.parametrize("table", [True, False], ids=["table", "plain"])
def test_kill_9_during_a_rollup(settings: ArchiveSettings, tmp_path: Path, table: bool) -> None:
    """Killed before its commit, between commit (or upload) and delete, mid-delete: exactly once, then finished."""
    want = seeded(settings, 4000, table=table)
    rows = sum(want.values())
    for point in ("some-outputs", "all-outputs", "mid-delete"):
        proc = _paused(settings, point, tmp_path)
        proc.kill()
        proc.wait()
        assert query_count(settings, tmp_path / f"{point}.parquet") == rows, point
        if table:
            assert len(read_deltalake(settings)) == rows, point
    cli(settings, "compact", "--before", "2026-11-30", "--target-bytes", TARGET)
    if table:  # the killed runs' parts that never became live are orphans: swept once old enough
        asyncio.run(_sweep(settings, age_s=0))
        assert len(read_deltalake(settings)) == rows
        assert table_stats_exact(settings) == rows
    check_day_files(settings, rows)
    assert archived_payloads(read_archive(settings)) == want
    assert query_count(settings, tmp_path / "end.parquet") == rows
    assert glob_count(settings, tmp_path) == rows


async def _sweep(settings: ArchiveSettings, age_s: float) -> Any:
    """Work the seeded app-days once more with the table (orphans older than ``age_s`` deleted)."""
    storage = open_storage(settings)
    handle = ArchiveTable.open(settings)
    assert handle is not None
    compactor = Compactor(storage, str(Path(settings.prefix).parent if settings.scheme == "file" else "/tmp"),
                          30000, table=TableLink(lambda: handle))  # fmt: skip
    compactor.orphan_age_s = age_s
    results = []
    try:
        for app in ("billing-api", "sandwich"):  # each app's day, and the hours of the data
            for unit in [WorkUnit(app, DAY + h * NS_PER_HOUR) for h in (9, 10, 11)] + [
                WorkUnit(app, DAY, NS_PER_DAY)
            ]:
                results.append(await compactor.compact(unit))
    finally:
        await storage.close()
    return results


def test_orphan_sweep(settings: ArchiveSettings, tmp_path: Path) -> None:
    """Compacted/day files not live in the table and old enough are deleted; young ones and flushes never."""
    want = seeded(settings, 3000, table=True)
    cli(settings, "compact", "--before", "2026-11-30", "--target-bytes", TARGET)
    files = read_archive(settings)
    live = sorted(f.key for f in files)
    folder = live[0].rpartition("/")[0] + "/"
    scratch = tmp_path / "copy.parquet"

    async def plant() -> None:
        storage = open_storage(settings)
        try:
            await storage.get_file(live[0], str(scratch))
            for name in ("20261120-d-00000000000000aa-0of2.parquet", "20261120T09-c-00000000000000bb-0of1.parquet",
                         "20261120T09Z-orphan-00000001.parquet"):  # fmt: skip
                await storage.put_file(folder + name, str(scratch))
        finally:
            await storage.close()

    asyncio.run(plant())
    results = asyncio.run(_sweep(settings, age_s=3600))  # just written: kept
    assert sum(r.orphans for r in results) == 0 and len(names(settings)) == len(live) + 3
    results = asyncio.run(_sweep(settings, age_s=0))
    assert sum(r.orphans for r in results) == 2
    left = set(names(settings))
    assert "20261120T09Z-orphan-00000001.parquet" in left  # a flush may still wait for its commit
    assert (
        not {"20261120-d-00000000000000aa-0of2.parquet", "20261120T09-c-00000000000000bb-0of1.parquet"} & left
    )
    assert len(read_deltalake(settings)) == sum(want.values())


@pytest.mark.timeout(300)
def test_the_service_rolls_up_a_closed_day(nats_server: Any, tmp_path: Path) -> None:
    """``archiver run`` (table on, bootstrapped from the files): a past day's flushes end as day files."""
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    msgs = messages(3000, hours=3)
    write_small_files(settings, msgs, flushes=4)
    proc = start_archiver(nats_server.url, settings, tmp_path / "run", COMPACT_AFTER="1s", FLUSH_INTERVAL="1s",
                          COMPACT_TARGET_BYTES=TARGET, TABLE_COMMIT_INTERVAL="1s")  # fmt: skip
    try:
        proc.wait_subscribed()
        wait_for(lambda: day_files_only(settings), 120, "the day rolled up", proc)
        wait_for(
            lambda: len(read_deltalake(settings)) == len(msgs), 60, "the table holds the day files", proc
        )
        log = proc.log()
    finally:
        assert proc.stop() == 0, proc.log()
    assert archived_payloads(read_archive(settings)) == expected(msgs)
    assert query_count(settings, tmp_path / "q.parquet") == len(msgs)
    lines = [line for line in log_lines(log) if line.get("msg") == "rolled up"]
    assert len(lines) == 2 and all(line.get("day") == "2026-11-20" for line in lines), lines
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


def test_import_again_after_a_rollup_with_a_table(tmp_path: Path) -> None:
    """The same lines imported again once their day is rolled up: the table and every reader still count them once."""
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    shipper_lines = [p for _, p in messages(3000, hours=3, seed=11)]
    data = b"\n".join(shipper_lines) + b"\n"
    cli(settings, "import", "-", input=data)
    cli(settings, "table", "init")
    cli(settings, "compact", "--before", "2026-11-30", "--target-bytes", TARGET)
    assert day_files_only(settings), names(settings)
    cli(settings, "import", "-", input=data)
    assert len(read_deltalake(settings)) == len(shipper_lines)
    assert query_count(settings, tmp_path / "q.parquet") == len(shipper_lines)
    assert glob_count(settings, tmp_path) == len(shipper_lines)


def rolled_up_day(settings: ArchiveSettings) -> list[tuple[str, bytes]]:
    """2,000 messages over 3 hours of a past day, written as small files and rolled up into day files."""
    msgs = messages(2000, hours=3)
    write_small_files(settings, msgs, flushes=2)
    cli(settings, "compact", "--before", "2026-11-30", "--target-bytes", TARGET)
    assert day_files_only(settings)
    return msgs


def test_prune_keeps_a_day_file_until_its_whole_day_is_old(tmp_path: Path) -> None:
    """A cutoff inside a rolled-up day keeps its day file (it holds the day's later hours too)."""
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    msgs = rolled_up_day(settings)
    before = names(settings)
    # 2026-11-20T10:00: the first hour of the data is older; the day file stays, every row with it.
    hours_old = (time.time_ns() - DAY - 10 * NS_PER_HOUR) // NS_PER_HOUR
    cli(settings, "prune", "--older-than", f"{hours_old}h")
    assert names(settings) == before
    assert query_count(settings, tmp_path / "q.parquet") == len(msgs)
    cli(settings, "prune", "--older-than", f"{(time.time_ns() - DAY - NS_PER_DAY) // NS_PER_HOUR}h")
    assert names(settings) == []


def test_ls_shows_a_day_file_as_its_day(tmp_path: Path) -> None:
    """``archiver ls --app``: a rolled-up day is one row labelled with its day (not its first hour), with and
    without --since; a late hour file of it has its own row."""
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    rolled_up_day(settings)
    app = read_archive(settings)[0].app
    days = [f for f in read_archive(settings) if f.app == app]
    want = ["2026-11-20", "(day)", str(len(days)), str(sum(len(f.rows) for f in days))]
    for since in ([], ["--since", "2026-11-19"]):
        listed = cli(settings, "ls", "--app", app, *since).output.splitlines()
        assert [line.split()[:4] for line in listed[1:]] == [want], listed
    late = [m for m in messages(40, hours=3, seed=5) if m[0].split(".")[1] == app]
    write_small_files(settings, late, flushes=1)
    first, *hours = cli(settings, "ls", "--app", app).output.splitlines()[1:]
    assert first.split()[:2] == want[:2] and hours
    assert all(line.split()[0].endswith(":00Z") for line in hours), hours
    assert sum(int(line.split()[2]) for line in hours) == len(late)


def test_a_day_file_is_read_once_per_query(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A query over a rolled-up day parses each day file's footer once (not once an hour), and its note
    counts each day file once, with its size (not once per hour of it)."""
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    rolled_up_day(settings)
    days = read_archive(settings)
    parsed: Counter[str] = Counter()
    original = DayFooters.open

    def counting(self: DayFooters, path: str, opener: Any) -> Any:
        def parsing(known: Any) -> Any:
            if known is None:  # no kept footer: this opening parses it
                parsed[path] += 1
            return opener(known)

        return original(self, path, parsing)

    monkeypatch.setattr(DayFooters, "open", counting)
    out = cli(
        settings, "query", "--grep", "no such text", "--since", "2026-11-20", "--until", "2026-11-21"
    ).output
    assert len(parsed) == len(days) and set(parsed.values()) == {1}, parsed
    total = sum(f.size for f in days)
    assert f"read {len(days)} files ({format_bytes(total)})" in out, out


def test_a_day_footer_opened_by_two_threads_at_once_is_parsed_once() -> None:
    """Two hours of one day file decoded at once: the second waits for the first's footer (CI saw both
    threads miss the cache and parse it twice)."""
    footers = DayFooters()
    started = threading.Barrier(2)
    opened: list[object] = []

    class Opened:
        metadata = "footer"

    def opener(known: Any) -> Any:
        opened.append(known)
        if known is None:
            time.sleep(0.2)  # the other thread arrives while this one parses
        return Opened()

    def open_it() -> None:
        started.wait()
        footers.open("day.parquet", opener)

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(opened, key=str) == [None, "footer"], opened
    assert footers.open("day.parquet", opener) and opened[-1] == "footer"


def test_stats_of_a_rolled_up_day(tmp_path: Path) -> None:
    """``archiver stats``: the day's totals, and the hourly chart from the day file's timestamps."""
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    msgs = rolled_up_day(settings)
    out = cli(settings, "stats", "--since", "2026-11-19", "--hours", "48").output
    chart = [line.split() for line in out.splitlines() if line.startswith("2026-11-20T")]
    assert [row[0] for row in chart] == ["2026-11-20T09", "2026-11-20T10", "2026-11-20T11"], out
    assert sum(int(row[-1].replace(",", "")) for row in chart) == len(msgs)
    assert f"{len(msgs):,}" in out or str(len(msgs)) in out


class SweptStorage(SlowStorage):
    """Deletes each compacted or day part right after its upload: a sweep that ran while its compactor was frozen."""

    async def put(self, key: str, data: bytes) -> None:
        await self.inner.put(key, data)
        if "-c-" in key.rpartition("/")[2] or "-d-" in key.rpartition("/")[2]:
            await self.inner.delete([key])


def test_parts_swept_before_their_commit_are_never_added(tmp_path: Path) -> None:
    """A table compaction whose parts are gone when it is about to commit gives up: no row lost."""
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    msgs = messages(2000, hours=2)
    write_small_files(settings, msgs, flushes=4)
    cli(settings, "table", "init")

    async def run() -> CompactStats:
        storage = SweptStorage(open_storage(settings), pause_s=0)
        table = ArchiveTable.open(settings)
        try:
            return await compact_archive(
                storage, (), time.time_ns(), 256 * 1024**2, table=TableLink(lambda: table)
            )
        finally:
            await storage.close()

    stats = asyncio.run(run())
    assert stats.compacted == 0
    assert len(read_deltalake(settings)) == len(msgs)
    assert archived_payloads(read_archive(settings)) == expected(msgs)
