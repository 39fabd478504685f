"""Parsing of human durations and sizes (pure; used by config and the CLI)."""

from __future__ import annotations

import re

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*\Z")
_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|[KMGT]|B)?\s*\Z", re.IGNORECASE)
_SIZE_UNITS = {
    "B": 1,
    "K": 1000, "KB": 1000, "KIB": 1024,
    "M": 1000**2, "MB": 1000**2, "MIB": 1024**2,
    "G": 1000**3, "GB": 1000**3, "GIB": 1024**3,
    "T": 1000**4, "TB": 1000**4, "TIB": 1024**4,
}  # fmt: skip

DURATION_HELP = "a duration such as 90, 90s, 500ms, 5m, 1h, 2d, 1w"
SIZE_HELP = "a size such as 1048576, 10MB, 32MiB, 1GiB"


def parse_duration_s(text: str) -> float:
    """Seconds in a duration like ``90``, ``90s``, ``500ms``, ``5m``, ``1h``; ValueError otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"expected {DURATION_HELP}, got {text!r}")
    return float(match[1]) * _DURATION_UNITS_S[match[2] or "s"]


def parse_size_bytes(text: str) -> int:
    """Bytes in a size like ``1048576``, ``10MB``, ``32MiB``; ValueError otherwise."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"expected {SIZE_HELP}, got {text!r}")
    return int(float(match[1]) * _SIZE_UNITS[(match[2] or "B").upper()])


def format_bytes(count: float) -> str:
    """Short human size: 1.5 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"  # pragma: no cover
