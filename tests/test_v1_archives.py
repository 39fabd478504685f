"""Archives written by schema v1 (layout v1) stay readable, and compaction moves them to v2.

The archive mixes, in the same app-hours, files as v1 wrote them (nanosecond
``timestamp``, no ``timestamp_nanos``/``region`` columns, ``hour=``/``region=``
folders, names escaped the v1 way, a v1 compaction group left with its inputs
by a crash) with v2 live files, and a batch imported by v1 and imported again
by v2. ``query``, ``ls``, ``stats`` and ``prune`` read it; ``compact`` leaves
one v2 group per app-hour with every row exactly once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from harness import archived_payloads, cli_on, normalise, read_archive
from v1_files import to_v1

from archiver.archive import schema
from archiver.archive.escaping import (
    encode_value_v1,
    partition_value,
    stored_value,
    stored_value_v1,
    value_segment,
)
from archiver.archive.layout import NS_PER_HOUR, object_key, object_name, parse_key, v1_object_key
from archiver.archive.supersede import input_digest, parse_compact_name, replaces_metadata
from archiver.codec.encode import encode_partition
from archiver.codec.payloads import Payloads
from archiver.config import ArchiveSettings
from archiver.demo.flymessage import fly_record
from archiver.manage.prune import prune
from archiver.storage.open import open_storage

S = 1_000_000_000
HOUR = int(datetime(2026, 11, 21, 13, tzinfo=UTC).timestamp()) * S
#: ``ü`` * 100 is too long for a key in both layouts, and shortened differently by each.
LONG = "ü" * 100
APPS = {"sandwich": ("dfw", "ams"), "a b": ("ord",), "x" * 300: ("iad",), LONG: ("dfw",), "": ("",)}
RANGE = ["--since", "2026-11-20", "--until", "2026-11-26"]
#: Of every (app, region)'s messages i = 0..11 (even i in hour 13, odd in 14), part i % 6:
#: parts 0-3 written by v1, parts 4-5 by v2. Hour 13 holds v1 parts 0 and 2, which v1 compacted.
V1_PARTS, PARTS = 4, 6


def messages(apps: dict[str, tuple[str, ...]] = APPS) -> dict[tuple[str, str], list[bytes]]:
    """Twelve messages per (app, region) over two hours, every timestamp distinct and nanosecond exact."""
    out: dict[tuple[str, str], list[bytes]] = {}
    n = 0
    for app, regions in apps.items():
        for region in regions:
            batch = []
            for i in range(12):
                n += 1
                ts = HOUR + (i % 2) * NS_PER_HOUR + n * 7_000_001_001
                seconds, nanos = divmod(ts, S)
                stamp = f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"
                record = fly_record(app, region, f"{app[:8]} {region} {i}", stamp, instance="i1")
                batch.append(orjson.dumps(record))
            out[(app, region)] = batch
    return out


async def write_mixed(root: Path, sent: dict[tuple[str, str], list[bytes]]) -> None:
    """Per (app, region): v1 flushes, a v1 compaction of hour 13 (its inputs left: a crash), v2 flushes."""
    storage = open_storage(ArchiveSettings("file", "", str(root)))
    seq = 0
    try:
        for (app, region), batch in sent.items():
            v1_app, v1_region = encode_value_v1(app), encode_value_v1(region)
            for part in range(PARTS):
                payloads = Payloads(batch[part::PARTS])
                # Each version's service parses with the values its keys give back (full names in extra).
                if part < V1_PARTS:
                    encoded = encode_partition(stored_value_v1(app), stored_value_v1(region), payloads, HOUR)
                else:
                    encoded = encode_partition(stored_value(app), stored_value(region), payloads, HOUR)
                for f in encoded.files:
                    seq += 1
                    name = object_name(f.min_timestamp_ns, "w1", seq)
                    if part < V1_PARTS:
                        await storage.put(v1_object_key(v1_app, v1_region, f.hour_ns, name), to_v1(f.data))
                    else:
                        await storage.put(object_key(partition_value(app), f.hour_ns, name), f.data)
            folder = f"app={v1_app}/date=2026-11-21/hour=13/region={v1_region}/"
            inputs = sorted(i.key for i in await storage.list(folder))
            names = [k.rpartition("/")[2] for k in inputs]
            assert len(names) == 2
            table = pa.concat_tables([pq.read_table(pa.BufferReader(await storage.get(k))) for k in inputs])
            sink = pa.BufferOutputStream()
            pq.write_table(table.sort_by("timestamp"), sink)
            merged = to_v1(bytes(sink.getvalue().to_pybytes()), replaces_metadata(names))
            await storage.put(f"{folder}c-{input_digest(names)}-0of1.parquet", merged)
    finally:
        await storage.close()


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, dict[tuple[str, str], list[bytes]]]:
    root = tmp_path / "archive"
    sent = messages()
    asyncio.run(write_mixed(root, sent))
    return root, sent


def payloads_of(sent: dict[tuple[str, str], list[bytes]], app: str | None = None) -> Counter[bytes]:
    return Counter(normalise(p) for (a, _), batch in sent.items() if app in (None, a) for p in batch)


def json_rows(root: Path, *args: str) -> Counter[bytes]:
    result = cli_on(root, "query", *RANGE, "--format", "json", *args)
    return Counter(normalise(line) for line in result.stdout_bytes.splitlines())


def test_mixed_archive_is_read_exactly(archive: tuple[Path, dict[tuple[str, str], list[bytes]]]) -> None:
    root, sent = archive
    files = read_archive(ArchiveSettings("file", "", str(root)))
    assert {f.region is None for f in files} == {True, False}  # both layouts
    assert json_rows(root) == payloads_of(sent)  # the v1 group's inputs are not read twice
    found: Counter[bytes] = Counter()
    for name in dict.fromkeys(cli_on(root, "ls").stdout.split("\n")[:-1]):
        rows = json_rows(root, "--app", name)
        assert rows, name
        found |= rows
    assert found == payloads_of(sent)
    for app, regions in APPS.items():
        assert json_rows(root, "--app", app) == payloads_of(sent, app)
        region_only = Counter(normalise(p) for p in sent[(app, regions[0])])
        assert json_rows(root, "--app", app, "--region", regions[0]) == region_only
    text = cli_on(root, "query", *RANGE, "--app", "sandwich", "--region", "ams").stdout.splitlines()
    assert len(text) == 12 and all(" ams [" in line for line in text)
    hours = cli_on(root, "ls", "--app", "sandwich").stdout.splitlines()
    assert [line.split()[0] for line in hours[1:]] == ["2026-11-21T13:00Z", "2026-11-21T14:00Z"]
    assert sum(int(line.split()[2]) for line in hours[1:]) == 24 and hours[1].split()[-1] == "ams,dfw"
    stats = cli_on(root, "stats", "--since", "2026-11-20").stdout
    (total,) = [line for line in stats.splitlines() if line.startswith("total")]
    # Stats counts every file: the interrupted v1 compaction's group too (4 rows of each (app, region)).
    assert int(total.split()[2]) == sum(len(b) for b in sent.values()) + 4 * len(sent)


def test_compaction_moves_v1_to_v2(archive: tuple[Path, dict[tuple[str, str], list[bytes]]]) -> None:
    root, sent = archive
    done = cli_on(root, "compact", "--before", "2026-11-22")
    # LONG was shortened differently by v1 and v2: two app values (as readers saw them), so two
    # app-hours each hour; every other app is one app-hour an hour, its v1 and v2 files together.
    values = [*(stored_value(app) for app in APPS if app != LONG), stored_value(LONG), stored_value_v1(LONG)]
    assert f"compacted {2 * len(values)} of {2 * len(values)} closed app-hours" in done.stderr, done.stderr
    files = read_archive(ArchiveSettings("file", "", str(root)))
    assert all(
        f.region is None and parse_compact_name(f.key.rpartition("/")[2]) for f in files
    )  # v2, compacted
    assert Counter((f.app, f.hour_ns) for f in files) == {
        (app, HOUR + h * NS_PER_HOUR): 1 for app in values for h in (0, 1)
    }
    for f in files:
        assert f.metadata[schema.SCHEMA_VERSION_KEY] == b"2"
        assert f.key.startswith(f"app={value_segment(f.app)}/")
    assert archived_payloads(files) == payloads_of(sent)
    assert json_rows(root) == payloads_of(sent)
    for app in APPS:
        assert json_rows(root, "--app", app) == payloads_of(sent, app)
    again = cli_on(root, "compact", "--before", "2026-11-22")
    assert f"compacted 0 of {2 * len(values)} closed app-hours" in again.stderr


def test_a_batch_imported_by_v1_and_again_by_v2_is_read_once(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    # LONG left out: its v1 and v2 files are two apps to a reader, so a re-import is not recognised.
    sent = messages({app: regions for app, regions in APPS.items() if app != LONG})
    data = b"".join(p + b"\n" for batch in sent.values() for p in batch)
    cli_on(root, "import", "-", data=data)
    full_names = {stored_value(app): app for app, _ in sent}

    async def as_v1() -> None:  # what v1's import wrote: the same digest, in hour=/region= folders
        storage = open_storage(ArchiveSettings("file", "", str(root)))
        try:
            for info in await storage.list(""):
                parsed = parse_key(info.key)
                assert parsed is not None and parsed.layout == 2
                table = pq.read_table(pa.BufferReader(await storage.get(info.key)))
                (region,) = set(table["region"].to_pylist())
                name = parsed.name.split("-", 1)[1]  # i-<digest>.parquet
                app = full_names[parsed.app]
                key = v1_object_key(encode_value_v1(app), encode_value_v1(region), parsed.hour_ns, name)
                await storage.put(key, to_v1(await storage.get(info.key)))
                await storage.delete([info.key])
        finally:
            await storage.close()

    asyncio.run(as_v1())
    again = cli_on(root, "import", "-", data=data)
    assert "(0 already there)" in again.stderr  # new keys: the v2 names of the same batches
    assert json_rows(root) == payloads_of(sent)  # each batch once, not twice
    cli_on(root, "compact", "--before", "2026-11-22")
    files = read_archive(ArchiveSettings("file", "", str(root)))
    assert all(parse_compact_name(f.key.rpartition("/")[2]) for f in files)
    assert archived_payloads(files) == payloads_of(sent)


def test_prune_takes_both_layouts(archive: tuple[Path, dict[tuple[str, str], list[bytes]]]) -> None:
    root, _ = archive
    settings = ArchiveSettings("file", "", str(root))
    hours = Counter(f.hour_ns for f in read_archive(settings))
    lines: list[str] = []

    async def run() -> None:
        storage = open_storage(settings)
        try:
            await prune(storage, (), HOUR + NS_PER_HOUR, dry_run=False, say=lines.append)  # hour 13 ended
        finally:
            await storage.close()

    asyncio.run(run())
    assert {f.hour_ns for f in read_archive(settings)} == {HOUR + NS_PER_HOUR}
    assert sum(int(line.split("  ")[1].split()[0]) for line in lines) == hours[HOUR]
    assert any("/hour=13/ " in line for line in lines) and any("/20261121T13 " in line for line in lines)
