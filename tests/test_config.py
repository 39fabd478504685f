"""Configuration: defaults, options over the environment, one-line errors naming the variable, no secret in repr."""

from __future__ import annotations

import pytest

from archiver.environment import load_archive_settings, load_run_config
from archiver.errors import ConfigError


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
        ("COMPACT_AFTER", "later", "COMPACT_AFTER: expected a duration"),
        ("COMPACT_AFTER", "30s", "COMPACT_AFTER: must be at least FLUSH_INTERVAL (60s) or off"),
        ("COMPACT_TARGET_BYTES", "0", "COMPACT_TARGET_BYTES: must be greater than 0"),
    ],
)
def test_config_errors_name_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_run_config({}, {name: value, "AWS_SECRET_ACCESS_KEY": "s3cr3t", "ACCESS_TOKEN": "FlyV1 tok"})
    message = str(info.value)
    assert message.startswith(expected) and "\n" not in message
    assert "s3cr3t" not in message and "FlyV1" not in message


def test_compact_after() -> None:
    """On by default 10 minutes after the hour, never sooner than a flush interval, off on request."""
    assert load_run_config({}, {}).compact_after_s == 600
    assert load_run_config({}, {"FLUSH_INTERVAL": "15m"}).compact_after_s == 900  # the default follows
    assert load_run_config({"compact_after": "off"}, {"COMPACT_AFTER": "20m"}).compact_after_s is None
    assert load_run_config({}, {"COMPACT_AFTER": "OFF"}).compact_after_s is None
    assert (
        load_run_config({}, {"COMPACT_AFTER": "1h", "COMPACT_TARGET_BYTES": "64MiB"}).compact_after_s == 3600
    )
    assert load_run_config({}, {"COMPACT_TARGET_BYTES": "64MiB"}).compact_target_bytes == 64 << 20
    assert load_run_config({}, {"COMPACT_AFTER": "2s", "FLUSH_INTERVAL": "2s"}).compact_after_s == 2


def test_secrets_not_in_repr() -> None:
    env = {"ACCESS_TOKEN": "FlyV1 tok", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_ACCESS_KEY_ID": "tid_key"}
    text = repr(load_run_config({}, env))
    assert "FlyV1" not in text and "s3cr3t" not in text and "tid_key" not in text
