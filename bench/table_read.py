"""What ``archiver query --app X --since 1h`` pays to learn its files: listing against the Delta log, in process.

On the tables bench/query_speed.py --table builds (``--base DIR``: DIR/day1-table, DIR/day30-table),
locally and on SeaweedFS (``weed mini``, loopback; only ``_delta_log/`` and the app's files of the
last two days are uploaded: all that either way reads). Per archive, median of ``--runs`` after one
warm-up, wall and CPU seconds of:

* ``list``: the planner's listings of the hour's prefixes (what query did before the table; not exact);
* ``log_uncached``: :func:`archiver.table.log.read_snapshot` of the app and days, no cache (the whole
  checkpoint and every commit after it; what a first query, or one after a new checkpoint, pays);
* ``log_cached``: the same with the snapshot cache (:mod:`archiver.table.log_cache`) filled by the
  warm-up: ``_last_checkpoint``, the log's listing, the cached version's commit again, the cache file;
* ``both``: listing and the cached log read at once, as the planner runs them on its first window
  (the log's answer is used).

``--year DIR``: also the log alone of a table of bench/table_scale.py's simulated year (its
``_delta_log/`` copied to DIR; the data files need not be there): uncached and cached, for one app's
newest day, locally (and on SeaweedFS unless ``--local-only``).

Usage: .venv/bin/python bench/table_read.py --base /tmp/qbench14c [--runs 9] [--local-only] [--year DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from common import ROOT

from archiver.archive.layout import NS_PER_HOUR
from archiver.archive.navigator import day_spans, list_files, select_apps
from archiver.config import ArchiveSettings, S3Settings
from archiver.demo.corpus import default_app_names
from archiver.storage.interface import Storage
from archiver.storage.open import open_read_storage
from archiver.table.log import read_snapshot
from archiver.table.log_cache import SnapshotCache
from archiver.table.log_view import days_of, read_view


async def _timed(runs: int, step: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    walls, cpus = [], []
    for run in range(runs + 1):
        began, cpu = time.perf_counter(), time.process_time()
        await step()
        if run:
            walls.append(time.perf_counter() - began)
            cpus.append(time.process_time() - cpu)
    return {"wall_s": round(statistics.median(walls), 4), "cpu_s": round(statistics.median(cpus), 4)}


async def measure(storage: Storage, app: str, now_ns: int, runs: int) -> dict[str, Any]:
    """list / log / both for ``--app APP --since 1h`` at ``now_ns``."""
    apps = select_apps([app])
    since = now_ns - NS_PER_HOUR
    spans = day_spans(since, now_ns)
    prefixes = [p for span in spans for segment in apps.segments for p in span.prefixes(segment)]

    async def listing() -> Any:
        return await list_files(storage, prefixes, since, now_ns, apps=apps)

    days = days_of(since, now_ns)

    async def uncached() -> Any:
        return await read_snapshot(storage, apps.values, days)

    async def cached() -> Any:
        return await read_snapshot(storage, apps.values, days, cache)

    async def both() -> Any:
        return await asyncio.gather(listing(), read_view(storage, apps, since, now_ns, strict=True))

    with tempfile.TemporaryDirectory() as directory:
        cache = SnapshotCache(Path(directory))
        listed, view = await listing(), await read_view(storage, apps, since, now_ns, strict=True)
        assert view is not None
        out: dict[str, Any] = {"files_listed": len(listed), "files_live": len(view.files)}
        steps = (("list", listing), ("log_uncached", uncached), ("log_cached", cached), ("both", both))
        for name, step in steps:
            out[name] = await _timed(runs, step)
    return out


async def measure_log(storage: Storage, runs: int) -> dict[str, Any]:
    """The log alone, uncached and cached, for one app's newest day (a table whose data files are absent)."""
    every = await read_snapshot(storage)
    assert every is not None
    date = max(f.date for f in every.files)
    app = min(f.app for f in every.files if f.date == date)
    out: dict[str, Any] = {"live_files": len(every.files), "app": app, "date": date}
    with tempfile.TemporaryDirectory() as directory:
        cache = SnapshotCache(Path(directory))
        for name, used in (("log_uncached", None), ("log_cached", cache)):

            async def step(used: SnapshotCache | None = used) -> Any:
                return await read_snapshot(storage, [app], [date], used)

            out[name] = await _timed(runs, step)
        found = await read_snapshot(storage, [app], [date], cache)
        out["files_of_the_day"] = 0 if found is None else len(found.files)
    return out


def _upload_log(server: Any, bucket: str, root: Path) -> None:
    import botocore.session
    from botocore.config import Config

    server.create_bucket(bucket)
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=server.endpoint_url, region_name="us-east-1", aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key, config=Config(s3={"addressing_style": "path"}),
    )  # fmt: skip
    for path in (root / "_delta_log").iterdir():
        client.put_object(Bucket=bucket, Key=str(path.relative_to(root)), Body=path.read_bytes())
    client.close()


def _upload(server: Any, bucket: str, root: Path, app: str) -> int:
    import botocore.session
    from botocore.config import Config

    server.create_bucket(bucket)
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=server.endpoint_url, region_name="us-east-1", aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key, config=Config(s3={"addressing_style": "path"}),
    )  # fmt: skip
    days = sorted((root / f"app={app}").iterdir())[-2:]
    paths = [p for p in (root / "_delta_log").iterdir()] + [
        p for d in days for p in d.rglob("*") if p.is_file()
    ]
    for path in paths:
        client.put_object(Bucket=bucket, Key=str(path.relative_to(root)), Body=path.read_bytes())
    client.close()
    return len(paths)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--local-only", action="store_true")
    parser.add_argument("--year", default=None, help="a simulated year's table (its _delta_log/ at least)")
    args = parser.parse_args()
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(
        prefix="table-read-cache-"
    )  # `both`: not the user's cache
    base = Path(args.base)
    now = int((base / "now.txt").read_text())
    app = default_app_names(20)[0]
    results: dict[str, Any] = {}
    if args.year:
        storage = open_read_storage(ArchiveSettings("file", "", str(Path(args.year).resolve())))
        try:
            results["local/year"] = await measure_log(storage, args.runs)
        finally:
            await storage.close()
        print(f"local/year: {results['local/year']}", file=sys.stderr, flush=True)
    for archive in ("day1-table", "day30-table"):
        settings = ArchiveSettings("file", "", str(base / archive))
        storage = open_read_storage(settings)
        try:
            results[f"local/{archive}"] = await measure(storage, app, now, args.runs)
        finally:
            await storage.close()
        print(f"local/{archive}: {results[f'local/{archive}']}", file=sys.stderr, flush=True)
    if not args.local_only:
        sys.path.insert(0, str(ROOT))
        from tests.servers import SeaweedFS

        with tempfile.TemporaryDirectory() as work:
            server = SeaweedFS(Path(work))
            server.start(timeout_s=60)
            try:
                if args.year:
                    await asyncio.to_thread(_upload_log, server, "year", Path(args.year))
                    s3 = S3Settings(endpoint_url=server.endpoint_url, region="us-east-1",
                                    access_key_id=server.access_key, secret_access_key=server.secret_key)  # fmt: skip
                    storage = open_read_storage(ArchiveSettings("s3", "year", "", s3))
                    try:
                        results["s3/year"] = await measure_log(storage, args.runs)
                    finally:
                        await storage.close()
                    print(f"s3/year: {results['s3/year']}", file=sys.stderr, flush=True)
                for archive in ("day1-table", "day30-table"):
                    bucket = archive.replace("-", "")
                    await asyncio.to_thread(_upload, server, bucket, base / archive, app)
                    s3 = S3Settings(endpoint_url=server.endpoint_url, region="us-east-1",
                                    access_key_id=server.access_key, secret_access_key=server.secret_key)  # fmt: skip
                    settings = ArchiveSettings("s3", bucket, "", s3)
                    storage = open_read_storage(settings)
                    try:
                        results[f"s3/{archive}"] = await measure(storage, app, now, args.runs)
                    finally:
                        await storage.close()
                    print(f"s3/{archive}: {results[f's3/{archive}']}", file=sys.stderr, flush=True)
            finally:
                server.stop()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
