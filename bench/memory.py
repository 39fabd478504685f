"""Peak RSS of `archiver run` at its default settings under sustained load (for fly.toml's VM size).

Usage: .venv/bin/python bench/memory.py [--rate 40000] [--seconds 40] [--trace]

``--trace`` prints RSS and ``archiver_buffered_bytes`` (what the memory cap counts) every half second.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Archiver, nats_server, peak_rss_bytes, rss_bytes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=40_000)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--apps", type=int, default=20)
    parser.add_argument("--trace", action="store_true", help="print RSS and buffered bytes every 0.5 s")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-mem-")
    with nats_server() as url:
        archiver = Archiver(url, f"{work}/archive", SPOOL_DIR=f"{work}/spool")  # every other setting: default
        try:
            archiver.wait_subscribed()
            publisher = subprocess.Popen(
                [sys.executable, "-m", "archiver.demo.publish", "--url", url, "--rate", str(args.rate),
                 "--duration", f"{args.seconds}s", "--apps", str(args.apps)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            began = time.monotonic()
            while publisher.poll() is None:
                time.sleep(0.5)
                if args.trace:
                    status = dict(
                        line.split(":", 1)
                        for line in Path(f"/proc/{archiver.proc.pid}/status").read_text().splitlines()
                    )
                    print(f"t={time.monotonic() - began:5.1f}s rss={rss_bytes(archiver.proc.pid) / 2**20:4.0f} MiB "
                          f"(anon {int(status['RssAnon'].split()[0]) / 1024:4.0f}, file {int(status['RssFile'].split()[0]) / 1024:3.0f}) "
                          f"buffered={archiver.metric('archiver_buffered_bytes') / 2**20:4.0f} MiB "
                          f"nats_pending={archiver.metric('archiver_nats_pending_bytes') / 2**20:4.0f} MiB "
                          f"spool={archiver.metric('archiver_spool_bytes') / 2**20:4.0f} MiB")  # fmt: skip
            if publisher.returncode != 0:
                raise SystemExit(publisher.communicate()[1])
            peak_loaded = peak_rss_bytes(archiver.proc.pid)
            received = archiver.metric("archiver_messages_received_total")
            buffered = archiver.metric("archiver_buffered_bytes")
            started = time.monotonic()
            code = archiver.stop()  # flushes the full buffers: the encode peak
        finally:
            if archiver.proc.poll() is None:
                archiver.proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(f"rate={args.rate:.0f}/s seconds={args.seconds:.0f} received={received:.0f} "
          f"buffered_at_end={buffered / 2**20:.0f} MiB peak_rss_loaded={peak_loaded / 2**20:.0f} MiB "
          f"stop_seconds={time.monotonic() - started:.1f} exit={code}")  # fmt: skip


if __name__ == "__main__":
    main()
