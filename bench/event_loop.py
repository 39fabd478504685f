"""uvloop against asyncio for `archiver run`: CPU per message in the same run (spool on).

Usage: .venv/bin/python bench/event_loop.py [--messages 100000] [--rate 20000] [--runs 3]
"""

from __future__ import annotations

import argparse

from common import median, nats_server
from spool_cost import one_run

from archiver.demo.loadgen import FlyLogGenerator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    messages = FlyLogGenerator(seed=2, apps=6, regions=3).messages(args.messages)
    results: dict[str, list[float]] = {"asyncio": [], "uvloop": []}
    with nats_server() as url:
        for _ in range(args.runs):
            for loop in results:
                results[loop].append(one_run(url, True, messages, args.rate, EVENT_LOOP=loop))
    print(f"messages={args.messages} rate={args.rate:.0f}/s runs={args.runs}")
    for loop, values in results.items():
        print(
            f"{loop:8} cpu_us_per_msg median {median(values):.2f} ({', '.join(f'{x:.2f}' for x in values)})"
        )
    print(f"uvloop / asyncio: {median(results['uvloop']) / median(results['asyncio']):.2f}x")


if __name__ == "__main__":
    main()
