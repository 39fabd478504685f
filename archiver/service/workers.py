"""``archiver run --workers N``: N processes in one queue group, one /health and /metrics.

One Python process tops out at one core; N workers, each with its own NATS
connection, spool subdirectory and event loop, share the stream through a
queue group (a generated name when ``QUEUE`` is unset, so they never
duplicate each other). This supervisor serves the public ``/health`` (200
only while every worker is healthy) and ``/metrics`` (every worker's series
with a ``worker`` label), restarts a worker that dies (its spool makes that
lossless), and forwards SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from archiver.config import RunConfig
from archiver.environment import child_environment
from archiver.logs import event
from archiver.service.http import HttpServer

POLL_TIMEOUT_S = 3.0
RESTART_DELAY_S = 1.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _get(port: int, path: str) -> tuple[int, bytes]:
    """GET http://127.0.0.1:port/path → (status, body); (0, b"") when unreachable."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), POLL_TIMEOUT_S)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), POLL_TIMEOUT_S)
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body
    except (OSError, TimeoutError, ValueError, IndexError):
        return 0, b""


def merge_metrics(texts: list[bytes]) -> bytes:
    """Prometheus texts of the workers as one exposition, each sample labelled worker="i"."""
    order: list[str] = []
    heads: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for worker, text in enumerate(texts):
        family = ""
        for line in text.decode().splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                family = line.split(" ", 3)[2]
                if family not in heads:
                    order.append(family)
                    heads[family], samples[family] = [], []
                if line not in heads[family]:
                    heads[family].append(line)
                continue
            if not line or line.startswith("#"):
                continue
            name, _, rest = line.partition(" ")
            label = f'worker="{worker}"'
            if "{" in name:
                base, _, labels = name.partition("{")
                name = f"{base}{{{label},{labels}" if labels != "}" else f"{base}{{{label}}}"
            else:
                name = f"{name}{{{label}}}"
            samples.setdefault(family, []).append(f"{name} {rest}")
    out = []
    for family in order:
        out.extend(heads[family])
        out.extend(samples.get(family, []))
    return ("\n".join(out) + "\n").encode()


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, config: RunConfig, options: dict[str, str]) -> None:
        self.config = config
        self.options = options
        self.queue = config.queue or f"archiver-{secrets.token_hex(4)}"
        self.ports = [_free_port() for _ in range(config.workers)]
        self.procs: list[asyncio.subprocess.Process | None] = [None] * config.workers
        self.restarts = 0
        self._stopping = False
        # The HTTP handlers are synchronous: they serve what the last poll of the workers found.
        self._health_cache: tuple[int, str, bytes] = (503, "application/json", b'{"status":"starting"}\n')
        self._metrics_cache: tuple[int, str, bytes] = (200, "text/plain; version=0.0.4", b"")
        self.http = HttpServer(config.http_host, config.http_port,
                               {"/health": lambda: self._health_cache, "/metrics": lambda: self._metrics_cache})  # fmt: skip

    async def _spawn(self, index: int) -> None:
        env = {name.upper(): value for name, value in self.options.items()}
        spool = self.config.spool_dir
        env |= {
            "WORKERS": "1", "QUEUE": self.queue, "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(self.ports[index]),
            "SPOOL_DIR": str(Path(spool) / f"worker-{index}") if spool else "off",
        }  # fmt: skip
        self.procs[index] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "archiver", "run", env=child_environment(env)
        )

    async def _refresh(self) -> None:
        """Poll every worker's /health and /metrics once a second."""
        while True:
            results = await asyncio.gather(*(_get(p, "/health") for p in self.ports))
            metrics = await asyncio.gather(*(_get(p, "/metrics") for p in self.ports))
            reports: list[Any] = []
            for index, (status, body) in enumerate(results):
                try:
                    report = orjson.loads(body) if body else {"status": "unreachable"}
                except orjson.JSONDecodeError:
                    report = {"status": "unreachable"}
                reports.append({"worker": index, "http_status": status, **report})
            healthy = all(status == 200 for status, _ in results)
            summary = {"status": "ok" if healthy else "unhealthy", "workers": reports, "queue": self.queue,
                       "restarts": self.restarts}  # fmt: skip
            if not healthy:
                summary["reason"] = "; ".join(
                    f"worker {r['worker']}: {r.get('reason', r['status'])}"
                    for r in reports
                    if r["http_status"] != 200
                )
            self._health_cache = (200 if healthy else 503, "application/json", orjson.dumps(summary) + b"\n")
            self._metrics_cache = (200, "text/plain; version=0.0.4; charset=utf-8",
                                   merge_metrics([body for _, body in metrics]))  # fmt: skip
            await asyncio.sleep(1.0)

    async def _watch(self, index: int) -> None:
        while not self._stopping:
            proc = self.procs[index]
            assert proc is not None
            code = await proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            event(logging.ERROR, "worker exited, restarting it", worker=index, exit_code=code)
            await asyncio.sleep(RESTART_DELAY_S)
            await self._spawn(index)

    async def run(self, stop: asyncio.Event) -> int:
        """Run the workers until ``stop``; their worst exit code."""
        await self.http.start()
        for index in range(self.config.workers):
            await self._spawn(index)
        event(logging.INFO, "workers started", workers=self.config.workers, queue=self.queue,
              http_port=self.http.port)  # fmt: skip
        tasks = [asyncio.create_task(self._refresh())]
        tasks += [asyncio.create_task(self._watch(i)) for i in range(self.config.workers)]
        try:
            await stop.wait()
        finally:
            self._stopping = True
            for proc in self.procs:
                if proc is not None and proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            codes = [await proc.wait() for proc in self.procs if proc is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.http.close()
        return max(codes, default=0)


async def run_workers(config: RunConfig, options: dict[str, str]) -> int:
    """Supervise ``config.workers`` processes until SIGTERM/SIGINT; the exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    code = await Supervisor(config, options).run(stop)
    event(logging.INFO, "workers stopped", exit_code=code, seconds=round(time.monotonic() - started, 1))
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return code
