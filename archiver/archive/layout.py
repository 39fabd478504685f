"""Where archive objects live: hive-partitioned keys, safe partition values, object names.

Layout, relative to the archive prefix::

    app=<app>/date=<YYYY-MM-DD>/hour=<HH>/region=<region>/<name>.parquet

date and hour are those of the event timestamp in UTC. App and region come
from the NATS subject or the payload, so they are untrusted: :func:`encode_value`
escapes every character outside ``[A-Za-z0-9_-]`` (and dots where they could
form ``.``/``..``) as ``%XX`` of its UTF-8 bytes, and writes an empty value as
``~``. The result never contains ``/``, ``=``, ``\\`` or a control character,
cannot be ``.`` or ``..``, and :func:`decode_value` turns it back exactly. A
key built here therefore always stays under the prefix. Ordinary Fly app and
region names (lowercase, digits, dashes) are left unchanged, so DuckDB,
Polars, Spark and Athena see the plain names.

Length: S3 keys hold at most 1,024 bytes and a file name component 255, and
escaping can triple a value's length. An encoded value longer than
:data:`MAX_SEGMENT_CHARS` is *shortened*: the encoding of its longest prefix
that fits, then ``~`` and 32 hex digits of the SHA-256 of the whole value.
``~`` is always escaped in an ordinary encoding (``%7E``), so a shortened
segment can never equal an ordinary one, and two different long values share
a segment only on a 128-bit hash collision. A shortened segment decodes to
itself with the prefix unescaped (``<prefix>~<hash>``); messages keep their
full name in ``extra`` because it differs from that decoded value, and
``encode_value(name)`` maps a full name given to ``--app`` to the same
segment.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

NS_PER_SECOND = 1_000_000_000
NS_PER_HOUR = 3600 * NS_PER_SECOND
#: Longest partition segment (ASCII, so also bytes); longer encodings are shortened.
MAX_SEGMENT_CHARS = 128
#: Marker between the kept prefix and the hash of a shortened segment; never left unescaped otherwise.
SHORTENED_MARK = "~"
#: Hex digits of the SHA-256 of the whole value in a shortened segment (128 bits).
HASH_CHARS = 32
UNKNOWN = "unknown"
EMPTY_VALUE = "~"
PARQUET_SUFFIX = ".parquet"

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*\Z")
_SHORTENED = re.compile(rf"(?P<prefix>[^~]*)~(?P<hash>[0-9a-f]{{{HASH_CHARS}}})\Z")
_KEY = re.compile(
    r"app=(?P<app>[^/]+)/date=(?P<date>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/"
    r"region=(?P<region>[^/]+)/(?P<name>[^/]+\.parquet)\Z"
)


def encode_value(value: str) -> str:
    """The safe path segment of a partition value: decodes back exactly unless shortened (see above)."""
    if not value:
        return EMPTY_VALUE
    if len(value) <= MAX_SEGMENT_CHARS and _PLAIN.match(value):
        return value
    pieces = []
    size = 0
    for i, char in enumerate(value):
        piece = _encode_char(char, leading=i == 0)
        size += len(piece)
        pieces.append(piece)
        if size > MAX_SEGMENT_CHARS:
            return _shortened(value, pieces)
    return "".join(pieces)


def _encode_char(char: str, *, leading: bool) -> str:
    if (
        len(char.encode("utf-8", "surrogatepass")) == 1
        and ord(char) in _SAFE
        and not (leading and char == ".")
    ):
        # A leading dot is escaped so no segment can read as "." or "..".
        return char
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))


def _shortened(value: str, pieces: list[str]) -> str:
    # Whole characters only, so the kept prefix still decodes.
    budget = MAX_SEGMENT_CHARS - len(SHORTENED_MARK) - HASH_CHARS
    kept = []
    for piece in pieces:
        budget -= len(piece)
        if budget < 0:
            break
        kept.append(piece)
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    return f"{''.join(kept)}{SHORTENED_MARK}{digest}"


def is_shortened(segment: str) -> bool:
    """Whether ``segment`` is a shortened long value (it then does not decode to the full value)."""
    return segment != EMPTY_VALUE and SHORTENED_MARK in segment


def decode_value(segment: str) -> str:
    """Invert :func:`encode_value` (a shortened segment gives ``<prefix>~<hash>``); ValueError if not canonical."""
    if segment == EMPTY_VALUE:
        return ""
    shortened = _SHORTENED.match(segment)
    if shortened is not None:
        prefix = shortened["prefix"]
        decoded = _unescape(prefix) if prefix else ""
        if len(segment) > MAX_SEGMENT_CHARS or (prefix and _join_encoded(decoded) != prefix):
            raise ValueError(f"not a partition segment: {segment!r}")
        return f"{decoded}{SHORTENED_MARK}{shortened['hash']}"
    value = _unescape(segment)
    # Only the one canonical spelling decodes, so a key names exactly one value and back.
    if encode_value(value) != segment:
        raise ValueError(f"not a partition segment: {segment!r}")
    return value


def _join_encoded(value: str) -> str:
    return "".join(_encode_char(char, leading=i == 0) for i, char in enumerate(value))


def _unescape(segment: str) -> str:
    if "%" not in segment:
        return segment
    raw = bytearray()
    i = 0
    while i < len(segment):
        if segment[i] == "%":
            digits = segment[i + 1 : i + 3]
            if len(digits) != 2 or not all(c in "0123456789ABCDEF" for c in digits):
                raise ValueError(f"bad escape in partition segment: {segment!r}")
            raw.append(int(digits, 16))
            i += 3
        else:
            raw.extend(segment[i].encode("utf-8", "surrogatepass"))
            i += 1
    return raw.decode("utf-8", "surrogatepass")


def stored_value(value: str) -> str:
    """The value a key gives back for ``value``: itself, or the ``<prefix>~<hash>`` form when shortened."""
    return decode_value(encode_value(value))


def partition_value(value: str | None) -> str:
    """The encoded segment for an app or region; :data:`UNKNOWN` when missing."""
    return UNKNOWN if value is None else encode_value(value)


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
