"""Archive keys: partition values in one safe segment and back, long values shortened, keys and names (v2 and v1)."""

from __future__ import annotations

import pytest

from archiver.archive.escaping import (
    DEFAULT_PARTITION,
    decode_value,
    decode_value_v1,
    encode_value,
    encode_value_v1,
    partition_value,
    segments_of,
    stored_value,
    stored_value_v1,
    values_of,
)
from archiver.archive.layout import (
    NS_PER_HOUR,
    hour_prefix,
    hour_start_ns,
    import_name,
    object_key,
    object_name,
    parse_key,
    v1_hour_prefix,
    v1_object_key,
)
from archiver.archive.supersede import compact_name, identity, parse_compact_name

VALUES = ["sandwich", "", ".", "..", "a/b", "../../etc", "a=b", "100%", "~", "tab\there", "\x00", "über", ".x",
          "a..b", "x:y", "it's", "a b", "日本", DEFAULT_PARTITION, "%5F_HIVE_DEFAULT_PARTITION__"]  # fmt: skip


@pytest.mark.parametrize("value", VALUES)
def test_partition_values_round_trip_and_stay_in_one_segment(value: str) -> None:
    for encode, decode in ((encode_value, decode_value), (encode_value_v1, decode_value_v1)):
        segment = encode(value)
        assert decode(segment) == value
        assert "/" not in segment and "=" not in segment and segment != ""
        assert all(ord(c) >= 0x20 and c != "\x7f" for c in segment)
    assert encode_value_v1(value) not in (".", "..")  # v2 needs no dot escaping: a segment is app=<value>
    key = object_key(encode_value(value), 0, object_name(0, "w", 1))
    assert not any(part in ("", ".", "..") for part in key.split("/"))
    parsed = parse_key(key)
    assert parsed is not None and (parsed.app, parsed.region, parsed.layout) == (value, None, 2)
    key = v1_object_key(encode_value_v1(value), encode_value_v1(value), 0, "f.parquet")
    parsed = parse_key(key)
    assert parsed is not None and (parsed.app, parsed.region, parsed.layout) == (value, value, 1)


def test_hive_escaping_of_v2() -> None:
    assert encode_value("my-app-42") == "my-app-42"
    assert encode_value("über-app") == "über-app" and encode_value("日本") == "日本"  # raw UTF-8
    assert (
        encode_value("a=b") == "a%3Db" and encode_value("100%") == "100%25" and encode_value("a/b") == "a%2Fb"
    )
    assert encode_value("~") == "%7E" and encode_value("a b") == "a b" and encode_value("x:y") == "x%3Ay"
    assert encode_value("") == DEFAULT_PARTITION
    assert encode_value(DEFAULT_PARTITION) == "%5F_HIVE_DEFAULT_PARTITION__"
    assert encode_value("\ud800") == "%ED%A0%80"  # a lone surrogate: its surrogatepass bytes
    for other in ("%C3%BCber-app", "%7e", "%41", "a%20b", "~"):
        with pytest.raises(ValueError):
            decode_value(other)  # not the canonical spelling of any value


def test_long_values_are_shortened_in_bytes() -> None:
    long = partition_value("x" * 500)
    assert len(long) <= 128 and long.startswith("x" * 95 + "~") and long == encode_value("x" * 500)
    umlauts = encode_value("ü" * 100)  # 200 bytes: shortened, prefix cut at a character boundary
    assert len(umlauts.encode()) <= 128 and umlauts.startswith("ü" * 47 + "~")
    assert partition_value(None) == "unknown"
    assert stored_value("ü" * 100) == umlauts and stored_value_v1("ü" * 100).startswith("ü" * 15 + "~")


def test_a_name_maps_to_every_segment_of_its_files() -> None:
    assert segments_of("sandwich") == ["sandwich"]
    assert segments_of("a b") == ["a b", "a%20b"]
    assert segments_of("") == [DEFAULT_PARTITION, "~"]
    name = "ü" * 100
    found = segments_of(name)
    assert found[:2] == [encode_value(name), encode_value_v1(name)]
    assert encode_value(stored_value_v1(name)) in found  # where compaction moves its v1 files
    # The name `archiver ls` prints for a shortened app finds the shortened segments it came from.
    assert encode_value(name) in segments_of(stored_value(name))
    assert encode_value_v1(name) in segments_of(stored_value_v1(name))
    assert values_of(name) == {name, stored_value(name), stored_value_v1(name)}


def test_keys_and_names() -> None:
    ts = 1_764_000_000_123_456_789  # 2025-11-24T16:00:00.123456789Z
    hour = hour_start_ns(ts)
    key = object_key("sandwich", hour, object_name(ts, "abc123", 7))
    assert key == "app=sandwich/date=2025-11-24/20251124T160000Z-abc123-00000007.parquet"
    assert key.startswith(hour_prefix("sandwich", hour)) and hour_prefix("a", hour).endswith("/20251124T16")
    parsed = parse_key(key)
    assert parsed is not None and parsed.hour_ns == hour and parsed.hour_ns % NS_PER_HOUR == 0
    assert parsed.relative_name == parsed.name == "20251124T160000Z-abc123-00000007.parquet"
    assert import_name(hour, "ab" * 12) == "20251124T16-i-" + "ab" * 12 + ".parquet"
    assert compact_name(hour, "f" * 16, 0, 2) == "20251124T16-c-ffffffffffffffff-0of2.parquet"
    assert parse_compact_name(compact_name(hour, "f" * 16, 1, 2)) is not None
    with pytest.raises(ValueError):
        object_key("a", hour, object_name(ts + NS_PER_HOUR, "w", 1))  # a name of another hour
    assert (
        parse_key("app=x/date=2025-11-25/20251124T16-x.parquet") is None
    )  # the name's day is not the folder's
    assert parse_key("app=x/date=2025-11-24/20251124T24-x.parquet") is None
    assert parse_key("app=x/date=2025-11-24/notes.parquet") is None
    assert parse_key("_archiver/claims/x/20251124T16/1") is None


def test_v1_keys_still_parse() -> None:
    ts = 1_764_000_000_123_456_789
    hour = hour_start_ns(ts)
    key = "app=sandwich/date=2025-11-24/hour=16/region=dfw/20251124T160000Z-abc123-00000007.parquet"
    assert key == v1_object_key("sandwich", "dfw", hour, object_name(ts, "abc123", 7))
    assert key.startswith(v1_hour_prefix("sandwich", hour))
    parsed = parse_key(key)
    assert parsed is not None and (parsed.app, parsed.region, parsed.hour_ns, parsed.layout) == (
        "sandwich", "dfw", hour, 1)  # fmt: skip
    assert parsed.relative_name == "hour=16/region=dfw/20251124T160000Z-abc123-00000007.parquet"
    assert parse_key("app=%C3%BCber/date=2025-11-24/hour=16/region=~/c-" + "0" * 16 + "-0of1.parquet") == (
        parse_key("app=%C3%BCber/date=2025-11-24/hour=16/region=~/c-" + "0" * 16 + "-0of1.parquet")
    )
    parsed = parse_key("app=%C3%BCber/date=2025-11-24/hour=16/region=~/i-" + "0" * 24 + ".parquet")
    assert parsed is not None and (parsed.app, parsed.region) == ("über", "")
    assert identity(parsed.relative_name) == identity(import_name(hour, "0" * 24)) == "i-" + "0" * 24
    assert parse_key("app=x/date=2025-13-01/hour=01/region=y/f.parquet") is None
    assert parse_key("app=x/date=2025-01-01/hour=24/region=y/f.parquet") is None
    assert parse_key("app=über/date=2025-01-01/hour=01/region=y/f.parquet") is None  # not a v1 segment
    assert parse_key("other/file.parquet") is None
