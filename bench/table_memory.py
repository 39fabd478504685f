"""The open Delta table's resident memory, as the service holds it (TABLE_RESIDENT_BYTES is charged for it).

Opens a copy of a table (e.g. bench/table_scale.py's ``year-6h``) in a fresh process after the
service's allocator tuning (``--untuned``: without delta-rs's allocator setting), then reads its live
files three times as the compactor and upkeep do (``live_keys``), printing the process's RSS, anonymous
and file-backed, after each step.

Usage: .venv/bin/python bench/table_memory.py --table /tmp/b14_year/year [--untuned]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from memtrace import _status


def show(step: str) -> None:
    status = _status()
    print(f"{step:28} RSS {status['VmRSS'] >> 20:4} MiB  anonymous {status['RssAnon'] >> 20:4}  "
          f"file-backed {status['RssFile'] >> 20:3}  threads {status['Threads']}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--table", required=True)
    parser.add_argument("--untuned", action="store_true")
    args = parser.parse_args()
    if args.untuned:
        os.environ["_RJEM_MALLOC_CONF"] = ""
    from archiver.service.memory import use_lean_memory

    use_lean_memory()
    show("pyarrow, allocators set")
    work = tempfile.mkdtemp(prefix="bench-table-memory-")
    try:
        shutil.copytree(args.table, f"{work}/a")
        from archiver.config import ArchiveSettings
        from archiver.table.writer import ArchiveTable

        table = ArchiveTable.open(ArchiveSettings("file", "", f"{work}/a"))
        assert table is not None
        show("table open")
        for _ in range(3):
            keys = table.live_keys()
            show(f"live_keys ({len(keys):,} files)")
        del keys
        time.sleep(3)
        show("3 s later")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
