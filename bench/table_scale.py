"""What the Delta table costs as it grows: commits, memory, checkpoints, vacuum, our log reader.

Usage: ``.venv/bin/python bench/table_scale.py [--quick]`` (prints a Markdown section for BENCHMARKS.md).

Builds the METADATA of tables (the data files are fake: delta-rs never opens them for these
operations, nor does our reader) in a local directory with delta-rs, as the service would have
made them, then copies each table's ``_delta_log/`` to a SeaweedFS bucket (``weed mini`` from
tests/servers.py), and measures each table on both backends in fresh child processes:

* ``t1k``, ``t20k``, ``t100k``: that many live flush files over 50 apps and recent days;
* ``year-6h`` and ``year-24h``: a simulated year of 50 apps x 3 regions at the default settings
  of design14.md, at 13:05 UTC: one day file per app for 365 past days (18,250), today's 13
  compacted hours per app (650), and the open hours' flush files (150 partitions x 65 flushes
  of 60 s: 9,750); 28,650 live files. Every flush file of a compacted hour was added and then
  removed (a compaction commit), so the log holds its tombstone for as long as
  ``delta.deletedFileRetentionDuration`` keeps it: the last 6 hours (54,000 tombstones) or 24
  hours (216,000; the default of 7 days would hold 1.5 M).

History: the bulk of each table is committed in large commits (its state, not its 500,000
commits of a real year), then checkpointed; after that come the service's last commits of 150
adds each (:data:`TAIL_COMMITS`, half of a checkpoint interval of 100), so that opening and
updating replay what they would on average.

Per table and backend, children measure: open (time, RSS), 20 x (``update_incremental`` + one
commit of 150 adds with an app transaction: latency median/p90, CPU per commit), RSS with the
table open, a checkpoint, a lite vacuum (retention 1 h, every tombstone older than that is
deleted again on every run: the fake files do not exist, as after an earlier vacuum), log
clean-up, and the longest stall of a Python thread spinning during 5 more commits (is the GIL
held during S3 I/O?), next to the same probe around a hash of 64 MiB, which releases the GIL:
on a busy 2-core machine the scheduler alone stalls a thread for tens of ms. Our reader (:func:`archiver.table.log.read_snapshot`) is measured in its
own child for one app-day and for the whole table (time, RSS growth).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

APPS = [f"app-{i:03d}" for i in range(50)]
REGIONS = ["ams", "iad", "sin"]
TODAY = dt.datetime(2026, 11, 30, 13, 5, tzinfo=dt.UTC)
TAIL_COMMITS = 50
ADDS_PER_COMMIT = 150
MEASURED_COMMITS = 20
CHUNK = 25_000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    """VmHWM (ru_maxrss would report the forking parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stats(start: dt.datetime, seconds: int, rows: int) -> str:
    nulls = {
        c: 0
        for c in (
            "timestamp",
            "timestamp_nanos",
            "region",
            "instance",
            "provider",
            "level",
            "fly_level",
            "message",
        )
    }
    nulls.update(host=rows, extra=rows)
    return json.dumps({
        "numRecords": rows,
        "minValues": {"timestamp": iso(start), "timestamp_nanos": 0, "region": "ams"},
        "maxValues": {"timestamp": iso(start + dt.timedelta(seconds=seconds)), "timestamp_nanos": 999, "region": "sin"},
        "nullCount": nulls,
    }, separators=(",", ":"))  # fmt: skip


def table_file(
    app: str, start: dt.datetime, name: str, seconds: int, rows: int, size: int, with_stats: bool = True
) -> Any:
    from archiver.table.files import TableFile

    key = f"app={app}/date={start:%Y-%m-%d}/{name}.parquet"
    body = stats(start, seconds, rows) if with_stats else '{"numRecords":1}'
    return TableFile(key, size, app, f"{start:%Y-%m-%d}", body, int(start.timestamp() * 1000))


def flush_file(app: str, region: str, t: dt.datetime, seq: int, with_stats: bool = True) -> Any:
    return table_file(app, t, f"{t:%Y%m%dT%H%M%S}Z-{region}-w1-{seq:06d}", 60, 500, 60_000, with_stats)


# --- building ------------------------------------------------------------------------------------


def plan(name: str) -> tuple[list[Any], list[Any], int]:
    """(bulk live files, tombstone files, tail flush files to commit after the checkpoint) of a table."""
    if name.startswith("t"):
        n = {"t1k": 1_000, "t20k": 20_000, "t100k": 100_000}[name]
        tail = min(TAIL_COMMITS, n // (2 * ADDS_PER_COMMIT)) * ADDS_PER_COMMIT
        files = [
            flush_file(APPS[k % 50], REGIONS[k % 3], TODAY - dt.timedelta(minutes=k // 150), k)
            for k in range(n - tail)
        ]
        return files, [], tail
    hours = int(name.split("-")[1].removesuffix("h"))
    days = [table_file(app, TODAY.replace(hour=0, minute=0) - dt.timedelta(days=d), f"{(TODAY - dt.timedelta(days=d)):%Y%m%d}-d-x-1of1", 86_399, 700_000, 40_000_000)
            for d in range(1, 366) for app in APPS]  # fmt: skip
    hour_files = [table_file(app, TODAY.replace(hour=h, minute=0), f"{TODAY:%Y%m%d}T{h:02d}-c-x-1of1", 3599, 30_000, 2_000_000)
                  for h in range(13) for app in APPS]  # fmt: skip
    open_flushes = 150 * 65
    tail = TAIL_COMMITS * ADDS_PER_COMMIT
    flushes = [flush_file(APPS[k % 50], REGIONS[(k // 50) % 3], TODAY.replace(hour=12) + dt.timedelta(minutes=k // 150), k)
               for k in range(open_flushes - tail)]  # fmt: skip
    tombs = [flush_file(APPS[k % 50], REGIONS[(k // 50) % 3], TODAY - dt.timedelta(hours=1, minutes=(k // 150)), 10**7 + k, False)
             for k in range(150 * 60 * hours)]  # fmt: skip
    return days + hour_files + flushes, tombs, tail


def build(name: str, root: Path) -> dict[str, Any]:
    """Build the table's log under ``root`` (see the module docstring); what was built."""
    from deltalake import DeltaTable

    from archiver.config import ArchiveSettings
    from archiver.table import upkeep
    from archiver.table.bootstrap import create_table
    from archiver.table.files import LiveFile
    from archiver.table.writer import ArchiveTable, add_action, remove_action

    started = time.monotonic()
    settings = ArchiveSettings("file", "", str(root))
    bulk, tombs, tail = plan(name)
    configuration = dict(upkeep.TABLE_CONFIGURATION)
    if name == "year-24h":  # Delta's default tombstone retention (7 days): checkpoints keep all 24 h here
        del upkeep.TABLE_CONFIGURATION["delta.deletedFileRetentionDuration"]
    try:
        create_table(settings, bulk[:CHUNK])
    finally:
        upkeep.TABLE_CONFIGURATION.update(configuration)
    table = ArchiveTable.open(settings)
    assert table is not None
    for first in range(CHUNK, len(bulk), CHUNK):
        table.refresh()
        table._commit([add_action(f, True) for f in bulk[first : first + CHUNK]], [])
    now_ms = int(time.time() * 1000)
    for first in range(0, len(tombs), CHUNK):
        chunk = tombs[first : first + CHUNK]
        table.refresh()
        table._commit([add_action(f, True) for f in chunk], [])
        table.refresh()
        # removed by compactions spread over the retention window (the newest just now)
        span_ms = len(tombs) * 60_000 // 150
        removes = [remove_action(LiveFile(f.key, f.size, f.app, f.date), False, now_ms - span_ms * (first + i) // len(tombs))
                   for i, f in enumerate(chunk)]  # fmt: skip
        table._commit(removes, [])
    upkeep.checkpoint(table)
    for c in range(tail // ADDS_PER_COMMIT):
        batch = [
            flush_file(
                APPS[k % 50], REGIONS[k % 3], TODAY - dt.timedelta(seconds=c), 5 * 10**6 + c * 1000 + k
            )
            for k in range(ADDS_PER_COMMIT)
        ]
        table.commit_adds(batch, "writer-1", c + 1)
    log = root / "_delta_log"
    checkpoint = max(log.glob("*.checkpoint.parquet"))
    live = len(DeltaTable(str(root)).file_uris())
    return {
        "table": name, "live": live, "tombstones": len(tombs), "build_s": round(time.monotonic() - started, 1),
        "checkpoint_mb": round(checkpoint.stat().st_size / 2**20, 1),
        "log_mb": round(sum(p.stat().st_size for p in log.iterdir()) / 2**20, 1),
        "commits_after_checkpoint": tail // ADDS_PER_COMMIT,
    }  # fmt: skip


def upload_log(server: Any, bucket: str, root: Path) -> None:
    client = server.client()
    for path in sorted((root / "_delta_log").iterdir()):
        client.put_object(Bucket=bucket, Key=f"archive/_delta_log/{path.name}", Body=path.read_bytes())
    client.close()


# --- children --------------------------------------------------------------------------------------


def spin_stall(fn: Any) -> tuple[float, float]:
    """Run ``fn`` while a Python thread spins: (elapsed s, the spinner's longest stall s)."""
    stop, worst = threading.Event(), [0.0]

    def spin() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            now = time.perf_counter()
            worst[0] = max(worst[0], now - last)
            last = now

    thread = threading.Thread(target=spin)
    thread.start()
    time.sleep(0.01)
    started = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join()
    return elapsed, worst[0]


def child_delta(settings: Any) -> dict[str, Any]:
    from archiver.table import upkeep
    from archiver.table.writer import ArchiveTable

    out: dict[str, Any] = {"rss_import_mb": rss_mb()}
    started = time.perf_counter()
    table = ArchiveTable.open(settings)
    assert table is not None
    out["open_s"], out["rss_open_mb"] = time.perf_counter() - started, rss_mb()
    latencies, cpu0 = [], time.process_time()
    for c in range(MEASURED_COMMITS):
        batch = [
            flush_file(
                APPS[k % 50], REGIONS[k % 3], TODAY + dt.timedelta(seconds=c), 8 * 10**6 + c * 1000 + k
            )
            for k in range(ADDS_PER_COMMIT)
        ]
        t0 = time.perf_counter()
        assert table.commit_adds(batch, "writer-2", c + 1)
        latencies.append(time.perf_counter() - t0)
    out["cpu_per_commit_s"] = (time.process_time() - cpu0) / MEASURED_COMMITS
    out["commit_median_s"] = statistics.median(latencies)
    out["commit_p90_s"] = statistics.quantiles(latencies, n=10)[-1]
    out["rss_commits_mb"], out["peak_commits_mb"] = rss_mb(), peak_mb()
    stalls = []
    for c in range(5):
        batch = [
            flush_file(
                APPS[k % 50],
                REGIONS[k % 3],
                TODAY + dt.timedelta(minutes=5, seconds=c),
                9 * 10**6 + c * 1000 + k,
            )
            for k in range(ADDS_PER_COMMIT)
        ]
        stalls.append(spin_stall(lambda b=batch, c=c: table.commit_adds(b, "writer-3", c + 1)))
    out["commit_stall_max_ms"] = max(s[1] for s in stalls) * 1000
    out["commit_spun_median_s"] = statistics.median(s[0] for s in stalls)
    # The same probe around a call known to release the GIL (hashlib on 64 MiB): the machine's own stalls.
    block = b"x" * 64 * 2**20
    out["baseline_stall_max_ms"] = (
        max(spin_stall(lambda: hashlib.sha256(block).digest())[1] for _ in range(5)) * 1000
    )
    cpu0, t0 = time.process_time(), time.perf_counter()
    upkeep.checkpoint(table)
    out["checkpoint_s"], out["checkpoint_cpu_s"] = time.perf_counter() - t0, time.process_time() - cpu0
    out["peak_checkpoint_mb"] = peak_mb()
    cpu0, t0 = time.process_time(), time.perf_counter()
    out["vacuum_deleted"] = len(upkeep.vacuum(table, 1))
    out["vacuum_s"], out["vacuum_cpu_s"] = time.perf_counter() - t0, time.process_time() - cpu0
    out["peak_vacuum_mb"] = peak_mb()
    t0 = time.perf_counter()
    upkeep.clean_up_log(table)
    out["cleanup_s"] = time.perf_counter() - t0
    out["rss_end_mb"], out["peak_mb"] = rss_mb(), peak_mb()
    return out


def child_reader(settings: Any, scope: str) -> dict[str, Any]:
    from archiver.storage.open import open_read_storage
    from archiver.table.log import read_snapshot

    async def run() -> dict[str, Any]:
        storage = open_read_storage(settings)
        import pyarrow.parquet  # noqa: F401  (imported before measuring: the reader's baseline)

        base = rss_mb()
        apps, dates = (["app-007"], [scope.split(":")[1]]) if scope.startswith("app-day") else (None, None)
        t0 = time.perf_counter()
        snapshot = await read_snapshot(storage, apps=apps, dates=dates)
        elapsed = time.perf_counter() - t0
        assert snapshot is not None
        await storage.close()
        return {"read_s": elapsed, "files": len(snapshot.files), "rss_growth_mb": peak_mb() - base}

    return asyncio.run(run())


def settings_for(backend: str, where: str, endpoint: str) -> Any:
    from archiver.config import ArchiveSettings, S3Settings

    if backend == "local":
        return ArchiveSettings("file", "", where)
    from tests.servers import SEAWEED_ACCESS_KEY, SEAWEED_SECRET_KEY

    s3 = S3Settings(
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id=SEAWEED_ACCESS_KEY,
        secret_access_key=SEAWEED_SECRET_KEY,
    )
    return ArchiveSettings("s3", where, "archive", s3)


def run_child(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(results: list[dict[str, Any]]) -> str:
    """The results as the Markdown tables of BENCHMARKS.md."""

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:,.0f}"

    lines = [
        "| table | live files | tombstones | checkpoint MiB | store | open s | commit median ms | p90 ms | CPU ms/commit "
        "| RSS MiB: import → open → commits (peak) | checkpoint s (CPU) → peak | vacuum s (CPU; files re-deleted) → peak "
        "| log clean-up s | longest thread stall in a commit ms (in a GIL-free hash) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['table']} | {r['live']:,} | {r['tombstones']:,} | {r['checkpoint_mb']} | {r['backend']} "
            f"| {r['open_s']:.2f} | {ms(r['commit_median_s'])} | {ms(r['commit_p90_s'])} | {ms(r['cpu_per_commit_s'])} "
            f"| {r['rss_import_mb']:.0f} → {r['rss_open_mb']:.0f} → {r['rss_commits_mb']:.0f} ({r['peak_commits_mb']:.0f}) "
            f"| {r['checkpoint_s']:.2f} ({r['checkpoint_cpu_s']:.2f}) → {r['peak_checkpoint_mb']:.0f} "
            f"| {r['vacuum_s']:.2f} ({r['vacuum_cpu_s']:.2f}; {r['vacuum_deleted']:,}) → {r['peak_vacuum_mb']:.0f} "
            f"| {r['cleanup_s']:.2f} "
            f"| {r['commit_stall_max_ms']:.0f} ({r.get('baseline_stall_max_ms', float('nan')):.0f}) |"
        )
    lines += [
        "",
        "| table | store | our reader: one app-day s (files) | RSS growth MiB | whole table s (files) | RSS growth MiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        day, whole = r["reader_app-day"], r["reader_table"]
        lines.append(
            f"| {r['table']} | {r['backend']} | {day['read_s']:.3f} ({day['files']:,}) | {day['rss_growth_mb']:.0f} "
            f"| {whole['read_s']:.3f} ({whole['files']:,}) | {whole['rss_growth_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="only t1k and t20k")
    parser.add_argument("--format", metavar="JSON", help="print the Markdown of an earlier run's JSON output")
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.format:
        print(markdown(json.loads(Path(args.format).read_text().strip().splitlines()[-1])))
        return
    if args.child:
        kind, backend, where, endpoint, *rest = args.child
        settings = settings_for(backend, where, endpoint)
        result = child_delta(settings) if kind == "delta" else child_reader(settings, rest[0])
        print(json.dumps(result))
        return
    from tests.servers import SeaweedFS

    names = ["t1k", "t20k"] if args.quick else ["t1k", "t20k", "t100k", "year-6h", "year-24h"]
    work = Path(tempfile.mkdtemp(prefix="bench-table-"))
    server = SeaweedFS(work / "weed")
    server.start(timeout_s=60)
    results = []
    try:
        for name in names:
            root = work / name
            built = build(name, root)
            bucket = f"t-{name.replace('-', '')}"
            server.create_bucket(bucket)
            upload_log(server, bucket, root)
            print(f"built {built}", file=sys.stderr, flush=True)
            for backend, where in (("local", str(root)), ("s3", bucket)):
                row = dict(built, backend=backend)
                day = TODAY - dt.timedelta(days=0 if name.startswith("t") else 3)
                for scope in (f"app-day:{day:%Y-%m-%d}", "table"):
                    row[f"reader_{scope.split(':')[0]}"] = run_child(
                        "reader", backend, where, server.endpoint_url, scope
                    )
                row.update(run_child("delta", backend, where, server.endpoint_url))
                results.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
            shutil.rmtree(root, ignore_errors=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(markdown(results), file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
