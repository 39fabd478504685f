"""Hostile input to `archiver query` and friends: bad invocations and damaged archives.

Every bad invocation must answer with exactly one line on stderr and exit 2
(exit 1 only when the archive cannot be reached or the output cannot be
written). A damaged archive (zero-byte, truncated, CSV, foreign or mistyped
Parquet, a directory named like a file, a key that is not an archive name)
is answered: each bad file is skipped with one warning naming it and every
good row is printed, exit 0; with ``--strict`` the first bad file is one error
line naming it, exit 1. ``ls``, ``stats`` and ``compact`` survive the same
archive, and compaction never deletes or rewrites a file it cannot merge.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from servers import SeaweedFS

from archiver.archive.layout import NS_PER_HOUR, hour_stamp, object_key
from archiver.archive.message import format_timestamp_ns
from archiver.archive.supersede import parse_compact_name
from archiver.cli.main import main
from archiver.codec.encode import encode_partition
from archiver.codec.payloads import Payloads
from archiver.config import ArchiveSettings
from archiver.demo.flymessage import fly_record
from archiver.storage.open import open_storage

S = 1_000_000_000
HOUR = int(datetime(2025, 1, 15, 5, tzinfo=UTC).timestamp()) * S
#: The next hour: clean (good files only), so compaction can merge it while HOUR waits.
CLEAN = HOUR + NS_PER_HOUR
RANGE = ["--since", "2025-01-15", "--until", "2025-01-16"]
APP = "shop"


def archive_env(settings: ArchiveSettings) -> dict[str, str | None]:
    """Environment for the CLI: only ``--archive`` and (on S3) the SeaweedFS credentials count."""
    env: dict[str, str | None] = {"ARCHIVE_URL": None, "BUCKET_NAME": None}
    if settings.scheme == "s3":
        env |= {
            "AWS_ENDPOINT_URL_S3": settings.s3.endpoint_url,
            "AWS_ACCESS_KEY_ID": settings.s3.access_key_id,
            "AWS_SECRET_ACCESS_KEY": settings.s3.secret_access_key,
            "AWS_REGION": settings.s3.region,
        }
    return env


def cli(settings: ArchiveSettings, *args: str) -> Result:
    """Run ``archiver`` in-process against the archive of ``settings``."""
    url = settings.url if settings.scheme == "s3" else settings.prefix
    return CliRunner().invoke(main, [args[0], "--archive", url, *args[1:]], env=archive_env(settings))


def good_file(region: str, stamps: list[int], tag: str) -> bytes:
    payloads = [
        orjson.dumps(fly_record(APP, region, f"{tag} {i}", format_timestamp_ns(ts), instance="i1"))
        for i, ts in enumerate(stamps)
    ]
    (encoded,) = encode_partition(APP, region, Payloads(payloads), stamps[0]).files
    return encoded.data


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


GOOD = {
    (HOUR, "20250115T050010Z-a-00000000.parquet"): good_file("dfw", [HOUR + 10 * S, HOUR + 40 * S], "dfw-a"),
    (HOUR, "20250115T050015Z-a-00000000.parquet"): good_file("ams", [HOUR + 15 * S], "ams-a"),
    (HOUR, "20250115T050020Z-b-00000000.parquet"): good_file("dfw", [HOUR + 20 * S, HOUR + 30 * S], "dfw-b"),
    (CLEAN, "20250115T060015Z-a-00000000.parquet"): good_file("ams", [CLEAN + 15 * S], "ams-b"),
}
GOOD_MESSAGES = ["dfw-a 0", "ams-a 0", "dfw-b 0", "dfw-b 1", "dfw-a 1", "ams-b 0"]  # in time order
_SAMPLE = next(iter(GOOD.values()))
BAD = {
    "empty.parquet": b"",
    "half.parquet": _SAMPLE[: len(_SAMPLE) // 2],
    "head10.parquet": _SAMPLE[:10],
    "csv.parquet": b"timestamp,message\n2025-01-15T05:00:00Z,hello\n",
    "foreign.parquet": parquet_bytes(pa.table({"a": [1, 2], "b": ["x", "y"]})),
    "wrongtypes.parquet": parquet_bytes(
        pa.table(
            {
                "timestamp": pa.array([HOUR + 50 * S], pa.timestamp("ns", tz="UTC")),
                "instance": pa.array([1]),
                "message": pa.array([42]),
            }
        )
    ),
}
#: Ignored without a word: not archive keys (wrong suffix, or a path below a "file").
IGNORED = {"notes.txt": b"hello", "x.parquet/inner.parquet": _SAMPLE}


def bad_key(name: str) -> str:
    return object_key(APP, HOUR, f"{hour_stamp(HOUR)}-{name}")


def build(settings: ArchiveSettings) -> dict[str, bytes]:
    """Write the damaged archive (HOUR damaged, CLEAN not); every object it holds, by key."""
    objects = {object_key(APP, hour, name): data for (hour, name), data in GOOD.items()}
    objects |= {bad_key(name): data for name, data in (BAD | IGNORED).items()}

    async def put_all() -> None:
        storage = open_storage(settings)
        try:
            for key, data in objects.items():
                await storage.put(key, data)
        finally:
            await storage.close()

    asyncio.run(put_all())
    if settings.scheme == "file":
        # A directory named like a file, empty, next to the one that holds a file.
        os.makedirs(Path(settings.prefix, bad_key("emptydir.parquet")))
    return objects


def snapshot(settings: ArchiveSettings) -> dict[str, bytes]:
    """Every object in the archive with its bytes."""

    async def go() -> dict[str, bytes]:
        storage = open_storage(settings)
        try:
            return {info.key: await storage.get(info.key) for info in await storage.list("")}
        finally:
            await storage.close()

    return asyncio.run(go())


def messages(result: Result) -> list[str]:
    return [orjson.loads(line)["message"] for line in result.stdout.splitlines()]


def check_damaged_archive(settings: ArchiveSettings) -> None:
    objects = build(settings)
    bad_keys = sorted(bad_key(n) for n in BAD)

    # Without --strict: every good row, one warning per bad file naming it, exit 0.
    result = cli(settings, "query", "--app", APP, *RANGE, "--format", "json")
    assert result.exit_code == 0, result.output
    assert messages(result) == GOOD_MESSAGES
    warnings = result.stderr.splitlines()
    assert sorted(w.split(": ", 1)[1].split(": ")[0].removeprefix("skipped ") for w in warnings) == bad_keys
    assert all(w.startswith("warning: skipped ") for w in warnings)
    for tail in (["--tail", "2"], ["--limit", "2"]):
        short = cli(settings, "query", "--app", APP, *RANGE, "--format", "json", *tail)
        assert short.exit_code == 0, short.output
        assert messages(short) == (GOOD_MESSAGES[-2:] if tail[0] == "--tail" else GOOD_MESSAGES[:2])
    # Every app (no --app): the same.
    assert messages(cli(settings, "query", *RANGE, "--format", "json")) == GOOD_MESSAGES

    # --strict: one error line naming a bad file, exit 1, nothing of that hour printed.
    strict = cli(settings, "query", "--app", APP, *RANGE, "--strict")
    assert strict.exit_code == 1, strict.output
    (line,) = strict.stderr.splitlines()
    assert line.startswith("error: cannot read ") and line.endswith("(--strict)")
    assert any(key in line for key in bad_keys)
    assert strict.stdout == ""

    # ls: the hour with its good files' rows, a warning per bad file; --strict fails naming one.
    listed = cli(settings, "ls", "--app", APP)
    assert listed.exit_code == 0, listed.output
    hour_line, clean_line = (line.split() for line in listed.stdout.splitlines()[1:])
    assert hour_line[0] == "2025-01-15T05:00Z" and hour_line[2] == str(len(GOOD_MESSAGES) - 1)
    assert hour_line[-1] == "ams,dfw" and clean_line[0] == "2025-01-15T06:00Z" and clean_line[2] == "1"
    assert sorted(w.split()[2].rstrip(":") for w in listed.stderr.splitlines()) == bad_keys
    assert cli(settings, "ls").stdout.split() == [APP]
    strict_ls = cli(settings, "ls", "--app", APP, "--strict")
    assert strict_ls.exit_code == 1 and strict_ls.stderr.count("\n") == 1
    assert strict_ls.stderr.startswith("error: cannot read ")

    # stats: the good files counted, the bad ones named; --strict fails naming one.
    stats = cli(settings, "stats", "--since", "2025-01-01")
    assert stats.exit_code == 0, stats.output
    total = next(line for line in stats.stdout.splitlines() if line.startswith("total")).split()
    assert total[1:3] == [str(len(GOOD)), str(len(GOOD_MESSAGES))]
    assert sorted(w.split()[2].rstrip(":") for w in stats.stderr.splitlines()) == bad_keys
    strict_stats = cli(settings, "stats", "--since", "2025-01-01", "--strict")
    assert strict_stats.exit_code == 1 and strict_stats.stderr.count("\n") == 1, strict_stats.output
    assert "Traceback" not in strict_stats.output

    # compact, twice: the clean app-hour is compacted, the damaged one left byte for byte.
    for _ in range(2):
        compacted = cli(settings, "compact")
        assert compacted.exit_code == 0, compacted.output
        assert "Traceback" not in compacted.output
    after = snapshot(settings)
    for key, data in objects.items():
        if f"/{hour_stamp(HOUR)}" in key:
            assert after.get(key) == data, key  # damaged app-hour untouched, good and bad files alike
    clean = [k for k in after if f"/{hour_stamp(CLEAN)}" in k]
    assert len(clean) == 1 and parse_compact_name(clean[0].rpartition("/")[2])
    assert messages(cli(settings, "query", "--app", APP, *RANGE, "--format", "json")) == GOOD_MESSAGES
    named = [
        line
        for line in compacted.stdout.splitlines() + compacted.stderr.splitlines()
        if line.startswith("warning: ")
    ]
    assert sorted(line.split()[2].rstrip(":") for line in named) == bad_keys


def test_damaged_local_archive(local_settings: ArchiveSettings) -> None:
    check_damaged_archive(local_settings)


def test_damaged_s3_archive(s3_settings: ArchiveSettings) -> None:
    check_damaged_archive(s3_settings)


def test_s3_key_ending_in_slash_is_ignored(seaweedfs: SeaweedFS, s3_settings: ArchiveSettings) -> None:
    """A "directory marker" key with content, named like an archive file, is not read as one."""
    build(s3_settings)
    client = seaweedfs.client()
    marker = f"{s3_settings.prefix}/{bad_key('dir.parquet')}/"
    client.put_object(Bucket=s3_settings.bucket, Key=marker, Body=_SAMPLE)
    client.put_object(Bucket=s3_settings.bucket, Key=marker + "inner.parquet", Body=_SAMPLE)
    result = cli(s3_settings, "query", "--app", APP, *RANGE, "--format", "json")
    assert result.exit_code == 0, result.output
    assert messages(result) == GOOD_MESSAGES
    assert sorted(w.split()[2].rstrip(":") for w in result.stderr.splitlines()) == sorted(
        bad_key(n) for n in BAD
    )
    for command in (["ls", "--app", APP], ["stats", "--since", "2025-01-01"], ["compact"]):
        other = cli(s3_settings, *command)
        assert other.exit_code == 0 and "Traceback" not in other.output, other.output
    listed = client.list_objects_v2(Bucket=s3_settings.bucket, Prefix=marker)
    assert {o["Key"] for o in listed.get("Contents", [])} >= {marker + "inner.parquet"}


# --- bad invocations --------------------------------------------------------------------------

BAD_QUERY_ARGS: list[tuple[list[str], str]] = [
    (["--since", ""], "error: --since: empty value"),
    (["--until", ""], "error: --until: empty value"),
    (["--since", " "], "error: --since: empty value"),
    (["--since", "garbage"], "error: --since: expected"),
    (["--since", "yesterday"], "error: --since: expected"),
    (["--since", "-1h"], "error: --since: expected"),
    (["--since", "1e5h"], "error: --since: expected"),
    (["--since", "99999-01-01"], "error: --since: "),
    (["--since", "2026-02-30"], "error: --since: "),
    (["--since", "2026-11-24T25:00"], "error: --since: "),
    (["--since", "2026-11-24T13:00+99:00"], "error: --since: "),
    (["--since", "1h", "--until", "2h"], "error: --until (2h) must be after --since (1h)"),
    (["--since", "1h", "--until", "1h"], "error: --until (1h) must be after --since (1h)"),
    (["--format", "xml"], "error: --format: expected one of"),
    (["--format", ""], "error: --format: expected one of"),
    (["--tail", "0"], "error: Invalid value for '--tail'"),
    (["--tail", "-1"], "error: Invalid value for '--tail'"),
    (["--tail", "abc"], "error: Invalid value for '--tail'"),
    (["--limit", "0"], "error: Invalid value for '--limit'"),
    (["--limit", "1.5"], "error: Invalid value for '--limit'"),
    (["--grep", "(unclosed"], "error: --grep: invalid regular expression"),
    (["--grep", "x**"], "error: --grep: invalid regular expression"),
    (["--grep", "\\"], "error: --grep: invalid regular expression"),
    (["--grep", "a{1001}"], "error: --grep: invalid regular expression"),
    (["--grep", "(a{1000}){1000}"], "error: --grep: invalid regular expression"),
    (["--grep", "\\p{Nope}"], "error: --grep: invalid regular expression"),
    (["--grep", "\udcff"], "error: --grep: not valid UTF-8"),
    (["--contains", "\udcff\udcfe"], "error: --contains: not valid UTF-8"),
    (["--app", "\udcff"], "error: --app: not valid UTF-8"),
    (["--bogus"], "error: No such option '--bogus'"),
    (["-x"], "error: No such option '-x'"),
    (["extra-argument"], "error: Got unexpected extra argument"),
    (["--since"], "error: Option '--since' requires an argument"),
    (["--limit", "3", "--tail", "3"], "error: --limit and --tail cannot be combined"),
]


@pytest.mark.parametrize(("args", "message"), BAD_QUERY_ARGS)
def test_bad_query_arguments_are_one_line_exit_2(
    local_settings: ArchiveSettings, args: list[str], message: str
) -> None:
    os.makedirs(local_settings.prefix)
    result = cli(local_settings, "query", *args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


BAD_ARCHIVES: list[tuple[list[str], int, str]] = [
    (["--archive", ""], 2, "error: --archive: empty value"),
    (["--archive", "ftp://host/x"], 2, "error: ARCHIVE_URL: expected"),
    (["--archive", "s3://"], 2, "error: ARCHIVE_URL: expected"),
    (["--archive", "s3://bucket?x=1"], 2, "error: ARCHIVE_URL: expected"),
    (["--archive", "s3://bucket/../x"], 2, "error: ARCHIVE_URL: prefix"),
    (["--archive", "file://host/x"], 2, "error: ARCHIVE_URL: expected"),
    (
        ["--archive", "/nonexistent/archive"],
        1,
        "error: archive directory /nonexistent/archive does not exist",
    ),
    (["--archive", "/etc/hostname"], 1, "error: archive directory /etc/hostname does not exist"),
]


@pytest.mark.parametrize("command", ["query", "ls", "stats", "compact"])
@pytest.mark.parametrize(("args", "code", "message"), BAD_ARCHIVES)
def test_bad_archive_arguments(command: str, args: list[str], code: int, message: str) -> None:
    result = CliRunner().invoke(main, [command, *args], env={"ARCHIVE_URL": None, "BUCKET_NAME": None})
    assert result.exit_code == code, result.output
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("ls", ["--since", ""], "error: --since: empty value"),
        ("ls", ["--since", "garbage"], "error: --since: expected"),
        ("ls", ["--app", "\udcff"], "error: --app: not valid UTF-8"),
        ("ls", ["--bogus"], "error: No such option"),
        ("stats", ["--since", "garbage"], "error: --since: expected"),
        ("stats", ["--hours", "-1"], "error: Invalid value for '--hours'"),
        ("compact", ["--before", "garbage"], "error: --before: expected"),
        ("compact", ["--target-bytes", "abc"], "error: COMPACT_TARGET_BYTES: expected"),
    ],
)
def test_bad_arguments_of_other_readers(
    local_settings: ArchiveSettings, command: str, args: list[str], message: str
) -> None:
    os.makedirs(local_settings.prefix)
    result = cli(local_settings, command, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


def test_s3_without_credentials_is_one_line(tmp_path: Path) -> None:
    env = {k: None for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "ARCHIVE_URL")}
    env |= {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"}  # fmt: skip
    for command in ("query", "ls"):
        result = CliRunner().invoke(main, [command, "--archive", "s3://some-bucket"], env=env)
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr


def test_unwritable_output_is_one_line(local_settings: ArchiveSettings, tmp_path: Path) -> None:
    build(local_settings)
    missing = cli(local_settings, "query", *RANGE, "-o", str(tmp_path / "no" / "such" / "dir.csv"))
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: --output: cannot write ") and missing.stderr.count("\n") == 1
    if os.path.exists("/dev/full"):
        for fmt in ("text", "csv", "parquet"):
            full = cli(local_settings, "query", *RANGE, "--format", fmt, "-o", "/dev/full")
            assert full.exit_code == 1, full.output
            assert full.stderr.splitlines()[-1] == "error: cannot write /dev/full: No space left on device"
            assert "Traceback" not in full.stderr


def run_archiver(*args: str, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("ARCHIVE_URL", "BUCKET_NAME")}
    return subprocess.run(
        [sys.executable, "-m", "archiver", *args], stdout=stdout, stderr=subprocess.PIPE, env=env, timeout=60
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--tail", "abc"],
        ["--bogus"],
        ["--grep", "(unclosed"],
        ["--since", "yesterday"],
        ["--since", "2h", "--until", "3h"],
        ["--format", "xml"],
        ["--archive", "ftp://x/y"],
    ],
)
def test_bad_invocations_as_a_process(local_settings: ArchiveSettings, args: list[str]) -> None:
    """The real process: one line on stderr, no traceback, exit 2."""
    os.makedirs(local_settings.prefix)
    done = run_archiver("query", "--archive", local_settings.prefix, *args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == b""
    assert done.stderr.startswith(b"error: ") and done.stderr.count(b"\n") == 1, done.stderr


def test_damaged_archive_as_a_process(local_settings: ArchiveSettings) -> None:
    build(local_settings)
    done = run_archiver("query", "--archive", local_settings.prefix, *RANGE, "--format", "json")
    assert done.returncode == 0, done.stderr
    assert [orjson.loads(line)["message"] for line in done.stdout.splitlines()] == GOOD_MESSAGES
    assert done.stderr.count(b"\n") == len(BAD) and b"Traceback" not in done.stderr
    strict = run_archiver("query", "--archive", local_settings.prefix, *RANGE, "--strict")
    assert strict.returncode == 1 and strict.stderr.count(b"\n") == 1, strict.stderr
    with open("/dev/full", "wb") as device:
        full = run_archiver("query", "--archive", local_settings.prefix, *RANGE, stdout=device)
    *warnings, last = full.stderr.splitlines()
    assert full.returncode == 1 and len(warnings) == len(BAD), full.stderr
    assert last == b"error: cannot write the results to stdout: No space left on device"


def test_huge_limit_and_tail(local_settings: ArchiveSettings) -> None:
    build(local_settings)
    for option in ("--limit", "--tail"):
        result = cli(local_settings, "query", *RANGE, "--format", "json", option, str(10**30))
        assert result.exit_code == 0, result.output
        assert messages(result) == GOOD_MESSAGES


def test_hour_range_constant() -> None:
    assert HOUR % NS_PER_HOUR == 0


def test_unreadable_compacted_file_is_named_not_dropped(local_settings: ArchiveSettings) -> None:
    """A compacted file with a damaged footer may hold the only copy of its rows: warn, never skip silently."""
    build(local_settings)
    assert cli(local_settings, "compact").exit_code == 0
    (compacted,) = Path(local_settings.prefix).glob("app=shop/*/20250115T06-c-*.parquet")
    compacted.write_bytes(compacted.read_bytes()[:-20])  # inputs already deleted by compaction
    # A live file written after the compaction: the reader must now look at the compacted footer.
    late = good_file("ams", [CLEAN + 50 * S], "ams-late")
    (compacted.parent / "20250115T060050Z-c-00000000.parquet").write_bytes(late)
    result = cli(local_settings, "query", "--app", APP, *RANGE, "--format", "json")
    assert result.exit_code == 0 and "ams-late 0" in result.stdout
    assert compacted.name in result.stderr and "warning: skipped" in result.stderr
    strict = cli(local_settings, "query", "--app", APP, "--since", "2025-01-15T06:00", "--until", "2025-01-16",
                 "--strict")  # fmt: skip
    assert strict.exit_code == 1 and compacted.name in strict.stderr
