"""Turn a batch of raw NATS payloads of one (app, region) into rows of schema v2.

Every payload yields exactly one row, in input order, and nothing here raises
on bad input. Three paths give the same rows (property-tested); each payload
takes the first that holds it exactly:

Envelope slicer (:mod:`archiver.codec.envelope`, batches of at least
:data:`SLICE_MIN_PAYLOADS`): Fly's compact envelope is cut out of the bytes
with Arrow kernels, no JSON parse. Payloads of another shape go on, per
message, to the bulk reader.

Bulk reader (Arrow C++): payloads are taken in chunks
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
from archiver.codec.bulk_rows import exact_bulk_rows
from archiver.codec.envelope import slice_payloads
from archiver.codec.parse_exact import exact_table
from archiver.codec.payloads import Payloads

#: Smaller batches skip the envelope slicer: its ~150 kernel calls and regex compilations (~2 ms a
#: chunk) cost more than they save below this. ``bench/encode_cost.py --threshold``: at 1,000 payloads
#: the slicer is 1.2x faster on plain text and 1.1x slower with half JSON app logs; at 2,000, 1.5x and
#: 1.1x faster.
SLICE_MIN_PAYLOADS = 2000

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
_MAX_BLOCK = 2**31 - 1  # ReadOptions.block_size is an int32


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
    app: str,
    region: str,
    payloads: Payloads,
    received_ns: int,
    newest_ns: int | None = None,
    *,
    slicer: bool | None = None,
) -> ParsedBatch:
    """Parse raw payloads of one (app, region) into one row each, in input order (see the module docstring).

    ``slicer``: None takes the envelope slicer from SLICE_MIN_PAYLOADS payloads on; True or False
    always or never (tests and benchmarks compare the paths).
    """
    newest_text = None if newest_ns is None else format_timestamp_ns(newest_ns)
    use_slicer = len(payloads) >= SLICE_MIN_PAYLOADS if slicer is None else slicer
    sliced = slice_payloads(app, region, payloads, newest_text) if use_slicer else None
    if sliced is None or sliced[1].num_rows == 0:
        return _parse_general(app, region, payloads, received_ns, newest_ns, newest_text)
    mask, table = sliced
    if table.num_rows == len(payloads):
        return ParsedBatch(table, 0)
    rest = payloads.select(pc.indices_nonzero(pc.invert(mask)).to_pylist())
    result = _parse_general(app, region, rest, received_ns, newest_ns, newest_text)
    return ParsedBatch(_interleave(table, result.table, mask), result.malformed, result.malformed_kinds,
                       result.wrong_type)  # fmt: skip


def _parse_general(
    app: str,
    region: str,
    payloads: Payloads,
    received_ns: int,
    newest_ns: int | None,
    newest_text: str | None,
) -> ParsedBatch:
    """The bulk reader, then the exact path for what it refuses; rows in input order."""
    parts: list[pa.Table] = []
    exact: list[int] = []
    for start in range(0, len(payloads), CHUNK_ROWS):
        end = min(start + CHUNK_ROWS, len(payloads))
        _bulk(payloads, start, end, (app, region, newest_text), parts, exact, [2 * (end - start)])
    if not exact:
        if not parts:
            return ParsedBatch(schema.FILE_SCHEMA.empty_table(), 0)
        return ParsedBatch(pa.concat_tables(parts) if len(parts) > 1 else parts[0], 0)
    result = exact_table([payloads[i] for i in exact], app, region, received_ns, newest_ns)
    table = result.table
    if parts:  # ascending both: the bulk rows, and the exact ones (halving goes left to right)
        in_bulk = bytearray(b"\x01") * len(payloads)
        for i in exact:
            in_bulk[i] = 0
        mask = pa.Array.from_buffers(pa.uint8(), len(in_bulk), [None, pa.py_buffer(in_bulk)]).cast(pa.bool_())
        table = _interleave(pa.concat_tables(parts) if len(parts) > 1 else parts[0], table, mask)
    malformed = sum(result.malformed_kinds.values())
    return ParsedBatch(table, malformed, result.malformed_kinds, result.wrong_type)


def _interleave(first: pa.Table, second: pa.Table, from_first: pa.Array) -> pa.Table:
    """Rows in input order: row i is the next of ``first`` where ``from_first[i]``, else the next of ``second``."""
    in_first = pc.subtract(pc.cumulative_sum(from_first.cast(pa.int32())), _ONE)
    in_second = pc.add(pc.cumulative_sum(pc.invert(from_first).cast(pa.int32())), first.num_rows - 1)
    return pa.concat_tables([first, second]).take(pc.if_else(from_first, in_first, in_second))


_ONE = pa.scalar(1, pa.int32())


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
        return exact_bulk_rows(raw.combine_chunks().flatten().flatten(), target)
    except (pa.ArrowException, ValueError):  # ArrowInvalid is a ValueError
        return None
