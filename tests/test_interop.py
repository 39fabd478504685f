"""Every engine reads a fresh archive right: DuckDB, pyarrow, Polars, DataFusion and Spark, hive glob.

The archive is written through the service's own stages (ingest, buffers,
uploader: :mod:`stages`) and one hour of it compacted by
:func:`archiver.manage.compact.compact_archive`, so it holds live and
compacted files, with hostile app names (``über-app``, ``日本``, ``a=b``,
``100%``, ``a/b``, ``..``, ``x:y``, ``it's<a|b>`c}```, an empty one, one of
200 characters, one that is literally ``__HIVE_DEFAULT_PARTITION__``, all
digits), an empty region, and ordinary names. Each engine reads it with the README's one-line recipe ("Reading the
archive"), hive partitioning on and no other flag, and each check is a test
per engine: row count, decoded app and region values, filters on decoded
names, timestamp type (UTC, microseconds) and value, date type, and the
same rows as ``archiver query --format json`` to the nanosecond
(``epoch_us(timestamp) * 1000 + timestamp_nanos``).

Where an engine cannot do something, the test asserts the behaviour the
README documents ("Engine caveats"; :func:`expected_app`,
:func:`expected_count`): DataFusion reads the empty app as the string
``__HIVE_DEFAULT_PARTITION__`` and its filter on a name holding ``=``, ``:``,
``'``, ``<``, ``>``, ``|``, a backquote or ``}`` (or a shortened one) finds
nothing, while ``app || '' = name`` finds it; pyarrow and Polars read an app
really named ``__HIVE_DEFAULT_PARTITION__`` as NULL; an all-digit app read
on its own is a number in DuckDB, Polars and Spark until declared a string.

Spark runs in ONE session for the module (local[1], UI off, every listener
on 127.0.0.1, ``SPARK_LOCAL_IP`` set before the JVM starts), stopped with
its JVM at the end; without a JRE (``java`` on PATH or ``JAVA_HOME``) its
tests skip with a notice saying so.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from stages import build, feed

from archiver.archive.escaping import DEFAULT_PARTITION, stored_value
from archiver.archive.layout import NS_PER_HOUR, NS_PER_SECOND
from archiver.archive.message import format_timestamp_ns, parse_timestamp
from archiver.archive.navigator import listed_app_segments
from archiver.demo.flymessage import fly_message
from archiver.manage.compact import Compactor, compact_archive
from archiver.manage.compact_plan import list_units
from archiver.storage.local import LocalStorage

ENGINES = ["duckdb", "pyarrow", "polars", "datafusion", "spark"]
#: The first two hours (2026-01-14T22Z and 23Z) are compacted, then their day rolled up (the hour files'
#: row groups copied into a day file); the third (2026-01-15T00Z, the next UTC day) stays live.
HOUR0 = int(datetime(2026, 1, 14, 22, tzinfo=UTC).timestamp()) * NS_PER_SECOND
HOUR1 = HOUR0 + NS_PER_HOUR
HOUR2 = HOUR1 + NS_PER_HOUR
LONG = "long-" + "x" * 195  # 200 characters: its key segment is shortened
#: A name DataFusion's filter cannot find (see DATAFUSION_MISSED).
ODD = "it's<a|b>`c}`"
#: (app, region, how it arrives): "subject" on logs.<app>.<region>.<instance>; "payload" on another
#: subject with the names in the message only (NATS cannot carry "..", "" or an empty region in a token).
CASES = [
    ("web", "ord", "subject"),
    ("api-server", "iad", "subject"),
    ("über-app", "fra", "subject"),
    ("日本", "nrt", "subject"),
    ("a=b", "ams", "subject"),
    ("100%", "lhr", "subject"),
    ("a/b", "syd", "subject"),
    ("..", "cdg", "payload"),
    ("web", "", "payload"),
    ("", "ord", "payload"),
    (LONG, "sin", "subject"),
    (DEFAULT_PARTITION, "gru", "subject"),
    ("x:y", "dfw", "subject"),
    (ODD, "yyz", "payload"),
    ("a=b c", "mad", "payload"),
    ("007", "ewr", "subject"),
    ("123", "bos", "subject"),
]
#: Names filtered on with ``app = <name>`` (the long one by the stored form engines show).
FILTERED = ["web", "über-app", "日本", "a=b", "100%", "a/b", "..", "x:y", ODD, "a=b c", "007",
            stored_value(LONG), DEFAULT_PARTITION]  # fmt: skip
#: A DataFusion filter on the app lists the one folder ``app=<name escaped as object_store escapes
#: a path part>``, which misses our folder when the name holds one of these: Hive escapes the first
#: three and object_store does not; object_store escapes the others (and a shortened name's ``~``)
#: and Hive does not.
DATAFUSION_MISSED = frozenset("=:'<>|`}")


def datafusion_lists_all(name: str) -> bool:
    """Whether DataFusion answers ``app = name`` from every folder, comparing decoded values (right).

    It does when the name holds a control character, space, ``#``, ``%``, ``/``, ``?``, DEL or a
    non-ASCII character; otherwise it lists the one folder (see DATAFUSION_MISSED).
    """
    return any(ord(c) < 0x21 or ord(c) >= 0x7F or c in "#%/?" for c in name)


#: Rows per (app, region) and hour, in two flushes (so each hour has two live files per partition).
PER_HOUR = 4

Row = tuple[str | None, str, int, str]  # app as the engine gives it, region, exact ns, message


@dataclass
class Archive:
    """The archive directory and what went into it."""

    root: Path
    sent: list[tuple[str, str, int, str]]  # full app name, region, exact ns, message
    files: list[str] = field(default_factory=list)


def messages() -> list[tuple[str, bytes, tuple[str, str, int, str]]]:
    """(subject, payload, (app, region, ns, text)) for every case: PER_HOUR in each of the three hours."""
    rng = random.Random(13)
    out = []
    for index, (app, region, via) in enumerate(CASES):
        subject = f"logs.{app}.{region}.148ed726c12358" if via == "subject" else "logs.fallback"
        for hour in (HOUR0, HOUR1, HOUR2):
            stamps = sorted(hour + rng.randrange(NS_PER_HOUR) for _ in range(PER_HOUR))
            if index == 0:  # two rows in one microsecond: only timestamp_nanos orders them
                stamps[1] = stamps[0] - stamps[0] % 1000 + 999
                stamps[0] -= stamps[0] % 1000 - 1
            for k, ns in enumerate(stamps):
                text = f"case {index} row {k} ✓ {'GET /' if k % 2 else 'level=warn'}"
                payload = fly_message(app, region, text, format_timestamp_ns(ns), instance="148ed726c12358")
                out.append((subject, payload, (app, region, ns, text)))
    return out


async def write(root: Path, spool: Path) -> list[tuple[str, str, int, str]]:
    """Archive every message through the service's stages in two flushes, compact HOUR0 and HOUR1, roll up their day."""
    sent = messages()
    stages = build(spool, root)
    stages.spool.open()
    stages.uploader.start()
    try:
        for half in (sent[0::2], sent[1::2]):
            await feed(stages, [(subject, payload) for subject, payload, _ in half])
            for batch in stages.buffers.detach_all():
                stages.submit(batch)
            await asyncio.wait_for(stages.uploader.join(), 60)
    finally:
        await stages.close()
    storage = LocalStorage(str(root))
    try:
        stats = await compact_archive(storage, [], HOUR2, 256 * 1024**2)
        assert stats.compacted == 2 * len({app for app, *_ in CASES}), stats
        with tempfile.TemporaryDirectory() as scratch:
            compactor = Compactor(storage, scratch, 256 * 1024**2)
            units = await list_units(storage, await listed_app_segments(storage), HOUR2, days_until_ns=HOUR2)
            days = [unit for unit in units if unit.is_day]
            assert len(days) == len({app for app, *_ in CASES})
            for unit in days:
                day = await compactor.compact(unit)
                assert (day.outcome, day.files_in, day.files_out) == ("compacted", 2, 1), day
    finally:
        await storage.close()
    return [row for *_, row in sent]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """The archive, written once for the module, with a compaction claim left under ``_archiver/``."""
    work = tmp_path_factory.mktemp("interop")
    root = work / "archive"
    sent = asyncio.run(write(root, work / "spool"))
    # What a running compactor leaves at the root: every reader must skip it.
    claim = root / "_archiver" / "claims" / "app=web" / "20260115T00" / "1"
    claim.parent.mkdir(parents=True)
    claim.write_bytes(b'{"owner": "w1", "expires_ns": 0}')
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))
    return Archive(root, sent, files)


def test_the_archive_holds_compacted_and_live_files_and_hostile_segments(archive: Archive) -> None:
    assert any("-d-" in f and f.split("/")[1] == "date=2026-01-14" for f in archive.files)
    assert not any("-c-" in f for f in archive.files if "date=2026-01-14" in f)
    assert any("-c-" not in f and f.split("/")[1] == "date=2026-01-15" for f in archive.files)
    assert not any("-c-" in f for f in archive.files if "date=2026-01-15" in f)
    segments = {f.split("/")[0] for f in archive.files}
    for segment in ("app=über-app", "app=日本", "app=a%3Db", "app=100%25", "app=a%2Fb", "app=..",
                    "app=__HIVE_DEFAULT_PARTITION__", "app=%5F_HIVE_DEFAULT_PARTITION__"):  # fmt: skip
        assert segment in segments
    assert any(re.fullmatch("app=long-x+~[0-9a-f]{32}", s) for s in segments)  # shortened


@pytest.fixture(scope="module")
def queried(archive: Archive) -> list[tuple[str, str, int, str]]:
    """``archiver query --format json`` over the whole archive (no --app): (app, region, ns, message)."""
    argv = [sys.executable, "-m", "archiver", "query", "--archive", str(archive.root),
            "--since", "2026-01-14", "--until", "2026-01-16", "--format", "json"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ARCHIVE_", "BUCKET_"))}
    result = subprocess.run(argv, env=env, capture_output=True, timeout=120, check=True)
    rows = []
    for line in result.stdout.splitlines():
        record = orjson.loads(line)
        ns = parse_timestamp(record["timestamp"])
        assert ns is not None, line
        rows.append((record["fly"]["app"]["name"], record["fly"]["region"], ns, record["message"]))
    return rows


def test_archiver_query_gives_back_every_message_exactly(archive: Archive, queried: list[Any]) -> None:
    assert sorted(queried) == sorted(archive.sent)
    assert [ns for _, _, ns, _ in queried] == sorted(ns for _, _, ns, _ in queried)


# ---- What each engine can and cannot do (the README's caveats) ----


def expected_app(engine: str, app: str) -> str | None:
    """The app value ``engine`` gives for the rows of ``app`` (README: "Engine caveats")."""
    if app == "":
        return DEFAULT_PARTITION if engine == "datafusion" else None
    if app == DEFAULT_PARTITION and engine in ("pyarrow", "polars"):
        return None
    return stored_value(app)


def expected_count(engine: str, name: str, sent: list[tuple[str, str, int, str]]) -> int:
    """Rows ``app = name`` finds in ``engine``: those whose app it reads as ``name`` (README caveats).

    DataFusion answers the filter by listing ``app=<name as object_store escapes it>``: it finds
    nothing for a name holding one of DATAFUSION_MISSED or shortened (a raw ``~``), and for
    ``__HIVE_DEFAULT_PARTITION__`` only the empty app's rows (which it reads as that string too).
    """
    if engine == "datafusion":
        shortened = name != stored_name(name)
        if (DATAFUSION_MISSED & set(name) or shortened) and not datafusion_lists_all(name):
            return 0
        if name == DEFAULT_PARTITION:
            return sum(1 for app, *_ in sent if app == "")
    return sum(1 for app, *_ in sent if expected_app(engine, app) == name)


def stored_name(value: str) -> str:
    """``value`` itself, or the full name it is the shortened form of (among CASES)."""
    return next((app for app, _, _ in CASES if stored_value(app) == value), value)


# ---- The engines, each with the README's recipe ----


@dataclass
class Reading:
    """What one engine read: its rows, types, first timestamp, and filter counts."""

    rows: list[Row]
    timestamp_type: Any
    date_type: Any
    first_timestamp_us: int
    first_timestamp: Any  # as the engine hands it to Python
    counts: dict[str, int]
    null_apps: int
    day2_rows: int  # a filter on the date partition
    #: DataFusion only: ``app || '' = name``, the README's way round its listing (see DATAFUSION_MISSED).
    expression_counts: dict[str, int] = field(default_factory=dict)


DAY2 = date(2026, 1, 15)


def columns_as_rows(*columns: Any) -> list[Row]:
    """Rows of Arrow columns (app, region, exact ns, message)."""
    return list(zip(*(c.to_pylist() for c in columns), strict=True))


def read_duckdb(root: Path) -> Reading:
    import duckdb

    con = duckdb.connect()
    scan = f"read_parquet('{root}/app=*/**/*.parquet', hive_partitioning = true)"
    exact = "epoch_us(timestamp) * 1000 + timestamp_nanos"
    rows = con.execute(f"SELECT app, region, {exact}, message FROM {scan}").fetchall()
    kinds = dict(
        con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {scan})").fetchall()
    )
    # DuckDB 1.x hands a TIMESTAMPTZ to Python only with pytz installed: the UTC wall time needs no module.
    first_sql = f"SELECT timezone('UTC', timestamp), epoch_us(timestamp) FROM {scan} ORDER BY timestamp, timestamp_nanos"
    first = con.execute(first_sql).fetchone()
    assert first is not None
    count = lambda where, *args: con.execute(f"SELECT count(*) FROM {scan} WHERE {where}", args).fetchone()[0]  # noqa: E731
    return Reading(
        rows=[tuple(r) for r in rows],
        timestamp_type=kinds["timestamp"],
        date_type=kinds["date"],
        first_timestamp_us=first[1],
        first_timestamp=first[0],
        counts={name: count("app = ?", name) for name in FILTERED},
        null_apps=count("app IS NULL"),
        day2_rows=count("date = ?", DAY2),
    )


def read_pyarrow(root: Path) -> Reading:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    hive = ds.partitioning(pa.schema([("app", pa.string()), ("date", pa.date32())]), flavor="hive")
    dataset = ds.dataset(str(root), format="parquet", partitioning=hive)
    table = dataset.to_table().sort_by([("timestamp", "ascending"), ("timestamp_nanos", "ascending")])
    micros = table["timestamp"].cast(pa.int64())
    exact = pc.add(pc.multiply(micros, 1000), table["timestamp_nanos"].cast(pa.int64()))
    return Reading(
        rows=columns_as_rows(table["app"], table["region"], exact, table["message"]),
        timestamp_type=dataset.schema.field("timestamp").type,
        date_type=dataset.schema.field("date").type,
        first_timestamp_us=micros[0].as_py(),
        first_timestamp=table["timestamp"][0].as_py(),
        counts={name: dataset.count_rows(filter=ds.field("app") == name) for name in FILTERED},
        null_apps=dataset.count_rows(filter=ds.field("app").is_null()),
        day2_rows=dataset.count_rows(filter=ds.field("date") == DAY2),
    )


def read_polars(root: Path) -> Reading:
    import polars as pl

    logs = pl.scan_parquet(f"{root}/app=*/**/*.parquet", hive_partitioning=True)
    exact = pl.col("timestamp").dt.epoch("us") * 1000 + pl.col("timestamp_nanos")
    table = logs.select("app", "region", exact.alias("ns"), "message", "timestamp").sort("ns").collect()
    schema = logs.collect_schema()
    count = lambda where: logs.filter(where).select(pl.len()).collect().item()  # noqa: E731
    return Reading(
        rows=list(zip(table["app"], table["region"], table["ns"], table["message"], strict=True)),
        timestamp_type=schema["timestamp"],
        date_type=schema["date"],
        first_timestamp_us=table["ns"][0] // 1000,
        first_timestamp=table["timestamp"][0],
        counts={name: count(pl.col("app") == name) for name in FILTERED},
        null_apps=count(pl.col("app").is_null()),
        day2_rows=count(pl.col("date") == DAY2),
    )


def quoted(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def read_datafusion(root: Path) -> Reading:
    from datafusion import SessionContext, col, lit

    ctx = SessionContext()
    ctx.register_parquet(
        "logs", f"{root}/", table_partition_cols=[("app", pa.string()), ("date", pa.date32())]
    )
    exact = "arrow_cast(timestamp, 'Int64') * 1000 + timestamp_nanos"
    table = ctx.sql(
        f"SELECT app, region, {exact} AS ns, message, timestamp FROM logs ORDER BY ns"
    ).to_arrow_table()
    schema = ctx.table("logs").schema()
    count = lambda where: ctx.table("logs").filter(where).count()  # noqa: E731
    sql_count = lambda where: ctx.sql(f"SELECT count(*) FROM logs WHERE {where}").to_pylist()[0]["count(*)"]  # noqa: E731
    return Reading(
        rows=columns_as_rows(table["app"], table["region"], table["ns"], table["message"]),
        timestamp_type=schema.field("timestamp").type,
        date_type=schema.field("date").type,
        first_timestamp_us=table["ns"][0].as_py() // 1000,
        first_timestamp=table["timestamp"][0].as_py(),
        counts={name: count(col("app") == lit(name)) for name in FILTERED},
        null_apps=count(col("app").is_null()),
        day2_rows=count(col("date") == lit(DAY2)),
        expression_counts={name: sql_count(f"app || '' = {quoted(name)}") for name in FILTERED},
    )


def read_spark(root: Path, spark: Any) -> Reading:
    from pyspark.sql import functions as F

    logs = spark.read.option("basePath", str(root)).parquet(str(root))
    exact = F.unix_micros("timestamp") * 1000 + F.col("timestamp_nanos")
    table = logs.select("app", "region", exact.alias("ns"), "message").orderBy("ns").collect()
    kinds = dict(logs.dtypes)
    count = lambda where: logs.filter(where).count()  # noqa: E731
    first = (
        logs.orderBy("timestamp", "timestamp_nanos").select("timestamp", F.unix_micros("timestamp")).first()
    )
    return Reading(
        rows=[(r[0], r[1], r[2], r[3]) for r in table],
        timestamp_type=kinds["timestamp"],
        date_type=kinds["date"],
        first_timestamp_us=first[1],
        first_timestamp=first[0],
        counts={name: count(F.col("app") == name) for name in FILTERED},
        null_apps=count(F.col("app").isNull()),
        day2_rows=count(F.col("date") == DAY2),
    )


READERS: dict[str, Callable[[Path], Reading]] = {
    "duckdb": read_duckdb, "pyarrow": read_pyarrow, "polars": read_polars, "datafusion": read_datafusion,
}  # fmt: skip


def java_found() -> bool:
    """Whether pyspark can start a JVM: ``java`` under ``JAVA_HOME`` or on PATH."""
    home = os.environ.get("JAVA_HOME")
    return (
        bool(home and os.access(os.path.join(home, "bin", "java"), os.X_OK))
        or shutil.which("java") is not None
    )


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local Spark session for the module, listening on loopback only; its JVM ends with it."""
    if not java_found():
        pytest.skip(
            "Spark interop not run: no JRE found (no java on PATH, no JAVA_HOME); install OpenJDK 17+"
        )
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    saved = os.environ.get("SPARK_LOCAL_IP")
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # read by the JVM at start: no listener on other addresses
    scratch = tmp_path_factory.mktemp("spark")
    session = (
        SparkSession.builder.master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.driver.memory", "512m")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.local.dir", str(scratch))
        .config("spark.driver.extraJavaOptions", "-XX:+UseSerialGC -XX:TieredStopAtLevel=1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
        gateway = SparkContext._gateway
        if gateway is not None:
            proc = getattr(gateway, "proc", None)
            gateway.shutdown()
            if proc is not None:
                proc.stdin.close()  # the JVM exits when its stdin closes
                proc.wait(30)
            SparkContext._gateway = None
            SparkContext._jvm = None
        if saved is None:
            os.environ.pop("SPARK_LOCAL_IP", None)
        else:
            os.environ["SPARK_LOCAL_IP"] = saved


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest, archive: Archive) -> tuple[str, Reading]:
    """(name, what it read) for each engine, read once per module."""
    name: str = request.param
    if name == "spark":
        return name, read_spark(archive.root, request.getfixturevalue("spark"))
    return name, READERS[name](archive.root)


def as_engine(engine: str, rows: list[tuple[str, str, int, str]]) -> list[Row]:
    """Rows with their app as ``engine`` reads it, sorted by (ns, app, region, message)."""
    out = [(expected_app(engine, app), region, ns, text) for app, region, ns, text in rows]
    return sorted(out, key=lambda r: (r[2], r[0] or "", r[1], r[3]))


def test_row_count(engine: tuple[str, Reading], archive: Archive) -> None:
    _, reading = engine
    assert len(reading.rows) == len(archive.sent) == len(CASES) * 3 * PER_HOUR


def test_app_and_region_values(engine: tuple[str, Reading], archive: Archive) -> None:
    name, reading = engine
    got = {(app, region) for app, region, _, _ in reading.rows}
    assert got == {(expected_app(name, app), region) for app, region, _ in CASES}
    assert stored_value(LONG) != LONG and stored_value(LONG) in {app for app, *_ in reading.rows}


def test_filter_on_decoded_names(engine: tuple[str, Reading], archive: Archive) -> None:
    name, reading = engine
    rows = as_engine(name, archive.sent)
    assert reading.counts == {app: expected_count(name, app, archive.sent) for app in FILTERED}
    assert all(reading.counts[app] for app in ("über-app", "日本", "100%", "a/b", "..", "007"))
    assert reading.null_apps == sum(1 for row in rows if row[0] is None)
    assert reading.day2_rows == sum(1 for row in rows if row[2] >= HOUR2) == len(CASES) * PER_HOUR
    if name == "datafusion":
        assert reading.expression_counts == {app: sum(1 for row in rows if row[0] == app) for app in FILTERED}


TIMESTAMP_TYPES = {
    "duckdb": "TIMESTAMP WITH TIME ZONE",
    "pyarrow": pa.timestamp("us", tz="UTC"),
    "datafusion": pa.timestamp("us", tz="UTC"),
    "spark": "timestamp",  # TIMESTAMP_LTZ: an instant, shown in the session's time zone
}
DATE_TYPES = {"duckdb": "DATE", "pyarrow": pa.date32(), "datafusion": pa.date32(), "spark": "date"}


def test_timestamp_is_utc_microseconds_and_date_a_date(engine: tuple[str, Reading], archive: Archive) -> None:
    name, reading = engine
    if name == "polars":
        import polars as pl

        assert reading.timestamp_type == pl.Datetime("us", "UTC")
        assert reading.date_type == pl.Date
    else:
        assert reading.timestamp_type == TIMESTAMP_TYPES[name]
        assert reading.date_type == DATE_TYPES[name]
    first_ns = min(ns for _, _, ns, _ in archive.sent)
    assert reading.first_timestamp_us == first_ns // 1000
    instant = datetime.fromtimestamp(first_ns // 1000 / 1e6, UTC).replace(
        microsecond=first_ns // 1000 % 10**6
    )
    if name == "spark":
        # pyspark hands TIMESTAMP_LTZ to Python as a naive datetime in the Python process's local zone.
        assert reading.first_timestamp.astimezone(UTC) == instant
    elif name == "duckdb":
        assert reading.first_timestamp == instant.replace(tzinfo=None)  # timezone('UTC', timestamp)
    else:
        assert reading.first_timestamp.tzinfo is not None and reading.first_timestamp == instant


def test_same_rows_as_archiver_query_to_the_nanosecond(
    engine: tuple[str, Reading], queried: list[Any]
) -> None:
    name, reading = engine
    got = sorted(reading.rows, key=lambda r: (r[2], r[0] or "", r[1], r[3]))
    assert got == as_engine(name, queried)


def read_alone(engine: str, root: Path, app: str, spark: Any, fixed: bool) -> list[Any]:
    """The app values of one app's folder read on its own with the recipe (``fixed``: plus the README's fix)."""
    glob = f"{root}/app={app}/**/*.parquet"
    if engine == "duckdb":
        import duckdb

        types = ", hive_types = {'app': VARCHAR}" if fixed else ""
        sql = f"SELECT DISTINCT app FROM read_parquet('{glob}', hive_partitioning = true{types})"
        return [r[0] for r in duckdb.sql(sql).fetchall()]
    if engine == "polars":
        import polars as pl

        schema = {"app": pl.String, "date": pl.Date} if fixed else None
        logs = pl.scan_parquet(glob, hive_partitioning=True, hive_schema=schema)
        return logs.select("app").unique().collect()["app"].to_list()
    if engine == "spark":
        inference = "spark.sql.sources.partitionColumnTypeInference.enabled"
        spark.conf.set(inference, str(not fixed).lower())
        try:
            logs = spark.read.option("basePath", str(root)).parquet(f"{root}/app={app}")
            return [r[0] for r in logs.select("app").distinct().collect()]
        finally:
            spark.conf.unset(inference)
    raise AssertionError(engine)


#: What an all-digit app name read on its own comes back as, before the README's fix (inferred from the value).
ALL_DIGITS = {
    "duckdb": {"123": [123], "007": ["007"]},  # a BIGINT, but a leading zero keeps it VARCHAR
    "polars": {"123": [123], "007": [7]},
    "spark": {"123": [123], "007": [7]},
}


@pytest.mark.parametrize("engine", ["duckdb", "polars", "spark"])
def test_an_all_digit_app_read_alone_needs_the_app_declared_a_string(
    engine: str, archive: Archive, request: pytest.FixtureRequest
) -> None:
    spark = request.getfixturevalue("spark") if engine == "spark" else None
    for app in ("123", "007"):
        assert read_alone(engine, archive.root, app, spark, fixed=False) == ALL_DIGITS[engine][app]
        assert read_alone(engine, archive.root, app, spark, fixed=True) == [app]
