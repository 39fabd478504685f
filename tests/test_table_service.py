"""Issue 14: ``archiver run`` with TABLE on (the default): lake engines read each row exactly once.

Real nats-server, SeaweedFS and a local directory. An existing archive (v2 and v1 files of closed
hours) becomes a table at the first start; two archivers in one queue group (one with --workers 2)
ingest, commit and compact at once, and one is killed with SIGKILL and restarted on its spool.
DuckDB ``delta_scan``, Polars, deltalake/pyarrow and DataFusion then each return every row exactly
once; reads during ingest and compaction never return a row more often than it was published.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
from deltalake import DeltaTable
from harness import start_archiver, wait_for
from test_service_compaction import _paused, all_subscribed, closed_messages, glob_count, metric_sum, seed
from test_table_readers import duck, read_datafusion, read_deltalake, read_duckdb, read_polars  # noqa: F401 (fixture)

from archiver.archive.layout import hour_start_ns, parse_key
from archiver.archive.supersede import parse_compact_name
from archiver.config import ArchiveSettings
from archiver.demo.loadgen import FlyLogGenerator
from archiver.demo.publish import publish
from archiver.table.location import storage_options, table_uri

FAST = {"COMPACT_AFTER": "1s", "FLUSH_INTERVAL": "1s", "TABLE_COMMIT_INTERVAL": "1s"}


def messages_of(*batches: list[tuple[str, bytes]]) -> Counter[str]:
    """The ``message`` column the table should hold: one row per published message."""
    return Counter(json.loads(p)["message"] for batch in batches for _, p in batch)


def live_keys(settings: ArchiveSettings) -> list[str]:
    """The table's live files (deltalake), keys as stored."""
    from urllib.parse import unquote

    delta = DeltaTable(table_uri(settings), storage_options=storage_options(settings))
    return [unquote(p) for p in delta.get_add_actions(flatten=True).column("path").to_pylist()]


def table_uncompacted(settings: ArchiveSettings) -> list[str]:
    """Live files of closed hours that are not the one complete compacted group of their app-hour."""
    current = hour_start_ns(time.time_ns())
    by_unit: dict[tuple[str, int], list[str]] = {}
    for key in live_keys(settings):
        parsed = parse_key(key)
        assert parsed is not None and parsed.layout == 2, key
        if parsed.hour_ns < current:
            by_unit.setdefault((parsed.app, parsed.hour_ns), []).append(key)
    out = []
    for keys in by_unit.values():
        names = [parse_compact_name(k.rpartition("/")[2]) for k in keys]
        if any(n is None or n.count != len(keys) for n in names):
            out += keys
    return out


def read_retrying(settings: ArchiveSettings) -> list[tuple[str, str | None]]:
    """deltalake's read, again when a file of its snapshot was deleted meanwhile (README: retryable)."""
    # A compaction deletes its inputs right after its commit; on a busy machine the compactors of
    # several app-hours can land one after another, each between a snapshot and its read.
    deadline = time.monotonic() + 20
    while True:
        try:
            return read_deltalake(settings)
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def no_row_doubled(settings: ArchiveSettings, want: Counter[str]) -> int:
    """Read the table as it is now; assert no row is there more often than published; the rows read."""
    got = Counter(message for message, _ in read_retrying(settings))
    assert not got - want, f"rows read more often than published: {list((got - want).items())[:3]}"
    return sum(got.values())


def every_engine_reads(
    settings: ArchiveSettings, connection: duckdb.DuckDBPyConnection, want: Counter[str]
) -> None:
    """deltalake, DuckDB's delta_scan, Polars and DataFusion each read exactly ``want``."""
    for engine, rows in (
        ("deltalake", read_deltalake(settings)),
        ("duckdb", read_duckdb(connection, settings)),
        ("polars", read_polars(settings)),
        ("datafusion", read_datafusion(settings)),
    ):
        assert Counter(m for m, _ in rows) == want, engine


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_engines_read_each_row_once_through_ingest_compaction_workers_and_kill_9(
    backend: str,
    nats_server: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    duck: duckdb.DuckDBPyConnection,  # noqa: F811  (the fixture imported from test_table_readers)
) -> None:
    settings: ArchiveSettings = request.getfixturevalue(f"{backend}_settings")
    seeded = closed_messages(2000, hours=3, seed=11, apps=3)
    seed(settings, seeded, flushes=4, v1_flushes=1)  # an archive written before the table
    late = closed_messages(300, hours=3, seed=12, apps=3)
    first = FlyLogGenerator(seed=13, apps=3, regions=2).messages(300)
    second = FlyLogGenerator(seed=14, apps=3, regions=2).messages(300)
    want = messages_of(seeded, late, first, second)
    env = {**FAST, "QUEUE": "table"}
    a = start_archiver(nats_server.url, settings, tmp_path / "a", ["--workers", "2"], **env)
    spool_b = str(tmp_path / "spool-b")
    b = start_archiver(nats_server.url, settings, tmp_path / "b", SPOOL_DIR=spool_b, **env)
    try:
        wait_for(lambda: all_subscribed(a), 60, "both workers subscribed", a)
        b.wait_subscribed()
        wait_for(lambda: (Path(settings.prefix) / "_delta_log").exists() if backend == "local" else True, 30,
                 "the table created", a)  # fmt: skip
        assert asyncio.run(publish(nats_server.url, late + first)) == len(late) + len(first)
        # Reads while the archivers commit and compact: never a row twice.
        for _ in range(5):
            no_row_doubled(settings, want)
            time.sleep(0.3)
        b.proc.kill()  # SIGKILL: its spool keeps what it had not committed
        b.proc.wait()
        no_row_doubled(settings, want)
        b = start_archiver(nats_server.url, settings, tmp_path / "b2", SPOOL_DIR=spool_b, **env)
        b.wait_subscribed()
        assert asyncio.run(publish(nats_server.url, second)) == len(second)
        archived = lambda: sum(metric_sum(p, "archiver_messages_archived_total") for p in (a, b))  # noqa: E731
        wait_for(lambda: no_row_doubled(settings, want) == sum(want.values()), 120, "every row committed", a)
        wait_for(lambda: not table_uncompacted(settings), 120, "every closed hour compacted", a)
        assert archived() >= len(second)
    finally:
        for proc in (a, b):
            assert proc.stop() == 0, proc.log()
    every_engine_reads(settings, duck, want)
    assert not [k for k in live_keys(settings) if "/hour=" in k]  # v1 files rewritten as v2, never registered


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_kill_9_in_the_middle_of_a_table_compaction(
    backend: str,
    nats_server: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    duck: duckdb.DuckDBPyConnection,  # noqa: F811
) -> None:
    """Killed before its commit, between its commit and its delete, mid-delete: each row once, then finished."""
    settings: ArchiveSettings = request.getfixturevalue(f"{backend}_settings")
    seeded = closed_messages(2000, hours=2, seed=21)
    seed(settings, seeded, flushes=6)
    want = messages_of(seeded)
    for point in ("some-outputs", "all-outputs", "mid-delete"):
        proc = _paused(settings, point, tmp_path, nats_server.url, TABLE="on", TABLE_COMMIT_INTERVAL="1s")
        proc.kill()
        proc.wait()
        assert Counter(m for m, _ in read_deltalake(settings)) == want, point
        assert Counter(m for m, _ in read_duckdb(duck, settings)) == want, point
        if point == "all-outputs":  # committed, nothing deleted: only a glob counts the hour twice
            assert glob_count(settings, tmp_path) > sum(want.values())
    final = start_archiver(
        nats_server.url, settings, tmp_path / "final", SPOOL_DIR=str(tmp_path / "spool"), **FAST
    )
    try:
        final.wait_subscribed()
        # The next compactions finish: every closed hour one group, and the killed ones' leftovers deleted.
        rows = sum(want.values())
        wait_for(lambda: not table_uncompacted(settings) and glob_count(settings, tmp_path) == rows, 120,
                 "every closed hour compacted, no leftover", final)  # fmt: skip
    finally:
        assert final.stop() == 0, final.log()
    every_engine_reads(settings, duck, want)
