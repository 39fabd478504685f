"""Partition values as key segments: Hive's escaping (layout v2), the escaping of v1 archives, long values.

App names come from the NATS subject or the payload, so they are untrusted.
:func:`encode_value` writes a value the way Hive-convention engines (DuckDB,
pyarrow, Polars, DataFusion, Spark) decode it back: ``%XX`` (upper-case hex)
for exactly the ASCII control characters 0x00-0x1F, DEL and
``"#%'*/:=?\\{[]^~`` (Hive's set plus ``~``, the shortening mark below), every
other character as its raw UTF-8 (a lone surrogate, which has no UTF-8, as
``%XX`` of its surrogatepass bytes). The empty value is Hive's
:data:`DEFAULT_PARTITION` (engines read NULL); a real value equal to that
marker has its first character escaped. No segment holds ``/``, so a key
built from one never leaves the prefix (a segment is always ``app=<value>``,
never a bare ``.`` or ``..``). :func:`decode_value` accepts only the one
canonical spelling of a value, so one app is one key segment and back.

v1 archives (schema version 1) escaped every byte outside
``[A-Za-z0-9_.-]`` (and a leading dot) and wrote the empty value as ``~``:
:func:`encode_value_v1`/:func:`decode_value_v1` still read them. A segment
can be canonical in both layouts; it then decodes to the same value, except
:data:`DEFAULT_PARTITION` (v2: the empty value, v1: that literal name).

Length: S3 keys hold 1,024 bytes and a file name 255. An escaped value longer
than :data:`MAX_SEGMENT_BYTES` UTF-8 bytes is *shortened*: the longest escaped
prefix of whole characters that fits in 95 bytes, ``~``, and 32 hex digits of
the SHA-256 of the whole value. ``~`` is always escaped otherwise, so a
shortened segment never equals an ordinary one. It decodes to
``<prefix>~<hash>`` (its *stored value*: what readers show as the app); the
rows keep the full name in ``extra``. :func:`segments_of` maps a name (full,
or a stored value as ``archiver ls`` prints it) to every segment its files
can sit under, in either layout.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

#: Longest partition segment in UTF-8 bytes; a longer escaped value is shortened.
MAX_SEGMENT_BYTES = 128
#: Marker between the kept prefix and the hash of a shortened segment; never left unescaped otherwise.
SHORTENED_MARK = "~"
#: Hex digits of the SHA-256 of the whole value in a shortened segment (128 bits).
HASH_CHARS = 32
#: Hive's name for an empty (null) partition value.
DEFAULT_PARTITION = "__HIVE_DEFAULT_PARTITION__"
#: The app of a message that names none.
UNKNOWN = "unknown"
#: v1's segment of the empty value.
V1_EMPTY = "~"

_HIVE_ESCAPED = frozenset([*range(0x20), 0x7F, *b"\"#%'*/:=?\\{[]^~"])
_V2_PLAIN = re.compile(
    "[" + "".join(re.escape(chr(c)) for c in range(0x20, 0x7F) if c not in _HIVE_ESCAPED) + "]+\\Z"
)
_V1_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")
_V1_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*\Z")
_SHORTENED = re.compile(rf"(?P<prefix>[^~]*)~(?P<hash>[0-9a-f]{{{HASH_CHARS}}})\Z")
#: A decoded shortened value: its prefix may hold a ``~`` (escaped in the segment) or a newline.
_STORED_SHORTENED = re.compile(rf"(?P<prefix>.*)~(?P<hash>[0-9a-f]{{{HASH_CHARS}}})\Z", re.DOTALL)
_CharEncoder = Callable[[str, bool], str]


def _escaped(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))


def _hive_char(char: str, leading: bool) -> str:
    code = ord(char)
    if code < 0x80:
        return f"%{code:02X}" if code in _HIVE_ESCAPED else char
    return _escaped(char) if 0xD800 <= code <= 0xDFFF else char


def _v1_char(char: str, leading: bool) -> str:
    if ord(char) < 0x80 and ord(char) in _V1_SAFE and not (leading and char == "."):
        return char  # a leading dot was escaped so no v1 segment could read as "." or ".."
    return _escaped(char)


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _encode(value: str, char: _CharEncoder) -> str:
    pieces = []
    size = 0
    for i, c in enumerate(value):
        piece = char(c, i == 0)
        size += _size(piece)
        pieces.append(piece)
        if size > MAX_SEGMENT_BYTES:
            return _shortened(value, pieces)
    return "".join(pieces)


def _shortened(value: str, pieces: list[str]) -> str:
    # Whole characters only, so the kept prefix still decodes.
    budget = MAX_SEGMENT_BYTES - len(SHORTENED_MARK) - HASH_CHARS
    kept = []
    for piece in pieces:
        budget -= _size(piece)
        if budget < 0:
            break
        kept.append(piece)
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    return f"{''.join(kept)}{SHORTENED_MARK}{digest}"


def encode_value(value: str) -> str:
    """The layout-v2 segment of a partition value: decodes back exactly unless shortened (see above)."""
    if not value:
        return DEFAULT_PARTITION
    if len(value) <= MAX_SEGMENT_BYTES and _V2_PLAIN.match(value) and value != DEFAULT_PARTITION:
        return value
    segment = _encode(value, _hive_char)
    return "%5F" + segment[1:] if segment == DEFAULT_PARTITION else segment


def encode_value_v1(value: str) -> str:
    """The v1 segment of a partition value (old archives; see above)."""
    if not value:
        return V1_EMPTY
    if len(value) <= MAX_SEGMENT_BYTES and _V1_PLAIN.match(value):
        return value
    return _encode(value, _v1_char)


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


def _decode(segment: str, empty: str, encode: Callable[[str], str], char: _CharEncoder) -> str:
    if segment == empty:
        return ""
    shortened = _SHORTENED.match(segment)
    if shortened is not None:
        prefix = shortened["prefix"]
        decoded = _unescape(prefix) if prefix else ""
        joined = "".join(char(c, i == 0) for i, c in enumerate(decoded))
        if _size(segment) > MAX_SEGMENT_BYTES or joined != prefix:
            raise ValueError(f"not a partition segment: {segment!r}")
        return f"{decoded}{SHORTENED_MARK}{shortened['hash']}"
    value = _unescape(segment)
    # Only the one canonical spelling decodes, so a key names exactly one value and back.
    if encode(value) != segment:
        raise ValueError(f"not a partition segment: {segment!r}")
    return value


def decode_value(segment: str) -> str:
    """Invert :func:`encode_value` (a shortened segment gives ``<prefix>~<hash>``); ValueError if not canonical."""
    return _decode(segment, DEFAULT_PARTITION, encode_value, _hive_char)


def decode_value_v1(segment: str) -> str:
    """Invert :func:`encode_value_v1`; ValueError if not a canonical v1 segment."""
    return _decode(segment, V1_EMPTY, encode_value_v1, _v1_char)


def decoded_values(segment: str) -> list[str]:
    """What a listed segment can hold: its v2 and v1 decodings (distinct, valid ones only)."""
    out = []
    for decode in (decode_value, decode_value_v1):
        try:
            out.append(decode(segment))
        except ValueError:
            continue
    return list(dict.fromkeys(out))


def segment_layouts(segment: str) -> tuple[int, ...]:
    """The layouts (2, 1) in which ``segment`` is a canonical app segment."""
    out = []
    for layout, decode in ((2, decode_value), (1, decode_value_v1)):
        try:
            decode(segment)
        except ValueError:
            continue
        out.append(layout)
    return tuple(out)


def is_shortened(segment: str) -> bool:
    """Whether ``segment`` is a shortened long value (it then does not decode to the full value)."""
    return segment != V1_EMPTY and SHORTENED_MARK in segment


def stored_value(value: str) -> str:
    """The value a v2 key gives back for ``value``: itself, or the ``<prefix>~<hash>`` form when shortened."""
    return decode_value(encode_value(value))


def stored_value_v1(value: str) -> str:
    """The value a v1 key gave back for ``value``."""
    return decode_value_v1(encode_value_v1(value))


def partition_value(value: str | None) -> str:
    """The v2 segment of an app or region; :data:`UNKNOWN` when missing."""
    return UNKNOWN if value is None else encode_value(value)


def partition_value_v1(value: str | None) -> str:
    """The v1 segment of an app or region; :data:`UNKNOWN` when missing."""
    return UNKNOWN if value is None else encode_value_v1(value)


def _shortened_segments(value: str) -> dict[int, str]:
    """By layout (2, 1): the shortened segment that decodes to ``value``, when it has the ``<prefix>~<hash>`` form."""
    shortened = _STORED_SHORTENED.match(value)
    out: dict[int, str] = {}
    if shortened is None:
        return out
    for layout, char, decode in ((2, _hive_char, decode_value), (1, _v1_char, decode_value_v1)):
        prefix = "".join(char(c, i == 0) for i, c in enumerate(shortened["prefix"]))
        segment = f"{prefix}{SHORTENED_MARK}{shortened['hash']}"
        try:
            if decode(segment) == value:
                out[layout] = segment
        except ValueError:
            continue
    return out


def value_segment(value: str) -> str:
    """The v2 segment whose keys give back ``value`` (an app value as a key gave it, e.g. for compaction).

    Its encoding when that decodes back to it; else ``value`` is the stored value
    of a shortened name and this is the shortened segment it names.
    """
    segment = encode_value(value)
    if decode_value(segment) == value:
        return segment
    return _shortened_segments(value).get(2, segment)


def segments_of(name: str) -> list[str]:
    """Every app segment the files of ``name`` can sit under, v2 first.

    Its v2 and v1 segments; the v2 segment of its v1 stored value (where
    compaction moves a shortened v1 app, keeping the app value readers saw);
    and when ``name`` is itself a stored value ``<prefix>~<hash>`` (as
    ``archiver ls`` prints a shortened app), the shortened segments it came from.
    """
    out = [encode_value(name), encode_value_v1(name), value_segment(stored_value_v1(name))]
    return list(dict.fromkeys([*out, *_shortened_segments(name).values()]))


def values_of(name: str) -> frozenset[str]:
    """The app values keys give back for the files of ``name`` (see :func:`segments_of`)."""
    return frozenset({name, stored_value(name), stored_value_v1(name)})
