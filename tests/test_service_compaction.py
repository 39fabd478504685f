"""Issue 13: compaction inside ``archiver run`` (real nats-server, SeaweedFS and a local directory).

Every test checks the end the way users read: ``archiver query`` (the supersede rule) and a plain
DuckDB glob (no rule: it must not double count once compactions complete), and the files themselves.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner
from harness import (
    ArchiverProcess,
    archive_env,
    archived_payloads,
    normalise,
    payloads_by_partition,
    read_archive,
    start_archiver,
    wait_for,
)
from v1_files import to_v1

from archiver.archive.escaping import encode_value_v1, partition_value
from archiver.archive.layout import (
    NS_PER_HOUR,
    hour_start_ns,
    object_key,
    object_name,
    parse_key,
    v1_object_key,
)
from archiver.archive.supersede import parse_compact_name
from archiver.cli.main import main
from archiver.codec.encode import encode_partition
from archiver.codec.payloads import Payloads
from archiver.config import ArchiveSettings
from archiver.demo.loadgen import FlyLogGenerator
from archiver.demo.publish import publish
from archiver.manage.scratch import fresh_scratch
from archiver.storage.open import open_storage

HERE = Path(__file__).resolve().parent
S = 1_000_000_000
#: TABLE off: these tests pin the plain-files mode (the table mode: test_table_service.py).
FAST = {"COMPACT_AFTER": "1s", "FLUSH_INTERVAL": "1s", "TABLE": "off"}


def closed_messages(n: int, hours: int, seed: int, apps: int = 2) -> list[tuple[str, bytes]]:
    """``n`` messages spread over the ``hours`` whole hours that ended before the current one."""
    start = hour_start_ns(time.time_ns()) - hours * NS_PER_HOUR
    gen = FlyLogGenerator(seed=seed, apps=apps, regions=2, start_ns=start, span_ns=hours * NS_PER_HOUR - S)
    return gen.messages(n)


def seed(settings: ArchiveSettings, msgs: list[tuple[str, bytes]], flushes: int, v1_flushes: int = 0) -> int:
    """Write ``msgs`` as the service would, ``flushes`` files per (app, region); the first ``v1_flushes`` as v1."""
    parts = payloads_by_partition(msgs)

    async def go() -> int:
        storage = open_storage(settings)
        written = 0
        try:
            for (app, region), payloads in sorted(parts.items()):
                for i in range(flushes):
                    for f in encode_partition(
                        app, region, Payloads(payloads[i::flushes]), time.time_ns()
                    ).files:
                        written += 1
                        name = object_name(f.min_timestamp_ns, "seed", written)
                        if i < v1_flushes:
                            key = v1_object_key(
                                encode_value_v1(app), encode_value_v1(region), f.hour_ns, name
                            )
                            await storage.put(key, to_v1(f.data))
                        else:
                            await storage.put(object_key(partition_value(app), f.hour_ns, name), f.data)
        finally:
            await storage.close()
        return written

    return asyncio.run(go())


def expected(*batches: list[tuple[str, bytes]]) -> Counter[bytes]:
    return Counter(normalise(p) for batch in batches for _, p in batch)


def query_rows(settings: ArchiveSettings) -> Counter[bytes]:
    """What ``archiver query --format json`` gives for the last day (the supersede rule applied)."""
    env: dict[str, str | None] = {"ARCHIVE_URL": None, "BUCKET_NAME": None, **archive_env(settings)}
    result = CliRunner().invoke(main, ["query", "--since", "1d", "--format", "json"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return Counter(normalise(line) for line in result.stdout_bytes.splitlines())


def glob_count(settings: ArchiveSettings, tmp_path: Path) -> int:
    """Rows a plain DuckDB glob reads (``app=*/**/*.parquet``, hive on): no supersede rule.

    An S3 archive is mirrored to a local directory first (the same objects; DuckDB's S3 needs httpfs).
    """
    root = settings.prefix
    if settings.scheme == "s3":
        root = str(tmp_path / f"mirror-{time.monotonic_ns()}")
        asyncio.run(_mirror(settings, root))
    sql = f"SELECT count(*) FROM read_parquet('{root}/app=*/**/*.parquet', hive_partitioning = true)"
    row = duckdb.sql(sql).fetchone()
    assert row is not None
    return int(row[0])


async def _mirror(settings: ArchiveSettings, root: str) -> None:
    storage = open_storage(settings)
    try:
        for info in await storage.list("app="):
            path = Path(root) / info.key
            path.parent.mkdir(parents=True, exist_ok=True)
            await storage.get_file(info.key, str(path))
    finally:
        await storage.close()


def uncompacted(settings: ArchiveSettings) -> list[str]:
    """Keys of closed hours that are not the one compacted group of their app-hour (a listing: no reads)."""
    current = hour_start_ns(time.time_ns())
    by_unit: dict[tuple[str, int], list[str]] = {}
    for key in asyncio.run(_keys(settings)):
        parsed = parse_key(key)
        if parsed is not None and parsed.hour_ns < current:
            by_unit.setdefault((parsed.app, parsed.hour_ns), []).append(key)
    out = []
    for keys in by_unit.values():
        names = [parse_compact_name(k.rpartition("/")[2]) for k in keys]
        if any(n is None or n.count != len(keys) for n in names) or any("/hour=" in k for k in keys):
            out += keys
    return out


async def _keys(settings: ArchiveSettings, prefix: str = "") -> list[str]:
    storage = open_storage(settings)
    try:
        return [i.key for i in await storage.list(prefix)]
    finally:
        await storage.close()


def all_subscribed(proc: ArchiverProcess) -> bool:
    """Whether every worker of a ``--workers`` supervisor is subscribed."""
    try:
        status, report = proc.health()
        return status == 200 and all(w["nats"]["subscribed"] for w in report["workers"])
    except (OSError, ValueError, KeyError):
        return False


def metric_sum(proc: ArchiverProcess, name: str) -> float:
    """A metric summed over its series (every worker's)."""
    _, body = proc.get("/metrics")
    lines = body.decode().splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith((f"{name} ", f"{name}{{")))


def log_lines(*logs: str) -> list[dict[str, Any]]:
    out = []
    for text in logs:
        for line in text.splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
    return out


def assert_no_overlap(lines: list[dict[str, Any]]) -> set[str]:
    """No two owners held one app-hour at once (their claim intervals); the owners that did work."""
    by_unit: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    for line in lines:
        if line.get("msg") in ("compacted", "cleaned"):
            by_unit.setdefault((line["app"], line["hour"]), []).append(
                (line["claimed_ns"], line["released_ns"], line["owner"])
            )
    for unit, spans in by_unit.items():
        spans.sort()
        for (_, end, owner), (start, _, other) in itertools.pairwise(spans):
            assert end <= start, f"{unit}: {owner} and {other} worked on it at once"
    return {owner for spans in by_unit.values() for _, _, owner in spans}


def test_service_compacts_closed_hours_and_converts_v1(
    nats_server: Any, local_settings: ArchiveSettings, tmp_path: Path
) -> None:
    seeded = closed_messages(3000, hours=3, seed=1)
    files = seed(local_settings, seeded, flushes=8, v1_flushes=2)
    late = closed_messages(200, hours=2, seed=2)  # arrives now for hours already closed
    live = [(s, p) for s, p in FlyLogGenerator(seed=3, apps=2, regions=2).messages(200)]
    proc = start_archiver(nats_server.url, local_settings, tmp_path, **FAST)
    try:
        proc.wait_subscribed()
        assert asyncio.run(publish(nats_server.url, late + live)) == len(late) + len(live)
        wait_for(lambda: proc.metric("archiver_messages_archived_total") >= len(late) + len(live), 30,
                 "everything archived", proc)  # fmt: skip
        wait_for(lambda: not uncompacted(local_settings), 60, "every closed hour compacted", proc)
        wait_for(lambda: proc.metric("archiver_compaction_backlog") == 0, 30, "an empty backlog", proc)
        names = ("compactions_total", "compaction_bytes_in_total", "compaction_bytes_out_total",
                 "compaction_rows_total", "compaction_failures_total", "compaction_seconds_count")  # fmt: skip

        def scrape() -> dict[str, float]:
            """The compaction metrics from one /metrics read (a unit may finish between two reads)."""
            _, body = proc.get("/metrics")
            return {n: float(line.split()[-1]) for line in body.decode().splitlines()
                    for n in names if line.startswith(f"archiver_{n} ")}  # fmt: skip

        wait_for(lambda: (m := scrape())["compaction_seconds_count"] == m["compactions_total"], 10,
                 "every compaction timed", proc)  # fmt: skip
        metrics = scrape()
    finally:
        assert proc.stop() == 0, proc.log()
    want = expected(seeded, late, live)
    units = {
        (f.app, f.hour_ns) for f in read_archive(local_settings) if f.hour_ns < hour_start_ns(time.time_ns())
    }
    assert metrics["compactions_total"] >= len(units) and metrics["compaction_failures_total"] == 0
    assert metrics["compaction_rows_total"] >= len(seeded) and metrics["compaction_bytes_out_total"] > 0
    assert metrics["compaction_bytes_in_total"] > metrics["compaction_bytes_out_total"]
    lines = [line for line in log_lines(proc.log()) if line.get("msg") == "compacted"]
    assert len(lines) == metrics["compactions_total"] and {(line["app"], line["hour"]) for line in lines}
    assert sum(line["files_in"] for line in lines) >= files
    assert not [f.key for f in read_archive(local_settings) if "/hour=" in f.key]  # v1 files rewritten as v2
    assert archived_payloads(read_archive(local_settings)) == want
    assert query_rows(local_settings) == want
    assert glob_count(local_settings, tmp_path) == sum(want.values())


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_queue_group_workers_and_a_manual_compact_at_once(
    backend: str, nats_server: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two archivers in one queue group (one with --workers 2) and `archiver compact`, all at once."""
    settings: ArchiveSettings = request.getfixturevalue(f"{backend}_settings")
    seeded = closed_messages(3000, hours=3, seed=4, apps=3)
    seed(settings, seeded, flushes=4, v1_flushes=1)
    late = closed_messages(300, hours=3, seed=5, apps=3)
    live = FlyLogGenerator(seed=6, apps=3, regions=2).messages(300)
    env = {**FAST, "QUEUE": "compactors"}
    a = start_archiver(nats_server.url, settings, tmp_path / "a", ["--workers", "2"], **env)
    b = start_archiver(nats_server.url, settings, tmp_path / "b", **env)
    manual_log = tmp_path / "manual.log"
    # `archiver compact` with its log lines on (the CLI does not set up logging itself).
    code = ("import sys; from archiver.logs import setup_logging; setup_logging('info'); "
            "from archiver.cli.main import main; main(sys.argv[1:])")  # fmt: skip
    manual_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ARCHIVE_"))}
    manual_env |= archive_env(settings)
    try:
        wait_for(lambda: all_subscribed(a), 60, "both workers subscribed", a)
        b.wait_subscribed()
        with manual_log.open("wb") as out:
            manual = subprocess.Popen([sys.executable, "-c", code, "compact", "--before", "0s"],
                                      env=manual_env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        assert asyncio.run(publish(nats_server.url, late + live)) == len(late) + len(live)
        assert manual.wait(120) == 0, manual_log.read_text()
        received = lambda: sum(metric_sum(p, "archiver_messages_archived_total") for p in (a, b))  # noqa: E731
        wait_for(lambda: received() >= len(late) + len(live), 60, "everything archived", b)
        wait_for(lambda: not uncompacted(settings), 120, "every closed hour compacted", a)
    finally:
        for proc in (a, b):
            assert proc.stop() == 0, proc.log()
    want = expected(seeded, late, live)
    owners = assert_no_overlap(log_lines(a.log(), b.log(), manual_log.read_text()))
    assert len(owners) >= 2, owners  # the work was shared: the claims were contended
    assert archived_payloads(read_archive(settings)) == want
    assert query_rows(settings) == want
    assert glob_count(settings, tmp_path) == sum(want.values())


def _paused(
    settings: ArchiveSettings, point: str, tmp_path: Path, nats_url: str, **extra: str
) -> subprocess.Popen[bytes]:
    marker = tmp_path / f"paused-{point}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ARCHIVE_"))}
    env |= {**archive_env(settings), **FAST, "NATS_URL": nats_url, "HTTP_HOST": "127.0.0.1", "HTTP_PORT": "0",
            "SPOOL_DIR": str(tmp_path / "spool"), "COMPACT_TARGET_BYTES": "30000", **extra}  # fmt: skip
    log = (tmp_path / f"{point}.log").open("wb")
    proc = subprocess.Popen([sys.executable, str(HERE / "paused_service.py"), point, str(marker)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / f"{point}.log").read_text()
        time.sleep(0.02)
    return proc


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_kill_9_in_the_middle_of_a_service_compaction(
    backend: str, nats_server: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Killed after some outputs, after all outputs, during the deletion: each restart resumes, rows exact."""
    settings: ArchiveSettings = request.getfixturevalue(f"{backend}_settings")
    seeded = closed_messages(4000, hours=3, seed=7)
    seed(settings, seeded, flushes=10)
    want = expected(seeded)
    for point in ("some-outputs", "all-outputs", "mid-delete"):
        before = set(asyncio.run(_keys(settings, "app=")))
        proc = _paused(settings, point, tmp_path, nats_server.url)
        proc.kill()
        proc.wait()
        keys = asyncio.run(_keys(settings, "app="))
        groups = Counter(p.group for k in keys if (p := parse_compact_name(k.rpartition("/")[2])))
        new = {p.group for k in keys if k not in before and (p := parse_compact_name(k.rpartition("/")[2]))}
        gone = len(before - set(keys))
        # The state the kill left. Mid-delete resumes the deletion the previous kill interrupted.
        if point == "mid-delete":
            assert gone > 0 and any(groups[g] == g.count for g in groups) and uncompacted(settings), point
        else:
            assert len(new) == 1 and gone == 0, (point, new, gone)  # one group, of the unit it was on
            (group,) = new
            assert (groups[group] == group.count) == (point == "all-outputs"), (point, groups)
        assert query_rows(settings) == want, point  # never double: the supersede rule
        assert not want - archived_payloads(read_archive(settings)), point  # nothing lost, whatever is left
    final = start_archiver(
        nats_server.url, settings, tmp_path / "final", SPOOL_DIR=str(tmp_path / "spool"), **FAST
    )
    try:
        final.wait_subscribed()
        wait_for(lambda: not uncompacted(settings), 120, "every closed hour compacted", final)
    finally:
        assert final.stop() == 0, final.log()
    assert archived_payloads(read_archive(settings)) == want
    assert query_rows(settings) == want
    assert glob_count(settings, tmp_path) == sum(want.values())
    leftover = asyncio.run(_keys(settings, "_archiver/"))
    assert leftover == [], leftover  # the restarted service swept the dead ones' claims


def test_temporary_scratch_of_a_killed_process_is_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPOOL_DIR off: a new scratch directory in the temp dir, and those of processes gone deleted (not others)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = tmp_path / f"archiver-compact-{int(gone.stdout)}-abc"
    (dead / "unit-1").mkdir(parents=True)
    (dead / "unit-1" / "part.parquet").write_bytes(b"x" * 1000)
    mine = tmp_path / f"archiver-compact-{os.getpid()}-def"
    others = [mine, tmp_path / "archiver-compact-xyz", tmp_path / "unrelated-1"]
    for keep in others:
        keep.mkdir()
    made = Path(fresh_scratch(None))
    assert made.parent == tmp_path and made.name.startswith(f"archiver-compact-{os.getpid()}-")
    assert not dead.exists() and all(keep.exists() for keep in others)
