"""``archiver query --follow``: latency from publish to print, and CPU while idle.

A real nats-server, ``archiver run`` (FLUSH_INTERVAL 2s, local archive) and
``archiver query --follow --format json`` as processes. Messages are
published one every ``--every`` seconds, each carrying its publish time
(``time.time_ns()``) in the text; the follower's stdout is read by a thread
that stamps each line as it arrives. Latency = arrival - publish, which
covers the service's flush (up to 2 s after a message, by design), the file
write, the follower's poll (1 s) and the print. Then nothing is published for
``--idle`` seconds and the follower's CPU over that time is read from /proc.

``--table-commit-interval 60s``: the follower starts once the service has made the archive a Delta
table (committing at that interval). It lists the archive as on plain files, so the latency should
not depend on the interval.

Usage: .venv/bin/python bench/follow_latency.py [--messages 60] [--every 0.5] [--idle 30] [--json-out F]
       [--table-commit-interval 5s]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nats
from common import Archiver, cpu_seconds, machine, nats_server

from archiver.archive.message import format_timestamp_ns
from archiver.demo.flymessage import fly_message, fly_subject


async def publish(url: str, count: int, every_s: float) -> None:
    client = await nats.connect(url)
    try:
        for i in range(count):
            now = time.time_ns()
            payload = fly_message("bench-app", "ams", f"published {now} #{i}", format_timestamp_ns(now),
                                  instance="0123456789abcd")  # fmt: skip
            await client.publish(fly_subject("bench-app", "ams", "0123456789abcd"), payload)
            await client.flush()
            await asyncio.sleep(every_s)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--every", type=float, default=0.5)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--json-out", default=None)
    parser.add_argument(
        "--table-commit-interval", default=None, help="the service's TABLE_COMMIT_INTERVAL (e.g. 5s)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-follow-"))
    archive = work / "archive"
    archive.mkdir()
    arrivals: queue.Queue[tuple[int, bytes]] = queue.Queue()
    with nats_server() as url:
        table = {"TABLE_COMMIT_INTERVAL": args.table_commit_interval} if args.table_commit_interval else {}
        service = Archiver(url, str(archive), FLUSH_INTERVAL="2s", SPOOL_DIR=str(work / "spool"), **table)
        try:
            service.wait_subscribed()
            while table and not (archive / "_delta_log" / f"{0:020d}.json").exists():
                time.sleep(0.1)  # the follower must find the table to follow its commits
            env = {k: v for k, v in os.environ.items() if k not in ("ARCHIVE_URL", "BUCKET_NAME")}
            follower = subprocess.Popen(
                [sys.executable, "-m", "archiver", "query", "--archive", str(archive), "--follow",
                 "--since", "5m", "--format", "json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            )  # fmt: skip

            def read() -> None:
                assert follower.stdout is not None
                for line in follower.stdout:
                    arrivals.put((time.time_ns(), line))

            threading.Thread(target=read, daemon=True).start()
            time.sleep(2)  # the follower's first listing
            asyncio.run(publish(url, args.messages, args.every))
            latencies = []
            deadline = time.monotonic() + 30 + (120 if table else 0)
            while len(latencies) < args.messages and time.monotonic() < deadline:
                try:
                    arrived, line = arrivals.get(timeout=1)
                except queue.Empty:
                    continue
                text = json.loads(line)["message"]
                latencies.append((arrived - int(text.split()[1])) / 1e9)
            cpu_before = cpu_seconds(follower.pid)
            time.sleep(args.idle)
            idle_cpu = cpu_seconds(follower.pid) - cpu_before
            follower.send_signal(signal.SIGINT)
            code = follower.wait(30)
            summary_line = follower.stderr.read().decode().strip() if follower.stderr else ""
        finally:
            service.stop()
    latencies.sort()
    result = {
        "machine": machine(),
        "flush_interval_s": 2,
        "table_commit_interval": args.table_commit_interval,
        "messages": args.messages,
        "printed": len(latencies),
        "latency_s": {
            "p50": round(statistics.median(latencies), 3) if latencies else None,
            "p90": round(latencies[int(0.9 * (len(latencies) - 1))], 3) if latencies else None,
            "max": round(max(latencies), 3) if latencies else None,
            "min": round(min(latencies), 3) if latencies else None,
        },
        "idle_s": args.idle,
        "idle_cpu_s": round(idle_cpu, 3),
        "idle_cpu_percent": round(100 * idle_cpu / args.idle, 2),
        "exit_code": code,
        "summary": summary_line,
    }
    print(json.dumps(result, indent=1))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))
    if len(latencies) != args.messages or code != 0:
        sys.exit("FOLLOW BENCHMARK FAILED: messages missing or bad exit")


if __name__ == "__main__":
    main()
