"""Pure code: durations, sizes, configuration errors, key encoding, flush policy."""

from __future__ import annotations

import pytest

from archiver.archive.layout import (
    NS_PER_HOUR,
    decode_value,
    encode_value,
    hour_start_ns,
    object_key,
    object_name,
    parse_key,
    partition_value,
)
from archiver.codec.payloads import Payloads
from archiver.environment import load_archive_settings, load_run_config
from archiver.errors import ConfigError
from archiver.service.buffer import ENCODE_WORKING_SET_RATIO, PAYLOAD_OVERHEAD_BYTES, Buffers
from archiver.units import parse_duration_s, parse_size_bytes


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("2d", 172800), ("1w", 604800), ("200ms", 0.2)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1048576), ("10MB", 10_000_000), ("32MiB", 32 * 1024**2), ("1GiB", 1024**3), ("2k", 2000)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size_bytes(text) == size


def test_defaults() -> None:
    config = load_run_config({}, {})
    assert config.nats_url == "nats://[fdaa::3]:4223"
    assert (config.org, config.subject, config.queue, config.access_token) == (
        "personal",
        "logs.>",
        None,
        None,
    )
    assert (config.flush_interval_s, config.flush_bytes, config.max_buffer_bytes) == (60, 64 << 20, 256 << 20)
    assert (config.http_port, config.log_level) == (8686, "info")
    assert config.archive.scheme == "file" and config.archive.prefix.endswith("/archive")


def test_bucket_name_and_options_win() -> None:
    env = {"BUCKET_NAME": "logs-bucket", "FLUSH_INTERVAL": "5m", "AWS_ENDPOINT_URL": "https://t3.storage.dev"}
    config = load_run_config({"flush_interval": "90"}, env)
    assert config.archive.url == "s3://logs-bucket"
    assert config.archive.s3.endpoint_url == "https://t3.storage.dev"
    assert config.archive.s3.region == "auto"
    assert config.flush_interval_s == 90
    env["AWS_ENDPOINT_URL_S3"] = "https://fly.storage.tigris.dev"
    assert load_archive_settings(None, env).s3.endpoint_url == "https://fly.storage.tigris.dev"
    assert load_archive_settings("s3://b/some/prefix/", {}).prefix == "some/prefix"
    assert load_archive_settings("file:///tmp/x", {}).prefix == "/tmp/x"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("FLUSH_INTERVAL", "soon", "FLUSH_INTERVAL: expected a duration"),
        ("FLUSH_INTERVAL", "0", "FLUSH_INTERVAL: must be greater than 0"),
        ("FLUSH_BYTES", "10XB", "FLUSH_BYTES: expected a size"),
        ("MAX_BUFFER_BYTES", "1MB", "MAX_BUFFER_BYTES: must be at least FLUSH_BYTES"),
        ("HTTP_PORT", "http", "HTTP_PORT: expected a TCP port"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL: expected one of"),
        ("ARCHIVE_URL", "ftp://x/y", "ARCHIVE_URL: expected s3://bucket"),
        ("ARCHIVE_URL", "s3:///nobucket", "ARCHIVE_URL: expected s3://bucket"),
        ("NATS_URL", "http://x", "NATS_URL: expected nats://"),
        ("SUBJECT", "logs..x", "SUBJECT: expected a NATS subject"),
    ],
)
def test_config_errors_name_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_run_config({}, {name: value, "AWS_SECRET_ACCESS_KEY": "s3cr3t", "ACCESS_TOKEN": "FlyV1 tok"})
    message = str(info.value)
    assert message.startswith(expected) and "\n" not in message
    assert "s3cr3t" not in message and "FlyV1" not in message


def test_secrets_not_in_repr() -> None:
    env = {"ACCESS_TOKEN": "FlyV1 tok", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_ACCESS_KEY_ID": "tid_key"}
    text = repr(load_run_config({}, env))
    assert "FlyV1" not in text and "s3cr3t" not in text and "tid_key" not in text


@pytest.mark.parametrize(
    "value",
    [
        "sandwich",
        "",
        ".",
        "..",
        "a/b",
        "../../etc",
        "a=b",
        "100%",
        "~",
        "tab\there",
        "\x00",
        "über",
        ".x",
        "a..b",
    ],
)
def test_partition_values_round_trip_and_stay_in_one_segment(value: str) -> None:
    segment = encode_value(value)
    assert decode_value(segment) == value
    assert "/" not in segment and "=" not in segment and segment not in (".", "..", "")
    assert all(ord(c) >= 0x20 for c in segment)
    key = object_key(segment, encode_value(value), 0, "f.parquet")
    parsed = parse_key(key)
    assert parsed is not None and (parsed.app, parsed.region) == (value, value)


def test_plain_fly_names_unchanged_and_long_values_shortened() -> None:
    assert encode_value("my-app-42") == "my-app-42"
    long = partition_value("x" * 500)
    assert len(long) <= 128 and long.startswith("x" * 95 + "~") and long == encode_value("x" * 500)
    assert partition_value(None) == "unknown"


def test_keys_and_names() -> None:
    ts = 1_764_000_000_123_456_789  # 2025-11-24T16:00:00.123456789Z
    key = object_key("sandwich", "dfw", hour_start_ns(ts), object_name(ts, "abc123", 7))
    assert key == "app=sandwich/date=2025-11-24/hour=16/region=dfw/20251124T160000Z-abc123-00000007.parquet"
    parsed = parse_key(key)
    assert parsed is not None and parsed.hour_ns == hour_start_ns(ts) and parsed.hour_ns % NS_PER_HOUR == 0
    assert parse_key("app=x/date=2025-13-01/hour=01/region=y/f.parquet") is None
    assert parse_key("app=x/date=2025-01-01/hour=24/region=y/f.parquet") is None
    assert parse_key("other/file.parquet") is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_flush_on_size_and_age_and_nothing_when_empty() -> None:
    clock = FakeClock()
    buffers = Buffers(flush_bytes=100, flush_interval_s=60, max_buffer_bytes=1000, clock=clock)
    a = buffers.partition("a", "dfw")
    b = buffers.partition("b", "dfw")
    assert buffers.partition("a", "dfw") is a
    assert not buffers.append(a, b"x" * 60)
    assert buffers.append(a, b"x" * 40)  # reached flush_bytes
    buffers.append(b, b"y" * 10)
    batches = buffers.due()
    assert [(x.app, x.bytes) for x in batches] == [("a", 100)]
    assert buffers.due() == []
    clock.now += 59
    assert buffers.due() == []
    clock.now += 1
    assert [(x.app, len(x.payloads)) for x in buffers.due()] == [("b", 1)]
    clock.now += 3600
    assert buffers.due() == []  # nothing new, nothing written
    encode = ENCODE_WORKING_SET_RATIO
    # Memory, not only payload bytes: overheads and the encode working set are reserved.
    assert buffers.inflight_bytes == 110 + 3 * PAYLOAD_OVERHEAD_BYTES + int(100 * encode) + int(10 * encode)
    for batch in batches:
        buffers.settle(batch)
    assert buffers.inflight_bytes == 10 + PAYLOAD_OVERHEAD_BYTES + int(10 * encode)


def test_memory_cap_flushes_largest_first_and_backpressure() -> None:
    o = PAYLOAD_OVERHEAD_BYTES  # every payload is charged its length plus this
    cap = 1000 + 4 * o
    buffers = Buffers(flush_bytes=10_000, flush_interval_s=60, max_buffer_bytes=cap, clock=FakeClock())
    small = buffers.partition("small", "r")
    big = buffers.partition("big", "r")
    buffers.append(small, b"s" * 200)
    buffers.append(big, b"b" * 700)
    assert not buffers.append(big, b"b" * 99)
    assert buffers.append(small, b"s")  # 1000 bytes + 4 overheads >= cap
    batches = buffers.due()
    assert [x.app for x in batches] == ["big"]  # largest first, until open <= cap / 2
    assert buffers.open_bytes == 201 + 2 * o
    assert not buffers.has_room()  # still all held: the callback waits for the upload
    assert buffers.inflight_bytes == 799 + 2 * o + int(799 * ENCODE_WORKING_SET_RATIO)  # encode reserved
    buffers.charge(batches[0], 50)  # encoded: now only its file is held
    assert buffers.has_room() and buffers.buffered_bytes == 251 + 2 * o
    buffers.settle(batches[0])
    assert buffers.has_room()
    buffers.append(small, b"s" * (cap - 201 - 2 * o))
    more = buffers.due()
    assert [x.app for x in more] == ["small"]
    assert not buffers.has_room()
    buffers.settle(more[0])
    assert buffers.has_room() and buffers.buffered_bytes == 0


def test_payloads_store_back_to_back_and_read_back_exactly() -> None:
    payloads = Payloads([b"a", b"", b"bcd", b"{x}"])
    assert len(payloads) == 4 and payloads.nbytes == 7
    assert [payloads[0], payloads[1], payloads[2], payloads[-1]] == [b"a", b"", b"bcd", b"{x}"]
    assert payloads[1:3] == [b"", b"bcd"] and payloads[::2] == [b"a", b"bcd"] and payloads[5:9] == []
    payloads.append(b"z")
    assert list(payloads) == [b"a", b"", b"bcd", b"{x}", b"z"]
    buffers = Buffers(flush_bytes=10_000, flush_interval_s=60, max_buffer_bytes=10**6, clock=FakeClock())
    part = buffers.partition("a", "r")
    for i in range(20_000):  # more than one slice of __iter__
        buffers.append(part, b"%d" % i, i)
    batch = buffers.detach(part)
    assert batch is not None and list(batch.payloads) == [b"%d" % i for i in range(20_000)]
    assert len(part.ends) == 0 and len(part.data) == 0  # the buffer starts afresh
