"""End to end: real nats-server, real ``archiver run`` process, real SeaweedFS or directory."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from harness import (
    ArchivedFile,
    archived_payloads,
    normalise,
    read_archive,
    start_archiver,
)

from archiver.archive.layout import NS_PER_HOUR, hour_start_ns
from archiver.archive.schema import NS_TIMESTAMP_TYPE, SCHEMA_VERSION, SCHEMA_VERSION_KEY
from archiver.archive.timestamps import to_v2
from archiver.config import ArchiveSettings
from archiver.demo.corpus import sample_systems
from archiver.demo.loadgen import FlyLogGenerator
from archiver.demo.publish import publish

LOGHUB = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "loghub"
MESSAGES = 21_000


def published_messages(seed: int = 7) -> list[tuple[str, bytes]]:
    """≥ 20k Fly messages: 3 apps x 2 regions x 3 instances, 5 hours of event time, plus odd ones."""
    systems = sample_systems(LOGHUB) if LOGHUB.is_dir() else None
    start = hour_start_ns(time.time_ns()) - 6 * NS_PER_HOUR + 1234
    gen = FlyLogGenerator(seed=seed, apps=3, regions=2, instances=3, systems=systems,
                          json_fraction=0.4, start_ns=start, span_ns=5 * NS_PER_HOUR)  # fmt: skip
    messages = gen.messages(MESSAGES)
    instance = gen.instances[0]
    odd: list[tuple[str, bytes]] = [
        (instance.subject, b"not json at all"),
        (instance.subject, b'["an", "array"]'),
        (instance.subject, b"\xff\xfe invalid utf-8"),
        (instance.subject, orjson.dumps({"message": "no timestamp"})),
        (
            instance.subject,
            orjson.dumps(
                {
                    "event": {"provider": "app"},
                    "fly": {
                        "app": {"instance": "abc", "name": instance.app},
                        "region": instance.region,
                        "zone": "z1",
                    },
                    "host": "ab12",
                    "log": {"level": "info"},
                    "message": "extra fields",
                    "timestamp": "2026-11-24T10:00:00.5+01:00",
                    "trace_id": "t-1",
                }
            ),
        ),
        # Another subject shape: the partition comes from the payload.
        (
            "logs.odd-shape",
            orjson.dumps(
                {
                    "fly": {"app": {"name": "from-payload"}, "region": "ams"},
                    "message": "routed",
                    "timestamp": "2026-11-24T10:00:00.000000001Z",
                }
            ),
        ),
        ("logs.a.b.c.d.e", b"no partition at all"),
    ]
    return messages + odd


def assert_archive_matches(files: list[ArchivedFile], sent: list[tuple[str, bytes]]) -> None:
    """Each message exactly once, every field equal, partitions as specified."""
    want = Counter(normalise(payload) for _, payload in sent)
    got = archived_payloads(files)
    missing = want - got
    extra = got - want
    assert not missing and not extra, f"{sum(missing.values())} missing, {sum(extra.values())} unexpected"
    assert sum(got.values()) == len(sent)
    for f in files:
        assert f.metadata.get(SCHEMA_VERSION_KEY) == SCHEMA_VERSION.encode()
        stamps = [row["timestamp"] for row in f.rows]
        assert stamps == sorted(stamps), f"{f.key} not sorted"
        for row in f.rows:
            ns = to_ns(row["timestamp"])
            assert hour_start_ns(ns) == f.hour_ns, f"{f.key}: row outside its hour"
    by_subject_app = {s.split(".")[1] for s, _ in sent if s.startswith("logs.") and s.count(".") == 3}
    apps = {f.app for f in files}
    assert by_subject_app | {"from-payload", "unknown"} == apps


def to_ns(value: Any) -> int:
    """Nanoseconds of a timestamp read back by pyarrow (datetime or pandas-free int)."""
    if isinstance(value, int):
        return value
    import pyarrow as pa

    return int(pa.scalar(value, type=NS_TIMESTAMP_TYPE).cast("int64").as_py())


def duckdb_check(directory: Path, files: list[ArchivedFile], sent: list[tuple[str, bytes]]) -> None:
    """DuckDB reads the same files with hive partitioning and agrees on every partition's count."""
    con = duckdb.connect()
    # The hour from the (microsecond) timestamp itself: layout v2 has no hour folder, only date.
    rows = con.execute(
        "SELECT app, region, date::VARCHAR, epoch_us(timestamp) // 3600000000, count(*), "
        "count(DISTINCT message) > 0 "
        f"FROM read_parquet('{directory}/app=*/**/*.parquet', hive_partitioning = true) GROUP BY ALL"
    ).fetchall()
    expected: Counter[tuple[str, str, str, int]] = Counter()
    for f in files:
        day = time.strftime("%Y-%m-%d", time.gmtime(f.hour_ns // 1_000_000_000))
        for row in f.rows:
            expected[(f.app, row["region"], day, f.hour_ns // NS_PER_HOUR)] += 1
    assert {(a, r, d, int(h)): n for a, r, d, h, n, _ in rows} == dict(expected)
    total = con.execute(
        f"SELECT count(*) FROM read_parquet('{directory}/app=*/**/*.parquet', hive_partitioning = true)"
    ).fetchone()
    assert total is not None and total[0] == len(sent)
    messages = con.execute(
        f"SELECT message FROM read_parquet('{directory}/app=*/**/*.parquet', hive_partitioning = true) "
        "WHERE app = 'unknown'"
    ).fetchall()
    assert ("no partition at all",) in messages


def run_end_to_end(nats_url: str, settings: ArchiveSettings, tmp_path: Path) -> dict[str, float]:
    sent = published_messages()
    archiver = start_archiver(nats_url, settings, tmp_path, FLUSH_INTERVAL="2s", FLUSH_BYTES="1MiB")
    started = time.monotonic()
    try:
        archiver.wait_subscribed()
        count = asyncio.run(publish(nats_url, sent))
        assert count == len(sent)
        deadline = time.monotonic() + 30
        while archiver.metric("archiver_messages_received_total") < len(sent):
            assert time.monotonic() < deadline, archiver.log()
            time.sleep(0.05)
        assert archiver.metric("archiver_messages_dropped_total", '{reason="slow_consumer"}') == 0
    finally:
        code = archiver.stop()
    seconds = time.monotonic() - started
    assert code == 0, archiver.log()
    files = read_archive(settings)
    assert_archive_matches(files, sent)
    log_lines = [orjson.loads(line) for line in archiver.log().splitlines() if line.startswith("{")]
    flushes = [line for line in log_lines if line["msg"] == "flushed"]
    assert flushes and all({"app", "region", "rows", "bytes", "seconds"} <= line.keys() for line in flushes)
    return {"messages": len(sent), "files": len(files), "seconds": seconds,
            "bytes": sum(f.size for f in files), "raw_bytes": sum(len(p) for _, p in sent)}  # fmt: skip


@pytest.mark.timeout(180)
def test_end_to_end_local(nats_server: Any, local_settings: ArchiveSettings, tmp_path: Path) -> None:
    figures = run_end_to_end(nats_server.url, local_settings, tmp_path)
    files = read_archive(local_settings)
    duckdb_check(Path(local_settings.prefix), files, published_messages())
    print(f"\nend-to-end local: {figures}")
    assert not list(Path(local_settings.prefix).rglob(".tmp-*"))


@pytest.mark.timeout(180)
def test_end_to_end_s3(nats_server: Any, s3_settings: ArchiveSettings, tmp_path: Path) -> None:
    figures = run_end_to_end(nats_server.url, s3_settings, tmp_path)
    files = read_archive(s3_settings)
    # DuckDB reads a copy of the bucket's files (its S3 access needs an extension download).
    copy = tmp_path / "copy"
    for f in files:
        path = copy / f.key
        path.parent.mkdir(parents=True, exist_ok=True)
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(f.rows)
        table = table.set_column(0, "timestamp", table["timestamp"].cast(pa.timestamp("ns", tz="UTC")))
        pq.write_table(to_v2(table, None), path)
    duckdb_check(copy, files, published_messages())
    print(f"\nend-to-end s3: {figures}")


@pytest.mark.timeout(180)
def test_two_archivers_one_queue_archive_each_message_once(
    nats_server: Any, local_settings: ArchiveSettings, tmp_path: Path
) -> None:
    sent = published_messages(seed=11)
    env = {"QUEUE": "archivers", "FLUSH_INTERVAL": "1s"}
    first = start_archiver(nats_server.url, local_settings, tmp_path / "a", **env)
    second = start_archiver(nats_server.url, local_settings, tmp_path / "b", **env)
    try:
        first.wait_subscribed()
        second.wait_subscribed()
        assert asyncio.run(publish(nats_server.url, sent)) == len(sent)
        deadline = time.monotonic() + 30
        while (first.metric("archiver_messages_received_total")
               + second.metric("archiver_messages_received_total")) < len(sent):  # fmt: skip
            assert time.monotonic() < deadline
            time.sleep(0.05)
        shares = (
            first.metric("archiver_messages_received_total"),
            second.metric("archiver_messages_received_total"),
        )
    finally:
        assert first.stop() == 0, first.log()
        assert second.stop() == 0, second.log()
    assert all(share > 0 for share in shares), shares  # the queue group really shared the work
    assert_archive_matches(read_archive(local_settings), sent)


def test_bad_option_fails_fast_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "FLUSH_INTERVAL": "soon", "ACCESS_TOKEN": "FlyV1 secret-token"}
    result = subprocess.run([sys.executable, "-m", "archiver", "run"], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: FLUSH_INTERVAL: expected a duration such as 90, 90s, 500ms, 5m, 1h, 2d, 1w, got 'soon'"
    ]
    assert "secret-token" not in result.stderr + result.stdout
    help_text = subprocess.run([sys.executable, "-m", "archiver", "run", "--help"], env=env,
                               capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    assert "ACCESS_TOKEN" in help_text and "secret-token" not in help_text
