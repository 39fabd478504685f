"""The navigator of apps, days, hours and files (archiver.archive.navigator), on a real local archive of both layouts."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from archiver.archive.escaping import encode_value, encode_value_v1
from archiver.archive.layout import NS_PER_HOUR, day_prefix, hour_stamp, object_key, v1_object_key
from archiver.archive.navigator import (
    NS_PER_DAY,
    AppSelection,
    ArchiveFile,
    DatedPrefix,
    Span,
    app_selection,
    day_spans,
    day_start_ns,
    files_of_days,
    list_apps,
    list_days,
    list_each,
    list_files,
    listed_app_segments,
    select_apps,
    spans,
)
from archiver.storage.interface import ObjectInfo, Storage
from archiver.storage.local import LocalStorage

S = 1_000_000_000
DAY = int(datetime(2026, 11, 24, tzinfo=UTC).timestamp()) * S  # a Tuesday, 00:00 UTC


def at(day: int, hour: int) -> int:
    """Start of ``hour`` on the day ``day`` days after DAY."""
    return DAY + day * NS_PER_DAY + hour * NS_PER_HOUR


class ListingLog(Storage):
    """A real storage that records the prefixes it is asked to list."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.url = inner.url
        self.listed: list[str] = []

    async def put(self, key: str, data: bytes) -> None:
        await self.inner.put(key, data)

    async def get(self, key: str) -> bytes:
        return await self.inner.get(key)

    async def list(self, prefix: str) -> builtins.list[ObjectInfo]:
        self.listed.append(prefix)
        return await self.inner.list(prefix)

    async def list_dirs(self, prefix: str) -> builtins.list[str]:
        return await self.inner.list_dirs(prefix)

    async def delete(self, keys: Sequence[str]) -> None:
        await self.inner.delete(keys)

    async def check(self) -> None:
        await self.inner.check()

    async def close(self) -> None:
        await self.inner.close()


def test_spans_merge_whole_days_only() -> None:
    assert spans(at(0, 5) + 1, at(0, 6)) == [Span(at(0, 5), at(0, 6))]
    found = spans(at(0, 22) + 30 * S, at(2, 1) + 1)
    assert found == [
        Span(at(0, 22), at(0, 23)),
        Span(at(0, 23), at(1, 0)),
        Span(at(1, 0), at(2, 0)),
        Span(at(2, 0), at(2, 1)),
        Span(at(2, 1), at(2, 2)),
    ]
    assert [s.hours for s in found] == [1, 1, 24, 1, 1]
    assert found[2].prefixes("my app") == ["app=my app/date=2026-11-25/"]
    # An hour: the v2 prefix of its files, the day files of its day (a day that ended: it may be rolled up),
    # and the v1 folder of old data, in the layouts the segment is valid in.
    assert found[0].prefixes("a") == [
        "app=a/date=2026-11-24/20261124T22",
        "app=a/date=2026-11-24/20261124-d-",
        "app=a/date=2026-11-24/hour=22/",
    ]
    assert found[0].prefixes("a b") == [
        "app=a b/date=2026-11-24/20261124T22",
        "app=a b/date=2026-11-24/20261124-d-",
    ]
    assert found[0].prefixes("a%20b") == ["app=a%20b/date=2026-11-24/hour=22/"]
    # The day in progress has no day files yet: its hours list only their own prefix.
    now = time.time_ns()
    today = Span(now - now % NS_PER_HOUR, now - now % NS_PER_HOUR + NS_PER_HOUR)
    assert [p for p in today.prefixes("a") if "-d-" in p] == []
    assert spans(at(0, 0), at(1, 0)) == [Span(at(0, 0), at(1, 0))]  # exactly one day


def test_day_spans_list_a_day_covered_in_good_part_once() -> None:
    # 24 h from 02:30: 22 hours of the first day as one span (the day's prefix), then 3 single hours.
    found = day_spans(at(0, 2) + 30 * 60 * S, at(1, 2) + 30 * 60 * S)
    assert found == [Span(at(0, 2), at(1, 0)), *(Span(at(1, h), at(1, h + 1)) for h in range(3))]
    assert found[0].prefixes("a") == ["app=a/date=2026-11-24/"]
    assert sum(s.hours for s in found) == sum(s.hours for s in spans(at(0, 2) + 1, at(1, 2) + 1)) == 25
    # Whole days stay whole; a few hours stay hour by hour (what --follow polls).
    assert day_spans(at(0, 22), at(2, 1)) == spans(at(0, 22), at(2, 1))
    assert day_prefix("a", at(0, 0)) == "app=a/date=2026-11-24/"


@pytest.mark.parametrize(
    ("prefix", "day"),
    [
        ("app=a/date=2026-11-24/", at(0, 0)),
        ("app=a/date=2026-13-01/", None),
        ("app=a/date=junk/", None),
        ("app=a/date=٢٠٢٦-11-24/", None),
        ("app=a/other/", None),
    ],
)
def test_dated_prefixes_read_back(prefix: str, day: int | None) -> None:
    assert day_start_ns(prefix) == day


def name(hour_ns: int, tag: str) -> str:
    """A v2 file name of the hour."""
    return f"{hour_stamp(hour_ns)}-{tag}.parquet"


@pytest.fixture
def archive(tmp_path: Path) -> Storage:
    """Two apps over three days in both layouts, a foreign app directory, foreign files beside archive files."""
    keys = [
        v1_object_key("a", "dfw", at(0, 22), "f1.parquet"),
        object_key("a", at(0, 23), name(at(0, 23), "f2")),
        v1_object_key("a", "dfw", at(1, 5), "f3.parquet"),
        object_key("a", at(2, 0), name(at(2, 0), "f4")),
        object_key("a", at(2, 1), name(at(2, 1), "f5")),
        object_key(encode_value("b c"), at(1, 0), name(at(1, 0), "g1")),
        v1_object_key(encode_value_v1("b c"), "dfw", at(1, 0), "g2.parquet"),
        "app=a/date=2026-11-25/hour=05/region=dfw/README.txt",  # not an archive key
        "app=a/date=2026-11-25/notes.parquet",  # not named by its hour
        "app=a/date=junk/x.parquet",  # not a day
        "app=%zz/date=2026-11-24/hour=01/region=r/x.parquet",  # an app segment that does not decode
        "_archiver/claims/a/20261124T22/1",  # the archiver's own objects
        "notes/x.parquet",
    ]

    async def write() -> None:
        storage = LocalStorage(str(tmp_path / "archive"))
        for key in keys:
            await storage.put(key, b"x" * len(key))

    asyncio.run(write())
    return ListingLog(LocalStorage(str(tmp_path / "archive")))


def test_apps_given_or_listed(archive: Storage) -> None:
    assert asyncio.run(listed_app_segments(archive)) == [
        "%zz",
        "a",
        "b c",
        "b%20c",
    ]  # as listed, even foreign
    assert asyncio.run(app_selection(archive)) == AppSelection(("%zz", "a", "b c", "b%20c"), None)
    # Given: every segment of each name (v2, then v1), once; only files of those names wanted.
    given = asyncio.run(app_selection(archive, ["b c", "a", "b c"]))
    assert given == select_apps(["b c", "a"]) == AppSelection(("b c", "b%20c", "a"), frozenset({"a", "b c"}))
    assert asyncio.run(list_apps(archive)) == ["a", "b c"]  # decoded, once; a foreign segment left out


def test_days_and_hours_listed(archive: Storage) -> None:
    days = asyncio.run(list_days(archive, "a"))
    assert days == [
        DatedPrefix("app=a/date=2026-11-24/", at(0, 0), at(1, 0)),
        DatedPrefix("app=a/date=2026-11-25/", at(1, 0), at(2, 0)),
        DatedPrefix("app=a/date=2026-11-26/", at(2, 0), at(3, 0)),
    ]  # date=junk skipped
    files = asyncio.run(list_files(archive, [days[0].prefix]))
    assert [f.hour_prefix for f in files] == [
        "app=a/date=2026-11-24/20261124T23",
        "app=a/date=2026-11-24/hour=22/",
    ]
    assert asyncio.run(list_days(archive, "missing")) == []


def test_files_in_range_with_partition_values(archive: Storage) -> None:
    prefixes = [p for s in spans(at(0, 23), at(2, 1)) for p in s.prefixes("a")]
    files = asyncio.run(list_files(archive, prefixes, at(0, 23) + 1, at(2, 1)))
    f2, f4 = (
        object_key("a", at(0, 23), name(at(0, 23), "f2")),
        object_key("a", at(2, 0), name(at(2, 0), "f4")),
    )
    assert files == [
        ArchiveFile(f2, len(f2), "a", None, at(0, 23)),
        ArchiveFile(v1_object_key("a", "dfw", at(1, 5), "f3.parquet"), 51, "a", "dfw", at(1, 5)),
        ArchiveFile(f4, len(f4), "a", None, at(2, 0)),
    ]  # README.txt and notes.parquet are no archive keys; f5's hour starts at the (exclusive) end
    assert files[0].name == files[0].relative_name == "20261124T23-f2.parquet"
    assert files[0].date_prefix == "app=a/date=2026-11-24/"
    assert files[1].relative_name == "hour=05/region=dfw/f3.parquet"
    everything = asyncio.run(list_files(archive, ["app=a/", "app=b c/", "app=b%20c/"]))
    assert [f.name.removeprefix(hour_stamp(f.hour_ns) + "-") for f in everything] == [
        *(f"f{i}.parquet" for i in (2, 1, 3, 4, 5)), "g1.parquet", "g2.parquet"]  # fmt: skip
    assert everything[-1].app == everything[-2].app == "b c"
    only_a = asyncio.run(list_files(archive, ["app=a/"], apps=select_apps(["b c"])))
    assert only_a == []


def test_files_of_days_lists_only_the_days_in_range(archive: ListingLog) -> None:
    files = asyncio.run(files_of_days(archive, "a", at(1, 5), at(2, 0)))
    assert [f.name for f in files] == ["f3.parquet"]
    assert archive.listed == ["app=a/date=2026-11-25/"]  # not the days before or after
    archive.listed.clear()
    assert len(asyncio.run(files_of_days(archive, "a"))) == 5
    assert archive.listed == [f"app=a/date=2026-11-2{d}/" for d in (4, 5, 6)]


def test_list_each_keeps_the_order_of_prefixes_and_every_object(archive: Storage) -> None:
    found = asyncio.run(list_each(archive, ["notes/", "app=a/date=junk/", "app=none/"], concurrency=1))
    assert found == [[ObjectInfo("notes/x.parquet", 15)], [ObjectInfo("app=a/date=junk/x.parquet", 25)], []]
