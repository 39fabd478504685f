"""Where archive objects live: hive-partitioned keys, safe partition values, object names.

Layout, relative to the archive prefix::

    app=<app>/date=<YYYY-MM-DD>/hour=<HH>/region=<region>/<name>.parquet

date and hour are those of the event timestamp in UTC. App and region come
from the NATS subject, so they are untrusted: :func:`encode_value` escapes
every character outside ``[A-Za-z0-9_-]`` (and dots where they could form
``.``/``..``) as ``%XX`` of its UTF-8 bytes, and writes an empty value as
``~``. The result never contains ``/``, ``=`` or a control character, cannot
be ``.`` or ``..``, and :func:`decode_value` turns it back exactly. A key
built here therefore always stays under the prefix. Ordinary Fly app and
region names (lowercase, digits, dashes) are left unchanged, so DuckDB,
Polars, Spark and Athena see the plain names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

NS_PER_SECOND = 1_000_000_000
NS_PER_HOUR = 3600 * NS_PER_SECOND
#: Longest encoded partition value; longer values go to :data:`UNKNOWN`.
MAX_VALUE_CHARS = 128
UNKNOWN = "unknown"
EMPTY_VALUE = "~"
PARQUET_SUFFIX = ".parquet"

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*\Z")
_KEY = re.compile(
    r"app=(?P<app>[^/]+)/date=(?P<date>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/"
    r"region=(?P<region>[^/]+)/(?P<name>[^/]+\.parquet)\Z"
)


def encode_value(value: str) -> str:
    """Escape a partition value so it is one safe path segment that decodes back exactly."""
    if not value:
        return EMPTY_VALUE
    if _PLAIN.match(value):
        return value
    out = []
    for i, byte in enumerate(value.encode("utf-8", "surrogatepass")):
        # A leading dot is escaped so no segment can read as "." or "..".
        if byte in _SAFE and not (byte == 0x2E and i == 0):
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def decode_value(segment: str) -> str:
    """Invert :func:`encode_value`."""
    if segment == EMPTY_VALUE:
        return ""
    if "%" not in segment:
        return segment
    raw = bytearray()
    i = 0
    while i < len(segment):
        if segment[i] == "%":
            raw.append(int(segment[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.append(ord(segment[i]))
            i += 1
    return raw.decode("utf-8", "surrogatepass")


def partition_value(value: str | None) -> str:
    """The encoded segment for an app or region, :data:`UNKNOWN` when missing or too long."""
    if value is None:
        return UNKNOWN
    encoded = encode_value(value)
    return encoded if len(encoded) <= MAX_VALUE_CHARS else UNKNOWN


def hour_start_ns(timestamp_ns: int) -> int:
    """Start of the UTC hour holding ``timestamp_ns``."""
    return timestamp_ns - timestamp_ns % NS_PER_HOUR


def app_prefix(app_segment: str) -> str:
    """Prefix of every object of one app (segment already encoded)."""
    return f"app={app_segment}/"


def hour_prefix(app_segment: str, hour_ns: int) -> str:
    """Prefix of one app's objects for the UTC hour starting at ``hour_ns``."""
    when = datetime.fromtimestamp(hour_ns // NS_PER_SECOND, UTC)
    return f"app={app_segment}/date={when:%Y-%m-%d}/hour={when:%H}/"


def object_key(app_segment: str, region_segment: str, hour_ns: int, name: str) -> str:
    """Key of one archive file, relative to the archive prefix."""
    return f"{hour_prefix(app_segment, hour_ns)}region={region_segment}/{name}"


@dataclass(frozen=True, slots=True)
class ObjectKey:
    """A parsed archive key: decoded partition values and the file name."""

    app: str
    region: str
    hour_ns: int
    name: str

    @property
    def hour(self) -> datetime:
        """The UTC hour as a datetime."""
        return datetime.fromtimestamp(self.hour_ns // NS_PER_SECOND, UTC)


def parse_key(key: str) -> ObjectKey | None:
    """Parse a key built by :func:`object_key`; None for anything else."""
    match = _KEY.match(key)
    if match is None:
        return None
    try:
        day = datetime.strptime(match["date"], "%Y-%m-%d").replace(tzinfo=UTC)
        hour = int(match["hour"])
        app = decode_value(match["app"])
        region = decode_value(match["region"])
    except (ValueError, UnicodeDecodeError):
        return None
    if hour > 23:
        return None
    hour_ns = int((day + timedelta(hours=hour)).timestamp()) * NS_PER_SECOND
    return ObjectKey(app=app, region=region, hour_ns=hour_ns, name=match["name"])


def object_name(first_timestamp_ns: int, writer_id: str, sequence: int) -> str:
    """A file name unique per writer: sortable event time, writer id, sequence."""
    when = datetime.fromtimestamp(first_timestamp_ns // NS_PER_SECOND, UTC)
    return f"{when:%Y%m%dT%H%M%S}Z-{writer_id}-{sequence:08d}{PARQUET_SUFFIX}"
