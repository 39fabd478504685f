"""Query: ``archiver query`` against DuckDB's SQL over the same files, as whole processes.

Two archives, both ending at "now" (pinned at half past the previous hour, see
below):

* 1 day: the 24 hours before now (26 hour partitions with both edges);
* 30 days: the same 26 hours plus 694 older hours.

20 apps over 4 regions (the 5 busiest apps in all 4, the next 7 in 2, the
rest in 1: 42 partitions), volume per app-hour skewed 1/(i+1)^0.7 and
following the day (busy hours ~8,000 rows for the busiest app, ~1,000 for the
quietest), LogHub text wrapped as Fly messages by archiver.demo.loadgen, app i
talking like LogHub system i. Files are written with
``archiver.codec.encode.encode_partition`` in the hive layout of
``archiver.archive.layout.object_key``, the way the archive looks once closed hours
are compacted: the hour "now" is in as the live service leaves it (a file per
(app, region) per 60 s flush, archiver.codec.encode's live level), every older hour
one file per app-hour (every region) as ``archiver compact`` writes it in layout v2
(archiver.codec.merge, a compacted name; ``--compaction partition``: one file per
(app, region), the shape of layout v1's compaction). Hours older than 26 h in
the 30-day archive are copies of a real compacted file of the same app and hour
of day with the timestamps moved into their hour (same rows): only
``count30d`` reads them, for the other questions they are what listing and
planning have to get past. Every answer
is checked: all variants of a question must print the same number of rows.

"Now" is pinned at half past the previous hour and passed as explicit
``--since``/``--until`` (and the same bounds in SQL), so every run of both
tools and every run of the benchmark, whatever the time of day, asks the same
question of the same shape: the last hour = 30 min of a compacted hour + 30
min of live files.

Local directories under /tmp and, on SeaweedFS (``weed mini`` started by
tests/servers.py's SeaweedFS), two buckets. DuckDB reads S3 through the
``httpfs`` extension of PyPI's ``duckdb-extension-httpfs`` (it pins the duckdb
version it was built for), loaded from its file.

Questions (archiver / DuckDB):

* ``--app X --since 1h``: the busiest app / ``app = X``, the hive ``date``
  partitions of the range and the timestamp range, ``ORDER BY timestamp``;
  DuckDB with the README's archive-wide glob and with the app's own glob;
* ``--grep RE --since 24h``: every app / ``regexp_matches(message, RE)``;
* ``--app X --tail 100``: the newest 100 of the last hour / ``ORDER BY
  timestamp DESC LIMIT 100``, re-sorted;
* ``--where status>=500 --since 24h``: every app / ``json_extract(message,
  '$.status')`` (TRY_CAST to a double, only where ``json_valid``) ``>= 500``;
* ``--count --by level --every 1h`` over 24 h (``count1d``) and, on the
  30-day archive, over 30 days (``count30d``), ``--format json`` / ``GROUP BY
  epoch_ns(timestamp) // 1h, level`` with the hive ``date`` range;
* ``--top 20 --since 24h`` (``--format json``) / the same RE2 collapse
  (``query.patterns.COLLAPSE``) with ``regexp_replace``, ``GROUP BY``, top 20;
  peak RSS is recorded for every process.

Messages: ``JSON_REQUEST_FRACTION`` of each app's are pino-style JSON request
logs (status, user.id, req.headers...), the rest LogHub text and loadgen's
JSON lines.

Each is a whole process (Python start-up and imports included), stdout to a
file (archiver: text; DuckDB: ``COPY ... TO '/dev/stdout'`` CSV), median of
``--runs`` after one warm-up, every variant of a question (both tools, both
archives) alternating in one loop so they share the machine's conditions.

Usage: .venv/bin/python bench/query_speed.py [--quick] [--runs 5] [--keep] [--json-out FILE]
       [--base DIR] [--only since,tail] [--archives day1] [--compaction app-hour|partition] [--baseline DIR]
       [--floor]

``--base DIR`` builds the archives there once and reuses them on later runs
(with the "now" they were built for, kept in DIR/now.txt; implies --keep):
with ``--only since --archives day1`` a before/after of one question takes
seconds instead of minutes. ``--baseline DIR`` (another version's ``archiver/`` and ``query/``,
e.g. ``git archive COMMIT archiver query | tar -x -C DIR``) times that version too, as
``archiver_base``, in the same alternating loop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import LOGHUB, ROOT
from storage import live_batches

from archiver.archive.layout import NS_PER_HOUR, NS_PER_SECOND, hour_start_ns, object_key, object_name
from archiver.archive.supersede import compact_name, input_digest, replaces_metadata
from archiver.codec import encode
from archiver.codec.payloads import Payloads
from archiver.demo.corpus import REGIONS as _ALL_REGIONS
from archiver.demo.corpus import default_app_names, sample_systems
from archiver.demo.loadgen import FlyLogGenerator

#: Share of each app's messages that are JSON request logs with realistic fields (status, user.id, ...),
#: the rest LogHub text and loadgen's JSON lines: what --where, --count and --top are measured on.
JSON_REQUEST_FRACTION = 0.4
APPS = 20
REGIONS = ("iad", "ams", "sin", "syd")
assert all(r in _ALL_REGIONS for r in REGIONS)
PEAK_ROWS = 8_000  # rows per hour of the busiest app at the busiest hour
GREP = "timeout|refused|denied"
LIVE_HOURS = 1  # the hour "now" is in is not compacted yet
REAL_HOURS = 26  # hours with generated data (the 1-day archive): 24 h back and both edges
WRITER = "bench0001"
LONG_DAYS = 30  # the long archive


def regions_of(index: int) -> tuple[str, ...]:
    return REGIONS if index < 5 else REGIONS[:2] if index < 12 else REGIONS[:1]


def rows_per_hour(index: int, hour_ns: int) -> int:
    """Busiest around 15:00 UTC, quietest around 03:00 UTC: 0.3 .. 1.0 of the peak."""
    hour_of_day = hour_ns // NS_PER_HOUR % 24
    day = 0.65 + 0.35 * math.cos((hour_of_day - 15) / 24 * 2 * math.pi)
    return max(1, round(PEAK_ROWS / (index + 1) ** 0.7 * day))


# --- building the archives -------------------------------------------------------------------------

_STATUSES = (
    [200] * 80 + [201] * 5 + [204] * 3 + [301, 302, 304] + [400, 401, 403] + [404] * 4 + [500, 502, 503]
)


def with_request_message(payload: bytes, rng: random.Random) -> bytes:
    """The Fly message with its text replaced by a pino-style JSON request log."""
    import orjson

    message = orjson.loads(payload)
    status = rng.choice(_STATUSES)
    message["message"] = orjson.dumps({
        "level": 50 if status >= 500 else 40 if status >= 400 else 30, "time": 1764000000000 + rng.randrange(10**9),
        "pid": rng.randrange(300, 700), "hostname": message["fly"]["app"]["instance"],
        "req": {"id": rng.randrange(10**6), "method": rng.choice(["GET", "GET", "GET", "POST", "PUT", "DELETE"]),
                "url": f"/api/v1/orders/{rng.randrange(10**5)}",
                "headers": {"x-request-id": f"{rng.getrandbits(64):016x}", "user-agent": "Mozilla/5.0"}},
        "res": {"statusCode": status}, "status": status, "user": {"id": rng.randrange(5000)},
        "responseTime": round(rng.expovariate(1 / 40), 1), "msg": "request completed",
    }).decode()  # fmt: skip
    return orjson.dumps(message)


def _moved_copy(source: Path, target: Path, back_ns: int, replaced: dict[bytes, bytes] | None) -> None:
    """``source`` re-encoded at ``target`` with every timestamp ``back_ns`` earlier (same rows and order).

    ``replaced``: the compacted copy's own record of its inputs (a copy of the source's would name the
    source's, which a later compaction of the copy's day would take for another group's).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from archiver.archive import schema
    from archiver.archive.timestamps import split_ns, table_ns

    table = pq.read_table(source).replace_schema_metadata(None)
    # Schema v2: the exact time is the µs timestamp and timestamp_nanos; moved whole, split again.
    micros, nanos = split_ns(pc.subtract(table_ns(table), back_ns))
    for name, column in ((schema.TIMESTAMP, micros), (schema.TIMESTAMP_NANOS, nanos)):
        table = table.set_column(table.schema.get_field_index(name), table.schema.field(name), column)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(encode.write_parquet(table, encode.COMPACT_COMPRESSION_LEVEL, replaced))


def merge_files(datas: list[bytes], metadata: dict[bytes, bytes], out: Path) -> None:
    """Merge sorted Parquet files (bytes) into one part at ``out``, as the compactor does (FileMerge)."""
    # Imported here: only building needs it.
    from archiver.codec.merge import FileMerge, MergeInput

    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        inputs = []
        for i, data in enumerate(datas):
            path = Path(scratch) / f"in-{i}.parquet"
            path.write_bytes(data)
            inputs.append(MergeInput(str(path)))
        parts = FileMerge(inputs, metadata).write_parts([str(out)])
        assert parts is not None, "the merge was stopped"


def build(base: Path, now_ns: int, quick: bool, compaction: str = "app-hour") -> dict[str, Any]:
    """Write the 1-day archive under base/day1 and the 30-day one under base/day30 (hard links).

    ``compaction``: a closed hour as ``archiver compact`` leaves it in layout v2, one file per app-hour
    (every region, merged by archiver.codec.merge), or one file per (app, region) as layout v1's did.
    """
    started = time.monotonic()
    day1, day30 = base / "day1", base / "day30"
    systems = sample_systems(LOGHUB if LOGHUB.is_dir() else None)
    apps = default_app_names(APPS)
    current = hour_start_ns(now_ns)
    rng = random.Random(11)
    real: dict[tuple[str, str, int], Path] = {}  # (app, region or "*", hours back) -> a compacted file
    files = rows = 0
    sequence = 0
    interval_ns = 60 * NS_PER_SECOND
    for index, app in enumerate(apps):
        clock: list[Iterator[int]] = [iter(())]
        system = sorted(systems)[index % len(systems)]  # app i talks like LogHub system i
        generator = FlyLogGenerator(seed=100 + index, apps=[app], regions=list(regions_of(index)), instances=2,
                                    systems={system: systems[system]}, clock=lambda c=clock: next(c[0]))  # fmt: skip
        for back in range(REAL_HOURS):
            hour = current - back * NS_PER_HOUR
            end = min(hour + NS_PER_HOUR, now_ns - 10 * NS_PER_SECOND)
            if end <= hour:
                continue
            count = max(1, round(rows_per_hour(index, hour) * (end - hour) / NS_PER_HOUR))
            times = sorted(hour + rng.randrange(end - hour) for _ in range(count))
            clock[0] = iter(times)  # event times in order, within the hour
            by_region: dict[str, list[tuple[bytes, int]]] = {}
            for (subject, payload), ns in zip(generator.messages(count), times, strict=True):
                if rng.random() < JSON_REQUEST_FRACTION:
                    payload = with_request_message(payload, rng)
                by_region.setdefault(subject.split(".")[2], []).append((payload, ns))
            rows += count
            merged: list[bytes] = []  # the hour's files of every region, compacted per app-hour
            for region, items in by_region.items():
                if back < LIVE_HOURS:
                    batches = live_batches(items, interval_ns, 64 * 1024**2)  # one file per 60 s flush
                    level = encode.LIVE_COMPRESSION_LEVEL
                else:
                    batches = [[p for p, _ in items]]
                    level = encode.COMPACT_COMPRESSION_LEVEL
                for batch in batches:
                    for f in encode.encode_partition(app, region, Payloads(batch), hour, level).files:
                        if back >= LIVE_HOURS and compaction == "app-hour":
                            merged.append(f.data)
                            continue
                        sequence += 1
                        key = object_key(app, f.hour_ns, object_name(f.min_timestamp_ns, WRITER, sequence))
                        path = day1 / key
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(f.data)
                        files += 1
                        if back >= LIVE_HOURS:
                            real[(app, region, back)] = path
            if merged:
                # As archiver compact writes an app-hour: merged in time order, named and tagged as a group.
                inputs = [object_name(hour, WRITER, sequence + i + 1) for i in range(len(merged))]
                sequence += len(merged)
                path = day1 / object_key(app, hour, compact_name(hour, input_digest(inputs), 0, 1))
                path.parent.mkdir(parents=True, exist_ok=True)
                merge_files(merged, replaces_metadata(inputs), path)
                files += 1
                real[(app, "*", back)] = path
    # The 30-day archive: the same files (hard links) plus older hours made from the real ones, their
    # timestamps moved into the hour they are filed under (--count over 30 days reads them).
    shutil.copytree(day1, day30, copy_function=os.link)
    jobs = []
    for older in range(REAL_HOURS, LONG_DAYS * 24):
        source = older % 24 + (24 if older % 24 < LIVE_HOURS else 0)  # a compacted hour, same hour of day
        for (app, _region, back), path in real.items():
            if back != source:
                continue
            hour = current - older * NS_PER_HOUR
            sequence += 1
            name = object_name(hour, WRITER, sequence)
            inputs = [name]
            if compaction == "app-hour":
                name = compact_name(hour, input_digest(inputs), 0, 1)
            key = object_key(app, hour, name)
            replaced = replaces_metadata(inputs) if compaction == "app-hour" else None
            jobs.append((path, day30 / key, (older - source) * NS_PER_HOUR, replaced))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda job: _moved_copy(*job), jobs))
    old_files = len(jobs)
    return {
        "apps": APPS,
        "partitions": sum(len(regions_of(i)) for i in range(APPS)),
        "day1_files": files,
        "day1_rows": rows,
        "day1_bytes": sum(p.stat().st_size for p in day1.rglob("*.parquet")),
        "day30_files": files + old_files,
        "compaction": compaction,
        "build_s": round(time.monotonic() - started, 1),
    }


# --- SeaweedFS -------------------------------------------------------------------------------------


@contextlib.contextmanager
def seaweed(work: Path) -> Iterator[Any]:
    sys.path.insert(0, str(ROOT))
    from tests.servers import SeaweedFS

    server = SeaweedFS(work)
    server.start(timeout_s=60)
    try:
        yield server
    finally:
        server.stop()


def upload(server: Any, bucket: str, root: Path) -> tuple[int, float]:
    from botocore.config import Config

    server.create_bucket(bucket)
    import botocore.session

    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=server.endpoint_url, region_name="us-east-1", aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=32, retries={"max_attempts": 5}),
    )  # fmt: skip
    paths = sorted(p for p in root.rglob("*") if p.is_file())  # a table's _delta_log/ too
    started = time.monotonic()

    def put(path: Path) -> None:
        client.put_object(Bucket=bucket, Key=str(path.relative_to(root)), Body=path.read_bytes())

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, paths))
    client.close()
    return len(paths), time.monotonic() - started


# --- the questions -----------------------------------------------------------------------------------


def _partition_filter(since_ns: int, until_ns: int) -> str:
    """SQL on the hive column ``date`` covering [since, until): what lets DuckDB prune paths (layout v2 has
    no hour folder; the timestamp range then prunes row groups by their statistics)."""
    days = []
    day = hour_start_ns(since_ns) // (24 * NS_PER_HOUR) * (24 * NS_PER_HOUR)
    while day < until_ns:
        days.append(f"'{time.strftime('%Y-%m-%d', time.gmtime(day // NS_PER_SECOND))}'")
        day += 24 * NS_PER_HOUR
    return f"date IN ({', '.join(days)})"


def _ts(ns: int) -> str:
    """A timestamp literal (whole seconds: the window's ends are)."""
    return f"TIMESTAMPTZ '{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(ns // NS_PER_SECOND))}+00'"


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // NS_PER_SECOND))


DUCKDB_PROGRAM = r"""
import json, sys, duckdb
spec = json.loads(sys.argv[1])
s3 = spec.get("s3")
load = spec.get("load") or []
con = duckdb.connect(config={"allow_unsigned_extensions": "true", "autoinstall_known_extensions": "false",
                             "autoload_known_extensions": "false"} if load else {})
con.execute("SET enable_progress_bar = false")  # it draws on stdout, among the rows
for extension in load:
    con.execute(f"LOAD '{extension}'")
if s3:
    con.execute(f"CREATE SECRET (TYPE s3, KEY_ID '{s3['key']}', SECRET '{s3['secret']}', "
                f"ENDPOINT '{s3['endpoint']}', URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')")
con.execute(f"COPY ({spec['sql']}) TO '/dev/stdout' (FORMAT csv, HEADER false)")
"""


#: ``--floor``: the count questions answered by the plainest pyarrow.dataset program (hive pruning by date, the
#: time range pushed down, one group_by): what pyarrow itself takes to read the same columns of the same files.
PYARROW_COUNT_PROGRAM = r"""
import datetime, sys, pyarrow as pa, pyarrow.compute as pc, pyarrow.dataset as ds
root, since_ns, until_ns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
day = lambda ns: datetime.datetime.fromtimestamp(ns // 10**9, datetime.UTC).date().isoformat()
ts = ds.field("timestamp")
kind = pa.timestamp("us", "UTC")
wanted = ((ds.field("date") >= day(since_ns)) & (ds.field("date") <= day(until_ns - 1))
          & (ts >= pa.scalar(since_ns // 1000, kind)) & (ts < pa.scalar(until_ns // 1000, kind)))
table = ds.dataset(root, format="parquet", partitioning="hive").to_table(columns=["timestamp", "level"], filter=wanted)
hours = pc.divide(table["timestamp"].cast(pa.int64()), 3_600_000_000)
counts = pa.table({"h": hours, "level": table["level"]}).group_by(["h", "level"]).aggregate([([], "count_all")])
for h, level, n in zip(*(counts[c].to_pylist() for c in counts.column_names)):
    print(f"{h},{level},{n}")
"""


def _days_filter(since_ns: int, until_ns: int) -> str:
    """SQL on the hive date column: the days of [since, until) (DuckDB prunes paths by it)."""
    first = time.strftime("%Y-%m-%d", time.gmtime(since_ns // NS_PER_SECOND))
    last = time.strftime("%Y-%m-%d", time.gmtime((until_ns - 1) // NS_PER_SECOND))
    return f"date >= '{first}' AND date <= '{last}'"


def top_sql(source: str, where: str) -> str:
    """DuckDB's --top 20: the same RE2 collapse (query.patterns.COLLAPSE) with regexp_replace, GROUP BY."""
    from query.patterns import COLLAPSE

    pattern = "message"
    for regex, replacement in COLLAPSE:
        q = chr(39)
        pattern = (
            f"regexp_replace({pattern}, '{regex.replace(q, q * 2)}', '{replacement.replace(q, q * 2)}', 'g')"
        )
    return (f"SELECT {pattern} AS p, count(*) AS c, min(timestamp), max(timestamp), first(message) "
            f"FROM {source} WHERE {where} GROUP BY p ORDER BY c DESC, p LIMIT 20")  # fmt: skip


def duckdb_sql(glob: str, question: str, app: str, since_ns: int, until_ns: int) -> str:
    """The question in DuckDB's SQL over the files of ``glob`` (``delta:<root>``: the table, by delta_scan)."""
    delta = glob.removeprefix("delta:")
    source = (
        f"delta_scan('{delta}')" if delta != glob else f"read_parquet('{glob}', hive_partitioning = true)"
    )
    cols = "timestamp, app, region, instance, level, message"
    times = f"timestamp >= {_ts(since_ns)} AND timestamp < {_ts(until_ns)}"
    if question.startswith("count"):
        # Both archives: the partition columns prune by date (30 days: an OR of 720 hours would not pay).
        return (f"SELECT epoch_ns(timestamp) // 3600000000000 AS h, level, count(*) FROM {source} "
                f"WHERE {_days_filter(since_ns, until_ns)} AND {times} GROUP BY ALL ORDER BY ALL")  # fmt: skip
    where = f"{_partition_filter(since_ns, until_ns)} AND {times}"
    if question == "where":
        # The app's status field where the message is JSON (json_extract fails on text, so only valid JSON).
        status = (
            "TRY_CAST(json_extract(CASE WHEN json_valid(message) THEN message END, '$.status') AS DOUBLE)"
        )
        return f"SELECT {cols} FROM {source} WHERE {where} AND {status} >= 500 ORDER BY timestamp"
    if question == "top":
        return top_sql(source, where)
    if question == "since":
        return f"SELECT {cols} FROM {source} WHERE app = '{app}' AND {where} ORDER BY timestamp"
    if question == "grep":
        return f"SELECT {cols} FROM {source} WHERE {where} AND regexp_matches(message, '{GREP}') ORDER BY timestamp"
    return (f"SELECT * FROM (SELECT {cols} FROM {source} WHERE app = '{app}' AND {where} "
            "ORDER BY timestamp DESC LIMIT 100) ORDER BY timestamp")  # fmt: skip


def run_process(
    argv: list[str], env: dict[str, str], out: Path, cwd: Path = ROOT
) -> tuple[float, float, int, float]:
    """(wall seconds, user+sys seconds, lines printed, peak RSS MiB) of one whole process; exit 0 required.

    ``python -m`` imports from ``cwd`` first: a baseline checkout runs its own archiver and query.
    """
    with open(out, "wb") as stdout, open(out.with_suffix(".err"), "wb") as stderr:
        began = time.perf_counter()
        proc = subprocess.Popen(
            argv, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, cwd=cwd
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])}... exited {proc.returncode}:\n"
                         f"{out.with_suffix('.err').read_text(errors='replace')[-2000:]}")  # fmt: skip
    with open(out, "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return wall, usage.ru_utime + usage.ru_stime, lines, usage.ru_maxrss / 1024


Variants = dict[str, tuple[list[str], dict[str, str], Path]]


def compare(variants: Variants, runs: int, work: Path) -> dict[str, Any]:
    """Run every variant once to warm up, then ``runs`` rounds alternating them; medians and row counts."""
    walls: dict[str, list[float]] = {name: [] for name in variants}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    lines: dict[str, set[int]] = {name: set() for name in variants}
    rss: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(runs + 1):
        for name, (argv, env, cwd) in variants.items():
            wall, cpu, count, peak = run_process(argv, env, work / "out.txt", cwd)
            if round_:
                walls[name].append(wall)
                cpus[name].append(cpu)
                rss[name].append(peak)
            lines[name].add(count)
    return {
        name: {
            "median_s": round(statistics.median(walls[name]), 3),
            "runs_s": [round(w, 3) for w in walls[name]],
            "cpu_s": round(statistics.median(cpus[name]), 3),
            "max_rss_mib": round(statistics.median(rss[name]), 1),
            "rows": sorted(lines[name]),
        }
        for name in variants
    }


def derive(
    base: Path, archives: list[str], suffix: str, make: Callable[[Path, Path, int], Any], now: int
) -> dict[str, Any]:
    """Each archive also made into ``<archive><suffix>`` by ``make`` (once: kept under base, reused), added to
    ``archives``; what ``make`` said, per archive."""
    made: dict[str, Any] = {}
    for archive in list(archives):
        record = base / f"{archive}{suffix}.json"
        if not record.exists():
            record.write_text(json.dumps(make(base / archive, base / f"{archive}{suffix}", now)))
        made[archive] = json.loads(record.read_text())
        archives.append(f"{archive}{suffix}")
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="local only, 3 runs")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per variant (default 5, quick 3)")
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the archives under /tmp")
    parser.add_argument("--base", default=None, help="build the archives here once, reuse them later")
    parser.add_argument("--only", default=None,
                        help="comma-separated questions (since,grep,tail,where,count1d,count30d,top)")  # fmt: skip
    parser.add_argument("--archives", default="day1,day30",
                        help="comma-separated: day1,day30 (with --rolled also day1-rolled,day30-rolled)")  # fmt: skip
    parser.add_argument("--compaction", default="app-hour", choices=("app-hour", "partition"),
                        help="closed hours: one file per app-hour (layout v2's compaction, default) or per "
                             "(app, region) (layout v1's); when building")  # fmt: skip
    parser.add_argument("--duckdb-python", default=sys.executable,
                        help="the Python that runs DuckDB (one with duckdb-extension-httpfs for S3)")  # fmt: skip
    parser.add_argument("--table", action="store_true",
                        help="also each archive as a Delta table with the service's log history "
                             "(bench/table_history.py), read by archiver and by DuckDB's delta_scan")  # fmt: skip
    parser.add_argument("--rolled", action="store_true",
                        help="also each archive with its closed days rolled up, as the service leaves it "
                             "(bench/query_rollup.py: archives day1-rolled, day30-rolled)")  # fmt: skip
    parser.add_argument(
        "--floor",
        action="store_true",
        help="count questions also by a plain pyarrow.dataset program (what pyarrow itself takes)",
    )
    parser.add_argument("--baseline", default=None,
                        help="a directory holding another version's archiver/ and query/ (git archive COMMIT "
                             "archiver query | tar -x -C DIR), timed alongside as archiver_base")  # fmt: skip
    args = parser.parse_args()
    runs = args.runs or (2 if args.quick else 5)
    requested = args.archives.split(",")
    # "day30-rolled" alone times the rolled-up archive only (day30 is still built: it is made from it).
    archives = [a for a in ("day1", "day30") if a in requested or f"{a}-rolled" in requested]
    if args.base:
        base = Path(args.base)
        base.mkdir(parents=True, exist_ok=True)
        args.keep = True
    else:
        base = Path(tempfile.mkdtemp(prefix="bench-query-"))
    summary: dict[str, Any] = {"runs": runs, "grep": GREP}
    try:
        # "Now" is pinned at half past the previous hour: every run of both tools, and every run of the
        # benchmark whatever the time, sees the same shape of "the last hour": 30 minutes of live files
        # (60 s flushes) after 30 minutes of a compacted hour.
        now = hour_start_ns(time.time_ns()) - NS_PER_HOUR // 2
        built = base / "now.txt"
        if built.exists():
            now = int(built.read_text())
            summary["archive"] = json.loads((base / "archive.json").read_text())
        else:
            summary["archive"] = build(base, now, args.quick, args.compaction)
            (base / "archive.json").write_text(json.dumps(summary["archive"]))
            built.write_text(str(now))
        summary["now"] = _iso(now)
        if args.rolled:
            from query_rollup import make_rolled

            summary["rolled"] = derive(base, archives, "-rolled", make_rolled, now)
            print(f"query: rolled up {summary['rolled']}", flush=True)
            if any(a.endswith("-rolled") for a in requested):
                archives = [a for a in archives if a in requested]
        if args.table:
            from table_history import make_table

            summary["tables"] = derive(base, archives, "-table", make_table, now)
            print(f"query: tables {summary['tables']}", flush=True)
        print(f"query: archives built {summary['archive']}", flush=True)
        app = default_app_names(APPS)[0]
        env = dict(os.environ)
        # Bytecode as an installed package has it (pip compiles at install): where
        # PYTHONDONTWRITEBYTECODE is set (this sandbox), the project's own modules would otherwise be
        # compiled from source in every run (~10-20 ms). A private cache, filled by the warm-up run,
        # for both tools; the working tree is not written.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(base / "pycache")
        summary["bytecode"] = "compiled once into a private PYTHONPYCACHEPREFIX (warm-up run)"
        archiver = [sys.executable, "-m", "archiver", "query"]
        DUCKDB_PYTHON[0] = args.duckdb_python
        duck = [args.duckdb_python, "-c", DUCKDB_PROGRAM]
        hour, day, month = now - NS_PER_HOUR, now - 24 * NS_PER_HOUR, now - 30 * 24 * NS_PER_HOUR
        questions = {
            "since": (["--app", app, "--since", _iso(hour), "--until", _iso(now)], hour),
            "grep": (["--grep", GREP, "--since", _iso(day), "--until", _iso(now)], day),
            "tail": (["--app", app, "--tail", "100", "--since", _iso(hour), "--until", _iso(now)], hour),
            "where": (["--where", "status>=500", "--since", _iso(day), "--until", _iso(now)], day),
            "count1d": (["--count", "--by", "level", "--every", "1h", "--format", "json", "--since", _iso(day),
                         "--until", _iso(now)], day),
            "count30d": (["--count", "--by", "level", "--every", "1h", "--format", "json", "--since",
                          _iso(month), "--until", _iso(now)], month),
            "top": (["--top", "20", "--format", "json", "--since", _iso(day), "--until", _iso(now)], day),
        }  # fmt: skip
        if args.only:
            questions = {q: v for q, v in questions.items() if q in args.only.split(",")}
        summary["questions"] = {q: " ".join(o) for q, (o, _) in questions.items()}

        def spec(glob: str, question: str, s3: dict[str, str] | None = None) -> str:
            sql = duckdb_sql(glob, question, app, questions[question][1], now)
            load = ([s3["extension"]] if s3 else []) + (
                [_extension_file("delta")] if glob.startswith("delta:") else []
            )
            return json.dumps({"sql": sql, "s3": s3, "load": load})

        results: dict[str, Any] = {}
        stores: list[tuple[str, Any]] = [("local", None)]
        weed_ctx = None
        if not args.quick:
            shutil.rmtree(base / "weed", ignore_errors=True)  # a fresh server each run (--base reuses base)
            weed_ctx = seaweed(base / "weed")
            server = weed_ctx.__enter__()
            stores.append(("s3", server))
        try:
            for store, server in stores:
                places: dict[str, tuple[list[str], dict[str, str], dict[str, str] | None, str]] = {}
                for archive in archives:
                    if store == "local":
                        root = str(base / archive)
                        places[archive] = (["--archive", root], env, None, root)
                        continue
                    bucket = f"bench-{archive}"
                    count, seconds = upload(server, bucket, base / archive)
                    summary.setdefault("upload", {})[archive] = {
                        "objects": count,
                        "seconds": round(seconds, 1),
                    }
                    print(f"query: uploaded {count} objects to s3://{bucket} in {seconds:.1f} s", flush=True)
                    s3_env = {**env, "AWS_ENDPOINT_URL_S3": server.endpoint_url, "AWS_REGION": "us-east-1",
                              "AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key}  # fmt: skip
                    places[archive] = (
                        ["--archive", f"s3://{bucket}"],
                        s3_env,
                        httpfs_spec(server),
                        f"s3://{bucket}",
                    )
                for question, (options, _) in questions.items():
                    # Both archives and both tools in one alternating loop: same conditions for every ratio.
                    variants: Variants = {}
                    for archive, (location, a_env, s3, prefix) in places.items():
                        if question == "count30d" and not archive.startswith("day30"):
                            continue  # 30 days of the 1-day archive would be the 1-day question again
                        variants[f"{archive}/archiver"] = ([*archiver, *options, *location], a_env, ROOT)
                        if args.baseline:
                            variants[f"{archive}/archiver_base"] = (
                                [*archiver, *options, *location], a_env, Path(args.baseline))  # fmt: skip
                        if args.floor and store == "local" and question.startswith("count"):
                            since = questions[question][1]
                            variants[f"{archive}/pyarrow_dataset"] = (
                                [sys.executable, "-c", PYARROW_COUNT_PROGRAM, prefix, str(since), str(now)],
                                env, ROOT)  # fmt: skip
                        if store == "s3" and s3 is None:
                            continue  # DuckDB on S3: n/a (the reason is in summary["duckdb_s3"])
                        table = archive.endswith("-table")
                        variants[f"{archive}/duckdb"] = (
                            [
                                *duck,
                                spec(f"delta:{prefix}" if table else f"{prefix}/**/*.parquet", question, s3),
                            ],
                            env,
                            ROOT,
                        )
                        if question == "since" and not table:
                            variants[f"{archive}/duckdb_app_glob"] = (
                                [*duck, spec(f"{prefix}/app={app}/**/*.parquet", question, s3)], env, ROOT)  # fmt: skip
                    measured = compare(variants, runs, base)
                    for name, figures in measured.items():
                        archive, tool = name.split("/")
                        results.setdefault(f"{store}/{archive}/{question}", {})[tool] = figures
                    for archive in places:
                        key = f"{store}/{archive}/{question}"
                        if key not in results:
                            continue
                        shown = ", ".join(
                            f"{n} {r['median_s']:.3f}s ({r['rows']} rows)" for n, r in results[key].items()
                        )
                        print(f"  {key:22} {shown}", flush=True)
        finally:
            if weed_ctx is not None:
                weed_ctx.__exit__(None, None, None)
        summary["results"] = results
        summary["duckdb_s3"] = _httpfs_status()
        failures = [f"{key}: row counts differ {({n: r['rows'] for n, r in res.items()})}"
                    for key, res in results.items() if len({tuple(r["rows"]) for r in res.values()}) != 1]  # fmt: skip
        summary["failures"] = failures
        summary["targets"] = targets(results, summary["archive"])
        print(json.dumps(summary["targets"], indent=1))
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(summary, indent=1))
        if failures:
            print("QUERY BENCHMARK FAILED: the tools disagree", *failures, sep="\n  ", file=sys.stderr)
            sys.exit(1)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


#: The Python that runs DuckDB (--duckdb-python): one whose duckdb has a matching duckdb-extension-httpfs.
DUCKDB_PYTHON = [sys.executable]
_FIND_HTTPFS = """
import sys
from pathlib import Path
try:
    import duckdb, duckdb_extension_httpfs
except ImportError:
    sys.exit(0)
found = sorted(Path(duckdb_extension_httpfs.__file__).parent.glob("extensions/*/httpfs.duckdb_extension"))
print(found[-1] if found else "", duckdb.__version__)
"""


def _extension_file(name: str) -> str:
    """The file of DuckDB's extension ``name`` as its PyPI package ships it, for the DuckDB Python."""
    program = (f"import duckdb, duckdb_extension_{name} as p, pathlib; print(sorted(pathlib.Path(p.__file__)"
               f".parent.glob('extensions/*/{name}.duckdb_extension'))[-1])")  # fmt: skip
    return subprocess.run(
        [DUCKDB_PYTHON[0], "-c", program], capture_output=True, text=True, check=True
    ).stdout.strip()


def _extension_path() -> Path | None:
    out = subprocess.run(
        [DUCKDB_PYTHON[0], "-c", _FIND_HTTPFS], capture_output=True, text=True
    ).stdout.split()
    return Path(out[0]) if len(out) == 2 and out[0] else None


def _httpfs_status() -> str:
    path = _extension_path()
    if path is None:
        return "n/a: duckdb-extension-httpfs is not installed (pip install duckdb-extension-httpfs)"
    version = subprocess.run(
        [DUCKDB_PYTHON[0], "-c", _FIND_HTTPFS], capture_output=True, text=True
    ).stdout.split()[1]
    return f"httpfs loaded from {path} into duckdb {version}"


def httpfs_spec(server: Any) -> dict[str, str] | None:
    path = _extension_path()
    if path is None:
        return None
    return {"extension": str(path), "key": server.access_key, "secret": server.secret_key,
            "endpoint": server.endpoint_url.removeprefix("http://")}  # fmt: skip


def targets(results: dict[str, Any], archive: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, res in results.items():
        if "duckdb" in res:
            out[f"{key} archiver/duckdb time"] = round(
                res["archiver"]["median_s"] / res["duckdb"]["median_s"], 3
            )
    for store in ("local", "s3"):
        for question in ("since", "grep", "tail", "where", "top", "count1d", "count30d"):
            for kind in ("", "-table", "-rolled"):
                one = results.get(f"{store}/day1{kind}/{question}")
                thirty = results.get(f"{store}/day30{kind}/{question}")
                if one and thirty:
                    out[f"{store} {question} archiver 30d/1d{kind}"] = round(
                        thirty["archiver"]["median_s"] / one["archiver"]["median_s"], 3
                    )
            for archive in ("day1", "day30"):
                bare, table = (
                    results.get(f"{store}/{archive}/{question}"),
                    results.get(f"{store}/{archive}-table/{question}"),
                )
                if bare and table:
                    for tool in ("archiver", "duckdb"):
                        if tool in bare and tool in table:
                            out[f"{store} {archive} {question} {tool} table/bare"] = round(
                                table[tool]["median_s"] / bare[tool]["median_s"], 3
                            )
    return out


if __name__ == "__main__":
    main()
