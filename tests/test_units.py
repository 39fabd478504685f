"""Durations and sizes as people write them (archiver.units)."""

from __future__ import annotations

import pytest

from archiver.errors import ConfigError
from archiver.units import (
    DURATION_HELP,
    SIZE_HELP,
    duration_option,
    duration_setting,
    parse_duration_s,
    parse_size_bytes,
    size_setting,
)


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


def test_settings_name_themselves_in_one_line_errors() -> None:
    assert duration_setting("X", None, 7.5) == 7.5
    assert duration_setting("X", "0", 1.0, allow_zero=True) == 0
    assert size_setting("Y", None, 42) == 42 and size_setting("Y", "2k", 0) == 2000
    assert duration_option("--duration", "45s") == 45
    for call, expected in [
        (lambda: duration_setting("X", "0", 1.0), "X: must be greater than 0, got '0'"),
        (lambda: duration_setting("X", "soon", 1.0), f"X: expected {DURATION_HELP}, got 'soon'"),
        (lambda: duration_option("--duration", "999999w"), f"--duration: expected {DURATION_HELP}"),
        (lambda: size_setting("Y", "0", 1), "Y: must be greater than 0, got '0'"),
        (lambda: size_setting("Y", "lots", 1), f"Y: expected {SIZE_HELP}, got 'lots'"),
    ]:
        with pytest.raises(ConfigError) as info:
            call()
        assert str(info.value).startswith(expected) and "\n" not in str(info.value)
