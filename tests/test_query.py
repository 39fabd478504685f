"""`archiver query` and `archiver ls` against archives of known content, on a local directory and SeaweedFS.

The archive is written with the real encoder in layout v2 (several
overlapping flushes per app and region, so every hour needs a merge) over
three calendar days, three apps and four regions. Every filter is compared
with DuckDB's answer on the same files (hive partitioning, no flags); the S3
answer is compared with the local one.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import io
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from servers import SeaweedFS

from archiver.archive.escaping import partition_value
from archiver.archive.layout import NS_PER_HOUR, hour_stamp, object_key, object_name
from archiver.archive.message import format_timestamp_ns
from archiver.archive.navigator import ArchiveFile
from archiver.archive.timestamps import table_ns
from archiver.cli.main import main
from archiver.codec.encode import encode_partition
from archiver.codec.payloads import Payloads
from archiver.config import ArchiveSettings
from archiver.demo.flymessage import fly_record
from archiver.demo.servers import free_port
from archiver.storage.interface import ObjectInfo, Storage
from archiver.storage.open import open_read_storage, open_storage
from query import run as query_run
from query.scan import Reader

S = 1_000_000_000
DAY0 = int(datetime(2026, 11, 22, tzinfo=UTC).timestamp()) * S
DAY1, DAY2 = DAY0 + 86400 * S, DAY0 + 2 * 86400 * S
START, END = DAY0 + 20 * NS_PER_HOUR, DAY2 + 4 * NS_PER_HOUR  # 32 hours over three dates
APPS = {"sandwich": ("dfw", "ams"), "api-gw": ("dfw", "sin", "ams"), "worker": ("iad",)}
ROWS_PER_PARTITION = 400
EDGES = [DAY1 - 1, DAY1, DAY1 + 13 * NS_PER_HOUR - 1, DAY1 + 13 * NS_PER_HOUR, DAY1 + 13 * NS_PER_HOUR + 1]
EVERYTHING = ["--since", "2026-11-20", "--until", "2026-11-26"]


def iso(ns: int) -> str:
    return format_timestamp_ns(ns)


def _text(rnd: random.Random) -> tuple[str, dict[str, Any]]:
    """A message text and extra top-level fields (rarely) for one log line."""
    n = rnd.randrange(10_000)
    kind = rnd.randrange(9)
    extra = {"trace_id": f"t{n}", "attrs": {"n": n}} if rnd.random() < 0.05 else {}
    texts = [
        f"GET /orders/{n} 200 in {n % 97}ms",
        f"Timeout waiting for db after {n % 30}s",
        f"ERROR payment declined card={n}",
        "connection reset by peer",
        f"café ☕ served {n} TIMEOUT-free",
        orjson.dumps(
            {"level": rnd.choice(["WARN", "warn", "Error"]), "msg": f"disk {n % 100}% full"}
        ).decode(),
        orjson.dumps({"severity": "error", "message": f"boom {n}"}).decode(),
        orjson.dumps({"lvl": "debug", "x": n}).decode(),
        f'line with\ttab and "quotes", comma {n}',
    ]
    return texts[kind], extra


@dataclass
class Archive:
    """Published messages (by timestamp) of the archive built for these tests."""

    messages: dict[int, dict[str, Any]]
    files: int


def build_content(seed: int = 7) -> tuple[dict[tuple[str, str], list[bytes]], dict[int, dict[str, Any]]]:
    """Payloads per (app, region) with globally unique timestamps, and the messages by timestamp."""
    rnd = random.Random(seed)
    used: set[int] = set()
    payloads: dict[tuple[str, str], list[bytes]] = {}
    messages: dict[int, dict[str, Any]] = {}
    for app, regions in APPS.items():
        for region in regions:
            instances = [f"{rnd.getrandbits(56):014x}" for _ in range(2)]
            stamps = list(EDGES) if (app, region) == ("sandwich", "dfw") else []
            while len(stamps) < ROWS_PER_PARTITION:
                ts = rnd.randrange(START, END)
                if ts not in used and ts not in EDGES:
                    stamps.append(ts)
                    used.add(ts)
            batch = []
            for ts in stamps:
                text, extra = _text(rnd)
                provider = rnd.choice(["app", "app", "app", "runner"])
                instance = rnd.choice(instances)
                message = fly_record(
                    app, region, text, iso(ts), instance=instance, provider=provider, **extra
                )
                messages[ts] = message
                batch.append(orjson.dumps(message))
            payloads[(app, region)] = batch
    return payloads, messages


async def write_archive(storage: Storage, payloads: dict[tuple[str, str], list[bytes]]) -> int:
    """Encode each partition as three overlapping flushes, like a service that flushed three times."""
    puts = []
    for (app, region), batch in payloads.items():
        shuffled = batch[:]
        random.Random(app + region).shuffle(shuffled)
        for seq, part in enumerate([shuffled[0::3], shuffled[1::3], shuffled[2::3]]):
            for f in encode_partition(app, region, Payloads(part), START).files:
                name = object_name(f.min_timestamp_ns, f"test-{region}", seq)
                key = object_key(partition_value(app), f.hour_ns, name)
                puts.append((key, f.data))
    semaphore = asyncio.Semaphore(32)

    async def put(key: str, data: bytes) -> None:
        async with semaphore:
            await storage.put(key, data)

    await asyncio.gather(*(put(k, d) for k, d in puts))
    return len(puts)


def make_archive(settings: ArchiveSettings) -> Archive:
    payloads, messages = build_content()

    async def go() -> int:
        storage = open_storage(settings)
        try:
            return await write_archive(storage, payloads)
        finally:
            await storage.close()

    return Archive(messages, asyncio.run(go()))


@pytest.fixture(scope="module")
def local_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[ArchiveSettings, Archive]:
    settings = ArchiveSettings("file", "", str(tmp_path_factory.mktemp("query") / "archive"))
    return settings, make_archive(settings)


@pytest.fixture(scope="module")
def s3_archive(seaweedfs: SeaweedFS) -> tuple[ArchiveSettings, Archive]:
    if not seaweedfs.running:
        seaweedfs.start()
    bucket = f"query-{uuid.uuid4().hex[:12]}"
    seaweedfs.create_bucket(bucket)
    settings = seaweedfs.archive_settings(bucket, "archive/v1")
    return settings, make_archive(settings)


def s3_env(settings: ArchiveSettings) -> dict[str, str | None]:
    return {
        "AWS_ENDPOINT_URL_S3": settings.s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": settings.s3.access_key_id,
        "AWS_SECRET_ACCESS_KEY": settings.s3.secret_access_key,
        "AWS_REGION": settings.s3.region,
        "ARCHIVE_URL": None,
        "BUCKET_NAME": None,
    }


def cli(settings: ArchiveSettings, *args: str, env: dict[str, str | None] | None = None) -> Result:
    """Run ``archiver`` in-process with the archive of ``settings``."""
    url = settings.url if settings.scheme == "s3" else settings.prefix
    environ = s3_env(settings) if settings.scheme == "s3" else {"ARCHIVE_URL": None, "BUCKET_NAME": None}
    return CliRunner().invoke(main, [args[0], "--archive", url, *args[1:]], env=environ | (env or {}))


Row = tuple[int, str, str, str | None, str | None, str | None]  # ts, app, region, instance, level, message


def query_rows(settings: ArchiveSettings, tmp_path: Path, *args: str) -> list[Row]:
    """Rows of ``archiver query ARGS --format parquet``, checked to be in time order."""
    out = tmp_path / f"{uuid.uuid4().hex}.parquet"
    result = cli(settings, "query", *args, "--format", "parquet", "--output", str(out))
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    ts = table_ns(table).to_pylist()  # exact: the µs timestamp and timestamp_nanos
    assert ts == sorted(ts)
    cols = [table[c].to_pylist() for c in ("app", "region", "instance", "level", "message")]
    return list(zip(ts, *cols, strict=True))


@functools.cache
def file_timestamps(path: str) -> list[int]:
    values: list[int] = table_ns(pq.read_table(path, columns=["timestamp", "timestamp_nanos"])).to_pylist()
    return values


def duck_rows(
    settings: ArchiveSettings,
    where: str = "true",
    params: Sequence[Any] = (),
    lo: int | None = None,
    hi: int | None = None,
) -> list[Row]:
    """DuckDB's answer on the same files, in time order (timestamps are unique in this archive).

    DuckDB reads ``timestamp`` (microseconds) as TIMESTAMPTZ; the exact time adds
    ``timestamp_nanos``. So the [lo, hi) range is applied loosely (one
    microsecond of slack) in SQL, and then exactly to the nanoseconds of the
    rows it returned (by file and row number).
    """
    if lo is not None:
        where += f" AND epoch_us(timestamp::TIMESTAMPTZ) >= {lo // 1000 - 1}"
    if hi is not None:
        where += f" AND epoch_us(timestamp::TIMESTAMPTZ) <= {(hi - 1) // 1000 + 1}"
    sql = (
        "SELECT filename, file_row_number, app, region, instance, level, message FROM read_parquet("
        f"'{settings.prefix}/**/*.parquet', hive_partitioning=true, filename=true, file_row_number=true) "
        f"WHERE {where}"
    )
    rows = []
    for filename, number, *rest in duckdb.connect().execute(sql, list(params)).fetchall():
        ts = file_timestamps(filename)[number]
        if (lo is None or ts >= lo) and (hi is None or ts < hi):
            rows.append((ts, *rest))
    return sorted(rows)


FILTER_CASES: list[tuple[list[str], str] | tuple[list[str], str, int, int]] = [
    ([], "true"),
    (["--app", "sandwich"], "app = 'sandwich'"),
    (["--app", "sandwich", "--app", "worker", "--region", "dfw", "--region", "iad"],
     "app IN ('sandwich', 'worker') AND region IN ('dfw', 'iad')"),
    (["--region", "ams"], "region = 'ams'"),
    (["--level", "warn", "--level", "ERROR"], "lower(level) IN ('warn', 'error')"),
    (["--contains", "Timeout"], "contains(message, 'Timeout')"),
    (["--contains", "timeout", "--ignore-case"], "contains(lower(message), 'timeout')"),
    (["--contains", '{"severity":"error","message":"boom 1'], """contains(message, '{"severity":"error","message":"boom 1')"""),
    (["--contains", "% full"], "contains(message, '% full')"),
    (["--contains", "☕ served 1", "-i"], "contains(lower(message), '☕ served 1')"),
    (["--contains", r"\d+.*[x]"], "false"),
    (["--grep", r"^GET /orders/\d+ 200"], r"regexp_matches(message, '^GET /orders/\d+ 200')"),
    (["--grep", "declined|RESET", "-i"], "regexp_matches(message, 'declined|RESET', 'i')"),
    (["--grep", '"level":"(?i:warn)"'], """regexp_matches(message, '"level":"(?i:warn)"')"""),
    (["--app", "api-gw", "--region", "sin", "--level", "error", "--grep", "boom|declined",
      "--since", "2026-11-23T05:00", "--until", "2026-11-23T19:30"],
     "app = 'api-gw' AND region = 'sin' AND lower(level) = 'error' AND regexp_matches(message, 'boom|declined')",
     DAY1 + 5 * NS_PER_HOUR, DAY1 + 19 * NS_PER_HOUR + 30 * 60 * S),
    (["--app", "nosuchapp"], "false"),
]  # fmt: skip


@pytest.mark.parametrize("case", FILTER_CASES, ids=[" ".join(c[0]) or "all" for c in FILTER_CASES])
def test_filters_match_duckdb(local_archive: Any, tmp_path: Path, case: tuple[Any, ...]) -> None:
    settings, _ = local_archive
    args, where, *bounds = case
    since = [] if "--since" in args else EVERYTHING
    expected = duck_rows(settings, where, (), *bounds)
    assert query_rows(settings, tmp_path, *since, *args) == expected


def test_instance_filter_matches_duckdb(local_archive: Any, tmp_path: Path) -> None:
    settings, archive = local_archive
    instance = next(iter(archive.messages.values()))["fly"]["app"]["instance"]
    expected = duck_rows(settings, "instance = ?", [instance])
    assert expected
    assert query_rows(settings, tmp_path, *EVERYTHING, "--instance", instance) == expected


def test_everything_is_found_once(local_archive: Any, tmp_path: Path) -> None:
    settings, archive = local_archive
    rows = query_rows(settings, tmp_path, *EVERYTHING)
    assert [r[0] for r in rows] == sorted(archive.messages)


@pytest.mark.parametrize(
    ("since", "until", "lo", "hi"),
    [
        # inclusive since, exclusive until, at the day boundary (which is also an hour and date boundary)
        ("2026-11-23T00:00:00Z", "2026-11-23T01:00:00Z", DAY1, DAY1 + NS_PER_HOUR),
        ("2026-11-22T23:00:00Z", "2026-11-23T00:00:00Z", DAY1 - NS_PER_HOUR, DAY1),
        ("2026-11-22T23:59:59.999999999Z", "2026-11-23T00:00:00.000000001Z", DAY1 - 1, DAY1 + 1),
        # nanosecond edges around 13:00 on day 1
        ("2026-11-23T13:00:00.000000001Z", "2026-11-23T14:00", DAY1 + 13 * NS_PER_HOUR + 1, DAY1 + 14 * NS_PER_HOUR),
        ("2026-11-23T12:00", "2026-11-23T12:59:59.999999999Z", DAY1 + 12 * NS_PER_HOUR, DAY1 + 13 * NS_PER_HOUR - 1),
        # offsets: 02:00+02:00 is midnight UTC; 19:00-05:00 is midnight UTC
        ("2026-11-23T02:00+02:00", "2026-11-23T01:00:00.000000001+01:00", DAY1, DAY1 + 1),
        ("2026-11-22T19:00:00-05:00", "2026-11-23", DAY1, DAY1),
        # a span of several hours crossing a date
        ("2026-11-22T21:30", "2026-11-23T02:15", DAY0 + 21 * NS_PER_HOUR + 30 * 60 * S, DAY1 + 2 * NS_PER_HOUR + 15 * 60 * S),
    ],
)  # fmt: skip
def test_time_boundaries(
    local_archive: Any, tmp_path: Path, since: str, until: str, lo: int, hi: int
) -> None:
    settings, archive = local_archive
    if lo == hi:  # an empty range is refused
        result = cli(settings, "query", "--since", since, "--until", until)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1
        return
    rows = query_rows(settings, tmp_path, "--since", since, "--until", until)
    assert [r[0] for r in rows] == sorted(ts for ts in archive.messages if lo <= ts < hi)
    assert rows == duck_rows(settings, lo=lo, hi=hi)


def test_edges_present(local_archive: Any, tmp_path: Path) -> None:
    settings, _ = local_archive
    since, until = "2026-11-22T23:59:59.999999999Z", "2026-11-23T00:00:00.000000001Z"
    rows = query_rows(settings, tmp_path, "--since", since, "--until", until)
    assert [r[0] for r in rows] == [DAY1 - 1, DAY1]


@pytest.mark.parametrize("args", [[], ["--app", "api-gw", "--grep", "o"], ["--level", "info"]])
def test_limit_and_tail(local_archive: Any, tmp_path: Path, args: list[str]) -> None:
    settings, _ = local_archive
    full = query_rows(settings, tmp_path, *EVERYTHING, *args)
    assert query_rows(settings, tmp_path, *EVERYTHING, *args, "--limit", "7") == full[:7]
    assert query_rows(settings, tmp_path, *EVERYTHING, *args, "--tail", "9") == full[-9:]
    assert query_rows(settings, tmp_path, *EVERYTHING, *args, "--tail", "100000") == full
    big = len(full) - 3
    assert query_rows(settings, tmp_path, *EVERYTHING, *args, "--limit", str(big)) == full[:big]


def test_json_is_the_published_messages(local_archive: Any) -> None:
    settings, archive = local_archive
    result = cli(settings, "query", *EVERYTHING, "--format", "json")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout_bytes.splitlines()
    assert [orjson.loads(line) for line in lines] == [archive.messages[ts] for ts in sorted(archive.messages)]


def test_text_is_the_fly_logs_layout(local_archive: Any) -> None:
    settings, archive = local_archive
    result = cli(
        settings, "query", "--app", "sandwich", "--since", "2026-11-23T12:00", "--until", "2026-11-23T14:00"
    )
    assert result.exit_code == 0, result.stderr
    rows = duck_rows(settings, "app = 'sandwich'", (), DAY1 + 12 * NS_PER_HOUR, DAY1 + 14 * NS_PER_HOUR)
    expected = []
    for ts, _app, region, instance, level, message in rows:
        provider = archive.messages[ts]["event"]["provider"]
        expected.append(f"{iso(ts)} {provider}[{instance}] {region} [{level}] {message}\n")
    assert result.stdout == "".join(expected)
    edge = f"{iso(DAY1 + 13 * NS_PER_HOUR)} "
    assert any(line.startswith(edge) and " dfw [" in line for line in result.stdout.splitlines())


def test_csv_round_trip(local_archive: Any) -> None:
    settings, archive = local_archive
    result = cli(settings, "query", *EVERYTHING, "--app", "api-gw", "--format", "csv")
    assert result.exit_code == 0, result.stderr
    options = pcsv.ConvertOptions(
        column_types={name: pa.string() for name in ("timestamp", "app", "region", "extra", "message")},
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    table = pcsv.read_csv(io.BytesIO(result.stdout_bytes), convert_options=options)
    assert table.column_names == [
        "timestamp", "app", "region", "instance", "host", "provider", "level", "fly_level", "message", "extra",
    ]  # fmt: skip
    expected = sorted(ts for ts, m in archive.messages.items() if m["fly"]["app"]["name"] == "api-gw")
    assert table["timestamp"].to_pylist() == [iso(ts) for ts in expected]
    assert table["message"].to_pylist() == [archive.messages[ts]["message"] for ts in expected]
    extras = [orjson.loads(e) if e is not None else None for e in table["extra"].to_pylist()]
    assert any(extras) and all(e is None or "trace_id" in e for e in extras)


def test_parquet_round_trip(local_archive: Any, tmp_path: Path) -> None:
    settings, archive = local_archive
    out = tmp_path / "out.parquet"
    assert cli(settings, "query", *EVERYTHING, "--format", "parquet", "-o", str(out)).exit_code == 0
    table = pq.read_table(out)
    # The archive's own time columns: microseconds every engine reads, and the nanoseconds past them.
    assert table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("timestamp_nanos").type == pa.int16()
    assert table.num_rows == len(archive.messages)
    by_ts = dict(
        zip(
            table_ns(table).to_pylist(),
            table.drop(["timestamp", "timestamp_nanos"]).to_pylist(),
            strict=True,
        )
    )
    for ts, message in archive.messages.items():
        row = by_ts[ts]
        assert (row["app"], row["region"]) == (message["fly"]["app"]["name"], message["fly"]["region"])
        assert (row["message"], row["instance"], row["provider"]) == (
            message["message"], message["fly"]["app"]["instance"], message["event"]["provider"],
        )  # fmt: skip


class CountingStorage:
    """Wraps a Storage, recording every listing and read."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.url = inner.url
        self.lists: list[str] = []
        self.list_dirs_calls: list[str] = []

    async def list(self, prefix: str) -> builtins.list[ObjectInfo]:
        self.lists.append(prefix)
        return await self.inner.list(prefix)

    async def list_dirs(self, prefix: str) -> builtins.list[str]:
        self.list_dirs_calls.append(prefix)
        return await self.inner.list_dirs(prefix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Counts listings (by prefix) and files read by ``archiver query``."""
    seen: dict[str, Any] = {"storage": None, "read": []}
    real_open_storage, real_read = open_read_storage, Reader.read_files

    def open_counting(settings: ArchiveSettings) -> Any:
        seen["storage"] = CountingStorage(real_open_storage(settings))
        return seen["storage"]

    async def read(self: Reader, files: Sequence[ArchiveFile], *args: Any) -> Any:
        seen["read"].extend(planned.key for planned in files)
        return await real_read(self, files, *args)

    monkeypatch.setattr(query_run, "open_read_storage", open_counting)
    monkeypatch.setattr(Reader, "read_files", read)
    yield seen


def test_only_requested_hours_are_listed_and_read(local_archive: Any, counted: dict[str, Any]) -> None:
    settings, _ = local_archive
    result = cli(
        settings, "query", "--app", "sandwich", "--since", "2026-11-23T13:30", "--until", "2026-11-23T15:10"
    )
    assert result.exit_code == 0 and result.stdout
    # Each hour: its v2 prefix, and the v1 folder old data would be in; the day (ended) its day files' prefix,
    # once per listing window; and the Delta log, looked for beside the first listing (this archive is
    # not a table: no _last_checkpoint, so the log is listed).
    lists = counted["storage"].lists
    assert sorted(p for p in lists if "-d-" not in p) == sorted(
        [f"app=sandwich/date=2026-11-23/20261123T{h}" for h in (13, 14, 15)]
        + [f"app=sandwich/date=2026-11-23/hour={h}/" for h in (13, 14, 15)]
        + ["_delta_log/"]
    )
    assert {p for p in lists if "-d-" in p} == {"app=sandwich/date=2026-11-23/20261123-d-"}
    assert counted["storage"].list_dirs_calls == []
    assert counted["read"] and all("/date=2026-11-23/20261123T1" in key for key in counted["read"])
    assert {key.split("/")[2][:11] for key in counted["read"]} == {f"20261123T{h}" for h in (13, 14, 15)}


def test_whole_days_are_one_listing_and_no_app_lists_apps_once(
    local_archive: Any, counted: dict[str, Any]
) -> None:
    settings, archive = local_archive
    result = cli(
        settings, "query", "--since", "2026-11-22T22:00", "--until", "2026-11-24T01:00", "--format", "json"
    )
    assert result.exit_code == 0
    assert counted["storage"].list_dirs_calls == [""]
    expected = set()
    for app in APPS:
        expected |= {f"app={app}/date=2026-11-22/hour={h}/" for h in (22, 23)}
        expected |= {f"app={app}/date=2026-11-22/20261122T{h}" for h in (22, 23)}
        expected |= {f"app={app}/date=2026-11-23/", f"app={app}/date=2026-11-24/hour=00/"}
        expected |= {f"app={app}/date=2026-11-24/20261124T00"}
        # The edge hours' ended days: their day files (rolled up) hold those hours too.
        expected |= {f"app={app}/date=2026-11-22/20261122-d-", f"app={app}/date=2026-11-24/20261124-d-"}
    expected.add("_delta_log/")  # not a table: the log is looked for once, beside the first window
    assert sorted(set(counted["storage"].lists)) == sorted(expected)
    assert sorted(p for p in counted["storage"].lists if "-d-" not in p) == sorted(
        p for p in expected if "-d-" not in p
    )
    in_range = [ts for ts in archive.messages if DAY0 + 22 * NS_PER_HOUR <= ts < DAY2 + NS_PER_HOUR]
    assert len(result.stdout_bytes.splitlines()) == len(in_range)


def test_tail_reads_only_the_newest_hours_it_needs(local_archive: Any, counted: dict[str, Any]) -> None:
    settings, archive = local_archive
    result = cli(
        settings,
        "query",
        "--app",
        "worker",
        "--since",
        "30d",
        "--until",
        "2026-11-25",
        "--tail",
        "3",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.stderr
    worker = sorted(ts for ts, m in archive.messages.items() if m["fly"]["app"]["name"] == "worker")
    assert [orjson.loads(line)["timestamp"] for line in result.stdout_bytes.splitlines()] == [
        iso(t) for t in worker[-3:]
    ]
    newest_hour = "20261124T03"  # the archive ends at 2026-11-24T04:00
    assert counted["read"] and all(f"date=2026-11-24/{newest_hour}" in key for key in counted["read"])
    # Listing walked back from --until: hours 23..04 of 11-24 were empty, then 03 had enough (two
    # prefixes an hour: v2 and v1), and the Delta log was looked for once (not a table).
    data_lists = [prefix for prefix in counted["storage"].lists if prefix != "_delta_log/"]
    assert len(counted["storage"].lists) - len(data_lists) == 1
    assert len(data_lists) <= 2 * (2 * 21 + 1)
    assert all("date=2026-11-24/" in prefix for prefix in data_lists)


def _good_file(app: str, region: str, stamps: Sequence[int]) -> bytes:
    payloads = [
        orjson.dumps(
            {"fly": {"app": {"name": app}, "region": region}, "message": f"ok {i}", "timestamp": iso(ts)}
        )
        for i, ts in enumerate(stamps)
    ]
    (encoded,) = encode_partition(app, region, Payloads(payloads), stamps[0]).files
    return encoded.data


@pytest.fixture
def damaged_archive(tmp_path: Path) -> tuple[ArchiveSettings, list[str]]:
    """One hour of app ``shop`` with two good files and four bad ones."""
    settings = ArchiveSettings("file", "", str(tmp_path / "damaged"))
    hour = DAY1 + 5 * NS_PER_HOUR
    good = _good_file("shop", "dfw", [hour + 10 * S, hour + 30 * S])
    foreign = io.BytesIO()
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), foreign)
    wrong_types = write_parquet_other_types(hour)
    files = {
        "good-1.parquet": good,
        "good-2.parquet": _good_file("shop", "ams", [hour + 20 * S]),
        "empty.parquet": b"",
        "truncated.parquet": good[: len(good) // 2],
        "csv.parquet": b"timestamp,message\n2026-11-23T05:00:00Z,hello\n",
        "foreign.parquet": foreign.getvalue(),
        "wrongtypes.parquet": wrong_types,
    }
    bad = []

    async def put_all() -> None:
        storage = open_storage(settings)
        for name, data in files.items():
            key = object_key("shop", hour, f"{hour_stamp(hour)}-{name}")
            await storage.put(key, data)
            if not name.startswith("good"):
                bad.append(key)

    asyncio.run(put_all())
    return settings, bad


def write_parquet_other_types(hour: int) -> bytes:
    table = pa.table({"timestamp": pa.array([hour], pa.timestamp("ns", tz="UTC")), "message": pa.array([42])})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def test_bad_files_are_skipped_with_a_warning(damaged_archive: Any) -> None:
    settings, bad = damaged_archive
    result = cli(settings, "query", "--app", "shop", *EVERYTHING)
    assert result.exit_code == 0, result.stderr
    assert [line.split(" ", 1)[1] for line in result.stdout.splitlines()] == [
        "[] dfw [] ok 0", "[] ams [] ok 0", "[] dfw [] ok 1",
    ]  # fmt: skip
    warnings = result.stderr.splitlines()
    assert len(warnings) == len(bad)
    for key in bad:
        assert sum(line.startswith(f"warning: skipped {key}: ") for line in warnings) == 1
    listed = cli(settings, "ls", "--app", "shop")
    assert listed.exit_code == 0
    named = sorted(line[: line.index(".parquet: ") + 8] for line in listed.stderr.splitlines())
    assert named == [f"warning: skipped {k}" for k in sorted(bad)]
    assert listed.stdout.splitlines()[1].split()[:3] == ["2026-11-23T05:00Z", "7", "3"]


def test_nothing_found(local_archive: Any) -> None:
    settings, _ = local_archive
    result = cli(settings, "query", "--app", "sandwich", "--since", "2026-11-23T05:00", "--until", "2026-11-23T08:00",
                 "--contains", "no such text anywhere")  # fmt: skip
    assert result.exit_code == 0
    assert result.stdout_bytes == b""
    (note,) = result.stderr.splitlines()
    assert note.startswith("note: no logs found") and "files" in note and "3 hours" in note
    empty = cli(settings, "query", "--since", "2020-01-01", "--until", "2020-01-02", "--format", "csv")
    assert empty.exit_code == 0 and empty.stdout_bytes == b"" and empty.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "error: --since: "),
        (["--since", "1h", "--until", "2h"], "error: --until (2h) must be after --since (1h)"),
        (["--since", "2026-11-24", "--until", "2026-11-24"], "error: --until"),
        (["--grep", "(unclosed"], "error: --grep: invalid regular expression"),
        (["--format", "xml"], "error: --format: expected one of text, json, csv, parquet"),
        (["--limit", "3", "--tail", "3"], "error: --limit and --tail cannot be combined"),
    ],
)
def test_usage_errors_exit_2_with_one_line(local_archive: Any, args: list[str], message: str) -> None:
    settings, _ = local_archive
    result = cli(settings, "query", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1


def test_parquet_refuses_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from query.cli import _query_request

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdout", Tty())
    options = {"output_format": "parquet", "limit": None, "tail": None, "since": None, "until": None, "grep": None,
               "output": None}  # fmt: skip
    with pytest.raises(Exception, match="--format parquet writes binary") as info:
        _query_request(options, 10**18)
    assert getattr(info.value, "exit_code", None) == 2


def test_missing_local_archive_exits_1(tmp_path: Path) -> None:
    settings = ArchiveSettings("file", "", str(tmp_path / "nowhere"))
    for command in (["query"], ["ls"], ["ls", "--app", "x"]):
        result = cli(settings, *command)
        assert result.exit_code == 1
        assert result.stderr == f"error: archive directory {tmp_path / 'nowhere'} does not exist\n"
    assert not (tmp_path / "nowhere").exists()


def test_ls(local_archive: Any) -> None:
    settings, _ = local_archive
    apps = cli(settings, "ls")
    assert apps.exit_code == 0 and apps.stdout.split() == sorted(APPS)
    hours = cli(settings, "ls", "--app", "worker")
    assert hours.exit_code == 0
    header, *lines = hours.stdout.splitlines()
    assert header.split() == ["HOUR", "(UTC)", "FILES", "ROWS", "BYTES", "REGIONS"]
    assert len(lines) == 32 and lines[0].split()[0] == "2026-11-22T20:00Z"
    assert sum(int(line.split()[2]) for line in lines) == ROWS_PER_PARTITION
    worker_files = list(Path(settings.prefix, "app=worker").rglob("*.parquet"))
    assert sum(int(line.split()[1]) for line in lines) == len(worker_files)
    assert sum(int(line.split()[3]) for line in lines) == sum(f.stat().st_size for f in worker_files)
    since = cli(settings, "ls", "--app", "worker", "--app", "sandwich", "--since", "2026-11-24T02:30")
    assert [line.split()[:2] for line in since.stdout.splitlines()[1:]] == [
        ["worker", "2026-11-24T02:00Z"], ["worker", "2026-11-24T03:00Z"],
        ["sandwich", "2026-11-24T02:00Z"], ["sandwich", "2026-11-24T03:00Z"],
    ]  # fmt: skip


S3_CASES = [
    [],
    [
        "--app",
        "sandwich",
        "--region",
        "dfw",
        "--since",
        "2026-11-22T23:59:59.999999999Z",
        "--until",
        "2026-11-23T14:00",
    ],
    ["--grep", "declined|reset", "-i", "--level", "error", "--level", "info"],
    ["--app", "api-gw", "--tail", "25"],
    ["--contains", "café", "--limit", "40"],
]


@pytest.mark.parametrize("args", S3_CASES)
def test_s3_answers_like_local(local_archive: Any, s3_archive: Any, tmp_path: Path, args: list[str]) -> None:
    local, _ = local_archive
    s3, _ = s3_archive
    since = [] if "--since" in args else EVERYTHING
    expected = query_rows(local, tmp_path, *since, *args)
    assert expected
    assert query_rows(s3, tmp_path, *since, *args) == expected


def test_s3_json_and_ls(local_archive: Any, s3_archive: Any) -> None:
    local, _ = local_archive
    s3, _ = s3_archive
    for args in (
        ["query", *EVERYTHING, "--format", "json"],
        ["ls"],
        ["ls", "--app", "api-gw", "--since", "2026-11-23"],
    ):
        s3_result, local_result = cli(s3, *args), cli(local, *args)
        assert s3_result.exit_code == 0, s3_result.stderr
        assert s3_result.stdout_bytes == local_result.stdout_bytes


def test_s3_bad_file_is_skipped(s3_archive: Any) -> None:
    s3, archive = s3_archive
    hour = DAY1 + 7 * NS_PER_HOUR
    key = object_key("sandwich", hour, f"{hour_stamp(hour)}-zz-broken.parquet")

    async def put() -> None:
        storage = open_storage(s3)
        try:
            await storage.put(key, b"PAR1 not really")
        finally:
            await storage.close()

    asyncio.run(put())
    result = cli(
        s3, "query", "--app", "sandwich", "--since", "2026-11-23T07:00", "--until", "2026-11-23T08:00"
    )
    assert result.exit_code == 0
    assert result.stderr.startswith(f"warning: skipped {key}: ") and result.stderr.count("\n") == 1
    expected = [ts for ts, m in archive.messages.items()
                if m["fly"]["app"]["name"] == "sandwich" and DAY1 + 7 * NS_PER_HOUR <= ts < DAY1 + 8 * NS_PER_HOUR]  # fmt: skip
    assert len(result.stdout.splitlines()) == len(expected)


@pytest.mark.parametrize("problem", ["missing bucket", "bad credentials", "unreachable"])
def test_s3_failures_exit_1_with_one_line(s3_archive: Any, problem: str) -> None:
    s3, _ = s3_archive
    env: dict[str, str | None] = {}
    url = s3.url
    if problem == "missing bucket":
        url = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x"
    elif problem == "bad credentials":
        env["AWS_SECRET_ACCESS_KEY"] = "wrong-secret"
    else:
        env["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{free_port()}"
    for command in ("query", "ls"):
        result = CliRunner().invoke(main, [command, "--archive", url], env=s3_env(s3) | env)
        assert result.exit_code == 1, (problem, result.output)
        assert result.stdout == ""
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("unit", ["us", "ns"])  # schema v2 and v1
def test_row_groups_outside_the_range_are_not_read(tmp_path: Path, unit: str) -> None:
    from query.decode import FileScan, _row_groups
    from query.filters import Filters

    hour = DAY1 + 9 * NS_PER_HOUR
    stamps = [hour + i * 60 * S for i in range(60)]
    table = pa.table(
        {
            "timestamp": pa.array(
                [s // (1000 if unit == "us" else 1) for s in stamps], pa.timestamp(unit, tz="UTC")
            ),
            "message": [str(i) for i in range(60)],
        }
    )
    path = tmp_path / "groups.parquet"
    pq.write_table(table, path, row_group_size=10)  # six row groups of ten minutes
    pf = pq.ParquetFile(path)
    inside = Filters(hour - NS_PER_HOUR, hour + 2 * NS_PER_HOUR)
    assert _row_groups(pf, FileScan(("message",), inside, hour)) == [0, 1, 2, 3, 4, 5]
    # [09:25, 09:40:00.000000001) touches groups 2 (09:20-09:29) and 3 (09:30-09:39) and 4 only at 09:40:00.
    edge = Filters(stamps[25], stamps[40] + 1)
    assert _row_groups(pf, FileScan(("message",), edge, hour)) == [2, 3, 4]
    assert _row_groups(pf, FileScan(("message",), Filters(stamps[25], stamps[40]), hour)) == [2, 3]


def test_merge_keeps_time_order_and_file_order_on_ties() -> None:
    from query.scan import merge_hour

    def file(stamps: list[int], tag: str) -> pa.Table:
        ts = pa.array(stamps, pa.timestamp("ns", tz="UTC"))
        return pa.table({"timestamp": ts, "message": [f"{tag}{i}" for i in range(len(stamps))]})

    overlapping = merge_hour([file([1, 5, 9], "a"), file([2, 5, 7], "b"), file([], "c"), file([0, 10], "d")])
    assert overlapping["message"].to_pylist() == ["d0", "a0", "b0", "a1", "b1", "b2", "a2", "d1"]
    following = merge_hour([file([1, 2], "a"), file([2, 3], "b"), file([7], "c")])
    assert following["message"].to_pylist() == ["a0", "a1", "b0", "b1", "c0"]
    disjoint = merge_hour([file([5, 6], "a"), file([1, 2], "b"), file([3, 5], "c")])
    assert disjoint["message"].to_pylist() == ["b0", "b1", "c0", "a0", "c1", "a1"]


def test_progress_line_only_on_a_tty_and_only_after_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    from query.scan import ScanStats

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    async def scan_for(stream: io.StringIO, seconds: float) -> str:
        progress = query_run.Progress(ScanStats(files=3, bytes=2048, hours=1, rows=10), stream)
        progress.start()
        await asyncio.sleep(seconds)
        progress.stop()
        return stream.getvalue()

    assert asyncio.run(scan_for(Tty(), 0.05)) == ""  # a quick scan shows nothing
    assert asyncio.run(scan_for(io.StringIO(), 0.05)) == ""
    monkeypatch.setattr(query_run, "PROGRESS_AFTER_S", 0.0)
    shown = asyncio.run(scan_for(Tty(), 0.05))
    assert "3 files, 2.0 KiB read, 1 hours, 10 rows" in shown and shown.endswith("\r\x1b[K")
    assert asyncio.run(scan_for(io.StringIO(), 0.05)) == ""
