"""Shared pieces of the benchmarks: servers, processes, CPU and RSS readings (Linux /proc)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from archiver.demo.servers import NatsServer, free_port

ROOT = Path(__file__).resolve().parents[1]
LOGHUB = ROOT.parent / "shared" / "corpus" / "loghub"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """user+sys CPU seconds of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@contextmanager
def nats_server() -> Iterator[str]:
    """A JetStream nats-server on a free loopback port for the block: its URL."""
    work = Path(tempfile.mkdtemp(prefix="bench-nats-"))
    server = NatsServer(work)
    try:
        server.start(timeout_s=10)
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


class Archiver:
    """``archiver run`` as a subprocess with its own HTTP port."""

    def __init__(self, nats_url: str, archive: str, **env: str) -> None:
        self.port = free_port()
        full = {**os.environ, "NATS_URL": nats_url, "ARCHIVE_URL": archive, "HTTP_PORT": str(self.port),
                "HTTP_HOST": "127.0.0.1", "LOG_LEVEL": "warning", **env}  # fmt: skip
        self.proc = subprocess.Popen([sys.executable, "-m", "archiver", "run"], env=full,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[-1])
        return 0.0

    def wait_subscribed(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as resp:
                    if json.loads(resp.read())["nats"]["subscribed"]:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit("archiver did not subscribe")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)


def median(values: list[float]) -> float:
    return statistics.median(values)


# --- closed hours to compact (used by merge_memory.py and ingest.py --compaction-backlog) -------------


def live_files(rows: int, hour_ns: int, regions: int = 3, seed: int = 1) -> Iterator[tuple[int, int, bytes]]:
    """One app-hour as the service writes it at FLUSH_INTERVAL=60s: (minute, region, file) for each
    region and minute of event time, LogHub lines (zstd-3, rows sorted)."""
    import random

    import pyarrow as pa

    from archiver.archive import schema
    from archiver.archive.timestamps import split_ns
    from archiver.codec.encode import write_parquet
    from archiver.demo.corpus import REGIONS, sample_lines

    lines = sample_lines(LOGHUB if LOGHUB.is_dir() else None)
    rnd = random.Random(seed)
    per_file = rows // (60 * regions)
    for minute in range(60):
        for r in range(regions):
            start = hour_ns + minute * 60 * 1_000_000_000
            stamps = sorted(start + rnd.randrange(60 * 1_000_000_000) for _ in range(per_file))
            micros, nanos = split_ns(pa.array(stamps, pa.int64()))
            n = len(stamps)
            columns = {
                schema.TIMESTAMP: micros,
                schema.TIMESTAMP_NANOS: nanos,
                schema.REGION: [REGIONS[r]] * n,
                schema.INSTANCE: [f"{r}8e2d{rnd.randrange(4)}" for _ in range(n)],
                schema.HOST: [f"ab{r}c" for _ in range(n)],
                schema.PROVIDER: ["app"] * n,
                schema.LEVEL: [rnd.choice(("info", "info", "info", "warn", "error")) for _ in range(n)],
                schema.FLY_LEVEL: ["info"] * n,
                schema.MESSAGE: [rnd.choice(lines) for _ in range(n)],
                schema.EXTRA: pa.nulls(n, pa.string()),
            }
            yield minute, r, write_parquet(pa.table(columns, schema=schema.FILE_SCHEMA))


def seed_backlog(archive: Path, rows: int, apps: int = 4) -> int:
    """Closed app-hours of small live files (``apps`` apps, hours ending 2 h ago and earlier): ``rows`` in all;
    how many app-hours."""
    from archiver.archive.layout import NS_PER_HOUR, object_key, object_name

    units = max(1, rows // 100_000)
    newest = (time.time_ns() // NS_PER_HOUR - 3) * NS_PER_HOUR
    for unit in range(units):
        app, hour = f"backlog-{unit % apps}", newest - (unit // apps) * NS_PER_HOUR
        for minute, region, data in live_files(rows // units, hour, seed=unit):
            name = object_name(hour + minute * 60 * 1_000_000_000, f"seed{region}", minute)
            path = archive / object_key(app, hour, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return units


# --- process trees, exits and metrics (used by ingest.py) ------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """Direct children of a process (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def tree(pid: int) -> list[int]:
    """A process and all its live descendants."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children(current))
    return out


def tree_cpu_seconds(pid: int) -> float:
    """user+sys CPU of a live process tree: each live process with the children it has reaped."""
    total = 0.0
    for member in tree(pid):
        try:
            total += cpu_seconds(member)
        except OSError:
            continue
    return total


def tree_rss_bytes(pid: int) -> int:
    """Resident set size of a process tree now (the sum over its processes)."""
    total = 0
    for member in tree(pid):
        try:
            total += rss_bytes(member)
        except OSError:
            continue
    return total


def reap(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[int, float, int]:
    """Wait for a child to exit and reap it: (exit code, user+sys CPU seconds of it and every
    descendant it reaped, peak RSS of its largest process in bytes), from wait4's rusage."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            raise SystemExit(f"pid {proc.pid} did not exit within {timeout_s:.0f} s of SIGTERM (killed)")
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def prometheus_sums(text: str) -> dict[str, float]:
    """Prometheus text → sample name (labels dropped) → sum over its label sets."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(" ")
        name = name.split("{", 1)[0]
        try:
            sums[name] = sums.get(name, 0.0) + float(rest.split()[0])
        except (ValueError, IndexError):
            continue
    return sums


def http_get(port: int, path: str, timeout_s: float = 5) -> tuple[int, bytes]:
    """(status, body) of GET http://127.0.0.1:port/path; (0, b"") when unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def machine() -> dict[str, str]:
    """What the results were measured on."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"nproc": str(len(os.sched_getaffinity(0))), "cpu": cpu, "python": sys.version.split()[0]}
