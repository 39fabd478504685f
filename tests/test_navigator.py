"""The navigator of apps, days, hours and files (archiver.archive.navigator), on a real local archive."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from archiver.archive.layout import NS_PER_HOUR, encode_value, object_key
from archiver.archive.navigator import (
    NS_PER_DAY,
    ArchiveFile,
    DatedPrefix,
    Span,
    app_segments,
    day_prefix,
    day_start_ns,
    files_of_days,
    hour_of_day,
    list_apps,
    list_days,
    list_each,
    list_files,
    list_hours,
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
    assert found[2].prefix("my%20app") == "app=my%20app/date=2026-11-25/"
    assert found[0].prefix("a") == "app=a/date=2026-11-24/hour=22/"
    assert spans(at(0, 0), at(1, 0)) == [Span(at(0, 0), at(1, 0))]  # exactly one day
    assert day_prefix("a", at(0, 0)) == "app=a/date=2026-11-24/"


@pytest.mark.parametrize(
    ("prefix", "day", "hour"),
    [
        ("app=a/date=2026-11-24/", at(0, 0), None),
        ("app=a/date=2026-11-24/hour=07/", at(0, 0), 7),
        ("app=a/date=2026-11-24/hour=23/", at(0, 0), 23),
        ("app=a/date=2026-11-24/hour=24/", at(0, 0), None),
        ("app=a/date=2026-11-24/hour=7/", at(0, 0), None),
        ("app=a/date=2026-13-01/", None, None),
        ("app=a/date=junk/", None, None),
        ("app=a/other/", None, None),
    ],
)
def test_dated_prefixes_read_back(prefix: str, day: int | None, hour: int | None) -> None:
    assert hour_of_day(prefix) == hour
    if "hour=" not in prefix:
        assert day_start_ns(prefix) == day


@pytest.fixture
def archive(tmp_path: Path) -> Storage:
    """Two apps over three days, with a foreign app directory and foreign files beside archive files."""
    keys = [
        object_key("a", "dfw", at(0, 22), "f1.parquet"),
        object_key("a", "ams", at(0, 23), "f2.parquet"),
        object_key("a", "dfw", at(1, 5), "f3.parquet"),
        object_key("a", "dfw", at(2, 0), "f4.parquet"),
        object_key("a", "dfw", at(2, 1), "f5.parquet"),
        object_key(encode_value("b c"), "dfw", at(1, 0), "g1.parquet"),
        "app=a/date=2026-11-25/hour=05/region=dfw/README.txt",  # not an archive key
        "app=a/date=junk/x.parquet",  # not a day
        "app=%zz/date=2026-11-24/hour=01/region=r/x.parquet",  # an app segment that does not decode
        "notes/x.parquet",
    ]

    async def write() -> None:
        storage = LocalStorage(str(tmp_path / "archive"))
        for key in keys:
            await storage.put(key, b"x" * len(key))

    asyncio.run(write())
    return ListingLog(LocalStorage(str(tmp_path / "archive")))


def test_apps_given_or_listed(archive: Storage) -> None:
    assert asyncio.run(app_segments(archive)) == ["%zz", "a", "b%20c"]  # as listed, even foreign
    assert asyncio.run(app_segments(archive, ["b c", "a", "b c"])) == ["b%20c", "a"]  # given: encoded, once
    assert asyncio.run(list_apps(archive)) == ["a", "b c"]  # decoded; a foreign segment left out


def test_days_and_hours_listed(archive: Storage) -> None:
    days = asyncio.run(list_days(archive, "a"))
    assert days == [
        DatedPrefix("app=a/date=2026-11-24/", at(0, 0), at(1, 0)),
        DatedPrefix("app=a/date=2026-11-25/", at(1, 0), at(2, 0)),
        DatedPrefix("app=a/date=2026-11-26/", at(2, 0), at(3, 0)),
    ]  # date=junk skipped
    hours = asyncio.run(list_hours(archive, days[0]))
    assert hours == [
        DatedPrefix("app=a/date=2026-11-24/hour=22/", at(0, 22), at(0, 23)),
        DatedPrefix("app=a/date=2026-11-24/hour=23/", at(0, 23), at(1, 0)),
    ]
    assert asyncio.run(list_days(archive, "missing")) == []


def test_files_in_range_with_partition_values(archive: Storage) -> None:
    prefixes = [s.prefix("a") for s in spans(at(0, 23), at(2, 1))]
    files = asyncio.run(list_files(archive, prefixes, at(0, 23) + 1, at(2, 1)))
    assert files == [
        ArchiveFile(object_key("a", "ams", at(0, 23), "f2.parquet"), 51, "a", "ams", at(0, 23)),
        ArchiveFile(object_key("a", "dfw", at(1, 5), "f3.parquet"), 51, "a", "dfw", at(1, 5)),
        ArchiveFile(object_key("a", "dfw", at(2, 0), "f4.parquet"), 51, "a", "dfw", at(2, 0)),
    ]  # README.txt is no archive key; f5's hour starts at the (exclusive) end
    assert files[0].name == "f2.parquet"
    assert files[0].partition_prefix == "app=a/date=2026-11-24/hour=23/region=ams/"
    everything = asyncio.run(list_files(archive, ["app=a/", "app=b%20c/"]))
    assert [f.name for f in everything] == [*(f"f{i}.parquet" for i in range(1, 6)), "g1.parquet"]
    assert everything[-1].app == "b c"


def test_files_of_days_lists_only_the_days_in_range(archive: ListingLog) -> None:
    files = asyncio.run(files_of_days(archive, "a", at(1, 5), at(2, 0)))
    assert [f.name for f in files] == ["f3.parquet"]
    assert archive.listed == ["app=a/date=2026-11-25/"]  # not the days before or after
    archive.listed.clear()
    assert [f.name for f in asyncio.run(files_of_days(archive, "a"))] == [
        f"f{i}.parquet" for i in range(1, 6)
    ]
    assert archive.listed == [f"app=a/date=2026-11-2{d}/" for d in (4, 5, 6)]


def test_list_each_keeps_the_order_of_prefixes_and_every_object(archive: Storage) -> None:
    found = asyncio.run(list_each(archive, ["notes/", "app=a/date=junk/", "app=none/"], concurrency=1))
    assert found == [[ObjectInfo("notes/x.parquet", 15)], [ObjectInfo("app=a/date=junk/x.parquet", 25)], []]
