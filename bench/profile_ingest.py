"""Where the archiver's CPU goes under load: one ingest run with py-spy attached, summarised by function.

Same set-up as bench/ingest.py (loopback nats-server, bench/publisher.py, the
archiver with its defaults); py-spy samples the archiver from the first
message until its exit after SIGTERM (the final flush included) and writes the
collapsed stacks; this prints the functions with the largest share of samples,
self (the leaf) and inclusive (anywhere on the stack), and the share by area.

Needs py-spy (``.venv/bin/pip install py-spy``; not a project dependency).

``--subscriber both`` alternates the bare subscriber and the archiver for
``--rounds`` pairs and prints the receive path's CPU ratio (median of the
pairs); ``--no-spy`` measures without py-spy attached.

Usage: .venv/bin/python bench/profile_ingest.py --rate 20000 --duration 10 [--subscriber bare|both] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

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
    parser.add_argument(
        "--subscriber",
        choices=("archiver", "bare", "both", "all"),
        default="archiver",
        help="both: the receive path's CPU against the bare subscriber's, --rounds pairs; all: also against "
        "a bare subscriber on the archiver's direct parser (bare_subscriber.py --direct)",
    )
    parser.add_argument("--sample-rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", default=None, help="directory for the raw stacks and the summary")
    parser.add_argument("--native", action="store_true", help="py-spy --native: C frames too (uvloop, Arrow)")
    parser.add_argument("--gil", action="store_true", help="py-spy --gil: only samples holding the GIL")
    parser.add_argument("--rounds", type=int, default=3, help="with --subscriber both: bare/archiver pairs")
    parser.add_argument("--no-spy", action="store_true", help="CPU only, no py-spy attached")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not py_spy and not args.no_spy:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.subscriber not in ("both", "all"):
        summary = profile_once(args, args.subscriber, out, py_spy)
        print(json.dumps(summary, indent=1))
        return
    # The receive path against the bare subscriber: pairs of runs, alternating (the machine is shared).
    kinds = ["bare", "archiver"] + (["bare-direct"] if args.subscriber == "all" else [])
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for _ in range(args.rounds):
        for kind in runs:
            runs[kind].append(profile_once(args, kind, out, py_spy))
            print(
                f"  {kind:11} receiving {runs[kind][-1]['cpu_s_per_million_receiving']:6.2f} CPU s/M",
                flush=True,
            )
    ratios = [a["cpu_s_per_million_receiving"] / b["cpu_s_per_million_receiving"]
              for a, b in zip(runs["archiver"], runs["bare"], strict=True)]  # fmt: skip
    direct = [a["cpu_s_per_million_receiving"] / b["cpu_s_per_million_receiving"]
              for a, b in zip(runs["archiver"], runs.get("bare-direct", []), strict=False)]  # fmt: skip
    result = {
        "rate": args.rate,
        "rounds": args.rounds,
        "py_spy": not args.no_spy,
        "receiving_ratio_median": round(statistics.median(ratios), 3),
        "receiving_ratios": [round(r, 3) for r in ratios],
        **({"against_bare_direct_median": round(statistics.median(direct), 3)} if direct else {}),
        **{f"{kind}_receiving_cpu_s_per_million": [r["cpu_s_per_million_receiving"] for r in rs]
           for kind, rs in runs.items()},
    }  # fmt: skip
    (out / f"both-{int(args.rate)}.json").write_text(json.dumps({**result, "runs": runs}, indent=1))
    print(json.dumps(result, indent=1))


def profile_once(args: argparse.Namespace, kind: str, out: Path, py_spy: str | None) -> dict[str, Any]:
    """One run of ``kind`` (archiver or bare) at ``args.rate``: CPU while receiving and after SIGTERM, the profile."""
    work = Path(tempfile.mkdtemp(prefix="bench-profile-run-"))
    raw = out / f"{kind}-{int(args.rate)}{'-gil' if args.gil else ''}.txt"
    spy = None
    with nats_server() as url:
        sub = (
            ArchiverSub(url, work) if kind == "archiver" else BareSub(url, work, direct=kind == "bare-direct")
        )
        pub = subprocess.Popen([sys.executable, str(HERE / "publisher.py"), "--url", url, "--rate", str(args.rate),
                                "--duration", str(args.duration)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        try:
            sub.wait_ready()
            if _readline(pub, 120) != "ready":
                raise SystemExit("publisher did not start")
            time.sleep(0.5)
            if py_spy and not args.no_spy:
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
            if spy is not None:
                spy.wait(60)
        finally:
            sub.kill()
            if pub.poll() is None:
                pub.kill()
            shutil.rmtree(work, ignore_errors=True)
    n = sent["sent"] / 1e6
    summary: dict[str, Any] = {
        "subscriber": kind,
        "rate": args.rate,
        "sent": sent["sent"],
        "cpu_s_per_million_receiving": round(cpu_received / n, 2),
        "of_which_main_thread": round(main_received / n, 2),
        "cpu_s_per_million_after_sigterm": round((cpu - cpu_before - cpu_received) / n, 2),
        "exit": code,
    }
    if spy is not None:
        summary.update(summarise(raw))
        summary["raw_stacks"] = str(raw)
        (out / raw.with_suffix(".json").name).write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
