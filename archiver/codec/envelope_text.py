"""The ``message`` of Fly's envelope, in bulk: its raw JSON string text checked, decoded, and the app's level.

Part of the envelope slicer (:mod:`archiver.codec.envelope`), which cuts each
payload's *body*, the raw JSON text between ``"message":"`` and the closing
quote, out of the batch's buffer. Here, for a whole chunk of bodies at once
(Arrow kernels, RE2 in byte mode; no per-message Python):

* A body without a backslash is the message itself: it must hold no ``"``
  (which would have ended the string early) and no control character.
* A body with a backslash must be a JSON string text this path decodes,
  checked by one RE2 DFA pass: the escapes ``\\" \\\\ \\/ \\b \\f \\n \\r \\t`` and
  the ``\\u`` forms of :data:`BULK_U_ESCAPES` (ANSI colour ``\\u001b``, Go's HTML
  escapes ``\\u003c \\u003e \\u0026``, ``\\u0027``, ``\\u0022``, ``\\u005c``,
  ``\\u2028 \\u2029``). It is decoded by literal replacements: ``\\"`` first
  (all most bodies need); the rest again with ``\\\\`` (and ``\\u005c``) set
  aside as a control character a checked text cannot hold, so each backslash
  left starts an escape, read as JSON reads it left to right.
* The app's level (``bulk_rows._levels``: a message that is a JSON object, after
  JSON whitespace, with a key of ``APP_LEVEL_KEYS``, read by orjson). Such a
  message arrives escaped (its quotes as ``\\"``), so one DFA pass of a grammar
  written over the *escaped* text checks at once that the text decodes and
  that it decodes to a *flat* JSON object (scalar values, keys without
  escapes followed at once by their colon, numbers orjson reads without
  overflow, ``\\u`` escapes of the app's strings with surrogates paired as
  orjson wants). In such an object a level key occurs only as a top-level
  key (a quote within a string is escaped, a key has none), so a literal
  split from the end finds its value (orjson keeps the last duplicate); the
  few distinct 12-byte windows after the colon are read once each. Any
  other candidate (nested, escaped keys, spaced colons, long or non-ASCII
  level strings, invalid JSON) gets ``parse_exact.level_of`` one by one, as
  every candidate does on the exact path.

A body this path does not decode makes its row go back to
:func:`archiver.codec.parse.parse_batch`'s general path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from archiver.archive import schema
from archiver.codec.parse_exact import LEVEL_KEY, level_of

STRING = pa.string()
_INT32 = pa.int32()

#: ``\\u`` escapes decoded in bulk: the other ``\\u`` forms are rare in Fly's envelope (it writes UTF-8).
BULK_U_ESCAPES = {
    "\\u001b": "\x1b", "\\u001B": "\x1b", "\\u003c": "<", "\\u003C": "<", "\\u003e": ">", "\\u003E": ">",
    "\\u0026": "&", "\\u0027": "'", "\\u0022": '"', "\\u2028": "\u2028", "\\u2029": "\u2029",
}  # fmt: skip
#: ``\\u005c`` (a backslash) is set aside with ``\\\\`` until every escape is decoded.
_U_BACKSLASH = ("\\u005c", "\\u005C")
_ONE_LETTER = (("\\/", "/"), ("\\n", "\n"), ("\\t", "\t"), ("\\r", "\r"), ("\\b", "\b"), ("\\f", "\f"))
#: Literal patterns go to RE2 (memchr, ~0.1 ns/byte), ~10x faster than Arrow's own match_substring.
_BACKSLASH = r"\\"
_SENTINEL = "\x01"  # never in a checked body (no control characters there), nor decoded from one
#: Every ``\\u`` form decoded in bulk and what it becomes (a backslash is set aside until the end).
_U_DECODED = {**BULK_U_ESCAPES, **dict.fromkeys(_U_BACKSLASH, _SENTINEL)}
_U_FORMS = "|".join(re.escape(e[2:]) for e in (*BULK_U_ESCAPES, *_U_BACKSLASH))
#: A JSON string text this path decodes: no other ``\\u``, no control character, no unescaped quote.
_ESCAPED_BODY_RE = rf'^(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u(?:{_U_FORMS}))*$'

# --- The grammar of a flat JSON object, written over its escaped text -----------------------------
_RWS = r"(?: |\\[tnr])*"  # JSON whitespace, escaped
_HEX = "[0-9a-fA-F]"
_RESC = (  # an escape of the message's JSON (its backslash is escaped), surrogates paired as orjson wants
    r'\\\\(?:\\"|\\\\|\\?/|[bfnrt]|u(?:[0-9a-cA-CefEF]' + _HEX + "{3}|[dD][0-7]" + _HEX + "{2}"
    r"|[dD][89abAB]" + _HEX + r"{2}\\\\u[dD][c-fC-F]" + _HEX + "{2}))"
)
# Envelope escapes that decode to a character allowed raw in the app's JSON strings (not \u001b, a
# control character; not \u0022 or \u005c, which would change the message's structure).
_RCHAR_U = r"\\u(?:00(?:3[cCeE]|26|27)|202[89])"
_RSTR = r'\\"(?:[^"\\\x00-\x1f]|\\/|' + _RCHAR_U + "|" + _RESC + r')*\\"'
# Numbers orjson reads without overflow (at most 18 integer digits, a 2-digit exponent); with any
# other (1e400 is an error for orjson) the message is left to level_of.
_JNUM = r"-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]+)?(?:[eE][+-]?[0-9]{1,2})?"
_RSCALAR = f"(?:{_RSTR}|{_JNUM}|true|false|null)"
_RKEY = r'\\"[^"\\\x00-\x1f]*\\"'
_RPAIR = f"{_RWS}{_RKEY}:{_RWS}{_RSCALAR}{_RWS}"
_FLAT_OBJECT_RE = f"^{_RWS}\\{{(?:{_RPAIR},)*{_RPAIR}\\}}{_RWS}$"
_OBJECT_START = r"^[ \t\r\n]*\{"  # bulk_rows._levels' candidates, on the decoded text
_OBJECT_LEADS = pa.array([b"{", b" ", b"\t", b"\r", b"\n"], pa.binary())
# The value after a key's colon (in the decoded message): a string without escapes, '"' alone for
# one with, or a number or literal.
_VALUE_RE = r'^[ \t\r\n]*(?P<v>"[^"\\]*"|"|[^ \t\r\n,}]+)'
_VALUE_PY = re.compile(_VALUE_RE[1:].encode())  # the same pattern for re (match anchors it)
_PINO = {"10": "trace", "20": "debug", "30": "info", "40": "warn", "50": "error", "60": "fatal"}
_PINO_TEXTS = pa.array(list(_PINO), STRING)
_PINO_NAMES = pa.array(list(_PINO.values()), STRING)
#: Bytes read after a level key's colon: a level string of up to 10 characters and its quotes, or a
#: number; a longer one is read by level_of. Longer windows would hold more of what follows (a time).
_WINDOW = 12
#: Up to this many distinct windows are read with re; more with one RE2 pass (it compiles per call).
FEW_WINDOWS = 256


def i32(value: int) -> pa.Scalar:
    """An int32 scalar (offsets and lengths of binary arrays are int32)."""
    return pa.scalar(value, _INT32)


def falses(n: int) -> pa.Array:
    """A boolean array of ``n`` false values."""
    return pa.repeat(False, n)


def messages(bodies: pa.Array, ok: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(ok less the rows whose body this path does not decode, the messages, the app levels or null)."""
    n = len(bodies)
    if len(bodies.buffers()[2] or b"") and pc.min(_bytes_of(bodies)).as_py() < 0x20:
        ok = pc.and_not(ok, pc.match_substring_regex(bodies, r"[\x00-\x1f]"))
    escaped = pc.match_substring_regex(bodies, _BACKSLASH)
    # Without a backslash, any quote ended the string before the tail: not Fly's shape.
    ok = pc.and_not(ok, pc.and_not(pc.match_substring_regex(bodies, '"'), escaped))
    escaped = pc.and_(escaped, ok)
    if not pc.any(escaped).as_py():
        return ok, bodies, pa.nulls(n, STRING)
    good, decoded, levels = _escaped_messages(bodies.filter(escaped))
    return (
        pc.replace_with_mask(ok, escaped, good),
        pc.replace_with_mask(bodies, escaped, decoded),
        pc.replace_with_mask(pa.nulls(n, STRING), escaped, levels),
    )


def _escaped_messages(texts: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """For raw message texts with a backslash: valid?, the decoded messages, the app levels or null."""
    # One DFA pass: a valid text decoding to a flat object (fails at once on other texts).
    lead = pc.binary_slice(texts, 0, 1)
    flat = _matching(texts, pc.is_in(lead, value_set=_ESCAPED_LEADS), _FLAT_OBJECT_RE)
    other = pc.invert(flat)
    good = pc.or_(flat, _matching(texts, other, _ESCAPED_BODY_RE))
    decoded = _unescape(texts)  # garbage where not good
    # The other candidates (bulk_rows._levels': "{" after whitespace and a level key, on the decoded text).
    lead = pc.binary_slice(decoded, 0, 1)
    start = pc.and_(pc.and_(other, good), pc.is_in(lead, value_set=_OBJECT_LEADS))
    undecided = _matching(decoded, _matching(decoded, start, _OBJECT_START), LEVEL_KEY)
    levels = pa.nulls(len(texts), STRING)
    if pc.any(flat).as_py():
        levels, odd = _flat_levels(decoded, flat)
        undecided = pc.or_(undecided, odd)
    if pc.any(undecided).as_py():  # one by one, as bulk_rows._levels does
        slow = [level_of(text) for text in decoded.filter(undecided).to_pylist()]
        levels = pc.replace_with_mask(levels, undecided, pa.array(slow, STRING))
    return good, decoded, levels


_ESCAPED_LEADS = pa.array([b"{", b" ", b"\\"], pa.binary())  # "{" after escaped whitespace


def _matching(texts: pa.Array, rows: pa.Array, pattern: str) -> pa.Array:
    """``rows`` and ``pattern`` matching: on those rows alone when few, else on all (no copy)."""
    count = pc.sum(rows).as_py() or 0
    if count == 0:
        return rows
    if count * 2 >= len(texts):
        return pc.and_(rows, pc.match_substring_regex(texts, pattern))
    return pc.replace_with_mask(rows, rows, pc.match_substring_regex(texts.filter(rows), pattern))


def _bytes_of(array: pa.Array) -> pa.Array:
    """The value bytes of a binary array as uint8 (no copy)."""
    offsets = pa.Array.from_buffers(_INT32, array.offset + len(array) + 1, [None, array.buffers()[1]])
    first, last = offsets[array.offset].as_py(), offsets[-1].as_py()
    return pa.Array.from_buffers(pa.uint8(), last - first, [None, array.buffers()[2]], offset=first)


def _unescape(texts: pa.Array) -> pa.Array:
    """Decode JSON string texts (those not checked valid come out garbled, never raise).

    Each stage runs on the rows that need it, and each replacement only where its escape occurs:
    a replacement copies every text it is given.
    """
    decoded = pc.replace_substring(texts, '\\"', '"')
    left = pc.match_substring_regex(decoded, _BACKSLASH)
    if not pc.any(left).as_py():
        return decoded
    again = pc.replace_substring(texts.filter(left), "\\\\", _SENTINEL)
    again = pc.replace_substring(again, '\\"', '"')
    again = _where(again, r"\\[/bfnrt]", lambda rows: _replace_present(rows, _ONE_LETTER))
    again = _where(again, r"\\u", _decode_u)
    return pc.replace_with_mask(decoded, left, pc.replace_substring(again, _SENTINEL, "\\"))


def _where(texts: pa.Array, pattern: str, decode: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """``texts`` with ``decode`` applied to those matching ``pattern`` (on them alone)."""
    rows = pc.match_substring_regex(texts, pattern)
    if not pc.any(rows).as_py():
        return texts
    return pc.replace_with_mask(texts, rows, decode(texts.filter(rows)))


def _replace_present(texts: pa.Array, pairs: Iterable[tuple[str, str]]) -> pa.Array:
    for escape, char in pairs:
        if pc.any(pc.match_substring_regex(texts, re.escape(escape))).as_py():
            texts = pc.replace_substring(texts, escape, char)
    return texts


def _decode_u(texts: pa.Array) -> pa.Array:
    """The ``\\u`` escapes of texts that hold some: only the forms present (one split finds them)."""
    heads = pc.binary_slice(pc.split_pattern(texts, "\\u").flatten(), 0, 4)
    present = {"\\u" + bytes(form).decode("latin-1") for form in pc.unique(heads).to_pylist()}
    return _replace_present(texts, ((e, c) for e, c in _U_DECODED.items() if e in present))


# --- Levels ---------------------------------------------------------------------------------------


def _flat_levels(texts: pa.Array, rows: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(level_of() or null, undecided) of the ``rows`` of decoded ``texts``, flat JSON objects.

    As level_of: the first key of APP_LEVEL_KEYS whose value (its last occurrence) is a non-empty
    string or a pino number; a value level_of would not take sends it to the next key.
    """
    n = len(texts)
    levels = pa.nulls(n, STRING)
    odd = falses(n)
    todo = rows
    for key in schema.APP_LEVEL_KEYS:
        count = pc.sum(todo).as_py() or 0
        if count == 0:
            break
        dense = count * 10 >= n * 9  # split every text rather than copy nearly all of them out first
        parts = pc.split_pattern(
            texts if dense else texts.filter(todo), f'"{key}":', max_splits=1, reverse=True
        )
        found = pc.greater(pc.list_value_length(parts), i32(1))
        if dense:
            found = pc.and_(found, todo)
        if not pc.any(found).as_py():
            continue
        last = pc.subtract(parts.offsets.slice(1).filter(found), i32(1))  # the part after the last key
        windows = pc.binary_slice(parts.flatten(), 0, _WINDOW).take(last).dictionary_encode()
        level, unknown = _read_values(windows.dictionary)
        level, unknown = level.take(windows.indices), unknown.take(windows.indices)
        hit = found if dense else pc.replace_with_mask(todo, todo, found)
        levels = pc.replace_with_mask(levels, hit, level)
        odd = pc.or_(odd, pc.replace_with_mask(falses(n), hit, unknown))
        todo = pc.and_not(todo, pc.replace_with_mask(falses(n), hit, pc.or_(pc.is_valid(level), unknown)))
    return levels, odd


def _read_values(windows: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(level or null, undecided) of the bytes after a level key's colon; few: read with re."""
    if len(windows) > FEW_WINDOWS:
        return _read_values_bulk(windows)
    levels: list[str | None] = []
    odd: list[bool] = []
    for window in windows.to_pylist():
        match = _VALUE_PY.match(window)
        token = match[1] if match else None
        if token is None or token == b'"' or (token[:1] == b'"' and not token.isascii()):
            levels.append(None)  # a string with an escape or longer than the window; not ASCII
            odd.append(True)
        elif token[:1] == b'"':
            levels.append(token[1:-1].decode().lower() if len(token) > 2 else None)
            odd.append(False)
        else:
            levels.append(_PINO.get(token.decode()))
            odd.append(False)
    return pa.array(levels, STRING), pa.array(odd, pa.bool_())


def _read_values_bulk(windows: pa.Array) -> tuple[pa.Array, pa.Array]:
    token = pc.extract_regex(windows, _VALUE_RE).field("v")
    size = pc.binary_length(token)
    string = pc.starts_with(token, '"')
    # '"' alone: a string with an escape, or longer than the window. Not ASCII: str.lower() may
    # differ from ascii_lower. Either is read by level_of.
    odd = pc.fill_null(
        pc.and_(string, pc.or_(pc.equal(size, i32(1)), pc.match_substring_regex(token, r"[\x80-\xff]"))),
        True,
    )
    word = pc.and_(string, pc.greater(size, i32(2)))  # '""' is no level, nor are numbers but pino's
    pino = _PINO_NAMES.take(pc.index_in(token.view(STRING), value_set=_PINO_TEXTS))
    levels = pc.if_else(word, pc.ascii_lower(pc.binary_slice(token, 1, -1).view(STRING)), pino)
    return pc.if_else(odd, pa.scalar(None, STRING), levels), odd
