"""Run the real ``archiver`` as a subprocess and read back what it archived."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
from click.testing import CliRunner, Result

from archiver.archive.layout import RESERVED_PREFIX, parse_key
from archiver.archive.message import rebuild_payload
from archiver.archive.timestamps import exact_rows
from archiver.cli.main import main
from archiver.config import ArchiveSettings
from archiver.demo.servers import free_port
from archiver.service.routing import app_region_from_subject
from archiver.storage.open import open_storage

ARCHIVER = [sys.executable, "-m", "archiver"]


def archive_env(settings: ArchiveSettings) -> dict[str, str]:
    """Environment variables pointing ``archiver`` at ``settings``."""
    env = {"ARCHIVE_URL": settings.url if settings.scheme == "s3" else settings.prefix}
    if settings.scheme == "s3":
        s3 = settings.s3
        env |= {
            "AWS_ENDPOINT_URL_S3": s3.endpoint_url or "",
            "AWS_REGION": s3.region,
            "AWS_ACCESS_KEY_ID": s3.access_key_id or "",
            "AWS_SECRET_ACCESS_KEY": s3.secret_access_key or "",
        }
    return env


@dataclass
class ArchiverProcess:
    """A running ``archiver run`` with its HTTP port and log file."""

    proc: subprocess.Popen[bytes]
    http_port: int
    log_path: Path

    def get(self, path: str) -> tuple[int, bytes]:
        """GET a path of the HTTP server: (status, body)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def health(self) -> tuple[int, dict[str, Any]]:
        """Status and JSON report of /health."""
        status, body = self.get("/health")
        return status, json.loads(body)

    def metric(self, name: str, labels: str = "") -> float:
        """One sample of /metrics, e.g. ``metric("archiver_messages_received_total")``."""
        _, body = self.get("/metrics")
        wanted = f"{name}{labels} "
        for line in body.decode().splitlines():
            if line.startswith(wanted):
                return float(line.split()[-1])
        raise KeyError(wanted)

    def wait_subscribed(self, timeout_s: float = 30) -> None:
        """Block until /health says connected and subscribed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"archiver exited {self.proc.returncode}:\n{self.log()}")
            try:
                status, report = self.health()
                if status == 200 and report["nats"]["subscribed"]:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"archiver not subscribed in {timeout_s}s:\n{self.log()}")

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM and wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"archiver did not stop in {timeout_s}s:\n{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL (no cleanup at all)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def log(self) -> str:
        """What the process printed."""
        return self.log_path.read_text(errors="replace")[-20000:]


def start_archiver(
    nats_url: str, settings: ArchiveSettings, log_dir: Path, args: list[str] | None = None, **env: str
) -> ArchiverProcess:
    """Start ``archiver run`` against ``nats_url`` writing to ``settings``.

    Its compactor is off unless ``COMPACT_AFTER`` is given: these tests read every file of the
    archive as it is (test_service_compaction.py runs it, and reads the way readers do).
    """
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ARCHIVE_", "BUCKET_"))}
    full_env |= {"NATS_URL": nats_url, "HTTP_PORT": str(port), "HTTP_HOST": "127.0.0.1",
                 "LOG_LEVEL": "info", "COMPACT_AFTER": "off", **archive_env(settings), **env}  # fmt: skip
    full_env.setdefault("SPOOL_DIR", str(log_dir / f"spool-{port}"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"archiver-{port}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen([*ARCHIVER, "run", *(args or [])], env=full_env, stdout=out, stderr=out)
    return ArchiverProcess(proc, port, log_path)


@dataclass
class ArchivedFile:
    """One archive object read back (``region``: a v1 key's; rows of schema v2 carry theirs)."""

    key: str
    app: str
    region: str | None
    hour_ns: int
    rows: list[dict[str, Any]]
    metadata: dict[bytes, bytes]
    size: int


def read_archive(settings: ArchiveSettings) -> list[ArchivedFile]:
    """Every Parquet file of the archive, parsed (through the storage interface)."""

    async def fetch() -> list[tuple[str, bytes]]:
        storage = open_storage(settings)
        try:
            # The archiver's own objects and the Delta table's log are not data files.
            infos = [
                i for i in await storage.list("") if not i.key.startswith((RESERVED_PREFIX, "_delta_log/"))
            ]
            limit = asyncio.Semaphore(16)

            async def get(key: str) -> tuple[str, bytes]:
                async with limit:
                    return key, await storage.get(key)

            return list(await asyncio.gather(*(get(info.key) for info in infos)))
        finally:
            await storage.close()

    files = []
    for key, data in asyncio.run(fetch()):
        parsed = parse_key(key)
        assert parsed is not None, f"unexpected key {key!r}"
        reader = pq.ParquetFile(pa_buffer(data))
        # Python datetimes stop at microseconds: timestamps as exact int nanoseconds.
        files.append(ArchivedFile(key, parsed.app, parsed.region, parsed.hour_ns,
                                  exact_rows(reader.read()), reader.schema_arrow.metadata or {}, len(data)))  # fmt: skip
    return files


def pa_buffer(data: bytes) -> Any:
    """A pyarrow reader over bytes."""
    import pyarrow as pa

    return pa.BufferReader(data)


def row_region(f: ArchivedFile, row: dict[str, Any]) -> str:
    """The region of a row: its column (schema v2), else its file's key (v1)."""
    region = row.get("region", f.region)
    assert region is not None
    return str(region)


def archived_payloads(files: list[ArchivedFile]) -> Counter[bytes]:
    """Multiset of the rebuilt original payloads, normalised through orjson."""
    out: Counter[bytes] = Counter()
    for f in files:
        for row in f.rows:
            out[normalise(rebuild_payload(row, f.app, row_region(f, row)))] += 1
    return out


def normalise(payload: bytes) -> bytes:
    """Canonical bytes of a JSON payload (raw bytes when it is not JSON)."""
    try:
        return orjson.dumps(orjson.loads(payload), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        return payload


def unique_messages(seed: int, n: int) -> list[tuple[str, bytes]]:
    """n unique Fly messages (distinct seeds and time windows never collide)."""
    from archiver.archive.layout import NS_PER_HOUR, hour_start_ns
    from archiver.demo.loadgen import FlyLogGenerator

    start = hour_start_ns(time.time_ns()) - 3 * NS_PER_HOUR + seed * 1_000_003
    gen = FlyLogGenerator(seed=seed, apps=3, regions=2, instances=2, start_ns=start, span_ns=2 * NS_PER_HOUR)
    return gen.messages(n)


def cli_on(root: Path, *args: str, data: bytes | None = None) -> Result:
    """``archiver <command> --archive root <args>`` in process, with no archive from the environment; exit 0."""
    env = {"ARCHIVE_URL": None, "BUCKET_NAME": None}
    result = CliRunner().invoke(main, [args[0], "--archive", str(root), *args[1:]], env=env, input=data)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def payloads_by_partition(msgs: list[tuple[str, bytes]]) -> dict[tuple[str, str], list[bytes]]:
    """Fly messages' payloads by (app, region), in the order given, as the service routes them."""
    parts: dict[tuple[str, str], list[bytes]] = {}
    for subject, payload in msgs:
        route = app_region_from_subject(subject)
        assert route is not None
        parts.setdefault(route, []).append(payload)
    return parts


def wait_for(predicate: Any, timeout_s: float, what: str, proc: ArchiverProcess | None = None) -> None:
    """Poll ``predicate`` until true; fail with the archiver's log after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f":\n{proc.log()}" if proc else ""))
        time.sleep(0.05)
