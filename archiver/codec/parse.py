"""Turn a batch of raw NATS payloads of one (app, region) into rows of schema v2.

Every payload yields exactly one row and nothing here raises on bad input.

Fast path (Arrow C++, nearly every Fly message): payloads are taken in chunks
of :data:`CHUNK_ROWS`, joined with newlines and read by ``pyarrow.json`` with
an explicit schema of the known Fly fields, all strings, refusing unknown
fields. Vectorised checks then keep the rows the columns hold *exactly*: every
known field present, ``timestamp`` in the canonical form (9 fractional digits,
``Z``: it must equal the canonical formatting of its parsed value),
``fly.app.name`` equal to ``app`` and ``fly.region`` equal to ``region``. A
chunk the reader refuses (unknown field, non-string value, invalid JSON or
UTF-8, a payload that is not one line starting with ``{``) is halved until
the refused part is at most :data:`MIN_BULK_ROWS` payloads; those payloads,
and the rows that fail a check, take the exact path.

Exact path (orjson, per payload):

* MALFORMED when the payload is empty or only whitespace, not valid JSON
  (text, truncated JSON, raw control characters such as NUL in a string),
  not UTF-8, not a JSON object (array, number, string), has no ``timestamp``
  string that :func:`archiver.archive.message.parse_timestamp` accepts *within the
  accepted window*, has a top-level :data:`~archiver.archive.schema.MALFORMED_MARK`
  key (so the marker stays unambiguous), fields nested deeper than orjson
  writes (255), or was cut at ``MAX_MESSAGE_BYTES``
  (:func:`archiver.archive.message.truncate_payload`); the kinds are
  :data:`~archiver.archive.schema.MALFORMED_KINDS`, counted in
  :attr:`ParsedBatch.malformed_kinds`. The row gets ``timestamp =
  received_ns``, the payload as UTF-8 text (errors replaced) in
  ``message``, other columns null, and ``extra = {"_malformed": true}``,
  plus ``"_raw_base64"`` only when the payload was not valid UTF-8, and
  ``"_truncated": true, "_original_bytes": N`` for a truncated one (whose
  ``message`` is the kept part).
* The accepted window of event times: from 2000-01-01T00:00:00Z
  (:data:`~archiver.codec.parse_exact.MIN_TIMESTAMP_NS`) to ``newest_ns`` when
  given (the live service passes the receive time plus one day,
  :func:`~archiver.codec.parse_exact.newest_accepted_ns`; ``archiver import`` of old
  logs passes none). A year-1 or year-9999 time (beyond int64 nanoseconds)
  is unparseable anyway. The bulk path applies the same window to the
  canonical text, whose lexical order is its time order.
* Otherwise each known field holding a string goes to its column, and
  ``extra`` gets what the columns and partition values do not imply (unknown
  fields at any depth, non-string known fields, a non-canonical timestamp
  text verbatim, an app or region differing from the partition) as compact
  JSON nested like the original, key order kept. A known field implied by
  the columns or partition but absent from the original is recorded as
  ``null`` (absent). An explicit JSON ``null`` in a known field is treated as
  absent: no column value (it is still rebuilt, except a null
  ``fly.app.name``/``fly.region``, which rebuilds as a missing key). Numbers
  are kept as orjson reads them (integers beyond 64 bits become floats).
  ``extra`` is null when empty; :mod:`archiver.archive.message` has the merge rules.
  A known field of another type than Fly's (a ``message`` object, a numeric
  ``host``) is such a regular row, counted in :attr:`ParsedBatch.wrong_type`.

``app`` must be the value a reader decodes from the file's key (see
:mod:`archiver.archive.layout`) and ``region`` is the value of every row's
``region`` column: a differing value in the message is kept in ``extra``.
Time: the parsed nanoseconds are split into ``timestamp`` (µs) and
``timestamp_nanos`` (:func:`archiver.archive.timestamps.split_ns`).

Level: ``fly_level`` is ``log.level`` verbatim. ``level`` is the app's own
level when ``message`` is a JSON object (after JSON whitespace) with a
top-level key of :data:`~archiver.archive.schema.APP_LEVEL_KEYS` (first usable one)
holding a non-empty string (lower-cased) or a pino number (10 trace ... 60
fatal); otherwise ``log.level`` verbatim. Candidates are found with
vectorised regexes; only they are parsed with orjson.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from archiver.archive import schema
from archiver.archive.message import format_timestamp_ns
from archiver.archive.timestamps import split_ns
from archiver.codec.parse_exact import LEVEL_KEY, MIN_TIMESTAMP_NS, exact_table, level_of
from archiver.codec.payloads import Payloads

#: Payloads per bulk read: large enough to amortise the reader, small enough to stay in cache.
CHUNK_ROWS = 8192
#: A refused range this small goes to the exact path instead of being halved again.
MIN_BULK_ROWS = 64

_STR = pa.string()
#: The known Fly fields as the bulk reader must see them (all strings, nothing else allowed).
FLY_JSON_SCHEMA = pa.schema(
    [
        ("event", pa.struct([("provider", _STR)])),
        ("fly", pa.struct([("app", pa.struct([("instance", _STR), ("name", _STR)])), ("region", _STR)])),
        ("host", _STR),
        ("log", pa.struct([("level", _STR)])),
        ("message", _STR),
        ("timestamp", _STR),
    ]
)
_PARSE_OPTIONS = pj.ParseOptions(
    explicit_schema=FLY_JSON_SCHEMA, unexpected_field_behavior="error", newlines_in_values=False
)
_CANONICAL_TS = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}Z$"
# The level tests run vectorised here (Arrow, RE2) and per row in parse_exact (re), alike.
_JSON_WHITESPACE = " \t\r\n"
_MAX_BLOCK = 2**31 - 1  # ReadOptions.block_size is an int32
_MIN_TIMESTAMP_TEXT = format_timestamp_ns(MIN_TIMESTAMP_NS)


@dataclass(frozen=True, slots=True)
class ParsedBatch:
    """Rows of one batch (``schema.FILE_SCHEMA``, unsorted) and how many were malformed."""

    table: pa.Table
    malformed: int
    #: Malformed rows by kind (:data:`~archiver.archive.schema.MALFORMED_KINDS`); only kinds seen.
    malformed_kinds: dict[str, int] = field(default_factory=dict)
    #: Regular rows with a known field of another type than Fly's (kept in ``extra``).
    wrong_type: int = 0


def parse_batch(
    app: str, region: str, payloads: Payloads, received_ns: int, newest_ns: int | None = None
) -> ParsedBatch:
    """Parse raw payloads of one (app, region) into one row each (see the module docstring)."""
    parts: list[pa.Table] = []
    exact: list[int] = []
    newest_text = None if newest_ns is None else format_timestamp_ns(newest_ns)
    for start in range(0, len(payloads), CHUNK_ROWS):
        end = min(start + CHUNK_ROWS, len(payloads))
        _bulk(payloads, start, end, (app, region, newest_text), parts, exact, [2 * (end - start)])
    if not exact:
        if not parts:
            return ParsedBatch(schema.FILE_SCHEMA.empty_table(), 0)
        return ParsedBatch(pa.concat_tables(parts) if len(parts) > 1 else parts[0], 0)
    result = exact_table([payloads[i] for i in exact], app, region, received_ns, newest_ns)
    parts.append(result.table)
    table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    malformed = sum(result.malformed_kinds.values())
    return ParsedBatch(table, malformed, result.malformed_kinds, result.wrong_type)


#: What a bulk read checks rows against: app, region, newest canonical timestamp text (or None).
_Target = tuple[str, str, str | None]


def _bulk(
    payloads: Payloads,
    lo: int,
    hi: int,
    target: _Target,
    parts: list[pa.Table],
    exact: list[int],
    budget: list[int],
) -> None:
    result = _read_bulk(_json_lines(payloads, lo, hi), hi - lo, target)
    if result is not None:
        table, rejected = result
        if table.num_rows:
            parts.append(table)
        exact.extend(lo + i for i in rejected)
        return
    # Halving isolates a few bad payloads for ~2 extra reads of the chunk. When most payloads are
    # refused (say Fly adds a field to every message) it would re-read everything once per level:
    # the budget (payloads in refused reads) sends the rest to the exact path instead.
    budget[0] -= hi - lo
    if hi - lo <= MIN_BULK_ROWS or budget[0] <= 0:
        exact.extend(range(lo, hi))
        return
    mid = (lo + hi) // 2
    _bulk(payloads, lo, mid, target, parts, exact, budget)
    _bulk(payloads, mid, hi, target, parts, exact, budget)


def _json_lines(payloads: Payloads, lo: int, hi: int) -> memoryview | None:
    """Payloads ``lo:hi`` as newline-separated text if each is one line starting with "{" and all is UTF-8.

    One line per payload, each starting with "{": then the reader gives one row per payload
    or fails (it skips blank lines silently, and "{..}{..}" would make two rows: counted).
    The reader does not check UTF-8 inside strings, hence the check here. None otherwise.
    """
    text = payloads.json_lines(lo, hi)  # laid out so already: no copy
    if text is None or payloads.is_ascii:  # one scan of the batch spares the check of each chunk
        return text
    try:
        str(text, "utf-8")
    except UnicodeDecodeError:
        return None
    return text


def _read_bulk(joined: memoryview | None, count: int, target: _Target) -> tuple[pa.Table, list[int]] | None:
    """The exact rows of ``count`` payloads as JSON lines and the positions of the others; None if refused."""
    if joined is None or len(joined) >= _MAX_BLOCK:  # the reader's block must hold the whole chunk
        return None
    try:
        raw = pj.read_json(
            pa.py_buffer(joined),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(joined) + 1),
            parse_options=_PARSE_OPTIONS,
        )
        if raw.num_rows != count:
            return None
        return _exact_bulk_rows(raw.combine_chunks().flatten().flatten(), target)
    except (pa.ArrowException, ValueError):  # ArrowInvalid is a ValueError
        return None


def _exact_bulk_rows(flat: pa.Table, target: _Target) -> tuple[pa.Table, list[int]]:
    app, region, newest_text = target
    ts_text = flat.column("timestamp")
    ok = pc.fill_null(pc.match_substring_regex(ts_text, _CANONICAL_TS), False)
    # Canonical texts have one width, so their lexical order is their time order: the window
    # check needs no cast, and a year the cast refuses (9999) is rejected here, not by the cast.
    ok = pc.and_(ok, pc.fill_null(pc.greater_equal(ts_text, _MIN_TIMESTAMP_TEXT), False))
    if newest_text is not None:
        ok = pc.and_(ok, pc.fill_null(pc.less_equal(ts_text, newest_text), False))
    for name in flat.column_names:  # flatten() propagated parent nulls: a null leaf = absent
        ok = pc.and_(ok, pc.is_valid(flat.column(name)))
    ok = pc.and_(ok, pc.fill_null(pc.equal(flat.column("fly.app.name"), app), False))
    ok = pc.and_(ok, pc.fill_null(pc.equal(flat.column("fly.region"), region), False))
    rejected: list[int] = []
    if not pc.all(ok).as_py():
        rejected = pc.indices_nonzero(pc.invert(ok)).to_pylist()
        flat = flat.filter(ok)
    # Arrow's cast refuses out-of-range fields (hour 24, minute 60, second 60, April 31, February 29
    # of a common year, beyond int64 ns), so a text of the canonical shape that casts is exactly the
    # canonical form of its value: no need to format it back (pc.strftime costs ~0.9 us a row).
    # A text that does not cast makes the whole chunk raise; it is then halved.
    micros, nanos = split_ns(pc.cast(flat.column("timestamp"), schema.NS_TIMESTAMP_TYPE))
    message = flat.column("message").combine_chunks()
    fly_level = flat.column("log.level").combine_chunks()
    columns = [
        micros,
        nanos,
        pa.repeat(pa.scalar(region, _STR), flat.num_rows),
        flat.column("fly.app.instance"),
        flat.column("host"),
        flat.column("event.provider"),
        _levels(message, fly_level),
        fly_level,
        message,
        pa.nulls(flat.num_rows, _STR),
    ]
    return pa.Table.from_arrays(columns, schema=schema.FILE_SCHEMA), rejected


def _levels(message: pa.Array, fly_level: pa.Array) -> pa.Array:
    # ascii_ltrim + starts_with is ~3x cheaper than the equivalent regex.
    candidates = pc.fill_null(pc.starts_with(pc.ascii_ltrim(message, _JSON_WHITESPACE), "{"), False)
    if not pc.any(candidates).as_py():
        return fly_level
    positions = pc.indices_nonzero(candidates)
    texts = message.take(positions)
    has_key = pc.fill_null(pc.match_substring_regex(texts, LEVEL_KEY), False)
    mask = [False] * len(message)
    found: list[str] = []
    # Bytes, not str: saves a UTF-8 decode here and an encode inside orjson.
    raw_texts = texts.filter(has_key).cast(pa.binary()).to_pylist()
    for position, text in zip(positions.filter(has_key).to_pylist(), raw_texts, strict=True):
        level = level_of(text)
        if level is not None:
            mask[position] = True
            found.append(level)
    if not found:
        return fly_level
    return pc.replace_with_mask(fly_level, pa.array(mask, pa.bool_()), pa.array(found, _STR))
