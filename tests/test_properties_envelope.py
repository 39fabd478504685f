"""The envelope slicer against the general path: the same rows, in the same order, the same counts.

``parse_batch(..., slicer=True)`` (the envelope slicer, then the general path
per message for what it leaves) must equal ``parse_batch(..., slicer=False)``
(the bulk JSON reader and the exact path) row for row, with the same malformed
counts, kinds and wrong-type count, and its rows must rebuild to the same
payloads, byte for byte.

Payloads: the decoder strategies of tests/test_properties_codec.py (Fly-shaped
objects with random field values and types, unknown fields, other key order
and spacing, byte mutations, truncated forms, arbitrary bytes) plus payloads
in Fly's exact compact envelope, which are what the slicer takes, with
adversarial values: JSON app logs carrying levels (level/severity/lvl;
strings, pino numbers, floats, booleans, null; nested objects, duplicate and
escaped keys, spacing, invalid or overflowing JSON), every JSON escape,
``\\u`` sequences (the few decoded in bulk in both hex cases, and any other),
surrogates, control characters, non-ASCII and invalid UTF-8, timestamps at the
edges of the window and of the calendar, heads with other apps, regions or
escaped values. Each batch is also sliced in chunks of 7 lines with the RE2
branches for many distinct heads and level windows forced.
``./dev fuzz tests/test_properties_envelope.py`` runs these with
``FUZZ_EXAMPLES`` examples each.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
import test_properties_codec as dec
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from archiver.archive import schema
from archiver.archive.message import format_timestamp_ns, rebuild_payload, truncate_payload
from archiver.codec import envelope, envelope_text
from archiver.codec.parse import ParsedBatch, parse_batch
from archiver.codec.payloads import Payloads
from archiver.demo.flymessage import fly_record

pytestmark = pytest.mark.fuzz
QUICK = settings() if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else settings(max_examples=60)

APP, REGION, RECEIVED, NEWEST = dec.APP, dec.REGION, dec.RECEIVED, dec.NEWEST
LOGHUB = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "loghub"

# --- Fly's exact envelope, with adversarial values ------------------------------------------------

LEVEL_WORDS = [
    "info",
    "INFO",
    "Warn",
    "error",
    "",
    " ",
    "DEBUG",
    "İNFO",
    "ınfo",
    "ǅebug",
    "ﬀ",
    "trace",
    "x" * 70,
]
level_values = st.one_of(
    st.sampled_from(LEVEL_WORDS),
    st.sampled_from([10, 20, 30, 40, 50, 60, 0, 35, -10, 70, 2**63, 30.0, 3e1]),
    st.booleans(),
    st.none(),
    st.text(max_size=8),
    st.just({"nested": "info"}),
    st.just(["info"]),
)
KEYS = [
    "level",
    "severity",
    "lvl",
    "msg",
    "ts",
    "time",
    "Level",
    "levels",
    "lv",
    "lvll",
    "severit",
    "caller",
    "",
]
plain_values = st.one_of(
    st.text(max_size=20),
    st.text(alphabet="ab\"\\/\n\t\r\b\f\x00\x1b\x1f\x7f<>&'é😀\u2028\u2029", max_size=12),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
ODD_APP_LOGS = [
    '{"lev\\u0065l":"warn"}', '{"x\\"level":"warn","level":"info"}', '{"a":"\\"level\\":1"}',
    '{"msg":"level","level":"error"}', '{"level":"in\\u0066o"}', '{"level":"\\u0130NFO"}',
    '{"level":"info\\"x"}', '{"level":"a\\\\b"}', '{"level": 30 }', '{"level":30.0}', '{"level":1e400}',
    '{"level":123456789012345678901234567890}', '{"level":"info"} x', '{"level":"info",}',
    '{"level":"info"', '{"level":"info","level":50}', '{"level":50,"level":"x"}', '{"severity":"E","lvl":"d"}',
    '{"lvl":true,"severity":"ok"}', '{"level":"\\ud800"}', '{"level":"\\ud83d\\ude00"}', '{"level":-0}',
    '{"level":01}', '{"a":{"level":"inner"}}', '{"a":[{"level":1}],"level":"top"}', "{}", '{"level":""}',
    '{"msg":"<b>&amp;</b>","level":"warn"}', '{"msg":"\x1b[31mred\x1b[0m","level":"error"}',
    '{"level":"warn","msg":"a\u2028b"}', "{\"level\":\"it's\"}",
]  # fmt: skip


@st.composite
def app_json(draw: st.DrawFn) -> str:
    """An app's JSON log line as text: usually a flat object with a level, in many spellings."""
    pairs: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(0, 5))):
        key = draw(st.sampled_from(KEYS) | st.text(max_size=6))
        if key in ("level", "severity", "lvl"):
            value = draw(level_values)
        elif draw(st.integers(0, 6)) == 0:
            value = draw(dec.json_value)  # nested objects and arrays sometimes
        else:
            value = draw(plain_values)
        pairs.append((key, value))
    style = draw(st.integers(0, 9))
    ensure_ascii = draw(st.booleans())
    if style <= 5:  # compact, keys in the drawn order, duplicates kept
        dumps = [json.dumps(k, ensure_ascii=ensure_ascii) + ":" + json.dumps(v, ensure_ascii=ensure_ascii)
                 for k, v in pairs]  # fmt: skip
        return "{" + ",".join(dumps) + "}"
    if style == 6:
        return json.dumps(dict(pairs), indent=draw(st.sampled_from([None, 1, "\t"])), separators=(", ", ": "))
    if style == 7:  # a key spaced from its colon, whitespace around
        inner = ",".join(f' "{k}" : {json.dumps(v)}' for k, v in pairs if '"' not in k and "\\" not in k)
        before, after = (
            draw(st.sampled_from(["", " ", "\n", "\t ", "\r\n"])),
            draw(st.sampled_from(["", " ", "\n"])),
        )
        return before + "{" + inner + "}" + after
    if style == 8:
        return draw(st.sampled_from(ODD_APP_LOGS))
    whole = json.dumps(dict(pairs))  # cut JSON
    return whole[: draw(st.integers(0, len(whole)))]


messages = st.one_of(
    app_json(),
    app_json(),
    st.text(max_size=60),
    st.text(alphabet="ab{}\"\\/: \n\t\r\b\f\x00\x01\x1b\x7f<>&'é😀\ud7ff\ue000\U0010ffff\u2028", max_size=20),
    st.sampled_from(["", " ", "{", "}", '"', "\\", "\u2028", "a/b", "C:\\dir\\file", "\x1b[1m<b>&</b>"]),
)
recent_ts = st.integers(min_value=RECEIVED - 10**15, max_value=NEWEST).map(format_timestamp_ns)
edge_ts = st.sampled_from([
    format_timestamp_ns(dec.MIN_TIMESTAMP_NS), format_timestamp_ns(dec.MIN_TIMESTAMP_NS - 1), format_timestamp_ns(NEWEST),
    format_timestamp_ns(NEWEST + 1), "2024-02-29T12:00:00.000000000Z", "2026-02-29T12:00:00.000000000Z",
    "2026-04-31T00:00:00.000000000Z", "2026-01-01T24:00:00.000000000Z", "2026-01-01T23:59:60.000000000Z",
    "2026-01-01 12:00:00.000000000Z", "2026-01-01t12:00:00.000000000Z", "2026-01-01T12:00:00.000000000z",
    "2026-01-01T12:00:00.00000000Z", "2026-01-01T12:00:00.0000000000Z", "2026-01-01T12:00:00.000000000+00:00",
    "2026-13-01T00:00:00.000000000Z", "2026-00-10T00:00:00.000000000Z", "+026-01-01T00:00:00.000000000Z",
    "2026-01-01T12:00:00,000000000Z", "2026-01-01T1:00:00.0000000000Z", "9999-12-31T23:59:59.999999999Z",
])  # fmt: skip
#: Characters whose \u form the slicer decodes in bulk, and those forms' hex digits.
BULK_U = {"\x1b": "001b", "<": "003c", ">": "003e", "&": "0026", "'": "0027", '"': "0022", "\\": "005c",
          "\u2028": "2028", "\u2029": "2029"}  # fmt: skip


def _escape_randomly(draw: st.DrawFn, text: str) -> str:
    """A JSON string literal of ``text`` with some characters in other legal spellings (\\u, \\/)."""
    out = ['"']
    for char in text:
        literal = json.dumps(char, ensure_ascii=False)[1:-1]
        choice = draw(st.integers(0, 12))
        if choice == 0:
            literal = "".join(f"\\u{unit:04x}" for unit in _utf16(char))
        elif choice <= 3 and char in BULK_U:
            hex_digits = BULK_U[char]
            literal = "\\u" + (hex_digits.upper() if draw(st.booleans()) else hex_digits)
        elif choice == 4 and char == "/":
            literal = "\\/"
        elif choice == 5 and char not in '"\\' and ord(char) >= 0x20:
            literal = char
        out.append(literal)
    out.append('"')
    return "".join(out)


def _utf16(char: str) -> list[int]:
    data = char.encode("utf-16-be", "surrogatepass")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """A payload in Fly's exact compact envelope (what the slicer takes), values drawn adversarially."""

    def text(common: st.SearchStrategy[str]) -> str:
        return draw(common) if draw(st.integers(0, 40)) else draw(st.text(max_size=10))

    values = [
        text(st.sampled_from(["app", "runner"])),
        text(st.text(alphabet="0123456789abcdef", min_size=8, max_size=14)),
        text(st.sampled_from([APP, APP, APP, "other"])),
        text(st.sampled_from([REGION, REGION, REGION, "syd"])),
        text(st.text(alphabet="0123456789abcdef", min_size=4, max_size=4)),
        text(st.sampled_from(["info", "info", "error"])),
        draw(recent_ts) if draw(st.integers(0, 6)) else draw(st.one_of(dec.near_ts, edge_ts, dec.lenient_ts)),
    ]
    quoted = [orjson.dumps(v).decode() for v in values]
    if draw(st.integers(0, 15)) == 0:  # other legal spellings of the values
        quoted = [_escape_randomly(draw, v) for v in values]
    message = draw(messages)
    msg = _escape_randomly(draw, message) if draw(st.integers(0, 3)) == 0 else orjson.dumps(message).decode()
    p, i, nm, r, h, lv, ts = quoted
    payload = (
        f'{{"event":{{"provider":{p}}},"fly":{{"app":{{"instance":{i},"name":{nm}}},"region":{r}}},'
        f'"host":{h},"log":{{"level":{lv}}},"message":{msg},"timestamp":{ts}}}'
    ).encode("utf-8", "surrogatepass")
    change = draw(st.integers(0, 30))
    if change == 0:  # raw control characters, invalid UTF-8, bytes cut or added
        payload = draw(dec.mutated(st.just(payload)))
    elif change == 1:
        payload = truncate_payload(payload, draw(st.integers(1, max(1, len(payload) - 1))))
    elif change == 2:  # an extra field before the tail, or a space
        at = payload.rindex(b',"timestamp":')
        payload = payload[:at] + draw(st.sampled_from([b',"x":"y"', b" ", b',"message":"m"'])) + payload[at:]
    return payload


fast_shaped = envelopes()
anything = st.one_of(fast_shaped, fast_shaped, fast_shaped, dec.payloads)


# --- The property ---------------------------------------------------------------------------------


@contextmanager
def small_chunks() -> Iterator[None]:
    """Chunks of 7 lines, and the RE2 branches for many heads and windows however few there are."""
    saved = envelope.CHUNK_ROWS, envelope.FEW_HEADS, envelope_text.FEW_WINDOWS
    envelope.CHUNK_ROWS, envelope.FEW_HEADS, envelope_text.FEW_WINDOWS = 7, 0, 0
    try:
        yield
    finally:
        envelope.CHUNK_ROWS, envelope.FEW_HEADS, envelope_text.FEW_WINDOWS = saved


def sliced(batch: list[bytes]) -> Iterator[ParsedBatch]:
    """The batch through the slicer, in its default chunks and in small ones."""
    yield parse_batch(APP, REGION, Payloads(batch), RECEIVED, NEWEST, slicer=True)
    with small_chunks():
        yield parse_batch(APP, REGION, Payloads(batch), RECEIVED, NEWEST, slicer=True)


def check(batch: list[bytes]) -> None:
    general = parse_batch(APP, REGION, Payloads(batch), RECEIVED, NEWEST, slicer=False)
    rebuilt = [rebuild_payload(row, APP, REGION) for row in dec.rows_of(general.table)]
    for fast in sliced(batch):
        assert fast.table.schema.equals(general.table.schema, check_metadata=True)
        assert fast.table.equals(general.table)  # row for row, in input order
        assert (fast.malformed, fast.malformed_kinds, fast.wrong_type) == (
            general.malformed, general.malformed_kinds, general.wrong_type,
        )  # fmt: skip
        assert [rebuild_payload(row, APP, REGION) for row in dec.rows_of(fast.table)] == rebuilt


@QUICK
@given(st.lists(anything, max_size=20), st.integers(0, 100))
def test_mixed_batches(hostile: list[bytes], filler: int) -> None:
    """Adversarial payloads among good ones: the same rows, order and counts as the general path."""
    check(dec.FILLER[:filler] + hostile + dec.FILLER[filler : filler + 40])


@QUICK
@given(st.lists(fast_shaped, min_size=1, max_size=60))
def test_envelope_batches(batch: list[bytes]) -> None:
    """Fly's envelope with adversarial values only: most rows take the slicer."""
    check(batch)


@QUICK
@given(st.lists(dec.payloads, min_size=1, max_size=20))
def test_decoder_strategies(batch: list[bytes]) -> None:
    """The decoder strategies of the codec's own property tests, unchanged."""
    check(batch)


def _in_message(text: bytes) -> bytes:
    return dec.good(0).replace(b'"good 0"', text)


@QUICK
@given(anything)
@example(b"")
@example(dec.good(0))
@example(_in_message(b'"{\\"level\\":\\"WARN\\",\\"msg\\":\\"x\\"}"'))
@example(_in_message(b'"{\\"level\\":\\"WARN\\"\\"}"'))
@example(_in_message(b'"{\\"level":\\"WARN\\"}"'))
@example(_in_message(b'"a\\\\\\"b\\\\n\\/\\t"'))
@example(_in_message(b'"\\u001b[31mred\\u001B[0m \\u003cb\\u003e\\u0026\\u0027\\u0022\\u005c\\u005Cn"'))
@example(_in_message(b'"{\\u0022level\\u0022:\\u0022warn\\u0022}"'))
@example(_in_message(b'"{\\"level\\":\\"warn\\",\\"msg\\":\\"\\u003cb\\u003e\\u2028\\"}"'))
@example(_in_message(b'"{\\"level\\":\\"warn\\",\\"msg\\":\\"\\u001b[0m\\"}"'))
@example(_in_message(b'"\\\\u005c\\u005cu0041\\\\\\u0022"'))
@example(_in_message(b'"{\\"lvl\\":true,\\u0022\\u0073\\u0065\\u0076\\u0065\\u0072\\u0069\\u0074\\u0079\\u0022'
                     b'\\u003a\\u0022\\u006f\\u006b\\u0022\\u007d"'))  # fmt: skip
def test_one_payload(payload: bytes) -> None:
    check([payload])


@QUICK
@given(st.lists(fast_shaped, min_size=1, max_size=30), st.integers(65, 150))
def test_many_distinct_heads(batch: list[bytes], instances: int) -> None:
    """More distinct heads than are checked one by one in Python: they are checked by RE2."""
    many = [dec.good(i).replace(b'"i1"', b'"%014x"' % i) for i in range(instances)]
    check(many + batch + many[:10])


def _fly_batch(messages: list[str], seed: int) -> list[bytes]:
    stamps = sorted(RECEIVED - (seed * 7919 + i * 104729) % 10**12 for i in range(len(messages)))
    instances = ["0e286551c30586", "148ed726c33de8", "3d8d9ed4b19a48"]
    return [
        orjson.dumps(fly_record(APP, REGION, text, format_timestamp_ns(ns), instance=instances[i % 3],
                                host=f"{i % 5:04x}", provider="runner" if i % 97 == 0 else "app"))
        for i, (text, ns) in enumerate(zip(messages, stamps, strict=True))
    ]  # fmt: skip


def test_corpus_batches() -> None:
    """LogHub lines (or the packaged sample) as Fly messages, plain and as JSON app logs: equal tables."""
    from archiver.demo.corpus import sample_systems

    lines = [line for _, texts in sorted(sample_systems(LOGHUB if LOGHUB.is_dir() else None).items())
             for line in texts[:400]]  # fmt: skip
    styles = [
        lambda text, i: text,
        lambda text, i: json.dumps({"level": ["info", "WARN", "error"][i % 3], "msg": text}),
        lambda text, i: json.dumps({"severity": "ERROR", "message": text, "n": i}, ensure_ascii=True),
        lambda text, i: json.dumps({"level": 30 + 10 * (i % 3), "time": i, "msg": text}),
        lambda text, i: f"\x1b[3{i % 8}m{text}\x1b[0m <{i}> & done",
    ]
    for seed, style in enumerate(styles):
        batch = _fly_batch([style(text, i) for i, text in enumerate(lines)], seed)
        if seed == len(styles) - 1:  # ANSI colours and HTML escapes as Go's encoder writes them
            batch = [p.replace(b"\\u001b", b"\\u001B").replace(b"<", b"\\u003c").replace(b"&", b"\\u0026")
                     for p in batch]  # fmt: skip
        general = parse_batch(APP, REGION, Payloads(batch), RECEIVED, NEWEST, slicer=False)
        assert general.malformed == 0
        for fast in sliced(batch):
            assert fast.table.equals(general.table)


# Both paths take these in bulk: the tables come out in the same chunks.
bulk_messages = st.one_of(
    st.text(alphabet=" abcXYZ019.:/-_[]{}()=,'", max_size=80),
    st.builds(
        lambda lv, text: json.dumps({"level": lv, "msg": text}),
        st.sampled_from(["info", "WARN", 30, 50]),
        st.text(alphabet=' abc"\\/\n', max_size=30),
    ),
)


@QUICK
@given(
    st.lists(st.tuples(bulk_messages, dec.near_ts.filter(lambda t: t >= "2000")), min_size=1, max_size=200)
)
def test_same_rows_without_fallback(rows: list[tuple[str, str]]) -> None:
    batch = [
        orjson.dumps(fly_record(APP, REGION, m, t, instance="0e286551c30586", host="0ad1")) for m, t in rows
    ]
    general = parse_batch(APP, REGION, Payloads(batch), RECEIVED, NEWEST, slicer=False)
    assume(general.malformed == 0)
    for fast in sliced(batch):
        assert fast.table.equals(general.table)


@settings(max_examples=500)
@given(
    st.lists(
        st.tuples(st.integers(0, 29), st.sampled_from("0123456789-:.TZ +tz/aA\x00,e_")),
        min_size=1,
        max_size=3,
    ),
    dec.near_ts,
)
def test_arrow_cast_is_strict_on_fly_timestamps(changes: list[tuple[int, str]], base: str) -> None:
    """What the slicer relies on: a 30-byte text with "T" at 10 and "Z" at 29 that Arrow casts is canonical."""
    text = list(base)
    for at, char in changes:
        text[at] = char
    candidate = "".join(text)
    assume(candidate[10] == "T" and candidate[29] == "Z")
    try:
        pa.array([candidate]).cast(schema.NS_TIMESTAMP_TYPE)
    except pa.ArrowInvalid:
        return
    assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}Z", candidate)


def test_small_batches_skip_the_slicer() -> None:
    """Below SLICE_MIN_PAYLOADS the general path runs alone; from it on, the slicer (same rows either way)."""
    from archiver.codec import parse

    batch = [dec.good(i) for i in range(parse.SLICE_MIN_PAYLOADS)]
    assert parse_batch(APP, REGION, Payloads(batch), RECEIVED, NEWEST).table.equals(
        parse_batch(APP, REGION, Payloads(batch), RECEIVED, NEWEST, slicer=False).table
    )
    assert envelope.slice_payloads(APP, REGION, Payloads(batch[:5]), None) is not None
    assert envelope.slice_payloads(APP, REGION, Payloads(), None) is None


def test_the_batch_buffer_is_free_once_sliced() -> None:
    """Nothing the slicer returns holds the batch's buffer: the bytearray and its offsets can grow again."""
    payloads = Payloads([dec.good(i) for i in range(50)] + [b"junk"])
    result = parse_batch(APP, REGION, payloads, RECEIVED, NEWEST, slicer=True)
    payloads.append(dec.good(99))  # BufferError while an export of either is alive
    assert result.table.num_rows == 51 and result.malformed == 1
