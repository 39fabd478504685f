"""Where the archiver's CPU goes under load: one ingest run with py-spy attached, summarised by function.

Same set-up as bench/ingest.py (loopback nats-server, bench/publisher.py, the
archiver with its defaults); py-spy samples the archiver from the first
message until its exit after SIGTERM (the final flush included) and writes the
collapsed stacks; this prints the functions with the largest share of samples,
self (the leaf) and inclusive (anywhere on the stack), and the share by area.

Needs py-spy (``.venv/bin/pip install py-spy``; not a project dependency).

Usage: .venv/bin/python bench/profile_ingest.py --rate 20000 --duration 10 [--subscriber bare] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import CLK_TCK, nats_server, tree_cpu_seconds
from ingest import HERE, ArchiverSub, BareSub, _readline

AREAS = (  # first match wins, on the innermost frames first
    (
        "encode (parse JSON + write Parquet)",
        re.compile(r"archiver/codec/(encode|parse|parse_exact|payloads)\.py"),
    ),
    ("spool (group commit, fsync, trim)", re.compile(r"archiver/service/(spool|spool_record|journal)\.py")),
    ("upload / storage", re.compile(r"archiver/(service/uploader\.py|storage/)")),
    ("ingest callback (route, buffer)", re.compile(r"archiver/service/(ingest|buffer|routing)\.py")),
    ("nats-py (socket read, protocol parse, Msg, dispatch)", re.compile(r"site-packages/nats/")),
    ("metrics / HTTP", re.compile(r"archiver/service/(metrics|http|health)\.py|prometheus_client")),
    ("asyncio / uvloop event loop", re.compile(r"asyncio/|uvloop")),
)


def summarise(raw: Path, top: int = 25) -> dict[str, object]:
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if "(" in f]  # drop the process and thread entries
        if not frames:
            continue
        samples += count
        names = [re.sub(r":\d+\)$", ")", f) for f in frames]
        self_counts[names[-1]] += count
        for name in set(names):
            total_counts[name] += count
        area = "other"
        for frame in reversed(frames):
            hit = next((label for label, pattern in AREAS if pattern.search(frame)), None)
            if hit:
                area = hit
                break
        areas[area] += count

    def pct(n: int) -> float:
        return round(100 * n / samples, 1) if samples else 0.0

    return {
        "samples": samples,
        "areas": {k: pct(v) for k, v in areas.most_common()},
        "self": [(k, pct(v)) for k, v in self_counts.most_common(top)],
        "inclusive": [(k, pct(v)) for k, v in total_counts.most_common(top)],
    }


def _thread_cpu(pid: int, tid: int) -> float:
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rate", type=float, default=20_000, help="msg/s; 0 = flat out")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--subscriber", choices=("archiver", "bare"), default="archiver")
    parser.add_argument("--sample-rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", default=None, help="directory for the raw stacks and the summary")
    parser.add_argument("--native", action="store_true", help="py-spy --native: C frames too (uvloop, Arrow)")
    parser.add_argument("--gil", action="store_true", help="py-spy --gil: only samples holding the GIL")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not py_spy:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-profile-run-"))
    with nats_server() as url:
        sub = ArchiverSub(url, work) if args.subscriber == "archiver" else BareSub(url, work)
        pub = subprocess.Popen([sys.executable, str(HERE / "publisher.py"), "--url", url, "--rate", str(args.rate),
                                "--duration", str(args.duration)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        try:
            sub.wait_ready()
            if _readline(pub, 120) != "ready":
                raise SystemExit("publisher did not start")
            time.sleep(0.5)
            raw = out / f"{args.subscriber}-{int(args.rate)}{'-gil' if args.gil else ''}.txt"
            spy = subprocess.Popen([py_spy, "record", "--pid", str(sub.proc.pid), "--rate", str(args.sample_rate),
                                    "--format", "raw", "--output", str(raw),
                                    *(["--native"] if args.native else ["--nonblocking"]),
                                    *(["--gil"] if args.gil else [])],
                                   stdout=subprocess.DEVNULL, stderr=open(out / "py-spy.log", "wb"))  # noqa: SIM115  # fmt: skip
            time.sleep(1.0)  # py-spy attaches
            cpu_before = tree_cpu_seconds(sub.proc.pid)
            main_before = _thread_cpu(sub.proc.pid, sub.proc.pid)
            assert pub.stdin is not None
            pub.stdin.write(b"go\n")
            pub.stdin.flush()
            sent = json.loads(_readline(pub, args.duration + 120))
            deadline = time.monotonic() + 60
            while sub.counts()["received"] < sent["sent"] and time.monotonic() < deadline:
                time.sleep(0.05)
            # Before SIGTERM: the receive path (and any flush the buffers' limits caused); after: the final flush.
            cpu_received = tree_cpu_seconds(sub.proc.pid) - cpu_before
            main_received = _thread_cpu(sub.proc.pid, sub.proc.pid) - main_before
            code, cpu, _, _, _ = sub.finish()
            spy.wait(60)
        finally:
            sub.kill()
            if pub.poll() is None:
                pub.kill()
            shutil.rmtree(work, ignore_errors=True)
    n = sent["sent"] / 1e6
    summary = {
        "rate": args.rate,
        "sent": sent["sent"],
        "cpu_s_per_million_receiving": round(cpu_received / n, 2),
        "of_which_main_thread": round(main_received / n, 2),
        "cpu_s_per_million_after_sigterm": round((cpu - cpu_before - cpu_received) / n, 2),
        "exit": code,
        **summarise(raw),
    }
    (out / raw.with_suffix(".json").name).write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"raw stacks: {raw}")


if __name__ == "__main__":
    main()
