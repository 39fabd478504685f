"""Setting values: human durations and sizes (parsing, checking, formatting) and URL schemes (pure)."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from urllib.parse import urlsplit

from archiver.errors import ConfigError

# ASCII digits only: str.isdigit-style Unicode digits are not a number anyone types in a setting.
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|w)?\s*\Z")
_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|[KMGT]|B)?\s*\Z", re.IGNORECASE)
_SIZE_UNITS = {
    "B": 1,
    "K": 1000, "KB": 1000, "KIB": 1024,
    "M": 1000**2, "MB": 1000**2, "MIB": 1024**2,
    "G": 1000**3, "GB": 1000**3, "GIB": 1024**3,
    "T": 1000**4, "TB": 1000**4, "TIB": 1024**4,
}  # fmt: skip

#: Longest duration accepted (100 years): beyond it timers and thread waits overflow.
MAX_DURATION_S = 100 * 365.25 * 86400.0
#: Largest size accepted: what a signed 64-bit byte count holds.
MAX_SIZE_BYTES = 2**63 - 1

DURATION_HELP = "a duration such as 90, 90s, 500ms, 5m, 1h, 2d, 1w"
SIZE_HELP = "a size such as 1048576, 10MB, 32MiB, 1GiB"


def parse_duration_s(text: str) -> float:
    """Seconds in a duration like ``90``, ``90s``, ``500ms``, ``5m``, ``1h``; ValueError otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"expected {DURATION_HELP}, got {text!r}")
    seconds = float(match[1]) * _DURATION_UNITS_S[match[2] or "s"]
    if not math.isfinite(seconds) or seconds > MAX_DURATION_S:
        raise ValueError(f"duration too long (at most 100 years), got {text!r}")
    return seconds


def parse_size_bytes(text: str) -> int:
    """Bytes in a size like ``1048576``, ``10MB``, ``32MiB``; ValueError otherwise."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"expected {SIZE_HELP}, got {text!r}")
    # Decimal, not float: exact for any digits ("1.1GB" is 1100000000) and no overflow to infinity.
    size = int(Decimal(match[1]) * _SIZE_UNITS[(match[2] or "B").upper()])
    if size > MAX_SIZE_BYTES:
        raise ValueError(f"size too large (at most {MAX_SIZE_BYTES} bytes), got {text!r}")
    return size


def duration_setting(name: str, text: str | None, default_s: float, *, allow_zero: bool = False) -> float:
    """Seconds in the setting ``name`` (``default_s`` when not set); ConfigError naming it otherwise."""
    if text is None:
        return default_s
    try:
        seconds = parse_duration_s(text)
    except ValueError:
        raise ConfigError(f"{name}: expected {DURATION_HELP}, got {text!r}") from None
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigError(f"{name}: must be greater than 0, got {text!r}")
    return seconds


def duration_option(name: str, text: str) -> float:
    """A positive duration given to an option ``name``; ConfigError (one line) otherwise."""
    return duration_setting(name, text, 0.0)


def size_setting(name: str, text: str | None, default: int) -> int:
    """Bytes in the setting ``name`` (``default`` when not set); ConfigError naming it otherwise."""
    if text is None:
        return default
    try:
        size = parse_size_bytes(text)
    except ValueError:
        raise ConfigError(f"{name}: expected {SIZE_HELP}, got {text!r}") from None
    if size <= 0:
        raise ConfigError(f"{name}: must be greater than 0, got {text!r}")
    return size


def format_bytes(count: float) -> str:
    """Short human size: 1.5 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"  # pragma: no cover


def url_scheme(url: str) -> str:
    """The scheme of a URL setting ('' when it is not a URL at all)."""
    try:
        return urlsplit(url).scheme
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return ""


def on_off(name: str, text: str | None, *, default: bool) -> bool:
    """A setting that is ``on`` or ``off`` (also true/false, 1/0, yes/no)."""
    if text is None:
        return default
    if text.lower() in ("on", "true", "1", "yes"):
        return True
    if text.lower() in ("off", "false", "0", "no"):
        return False
    raise ConfigError(f"{name}: expected on or off, got {text!r}")


def port_setting(name: str, text: str | None, default: int) -> int:
    """A TCP port setting (``default`` when not set); ConfigError naming it otherwise."""
    if text is None:
        return default
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ConfigError(f"{name}: expected a TCP port 0-65535, got {text!r}")
    return int(text)
