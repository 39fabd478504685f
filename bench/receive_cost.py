"""CPU per message of the archiver's receive path in-process: what it adds to a bare nats-py subscriber.

A bare subscriber's callback only counts; the archiver's
(``Ingest.on_payload``, called by archiver.service.nats_direct's parser without a
``Msg`` or a coroutine; ``Ingest.on_message`` before it) routes by subject, queues the spool record, appends to
the partition buffer and counts, and the spool's group commit writes once per
event-loop turn. This times exactly that difference, without NATS: messages
of bench/ingest.py's traffic (bench/publisher.py's defaults) are delivered
to ``on_message`` on uvloop at ``--rate`` msg/s, one burst every millisecond
(what bench/publisher.py's pacing and nats-py's reader hand over: at 20k msg/s
the service measured ~22 messages per group commit), with a real spool
in a temp directory and the service's default buffers (nothing flushes: no
partition reaches FLUSH_BYTES in the run). The bare callback is timed alike.

``--compare REV`` times the same code of a git revision too (a temporary
worktree), the two alternating run by run in fresh processes: before/after
ratios of one cut, from the same run on a shared machine.

Usage: .venv/bin/python bench/receive_cost.py [--rate 20000] [--messages 100000] [--runs 5] [--compare REV]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def one_run(messages: int, rate: float) -> dict[str, float]:
    """CPU µs per message of the bare callback and of Ingest.on_message (+ group commit), in this process."""
    import uvloop
    from nats.aio.msg import Msg

    from archiver.demo.loadgen import FlyLogGenerator
    from archiver.service.buffer import Buffers, Room
    from archiver.service.ingest import Ingest
    from archiver.service.metrics import Stats
    from archiver.service.spool import Spool

    pool = FlyLogGenerator(seed=1, apps=8, regions=3, instances=2).messages(min(messages, 100_000))
    msgs = [Msg(None, subject, "", payload) for subject, payload in pool]  # type: ignore[arg-type]
    msgs = (msgs * (messages // len(msgs) + 1))[:messages]
    work = tempfile.mkdtemp(prefix="bench-receive-")
    counts = {"received": 0}

    async def bare(msg: Msg) -> None:
        counts["received"] += 1

    burst = max(1, round(rate / 1000))

    async def deliver(callback: Any) -> float:
        start, begun = time.process_time(), time.monotonic()
        for tick, i in enumerate(range(0, len(msgs), burst)):
            for msg in msgs[i : i + burst]:
                await callback(msg)
            await asyncio.sleep(max(0.0, begun + (tick + 1) / 1000 - time.monotonic()))
        await asyncio.sleep(0.05)  # what is pending is committed
        return (time.process_time() - start) / len(msgs) * 1e6

    async def main() -> dict[str, float]:
        spool = Spool(f"{work}/spool", max_bytes=16 * 1024**3)
        spool.open()
        buffers = Buffers(64 * 1024**2, 60.0, 1024**4)  # no flush, no spill: the receive path alone
        batches: list[Any] = []
        ingest = Ingest(buffers, Room(buffers), Stats(), spool, on_batch=batches.append)
        direct = getattr(ingest, "on_payload", None)  # absent before the direct path (--compare)
        if direct is not None:
            pairs = [(msg.subject.encode(), msg.data) for msg in msgs]

            async def deliver_direct() -> float:
                start, begun = time.process_time(), time.monotonic()
                for tick, i in enumerate(range(0, len(pairs), burst)):
                    for subject, data in pairs[i : i + burst]:
                        direct(subject, data)
                    await asyncio.sleep(max(0.0, begun + (tick + 1) / 1000 - time.monotonic()))
                await asyncio.sleep(0.05)
                return (time.process_time() - start) / len(pairs) * 1e6

        try:
            bare_us = await deliver(bare)
            ingest_us = await (deliver_direct() if direct is not None else deliver(ingest.on_message))
            assert ingest.stats.messages_received == len(msgs), "not every message was committed"
        finally:
            spool.close()
        return {"bare_us": bare_us, "ingest_us": ingest_us, "added_us": ingest_us - bare_us}

    try:
        return uvloop.run(main())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _child(tree: Path, messages: int, rate: float) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import json, receive_cost; "
            f"print(json.dumps(receive_cost.one_run({messages}, {rate})))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=20_000, help="msg/s, delivered in a burst every ms")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compare", default=None, help="a git revision timed against this tree, alternating")
    args = parser.parse_args()
    trees = {"this tree": HERE.parent}
    scratch = None
    if args.compare:
        scratch = Path(tempfile.mkdtemp(prefix="bench-receive-tree-"))
        subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--detach", str(scratch / "tree"),
                        args.compare], check=True, capture_output=True)  # fmt: skip
        trees = {args.compare: scratch / "tree", "this tree": HERE.parent}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    try:
        for _ in range(args.runs):
            for name, tree in trees.items():  # alternating: drift on the shared machine hits both alike
                samples[name].append(_child(tree, args.messages, args.rate))
    finally:
        if scratch is not None:
            subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force", str(scratch / "tree")],
                           check=False, capture_output=True)  # fmt: skip
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"{args.messages:,} messages at {args.rate:,.0f}/s, median of {args.runs} runs, CPU µs per message")
    medians = {}
    for name, runs in samples.items():
        med = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        medians[name] = med
        each = ", ".join(f"{run['added_us']:.3f}" for run in runs)
        print(f"  {name:>12}: bare callback {med['bare_us']:.3f}, on_message + commit {med['ingest_us']:.3f}, "
              f"added {med['added_us']:.3f}  (added per run: {each})")  # fmt: skip
    if args.compare:
        before, after = medians[args.compare]["added_us"], medians["this tree"]["added_us"]
        print(
            f"  added cost this tree / {args.compare}: {after / before:.2f}x ({before:.3f} -> {after:.3f} µs)"
        )
        pairs = [
            b["ingest_us"] / a["ingest_us"]
            for a, b in zip(samples[args.compare], samples["this tree"], strict=True)
        ]
        print(
            f"  whole callback path this tree / {args.compare}, median of the runs' ratios: "
            f"{statistics.median(pairs):.2f}x ({', '.join(f'{r:.2f}' for r in pairs)})"
        )


if __name__ == "__main__":
    main()
