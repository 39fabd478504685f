"""``archiver demo --duration 10`` end to end: a subprocess in a temporary directory, as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

# <RFC 3339 with 9 fractional digits>Z <provider>[<instance>] <region> [<level>] <message>
FLY_LOGS_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (app|runner)\[[0-9a-f]{14}\] [a-z]{3} \[[a-z]+\] .+$"
)
DEMO_APPS = ("sandwich", "billing-api", "web-frontend", "queue-worker")


@pytest.mark.timeout(60)
def test_demo_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ARCHIVE_URL", "BUCKET_NAME")}
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "archiver", "demo", "--duration", "10"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
    )
    wall_s = time.monotonic() - began
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert wall_s < 40, f"demo took {wall_s:.1f} s"
    out = proc.stdout

    # The query section: fly-logs lines of the queried app only, at most --tail 20 of them.
    query = out.split("$ archiver query", 1)[1].split("\n$ ", 1)[0].splitlines()[1:]
    logs = [line for line in query if line]
    assert 0 < len(logs) <= 20, out
    for line in logs:
        assert FLY_LOGS_LINE.match(line), line
    stamps = [line.split(" ", 1)[0] for line in logs]
    assert stamps == sorted(stamps)

    # `archiver ls` lists every app the generator published for.
    listing = out.split("$ archiver ls --archive demo-archive\n", 1)[1].split("\n$ ", 1)[0].split()
    assert sorted(listing) == sorted(DEMO_APPS)

    # The service's compactor merged the previous hour's files (published during the first third).
    compaction = re.search(r"^The service's compactor merged (\d+) small files of (\d+) closed app-hours", out,
                           re.MULTILINE)  # fmt: skip
    assert compaction is not None and int(compaction[2]) >= 1 and int(compaction[1]) > int(compaction[2]), out
    hours = out.split("$ archiver ls --archive demo-archive --app sandwich --since 2h\n", 1)[1].split("\n\n")[
        0
    ]
    assert len(hours.splitlines()) >= 3, hours  # the header, the previous hour and this one (or two)

    # Every published message is in the archive exactly once (no file left that a compaction replaced).
    published = int(re.search(r"^published (\d+) messages", out, re.MULTILINE)[1])  # type: ignore[index]
    assert published >= 2000  # ~250/s for 10 s
    files = sorted((tmp_path / "demo-archive").glob("app=*/**/*.parquet"))  # not the table's checkpoints
    assert files
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in files) == published
    assert {f.relative_to(tmp_path / "demo-archive").parts[0] for f in files} == {
        f"app={app}" for app in DEMO_APPS
    }
    # The spool stays outside the archive.
    assert (tmp_path / "demo-spool").is_dir()
    assert not list((tmp_path / "demo-archive").rglob("*.seg"))
    assert "archiver stopped" in proc.stderr
