"""The envelope slicer: Fly-shaped payloads turned into rows without a JSON parse (the fast path of parse_batch).

Fly sends one envelope, keys in alphabetical order, every value a string::

    {"event":{"provider":P},"fly":{"app":{"instance":I,"name":APP},"region":REGION},
     "host":H,"log":{"level":L},"message":M,"timestamp":"YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ"}

A payload of exactly that shape (compact, nothing else in it) is three
pieces of its line in the batch's buffer (wrapped as Arrow arrays
without a copy, :mod:`archiver.codec.lines`), all handled in bulk with Arrow kernels, a chunk of
:data:`CHUNK_ROWS` lines at a time:

* the *head*, through ``"message":"``. One (app, region) batch has a handful
  of distinct heads (instance x host x provider x Fly level): the frequent
  ones of a sample are compared whole with every line, the other lines are
  searched and their heads dictionary-encoded; each distinct head is checked
  (an anchored pattern of the exact envelope, values without escapes or
  control characters, ``name``/``region`` the partition's) and split into
  provider, instance, host and ``log.level`` once;
* the *tail*, the last 47 bytes: ``","timestamp":"``, 30 bytes, ``"}``.
  Arrow's cast to timestamp[ns] reads the time and refuses bad digits,
  separators, field ranges (February 29 of a common year, hour 24, second
  60) and anything beyond int64; with "T" at 10, "Z" at 29 and the fixed
  length, a text it casts is the canonical form (pinned by a test). The
  accepted window is a text comparison (canonical texts sort as times); a
  chunk the cast refuses is halved to find the refused rows;
* the *body* between them, the raw JSON text of ``message``, checked and
  decoded with the app's level by :mod:`archiver.codec.envelope_text`.

UTF-8: an ASCII batch needs nothing more; otherwise lines are checked with
Python's strict decoder (what orjson refuses, it refuses), in blocks of 256.

Any payload not of that exact shape (other key order, extra or missing
fields, whitespace, non-string or escaped envelope values, ``\\u`` escapes
but the few decoded in bulk, control characters, invalid UTF-8, a timestamp
not canonical or outside the window, another app or region, truncated forms)
is left out of the mask: :func:`archiver.codec.parse.parse_batch` gives it
to the general path, per message. The rows sliced are never malformed and
have ``extra = null``, exactly as the general path makes them.
"""

from __future__ import annotations

import re
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from archiver.archive import schema
from archiver.archive.message import format_timestamp_ns
from archiver.archive.timestamps import split_ns
from archiver.codec.envelope_text import STRING, falses, i32, messages
from archiver.codec.lines import Lines, iota, pieces
from archiver.codec.parse_exact import MIN_TIMESTAMP_NS
from archiver.codec.payloads import Payloads

#: Lines sliced at a time, in equal chunks of a multiple of 1,024 (the Parquet writer's write batch, so
#: pages are cut where they are for parse_batch's reader): 50,000-line batches took ~25% less CPU in
#: chunks of 12-25k lines than whole; the data stays in cache across the ~60 kernel passes.
CHUNK_ROWS = 16384
_MARK = b'"message":"'
#: Every line of Fly's shape ends so: ``","timestamp":"`` + 30 bytes of timestamp + ``"}`` + newline.
_TAIL = 48
_TS_FROM_END = 33  # the timestamp is bytes [-33, -3) of a line
_TIMESTAMP_KEY = b'","timestamp":"'
_END = b'Z"}\n'
# A JSON string value with no escape and no control character (RE2 in byte mode: any byte >= 0x20
# but '"' and '\'; UTF-8 validity is checked beforehand, for whole lines).
_PLAIN = r'[^"\\\x00-\x1f]*'
_HEAD_RE = (
    r'^\{"event":\{"provider":"(?P<provider>' + _PLAIN + r')"\},"fly":\{"app":\{"instance":"(?P<instance>'
    + _PLAIN + r')","name":"(?P<name>' + _PLAIN + r')"\},"region":"(?P<region>' + _PLAIN + r')"\},'
    r'"host":"(?P<host>' + _PLAIN + r')","log":\{"level":"(?P<level>' + _PLAIN + r')"\},"message":"$'
)  # fmt: skip
_HEAD_PY = re.compile(_HEAD_RE[1:-1].encode())  # the same pattern (RE2 and re agree on it), as bytes
_HEAD_FIELDS = ("provider", "instance", "name", "region", "host", "level")
#: Up to this many distinct heads are checked with re; more with one RE2 pass (it compiles per call).
FEW_HEADS = 64
#: Heads tested whole against every line (the most frequent ones of a sample); the rest are searched.
_TOP_HEADS = 4
_SAMPLE = 48
_MAX_HEAD_BYTES = 4096
#: Stands in for refused rows' timestamps so that the cast cannot fail on them.
_VALID_TS = "2000-01-01T00:00:00.000000000Z"
#: Lines per UTF-8 check of a batch that is not ASCII; a block that fails is checked line by line.
_UTF8_BLOCK = 256
_MAX_INT32 = 2**31 - 1
_INT32 = pa.int32()
_MIN_TIMESTAMP_TEXT = format_timestamp_ns(MIN_TIMESTAMP_NS)


def slice_payloads(
    app: str, region: str, payloads: Payloads, newest_text: str | None
) -> tuple[pa.Array, pa.Table] | None:
    """(which payloads were sliced, their rows in input order); None for a batch over 2 GiB (int32 offsets)."""
    n = len(payloads)
    if not n or len(payloads.data) > _MAX_INT32:
        return None
    ends = pa.Array.from_buffers(pa.uint64(), n, [None, pa.py_buffer(payloads.ends)])
    laid = Lines(payloads.data, pc.add(ends.cast(_INT32), i32(1)), ascii=payloads.is_ascii)
    del ends  # the export of payloads.ends: the array must stay free to grow once parsed
    masks: list[pa.Array] = []
    tables: list[pa.Table] = []
    size = -(-n // -(-n // CHUNK_ROWS))  # chunks of about equal size, at most CHUNK_ROWS,
    size = min(CHUNK_ROWS, -(-size // 1024) * 1024) if CHUNK_ROWS >= 1024 else size  # in 1,024s
    for lo in range(0, n, size):
        sliced, table = _slice_chunk(app, region, laid.rows(lo, min(lo + size, n)), newest_text)
        masks.append(sliced)
        if table.num_rows:
            tables.append(table)
    if not tables:
        return pa.concat_arrays(masks), schema.FILE_SCHEMA.empty_table()
    return pa.concat_arrays(masks), pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _slice_chunk(app: str, region: str, laid: Lines, newest_text: str | None) -> tuple[pa.Array, pa.Table]:
    """(mask of the lines sliced, their rows in input order)."""
    n, starts, ends = laid.n, laid.starts, laid.ends
    lines = laid.binary(pa.concat_arrays([starts.slice(0, 1), ends]))
    ok = _valid_utf8(laid)

    codes, distinct = _heads(lines, laid)
    head_ok, provider, instance, host, fly_level = _check_heads(distinct, app, region)
    ok = pc.and_(ok, pc.fill_null(head_ok.take(codes), False))

    ts_bytes = pc.binary_slice(lines, -_TS_FROM_END, -3)
    ts_text = ts_bytes.view(STRING)
    ok = pc.and_(ok, pc.ends_with(lines, _END))
    ok = pc.and_(ok, pc.equal(pc.binary_slice(lines, -_TAIL, -_TS_FROM_END), _TIMESTAMP_KEY))
    ok = pc.and_(ok, pc.equal(pc.binary_slice(ts_bytes, 10, 11), b"T"))  # the cast also takes a space
    ok = pc.and_(ok, pc.greater_equal(ts_text, _MIN_TIMESTAMP_TEXT))
    if newest_text is not None:
        ok = pc.and_(ok, pc.less_equal(ts_text, newest_text))

    head_end = pc.add(starts, pc.fill_null(pc.binary_length(distinct).take(codes), i32(0)))
    body_end = pc.subtract(ends, i32(_TAIL))
    ok = pc.and_(ok, pc.less_equal(head_end, body_end))
    cut = pieces(laid, head_end, pc.max_element_wise(head_end, body_end), laid.total)
    ok, message, app_level = messages(cut.take(pc.multiply(iota(n), i32(2))), ok)

    ok, timestamps = _timestamps(ts_text, ok)
    if not pc.all(ok).as_py():
        keep = pc.indices_nonzero(ok)
        if not len(keep):
            return ok, schema.FILE_SCHEMA.empty_table()
        timestamps, message, codes = timestamps.take(keep), message.take(keep), codes.take(keep)
        app_level = app_level.take(keep)
    fly_level_column = fly_level.take(codes)
    rows = len(message)
    columns = [
        *split_ns(timestamps),
        pa.repeat(pa.scalar(region, STRING), rows),
        instance.take(codes),
        host.take(codes),
        provider.take(codes),
        pc.coalesce(app_level, fly_level_column),
        fly_level_column,
        message.view(STRING),  # valid UTF-8: the lines are
        pa.nulls(rows, STRING),
    ]
    return ok, pa.Table.from_arrays(columns, schema=schema.FILE_SCHEMA)


def _valid_utf8(laid: Lines) -> pa.Array:
    """True for each line that is valid UTF-8 (an ASCII batch was scanned once, as a whole)."""
    n = laid.n
    if laid.ascii:
        return pa.repeat(True, n)
    view = memoryview(laid.raw)
    starts, ends = laid.starts.to_pylist(), laid.ends.to_pylist()
    mask = [True] * n
    try:
        for lo in range(0, n, _UTF8_BLOCK):
            hi = min(lo + _UTF8_BLOCK, n)
            try:
                str(view[starts[lo] : ends[hi - 1]], "utf-8")
                continue
            except UnicodeDecodeError:
                pass
            for i in range(lo, hi):
                try:
                    str(view[starts[i] : ends[i]], "utf-8")
                except UnicodeDecodeError:
                    mask[i] = False
    finally:
        view.release()  # an export would stop the bytearray from growing
    return pa.array(mask, pa.bool_())


def _heads(lines: pa.Array, laid: Lines) -> tuple[pa.Array, pa.Array]:
    """(index into the distinct heads of each line's head, null if none; the distinct heads).

    A line's head runs through its first '"message":"'. The most frequent heads of a sample
    are tested whole against every line (one compare each); the rare ones (runner messages,
    a lone instance) are cheaper to search for.
    """
    n, raw, starts, ends = laid.n, laid.raw, laid.starts, laid.ends
    sample: Counter[bytes] = Counter()
    rows = iota(n)[:: max(1, n // _SAMPLE)]
    for start, end in zip(starts.take(rows).to_pylist(), ends.take(rows).to_pylist(), strict=True):
        at = raw.find(_MARK, start, end)
        if at >= 0:
            sample[bytes(raw[start : at + len(_MARK)])] += 1
    top = [head for head, count in sample.most_common(_TOP_HEADS) if count * 16 >= sum(sample.values())]
    codes = pa.nulls(n, _INT32)
    found = falses(n)
    for code, head in enumerate(top):
        hit = pc.starts_with(lines, head)
        if code:
            hit = pc.and_not(hit, found)
        codes = pc.if_else(hit, i32(code), codes)
        found = pc.or_(found, hit) if code else hit
    distinct = pa.array(top, pa.binary())
    if pc.all(found).as_py():
        return codes, distinct
    missing = pc.invert(found)
    rows = pc.indices_nonzero(missing)
    at = pc.find_substring(pc.binary_slice(lines.take(rows), 0, _MAX_HEAD_BYTES), _MARK)
    has = pc.greater_equal(at, i32(0))
    starts = starts.take(rows)
    head_ends = pc.add(starts, pc.if_else(has, pc.add(at, i32(len(_MARK))), i32(0)))
    heads = pieces(laid, starts, head_ends, laid.total).take(pc.multiply(iota(len(rows)), i32(2)))
    heads = heads.dictionary_encode()
    more = pc.if_else(has, pc.add(heads.indices.cast(_INT32), i32(len(top))), pa.scalar(None, _INT32))
    return pc.replace_with_mask(codes, missing, more), pa.concat_arrays([distinct, heads.dictionary])


def _check_heads(distinct: pa.Array, app: str, region: str) -> tuple[pa.Array, ...]:
    """For each distinct head: valid for (app, region)?, provider, instance, host, log.level."""
    if len(distinct) > FEW_HEADS:  # RE2 compiles the pattern anew; for a few heads re is cheaper
        parts = pc.extract_regex(distinct, _HEAD_RE)
        fields = {f: parts.field(f).view(STRING) for f in _HEAD_FIELDS}
        ok = pc.fill_null(pc.is_valid(parts), False)
        ok = pc.and_(ok, pc.fill_null(pc.equal(fields["name"], app), False))
        ok = pc.and_(ok, pc.fill_null(pc.equal(fields["region"], region), False))
        return ok, fields["provider"], fields["instance"], fields["host"], fields["level"]
    valid: list[bool] = []
    columns: list[list[str | None]] = [[], [], [], []]
    for head in distinct.to_pylist():
        match = _HEAD_PY.fullmatch(head) if head is not None else None
        try:
            values = None if match is None else [match[f].decode("utf-8") for f in _HEAD_FIELDS]
        except UnicodeDecodeError:
            values = None
        if values is None:
            values = [""] * len(_HEAD_FIELDS)
            valid.append(False)
        else:
            valid.append(values[2] == app and values[3] == region)
        for column, value in zip(columns, (values[0], values[1], values[4], values[5]), strict=True):
            column.append(value)
    return pa.array(valid, pa.bool_()), *(pa.array(column, STRING) for column in columns)


def _timestamps(ts_text: pa.Array, ok: pa.Array) -> tuple[pa.Array, pa.Array]:
    """ok less the texts Arrow's cast refuses, and the texts as timestamp[ns] (a stand-in where not ok)."""
    texts = ts_text if pc.all(ok).as_py() else pc.if_else(ok, ts_text, _VALID_TS)
    try:
        return ok, pc.cast(texts, schema.NS_TIMESTAMP_TYPE)
    except pa.ArrowInvalid:
        pass
    refused: list[int] = []
    _refused(texts, 0, len(texts), refused)
    mask = [True] * len(texts)
    for i in refused:
        mask[i] = False
    ok = pc.and_(ok, pa.array(mask, pa.bool_()))
    return ok, pc.cast(pc.if_else(ok, ts_text, _VALID_TS), schema.NS_TIMESTAMP_TYPE)


def _refused(texts: pa.Array, lo: int, hi: int, refused: list[int]) -> None:
    try:
        pc.cast(texts.slice(lo, hi - lo), schema.NS_TIMESTAMP_TYPE)
        return
    except pa.ArrowInvalid:
        if hi - lo == 1:
            refused.append(lo)
            return
    mid = (lo + hi) // 2
    _refused(texts, lo, mid, refused)
    _refused(texts, mid, hi, refused)
