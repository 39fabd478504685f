"""``archiver query --follow`` as a process on a local archive: new files printed once, in time order, late
files too, a compaction of printed files printed nothing again, ``--tail N --follow``, Ctrl-C exits 0."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from v1_files import to_v1

from archiver.archive.escaping import partition_value, partition_value_v1
from archiver.archive.layout import NS_PER_HOUR, hour_start_ns, object_key, object_name, v1_object_key
from archiver.archive.message import format_timestamp_ns
from archiver.archive.supersede import parse_compact_name
from archiver.codec.encode import encode_partition
from archiver.codec.payloads import Payloads
from archiver.demo.flymessage import fly_record

S = 1_000_000_000


class Archive:
    """A local archive directory the test adds flushed files to, as the service would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sequence = 0

    def add(
        self,
        text: str,
        first_ns: int,
        rows: int = 3,
        app: str = "app1",
        region: str = "ams",
        exact: bool = False,
        hold: bool = False,
        v1: bool = False,
    ) -> list[tuple[Path, Path]]:
        """Write the file (``v1``: as schema v1 wrote it); with ``hold`` left as a .tmp, returned as
        (tmp, final) for the caller to rename."""
        self.sequence += 1
        payloads = [
            orjson.dumps(fly_record(app, region, text if exact else f"{text} {i}",
                                    format_timestamp_ns(first_ns + i * S), instance="i1"))
            for i in range(rows)
        ]  # fmt: skip
        held = []
        for f in encode_partition(app, region, Payloads(payloads), first_ns).files:
            name = object_name(f.min_timestamp_ns, "w1", self.sequence)
            if v1:
                key = v1_object_key(partition_value_v1(app), partition_value_v1(region), f.hour_ns, name)
            else:
                key = object_key(partition_value(app), f.hour_ns, name)
            path = self.root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")  # not .parquet: never read
            tmp.write_bytes(to_v1(f.data) if v1 else f.data)
            held.append((tmp, path))
        if not hold:
            for tmp, path in held:
                tmp.rename(path)  # whole files only, as a store's put
        return held


class Follow:
    """``archiver query --follow`` running, its stdout lines collected by a thread."""

    def __init__(self, root: Path | None, *args: str, env: dict[str, str] | None = None) -> None:
        """Follow the local archive at ``root``, or (None) the one ``env`` names (ARCHIVE_URL and its keys)."""
        archive = ["--archive", str(root)] if root is not None else []
        argv = [sys.executable, "-m", "archiver", "query", *archive, "--follow", *args]
        clean = {k: v for k, v in os.environ.items() if k not in ("ARCHIVE_URL", "BUCKET_NAME")}
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean | (env or {})
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.decode())

    def take(self, count: int, timeout_s: float = 20) -> list[str]:
        """The next ``count`` lines (fails after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        out = []
        while len(out) < count:
            out.append(self.lines.get(timeout=max(0.1, deadline - time.monotonic())))
        return out

    def quiet(self, seconds: float) -> list[str]:
        """Lines printed within ``seconds`` (expected: none)."""
        time.sleep(seconds)
        found = []
        while not self.lines.empty():
            found.append(self.lines.get())
        return found

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=20)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read().decode()


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    root = tmp_path / "archive"
    root.mkdir()
    yield Archive(root)


def messages(lines: list[str]) -> list[str]:
    return [line.split("] ", 2)[-1].strip() for line in lines]


def test_follow_prints_new_files_once_in_order(archive: Archive) -> None:
    now = time.time_ns()
    archive.add("old", now - 20 * 60 * S)
    follow = Follow(archive.root, "--since", "1h")
    try:
        assert messages(follow.take(3)) == ["old 0", "old 1", "old 2"]
        archive.add("new", time.time_ns())
        assert messages(follow.take(3)) == ["new 0", "new 1", "new 2"]
        # A file that arrives late, for a time before what was printed, is printed when it arrives, once.
        archive.add("late", now - 10 * 60 * S, rows=2)
        assert messages(follow.take(2)) == ["late 0", "late 1"]
        # Two files in one poll come out merged in time order.
        t = time.time_ns()
        both = archive.add("b", t + 1, rows=2, region="iad", hold=True) + archive.add(
            "a", t, rows=2, hold=True
        )
        for tmp, path in both:
            tmp.rename(path)
        assert messages(follow.take(4)) == ["a 0", "b 0", "a 1", "b 1"]
        assert follow.quiet(2.5) == []
    finally:
        code, stderr = follow.interrupt()
    assert code == 0
    assert stderr.startswith("followed for ") and "3 logs at start, 9 new in 4 new files" in stderr
    assert stderr.count("\n") == 1


@pytest.mark.parametrize("first_v1", [False, True])
def test_compaction_of_printed_files_prints_nothing_again(archive: Archive, first_v1: bool) -> None:
    previous = hour_start_ns(time.time_ns()) - NS_PER_HOUR
    archive.add("x", previous + S, v1=first_v1)  # v1: compaction moves it to v2, replacing its v1 name
    archive.add("y", previous + 60 * S)
    follow = Follow(archive.root, "--since", "2h")
    try:
        assert len(follow.take(6)) == 6
        result = subprocess.run(
            [sys.executable, "-m", "archiver", "compact", "--archive", str(archive.root), "--before", "0s"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert any(parse_compact_name(p.name) for p in archive.root.rglob("*.parquet")), result.stderr
        assert follow.quiet(3) == []
        archive.add("after", time.time_ns(), rows=1)
        assert messages(follow.take(1)) == ["after 0"]
    finally:
        code, _ = follow.interrupt()
    assert code == 0


def test_tail_follow_is_tail_f(archive: Archive) -> None:
    now = time.time_ns()
    archive.add("a", now - 30 * 60 * S, rows=5)
    archive.add("b", now - 20 * 60 * S, rows=5)
    follow = Follow(archive.root, "--since", "1d", "--tail", "3")
    try:
        assert messages(follow.take(3)) == ["b 2", "b 3", "b 4"]
        assert follow.quiet(2.5) == []  # the older rows of the window are not printed
        archive.add("c", time.time_ns(), rows=1)
        assert messages(follow.take(1)) == ["c 0"]
    finally:
        code, _ = follow.interrupt()
    assert code == 0


def test_follow_with_where_and_json(archive: Archive) -> None:
    follow = Follow(archive.root, "--since", "1h", "--where", "status>=500", "--format", "json")
    try:
        assert follow.quiet(1.5) == []
        t = time.time_ns()
        payloads = [orjson.dumps({"status": s}).decode() for s in (200, 503, 500)]
        for i, text in enumerate(payloads):
            archive.add(text, t + i * S, rows=1, exact=True)
        got = [orjson.loads(line)["message"] for line in follow.take(2)]
        assert got == ['{"status":503}', '{"status":500}']
    finally:
        code, _ = follow.interrupt()
    assert code == 0
