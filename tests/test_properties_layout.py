"""Property tests of the untrusted-input parsers: partition keys (layout v2, v1 still read), routing, durations, sizes, WHEN times.

Quick with the "ci" profile; ``./dev fuzz tests/test_properties_layout.py``
(FUZZ_EXAMPLES=N) reruns every ``fuzz``-marked test with many more examples.
"""

from __future__ import annotations

import hashlib
import posixpath
from datetime import UTC, datetime, timedelta

import click
import orjson
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from archiver.archive.escaping import (
    DEFAULT_PARTITION,
    MAX_SEGMENT_BYTES,
    UNKNOWN,
    decode_value,
    decode_value_v1,
    encode_value,
    encode_value_v1,
    is_shortened,
    partition_value,
    partition_value_v1,
    segments_of,
    stored_value,
    stored_value_v1,
    value_segment,
    values_of,
)
from archiver.archive.layout import (
    NS_PER_HOUR,
    NS_PER_SECOND,
    hour_start_ns,
    object_key,
    object_name,
    parse_key,
    v1_object_key,
)
from archiver.archive.supersede import compact_name
from archiver.errors import ConfigError, UsageError
from archiver.service.routing import app_region_from_payload, app_region_from_subject, app_region_of_record
from archiver.timespec import MAX_NS, MIN_NS, parse_absolute_ns, parse_duration_ns, parse_when
from archiver.units import (
    MAX_DURATION_S,
    MAX_SIZE_BYTES,
    duration_option,
    format_bytes,
    parse_duration_s,
    parse_size_bytes,
)

pytestmark = pytest.mark.fuzz

#: Pieces hostile to paths, URLs, hive partitioning or Unicode normalisation.
HOSTILE = [
    "/", "\\", "..", ".", "=", "%", "%2F", "%2E", "~", " ", "\t", "\n", "\x00", "\x7f", "app=", "date=",
    "é", "e\u0301", "Å", "A\u030a", "日本", "🦀", "\u202e", "\ufeff", "\ud800", "\udfff", "x" * 300,
    "ü" * 80, ":", "*", ">", "?", "#", "&", "+", '"', "'", "<", "|", DEFAULT_PARTITION, "%5F", "{", "[", "^",
    "\x85", "\u2028",
]  # fmt: skip
# Surrogates included: encoding uses surrogatepass, so they too must round-trip.
ANY_CHAR = st.characters(codec=None, exclude_categories=())
VALUES = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.lists(st.sampled_from(HOSTILE) | st.text(ANY_CHAR, max_size=5), max_size=12).map("".join),
    st.builds(lambda s, n: s * n, st.text(ANY_CHAR, min_size=1, max_size=4), st.integers(1, 1200)),
)
#: An S3 key holds 1,024 bytes; this leaves over 600 bytes for the archive prefix.
MAX_RELATIVE_KEY_BYTES = 400
#: The longest file name archiver writes (a compacted file's, with room for large part counts).
LONGEST_NAME = compact_name(0, "f" * 16, 10**10 - 2, 10**10 - 1)
#: Characters Hive's convention escapes (plus ``~``, the shortening mark), from the README rule.
HIVE_ESCAPED = {chr(c) for c in range(0x20)} | set("\x7f\"#%'*/:=?\\{[]^~")


def check_segment(value: str, segment: str) -> None:
    assert segment != ""
    assert len(segment.encode("utf-8", "surrogatepass")) <= MAX_SEGMENT_BYTES  # bytes, not characters
    segment.encode("utf-8")  # valid UTF-8: no lone surrogate left raw
    # None of the characters that separate, escape or assign in a path or hive key, nor controls.
    assert not set(segment) & HIVE_ESCAPED - {"%", "~"}, segment
    if is_shortened(segment):
        assert len(encode_value_unshortened(value).encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        assert segment.endswith("~" + digest)
        assert decode_value(segment) == stored_value(value)
        assert value.startswith(decode_value(segment)[: -len("~" + digest)])
    else:
        assert decode_value(segment) == value == stored_value(value)


def encode_value_unshortened(value: str) -> str:
    """Reference Hive escaping, straight from the README rule (no length cap)."""
    if not value:
        return DEFAULT_PARTITION
    out = []
    for char in value:
        if char in HIVE_ESCAPED or 0xD800 <= ord(char) <= 0xDFFF:
            out.append("".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass")))
        else:
            out.append(char)
    text = "".join(out)
    return "%5F" + text[1:] if text == DEFAULT_PARTITION else text


@given(VALUES)
@example("")
@example(".")
@example("..")
@example("~")
@example("x" * 1000)
@example("ü" * 1000)
@example("a" * 95 + "ü")
@example("a" * 94 + "ü" * 20)
@example("e\u0301")
@example("\u00e9")
@example(DEFAULT_PARTITION)
@example("%5F_HIVE_DEFAULT_PARTITION__")
@example("\ud800" * 20)
@example("~" + "x" * 300)
@example("a\n~" + "0" * 32 + "ü" * 100)
def test_segment_is_safe_and_decodes_back(value: str) -> None:
    segment = encode_value(value)
    check_segment(value, segment)
    if not is_shortened(segment):
        assert segment == encode_value_unshortened(value)
    assert partition_value(value) == segment
    assert segment in segments_of(value) and stored_value(value) in values_of(value)
    # v1 segments (old archives) still decode, and the name finds them too.
    assert decode_value_v1(encode_value_v1(value)) == stored_value_v1(value)
    assert encode_value_v1(value) in segments_of(value)
    # Compaction files an app value (as a key gave it) under a v2 segment that gives it back, found by name.
    for kept in (stored_value(value), stored_value_v1(value)):
        home = value_segment(kept)
        assert decode_value(home) == kept and len(home.encode("utf-8", "surrogatepass")) <= MAX_SEGMENT_BYTES
    assert value_segment(stored_value_v1(value)) in segments_of(value)
    # The name `archiver ls` prints (a key's value) finds the segment it came from, in either layout.
    assert segment in segments_of(stored_value(value))
    assert encode_value_v1(value) in segments_of(stored_value_v1(value))


@given(VALUES, VALUES)
def test_distinct_values_give_distinct_segments(a: str, b: str) -> None:
    assume(a != b)
    assert encode_value(a) != encode_value(b)
    assert encode_value_v1(a) != encode_value_v1(b)


@given(
    st.text(ANY_CHAR, min_size=1, max_size=3), st.text(ANY_CHAR, min_size=1, max_size=3), st.integers(0, 400)
)
def test_long_values_sharing_a_prefix_stay_distinct(tail_a: str, tail_b: str, extra: int) -> None:
    assume(tail_a != tail_b)
    base = "n" * (MAX_SEGMENT_BYTES + extra)
    assert encode_value(base + tail_a) != encode_value(base + tail_b)


def test_unicode_normal_forms_stay_distinct_and_exact() -> None:
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    assert encode_value(nfc) != encode_value(nfd)
    assert decode_value(encode_value(nfc)) == nfc and decode_value(encode_value(nfd)) == nfd


@given(
    VALUES,
    VALUES | st.none(),
    st.integers(0, 2**62),
    st.integers(0, 10**12),
    st.sampled_from(["archive/v1/", "", "p" * 600 + "/"]),
)
def test_every_key_stays_under_the_prefix_and_parses_back(
    app: str, region: str | None, timestamp_ns: int, sequence: int, prefix: str
) -> None:
    hour = hour_start_ns(timestamp_ns)
    name = object_name(timestamp_ns, "0123456789", sequence)
    key = object_key(partition_value(app), hour, name)
    full = prefix + key
    assert posixpath.normpath("/" + full).startswith("/" + prefix)
    assert not any(part in ("", ".", "..") for part in key.split("/"))
    assert all(len(part.encode()) <= 255 for part in key.split("/"))
    assert not key.startswith("_archiver/")
    longest = object_key(partition_value(app), 0, LONGEST_NAME)
    assert len(longest.encode()) <= MAX_RELATIVE_KEY_BYTES
    parsed = parse_key(key)
    assert parsed is not None and parsed.layout == 2 and parsed.region is None
    assert parsed.app == stored_value(app)
    assert parsed.hour_ns == hour and parsed.name == name
    # A v1 key of the same values still parses, to the values v1 gave back.
    v1 = parse_key(v1_object_key(partition_value_v1(app), partition_value_v1(region), hour, name))
    assert v1 is not None and v1.layout == 1
    assert v1.app == stored_value_v1(app)
    assert v1.region == (UNKNOWN if region is None else stored_value_v1(region))
    assert v1.hour_ns == hour and v1.name == name


@given(
    st.text(ANY_CHAR, max_size=60)
    | st.lists(st.sampled_from([*HOSTILE, "%41", "%zz", "%+1", "%"])).map("".join)
)
def test_decode_and_parse_key_reject_anything_not_canonical(text: str) -> None:
    try:
        value = decode_value(text)
    except ValueError:
        pass
    else:
        # Anything that decodes is the one segment of its value (no second spelling such as %41 for A).
        assert encode_value(value) == text or is_shortened(text)
    parsed = parse_key(f"app={text}/date=2026-11-24/20261124T13-f.parquet")
    if parsed is not None and not is_shortened(text):
        assert encode_value(parsed.app) == text
    try:
        value = decode_value_v1(text)
    except ValueError:
        pass
    else:
        assert encode_value_v1(value) == text or is_shortened(text)
    parsed = parse_key(f"app={text}/date=2026-11-24/hour=13/region=r/f.parquet")
    if parsed is not None and not is_shortened(text):
        assert encode_value_v1(parsed.app) == text


@given(st.text(ANY_CHAR, max_size=80))
def test_parse_key_never_raises(text: str) -> None:
    parse_key(text)


@given(st.text(ANY_CHAR, max_size=60), st.binary(max_size=200))
def test_routing_never_raises(subject: str, payload: bytes) -> None:
    app_region_from_subject(subject)
    app_region_from_payload(payload)
    app_region_of_record(subject.encode("utf-8", "surrogatepass"), payload)


@given(VALUES, VALUES)
def test_payload_fallback_finds_any_app_and_region(app: str, region: str) -> None:
    try:
        payload = orjson.dumps({"fly": {"app": {"name": app}, "region": region}, "message": "m"})
    except orjson.JSONEncodeError:
        assume(False)  # lone surrogates: not JSON
    assert app_region_from_payload(payload) == (app, region)
    assert app_region_of_record(b"logs.short", payload) == (app, region)


TEXTS = st.text(ANY_CHAR, max_size=30) | st.lists(
    st.sampled_from(
        [
            "1",
            "0",
            "9" * 30,
            ".",
            "5",
            " ",
            "ms",
            "s",
            "m",
            "h",
            "d",
            "w",
            "KiB",
            "MB",
            "G",
            "B",
            "e",
            "-",
            "+",
            "inf",
            "nan",
            "٣",
            "\n",
            "_",
            "1_000",
        ]
    )
).map("".join)


@given(TEXTS)
@example("9" * 400)
@example("9" * 400 + "GiB")
@example("1e309")
@example("١٠s")
def test_durations_and_sizes_parse_or_raise_value_error(text: str) -> None:
    try:
        seconds = parse_duration_s(text)
    except ValueError:
        pass
    else:
        assert 0 <= seconds <= MAX_DURATION_S
    try:
        size = parse_size_bytes(text)
    except ValueError:
        pass
    else:
        assert 0 <= size <= MAX_SIZE_BYTES
    try:
        assert duration_option("--x", text) > 0
    except ConfigError as exc:
        assert "\n" not in str(exc).strip()


@given(st.integers(0, 10**6), st.sampled_from(["", "s", "ms", "m", "h", "d", "w"]), st.booleans())
def test_duration_round_trip(number: int, unit: str, spaced: bool) -> None:
    factor = {"": 1, "s": 1, "ms": 0.001, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    if number * factor > MAX_DURATION_S:
        with pytest.raises(ValueError, match="too long"):
            parse_duration_s(f"{number}{unit}")
        return
    assert parse_duration_s(f"{number}{' ' if spaced else ''}{unit}") == pytest.approx(number * factor)


@given(st.integers(0, 10**6), st.sampled_from(["", "B", "K", "KB", "KiB", "kib", "MiB", "GB", "TiB"]))
def test_size_round_trip(number: int, unit: str) -> None:
    factor = {"": 1, "B": 1, "K": 1000, "KB": 1000, "KIB": 1024, "MIB": 2**20, "GB": 10**9, "TIB": 2**40}
    assert parse_size_bytes(f"{number}{unit}") == number * factor[unit.upper()]


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_format_bytes_never_raises(count: float) -> None:
    assert format_bytes(count)


WHEN_TEXTS = TEXTS | st.lists(
    st.sampled_from(
        [
            "2026",
            "-",
            "11",
            "24",
            "T",
            " ",
            ":",
            "00",
            "13",
            "60",
            "99",
            "Z",
            "+",
            "02",
            ".",
            "123456789",
            "0000",
            "9999",
            "12",
            "31",
            "23",
            "59",
            "ns",
            "us",
            "now",
            "h",
            "w",
        ]
    )
).map("".join)


@given(WHEN_TEXTS)
@example("0000-01-01")
@example("9999-12-31T23:59-23:59")
@example("1" * 5000 + "s")
@example("100000000w")
@example("٢٠٢٦-11-24")
def test_when_parses_into_range_or_raises_usage_error(text: str) -> None:
    now = 1_795_000_000 * NS_PER_SECOND
    try:
        when = parse_when(text, now, option="--since")
    except UsageError as exc:
        assert str(exc).startswith("--since")
    else:
        assert MIN_NS <= when <= MAX_NS


@given(
    st.datetimes(datetime(1678, 1, 1), datetime(2262, 1, 1)),
    st.integers(0, 999_999_999),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
    st.sampled_from(["T", " ", "t"]),
)
def test_absolute_time_round_trip_exact_to_the_nanosecond(
    moment: datetime, nanos: int, offset_min: int, sep: str
) -> None:
    zone_moment = moment.replace(microsecond=0, tzinfo=UTC)
    local = zone_moment + timedelta(minutes=offset_min)
    sign = "+" if offset_min >= 0 else "-"
    offset = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    text = f"{local:%Y-%m-%d}{sep}{local:%H:%M:%S}.{nanos:09d}{offset}"
    expected = int(zone_moment.timestamp()) * NS_PER_SECOND + nanos
    assert parse_absolute_ns(text) == expected


@given(st.lists(st.tuples(st.integers(0, 10**4), st.sampled_from(["ns", "us", "ms", "s", "m", "h", "d", "w"])),
                min_size=1, max_size=5))  # fmt: skip
def test_compound_duration_round_trip(parts: list[tuple[int, str]]) -> None:
    unit_ns = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": NS_PER_HOUR,
               "d": 24 * NS_PER_HOUR, "w": 7 * 24 * NS_PER_HOUR}  # fmt: skip
    text = "".join(f"{n}{u}" for n, u in parts)
    assert parse_duration_ns(text) == sum(n * unit_ns[u] for n, u in parts)


def test_click_usage_errors_are_what_the_cli_expects() -> None:
    # The query CLI turns UsageError into exit 2; nothing here may surface click's own errors.
    assert not issubclass(UsageError, click.ClickException)
    assert UsageError.exit_code == 2 and ConfigError.exit_code == 2


def test_s3_prefix_longer_than_keys_allow_is_refused() -> None:
    from archiver.archive_url import MAX_S3_PREFIX_BYTES, parse_archive_url

    assert parse_archive_url("s3://b/" + "p" * MAX_S3_PREFIX_BYTES).prefix == "p" * MAX_S3_PREFIX_BYTES
    with pytest.raises(ConfigError, match="prefix longer"):
        parse_archive_url("s3://b/" + "p" * (MAX_S3_PREFIX_BYTES + 1))
    assert MAX_S3_PREFIX_BYTES + MAX_RELATIVE_KEY_BYTES + 1 <= 1024
