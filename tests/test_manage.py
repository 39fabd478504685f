"""Issue 7: compaction (under queries, crashes, a rival compactor), prune, import and stats, local and on SeaweedFS.

Archives are written the live way (``encode_partition`` per flush, many small
files per hour partition) from ``archiver.demo.loadgen`` messages in November 2026,
so every hour is closed for ``archiver compact``.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from harness import ARCHIVER, archive_env, archived_payloads, normalise, payloads_by_partition, read_archive
from servers import SeaweedFS

from archiver.archive.escaping import partition_value
from archiver.archive.layout import NS_PER_HOUR, hour_start_ns, object_key, object_name, parse_key
from archiver.archive.navigator import listed_app_segments, select_all_apps
from archiver.archive.supersede import parse_compact_name, resolve
from archiver.cli.main import main
from archiver.codec.encode import encode_partition
from archiver.codec.payloads import Payloads
from archiver.config import ArchiveSettings
from archiver.demo.loadgen import FlyLogGenerator
from archiver.errors import StorageError
from archiver.manage.compact import Compactor, compact_archive
from archiver.manage.compact_plan import list_units
from archiver.manage.compact_result import CompactStats
from archiver.storage.interface import Storage
from archiver.storage.open import open_storage
from query.filters import Filters
from query.plan import Planner
from query.run import QueryRequest, open_reader, run_query
from query.scan import ScanStats, scan_hours

S = 1_000_000_000
START = int(datetime(2026, 11, 20, 9, tzinfo=UTC).timestamp()) * S
EVERYTHING = (
    int(datetime(2026, 11, 1, tzinfo=UTC).timestamp()) * S,
    int(datetime(2026, 12, 1, tzinfo=UTC).timestamp()) * S,
)
BEFORE = "2026-11-23"


def messages(n: int, hours: int = 3, seed: int = 1) -> list[tuple[str, bytes]]:
    """``n`` Fly messages of 2 apps x 2 regions spread over ``hours`` hours from START."""
    gen = FlyLogGenerator(seed=seed, apps=2, regions=2, start_ns=START, span_ns=hours * NS_PER_HOUR)
    return gen.messages(n)


def write_small_files(settings: ArchiveSettings, msgs: list[tuple[str, bytes]], flushes: int = 20) -> int:
    """Archive ``msgs`` as ``flushes`` flushes per (app, region): about that many files per partition."""
    parts = payloads_by_partition(msgs)

    async def go() -> int:
        storage = open_storage(settings)
        puts, seq = [], 0
        for (app, region), payloads in sorted(parts.items()):
            for i in range(flushes):
                for f in encode_partition(app, region, Payloads(payloads[i::flushes]), START).files:
                    seq += 1
                    name = object_name(f.min_timestamp_ns, "w1", seq)
                    key = object_key(partition_value(app), f.hour_ns, name)
                    puts.append(storage.put(key, f.data))
        try:
            await asyncio.gather(*puts)
        finally:
            await storage.close()
        return len(puts)

    return asyncio.run(go())


def expected(msgs: list[tuple[str, bytes]]) -> Counter[bytes]:
    return Counter(normalise(p) for _, p in msgs)


def cli(settings: ArchiveSettings, *args: str, input: bytes | None = None) -> Result:
    env: dict[str, str | None] = {"ARCHIVE_URL": None, "BUCKET_NAME": None, **archive_env(settings)}
    result = CliRunner().invoke(main, list(args), env=env, input=input)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def query_count(settings: ArchiveSettings, out: Path) -> int:
    """Rows ``archiver query`` finds in the whole of November (the real query path, in-process)."""
    request = QueryRequest(settings, (), (), (), (), *EVERYTHING, output_format="parquet", output=str(out))
    assert asyncio.run(run_query(request)) == 0
    return pq.read_metadata(out).num_rows if out.exists() else 0


def partition_files(settings: ArchiveSettings) -> Counter[tuple[str, int]]:
    """Files per app-hour (the unit of compaction)."""
    return Counter((f.app, f.hour_ns) for f in read_archive(settings))


class SlowStorage(Storage):
    """Delegates to a real storage, pausing around writes and deletes to widen the race windows."""

    def __init__(self, inner: Storage, pause_s: float = 0.01) -> None:
        self.inner, self.pause_s, self.url = inner, pause_s, inner.url

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.sleep(self.pause_s)
        await self.inner.put(key, data)

    async def get(self, key: str) -> bytes:
        return await self.inner.get(key)

    async def list(self, prefix: str) -> list[Any]:
        return await self.inner.list(prefix)

    async def list_dirs(self, prefix: str) -> list[str]:
        return await self.inner.list_dirs(prefix)

    async def delete(self, keys: Any) -> None:
        await asyncio.sleep(self.pause_s)
        await self.inner.delete(keys)

    async def check(self) -> None:
        await self.inner.check()

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> ArchiveSettings:
    if request.param == "local":
        return ArchiveSettings("file", "", str(tmp_path / "archive"))
    return request.getfixturevalue("s3_settings")  # type: ignore[no-any-return]


def test_resolve_rule() -> None:
    a, b, d = "a.parquet", "b.parquet", "d.parquet"
    c1, c2 = "c-" + "1" * 16 + "-0of1.parquet", "c-" + "2" * 16 + "-0of1.parquet"
    half = "c-" + "3" * 16 + "-0of2.parquet"
    assert resolve([a, b], {}).live == [a, b]
    assert resolve([c1], {}).live == [c1]  # one group alone: no footer needed
    assert resolve([a, b, c1], {c1: frozenset({a, b})}).live == [c1]  # crashed before deleting
    assert resolve([a, b, half], {}).live == [a, b]  # crashed before the last part
    assert resolve([a, c1, c2, d], {c1: frozenset({a, b}), c2: frozenset({a, b, d})}).live == [c2]
    assert resolve([c1, d], {c1: frozenset({a, b})}).live == [c1, d]  # a late file


def test_compaction_under_a_query_loop(settings: ArchiveSettings, tmp_path: Path) -> None:
    msgs = messages(12_000)
    written = write_small_files(settings, msgs)
    before = partition_files(settings)
    assert min(before.values()) >= 20 and written == sum(before.values())
    counts: list[int] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            counts.append(query_count(settings, tmp_path / f"{uuid.uuid4().hex}.parquet"))

    thread = threading.Thread(target=loop)
    thread.start()

    async def compact() -> CompactStats:
        storage = SlowStorage(open_storage(settings))
        try:
            # Hours only: the layout checked below is one file per app-hour (roll-ups: test_rollup.py).
            return await compact_archive(storage, (), EVERYTHING[1], 256 * 1024**2, roll_up=False)
        finally:
            await storage.close()

    try:
        time.sleep(0.3)
        stats = asyncio.run(compact())
        deadline = time.monotonic() + 30  # a loaded machine runs fewer queries during the compaction
        while len(counts) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join()
    assert len(counts) >= 4 and set(counts) == {len(msgs)}, counts
    assert stats.compacted == len(before) and stats.files_in == written and stats.rows == len(msgs)
    after = partition_files(settings)
    assert set(after) == set(before) and set(after.values()) == {1}
    assert archived_payloads(read_archive(settings)) == expected(msgs)
    again = cli(settings, "compact", "--before", BEFORE)
    assert "compacted 0 of 6 closed app-hours" in again.stderr


def test_a_query_planned_before_compaction_lists_the_hour_again(tmp_path: Path) -> None:
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    msgs = messages(3000, hours=1)
    write_small_files(settings, msgs, flushes=5)

    async def go() -> tuple[int, int]:
        storage = open_storage(settings)
        planner = Planner(storage, await select_all_apps(storage), *EVERYTHING)
        (stale,) = await planner.all_hours()
        await compact_archive(storage, (), EVERYTHING[1], 256 * 1024**2)
        reader = open_reader(settings, storage)

        async def once() -> Any:
            yield stale

        rows = []
        for replan in (planner.relist, None):
            tables = scan_hours(reader, once(), ["message"], Filters(*EVERYTHING), ScanStats(), lambda _: None,
                                replan=replan)  # fmt: skip
            rows.append(sum([t.num_rows async for t in tables]))
        reader.close()
        await storage.close()
        return rows[0], rows[1]

    with_replan, without = asyncio.run(go())
    assert with_replan == len(msgs) and without == 0


def test_interrupted_compactions(tmp_path: Path) -> None:
    """A group with a part missing, then a complete group with its inputs not deleted: exact rows throughout."""
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    msgs = messages(4000, hours=1)
    write_small_files(settings, msgs, flushes=6)
    want = expected(msgs)

    def exact() -> None:
        assert query_count(settings, tmp_path / f"{uuid.uuid4().hex}.parquet") == len(msgs)

    async def crash(fail: str, after: int, target: int) -> None:
        storage = open_storage(settings)
        real, calls = getattr(storage, fail), [0]

        async def failing(*args: Any) -> None:
            calls[0] += 1
            if calls[0] > after:
                raise StorageError("simulated crash")
            await real(*args)

        setattr(storage, fail, failing)
        with pytest.raises(StorageError):
            await compact_archive(storage, (), EVERYTHING[1], target)

    asyncio.run(crash("put_file", 1, 20_000))  # first part of a group written, the next never
    names = [f.key.rpartition("/")[2] for f in read_archive(settings)]
    assert any(parse_compact_name(n) for n in names) and any(not parse_compact_name(n) for n in names)
    exact()
    asyncio.run(crash("delete", 0, 20_000))  # every part written, no input deleted
    exact()
    cli(settings, "compact", "--before", BEFORE, "--target-bytes", "20000")
    exact()
    files = read_archive(settings)
    assert all(parse_compact_name(f.key.rpartition("/")[2]) for f in files)
    assert archived_payloads(files) == want


def test_a_rival_compactor_with_an_older_view(tmp_path: Path) -> None:
    """It read its inputs, a late file arrived, another compactor merged everything, then it wrote."""
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    msgs = messages(2000, hours=1)
    write_small_files(settings, msgs, flushes=6)

    async def race() -> None:
        storage, rival = open_storage(settings), open_storage(settings)
        segment = (await listed_app_segments(storage))[0]
        unit, infos = next(iter((await list_units(storage, [segment], EVERYTHING[1])).items()))
        late = infos[-1].key
        arrived, gate = asyncio.Event(), asyncio.Event()
        real_list, real_put = rival.list, rival.put_file

        async def older_view(prefix: str) -> list[Any]:
            return [i for i in await real_list(prefix) if i.key != late]  # listed before the late file came

        async def held_put(key: str, path: str) -> None:
            arrived.set()
            await gate.wait()
            await real_put(key, path)

        rival.list, rival.put_file = older_view, held_put  # type: ignore[method-assign]
        slow = asyncio.ensure_future(Compactor(rival, str(tmp_path), 2**28).compact(unit))
        await arrived.wait()  # the rival has read all but the last file and is about to write
        assert (await Compactor(storage, str(tmp_path), 2**28).compact(unit)).outcome == "compacted"
        gate.set()
        assert (await slow).outcome == "compacted"
        names = [i.key.rpartition("/")[2] for i in await storage.list(unit.directory)]
        assert len(names) == 2 and all(parse_compact_name(n) for n in names)  # both groups are there
        await storage.close()
        await rival.close()

    asyncio.run(race())
    assert query_count(settings, tmp_path / "race.parquet") == len(msgs)
    cli(settings, "compact", "--before", BEFORE)
    assert set(partition_files(settings).values()) == {1}
    assert archived_payloads(read_archive(settings)) == expected(msgs)


def compacted_keys(settings: ArchiveSettings) -> set[str]:
    async def go() -> set[str]:
        storage = open_storage(settings)
        try:
            return {i.key for i in await storage.list("") if parse_compact_name(i.key.rpartition("/")[2])}
        finally:
            await storage.close()

    return asyncio.run(go())


def test_kill_9_during_compaction_then_again(settings: ArchiveSettings, tmp_path: Path) -> None:
    msgs = messages(16_000, hours=5 if settings.scheme == "file" else 3)  # S3 requests are slower
    write_small_files(settings, msgs)
    scratch = tmp_path / "tmp"  # the processes' temporary directory: a killed one leaves its scratch there
    scratch.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ARCHIVE_"))},
        **archive_env(settings),
        "TMPDIR": str(scratch),
    }
    command = [*ARCHIVER, "compact", "--before", BEFORE, "--target-bytes", "40000"]
    rnd = random.Random(7)
    interrupted = 0
    for _ in range(3):
        known = compacted_keys(settings)
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Once it writes (start-up takes a variable second), kill it a random moment later: mid-partition
        # (a group part-written, or written with its inputs not yet deleted) or between two partitions.
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline and not compacted_keys(settings) - known:
            time.sleep(0.01)
        time.sleep(rnd.uniform(0, 0.08))
        interrupted += proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert query_count(settings, tmp_path / f"{uuid.uuid4().hex}.parquet") == len(msgs)
    assert interrupted >= 2
    assert list(scratch.glob("archiver-compact-*"))
    subprocess.run(command, env=env, check=True, capture_output=True)
    assert not list(scratch.glob("archiver-compact-*"))  # the killed runs' scratch deleted, its own too
    files = read_archive(settings)
    assert all(parse_compact_name(f.key.rpartition("/")[2]) for f in files)
    assert archived_payloads(files) == expected(msgs)


def test_prune(settings: ArchiveSettings) -> None:
    now_hour = time.time_ns() // NS_PER_HOUR * NS_PER_HOUR
    gen = FlyLogGenerator(seed=5, apps=["shop"], regions=["ams"], start_ns=now_hour - 80 * NS_PER_HOUR,
                          span_ns=80 * NS_PER_HOUR)  # fmt: skip
    write_small_files(settings, gen.messages(2000), flushes=2)
    keys = [f.key for f in read_archive(settings)]
    cutoff = time.time_ns() - 30 * NS_PER_HOUR
    old = {k for k in keys if _hour_ns(k) + NS_PER_HOUR <= cutoff}
    assert old and len(old) < len(keys)
    dry = cli(settings, "prune", "--older-than", "30h", "--dry-run")
    assert sorted(f.key for f in read_archive(settings)) == sorted(keys)
    assert any(
        line.startswith("would delete app=shop/date=") and "/hour=" not in line
        for line in dry.stdout.splitlines()
    )
    real = cli(settings, "prune", "--older-than", "30h")
    assert real.stdout.replace("deleted", "would delete") == dry.stdout
    assert sum(int(line.split()[2]) for line in real.stdout.splitlines()) == len(old)
    assert sorted(f.key for f in read_archive(settings)) == sorted(set(keys) - old)


def _hour_ns(key: str) -> int:
    parsed = parse_key(key)
    assert parsed is not None
    return parsed.hour_ns


@pytest.fixture
def shipper_lines() -> list[bytes]:
    lines = [p for _, p in messages(6000, hours=8, seed=11)]
    lines[10:10] = [b"not json at all", b'{"message":"no timestamp"}', b"\xff\xfe binary"]
    return lines


def test_import_shipper_archive_from_s3(
    seaweedfs: SeaweedFS, s3_settings: ArchiveSettings, shipper_lines: list[bytes], tmp_path: Path
) -> None:
    source = f"shipper-{uuid.uuid4().hex[:12]}"
    seaweedfs.create_bucket(source)
    client = seaweedfs.client()
    for i in range(0, len(shipper_lines), 1000):
        chunk = shipper_lines[i : i + 1000]
        epoch = 1_795_400_000 + i  # 2026-11-22
        key = f"sandwich/2026-11-20/{epoch}-{uuid.uuid4()}.log.gz"
        client.put_object(Bucket=source, Key=key, Body=gzip.compress(b"\n".join(chunk) + b"\n"))
    client.close()
    first = cli(s3_settings, "import", f"s3://{source}/sandwich/")
    assert (
        "6003 lines" in first.stderr
        and "3 malformed lines" in first.stderr
        and "(0 already there)" in first.stderr
    )
    files = read_archive(s3_settings)
    assert archived_payloads(files) == Counter(normalise(line) for line in shipper_lines)
    second = cli(s3_settings, "import", f"s3://{source}/sandwich/")
    assert " 0 new files" in second.stderr
    assert sorted(f.key for f in read_archive(s3_settings)) == sorted(f.key for f in files)
    stats = cli(s3_settings, "stats", "--since", "2026-11-01")
    assert _totals(stats) == (len(files), len(shipper_lines), sum(f.size for f in files))


def test_import_stdin_and_files_is_idempotent(tmp_path: Path, shipper_lines: list[bytes]) -> None:
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    data = b"\n".join(shipper_lines) + b"\n"
    cli(settings, "import", "-", input=data)
    files = read_archive(settings)
    assert archived_payloads(files) == Counter(normalise(line) for line in shipper_lines)
    (tmp_path / "in" / "deep").mkdir(parents=True)
    (tmp_path / "in" / "deep" / "copy.log").write_bytes(data)  # same content from a file: same names
    again = cli(settings, "import", str(tmp_path / "in"))
    assert " 0 new files" in again.stderr
    assert sorted(f.key for f in read_archive(settings)) == sorted(f.key for f in files)
    # After a compaction, importing again changes nothing readers see, and the next compaction tidies up.
    cli(settings, "compact", "--before", BEFORE)
    cli(settings, "import", "-", input=data)
    assert query_count(settings, tmp_path / "q.parquet") == len(shipper_lines)
    cli(settings, "compact", "--before", BEFORE)
    assert archived_payloads(read_archive(settings)) == Counter(normalise(line) for line in shipper_lines)


def test_stats_totals(tmp_path: Path) -> None:
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    msgs = messages(5000, hours=30)
    write_small_files(settings, msgs, flushes=3)
    files = read_archive(settings)
    result = cli(settings, "stats", "--since", "2026-11-01", "--hours", "30")
    assert _totals(result) == (len(files), len(msgs), sum(f.size for f in files))
    chart = result.stdout.split("logs per hour (UTC)")[1].splitlines()[1:]
    assert len(chart) == 30 and sum(int(line.split()[-1].replace(",", "")) for line in chart) == len(msgs)


def _totals(result: Result) -> tuple[int, int, int]:
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("total")]
    files, rows, size = line.split()[1:4]
    return int(files), int(rows), int(size)


def test_compact_before_never_touches_an_hour_that_has_not_ended(tmp_path: Path) -> None:
    """``--before`` in the future (the end of the current hour) still compacts closed hours only."""
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    if hour_start_ns(time.time_ns() + 30 * S) != hour_start_ns(time.time_ns()):
        time.sleep(31)  # the hour ends within the test: start in the next one
    current = hour_start_ns(time.time_ns())
    # Two generators, not one spanning both hours: how many of one's messages fall into the open hour
    # depends on the minute the test runs (none, early in an hour).
    closed_hour = FlyLogGenerator(seed=9, apps=["shop"], regions=["ams"], start_ns=current - NS_PER_HOUR,
                                  span_ns=NS_PER_HOUR)  # fmt: skip
    open_so_far = FlyLogGenerator(seed=10, apps=["shop"], regions=["ams"], start_ns=current,
                                  span_ns=max(1, (time.time_ns() - current) // 2))  # fmt: skip
    msgs = closed_hour.messages(300) + open_so_far.messages(100)
    cli(settings, "import", "-", input=b"".join(p + b"\n" for _, p in msgs))
    open_hour = {f.key for f in read_archive(settings) if f.hour_ns == current}
    assert open_hour and len(open_hour) < len(read_archive(settings))
    end_of_hour = datetime.fromtimestamp((current + NS_PER_HOUR) // S, UTC)
    cli(settings, "compact", "--before", f"{end_of_hour:%Y-%m-%dT%H:%M}")
    files = read_archive(settings)
    assert {f.key for f in files if f.hour_ns == current} == open_hour  # untouched: the hour is still open
    closed = [f for f in files if f.hour_ns < current]
    assert closed and all(parse_compact_name(f.key.rpartition("/")[2]) for f in closed)
    assert archived_payloads(files) == expected(msgs)
