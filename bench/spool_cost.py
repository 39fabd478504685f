"""CPU per message of the spool: the same run with SPOOL_DIR=off and with the spool, same machine, same run.

Usage: .venv/bin/python bench/spool_cost.py [--messages 200000] [--rate 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time

from common import Archiver, cpu_seconds, median, nats_server

from archiver.demo.loadgen import FlyLogGenerator
from archiver.demo.publish import publish


def one_run(
    nats_url: str, spool: bool, messages: list[tuple[str, bytes]], rate: float, **extra_env: str
) -> float:
    """CPU microseconds per message of one archiver run (start-up excluded, flushes included)."""
    work = tempfile.mkdtemp(prefix="bench-spool-")
    env = {"SPOOL_DIR": f"{work}/spool" if spool else "off", "FLUSH_INTERVAL": "5s", **extra_env}
    archiver = Archiver(nats_url, f"{work}/archive", **env)
    try:
        archiver.wait_subscribed()
        time.sleep(0.5)
        before = cpu_seconds(archiver.proc.pid)
        asyncio.run(publish(nats_url, messages, rate))
        deadline = time.monotonic() + 60
        while archiver.metric("archiver_messages_archived_total") < len(messages):
            if time.monotonic() > deadline:
                raise SystemExit("loss: not everything was archived")
            time.sleep(0.1)
        after = cpu_seconds(archiver.proc.pid)
    finally:
        archiver.stop()
        shutil.rmtree(work, ignore_errors=True)
    return (after - before) / len(messages) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    messages = FlyLogGenerator(seed=1, apps=6, regions=3).messages(args.messages)
    off: list[float] = []
    on: list[float] = []
    with nats_server() as url:
        for _ in range(args.runs):
            off.append(one_run(url, False, messages, args.rate))
            on.append(one_run(url, True, messages, args.rate))
    print(f"messages={args.messages} rate={args.rate:.0f}/s runs={args.runs}")
    print(f"cpu_us_per_msg without spool: median {median(off):.2f} ({', '.join(f'{x:.2f}' for x in off)})")
    print(f"cpu_us_per_msg with spool:    median {median(on):.2f} ({', '.join(f'{x:.2f}' for x in on)})")
    print(f"spool extra: {median(on) - median(off):.2f} us/msg ({median(on) / median(off):.2f}x)")


if __name__ == "__main__":
    main()
