"""Hostile messages never crash, stall or get lost: each is archived once, flagged, and counted by kind.

A table of every hostile kind goes through ``archiver.codec.parse`` (fast, both the
bulk and the exact path, surrounded by good messages), then through a real
``archiver run`` against a real nats-server whose ``max_payload`` allows
messages of several MiB.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
from harness import ArchivedFile, read_archive, row_region, start_archiver, wait_for

from archiver.archive import schema
from archiver.archive.layout import NS_PER_HOUR
from archiver.archive.message import format_timestamp_ns, rebuild_payload, split_truncated, truncate_payload
from archiver.archive.timestamps import exact_rows
from archiver.codec.parse import parse_batch
from archiver.codec.parse_exact import MAX_FUTURE_NS, newest_accepted_ns
from archiver.codec.payloads import Payloads
from archiver.config import ArchiveSettings
from archiver.demo.flymessage import fly_record
from archiver.demo.loadgen import FlyLogGenerator
from archiver.demo.publish import publish
from archiver.demo.servers import NatsServer
from archiver.environment import load_run_config

APP, REGION, INSTANCE = "web", "ord", "0e286551c30586"
SUBJECT = f"logs.{APP}.{REGION}.{INSTANCE}"
MiB = 1024**2
E2E_MAX_MESSAGE_BYTES = 2 * MiB


def fly(message: Any = "hello", timestamp: Any = None, now_ns: int = 0, **top: Any) -> bytes:
    """A Fly message of APP/REGION, timestamp a minute before ``now_ns`` unless given."""
    stamp = format_timestamp_ns(now_ns - 60 * 10**9) if timestamp is None else timestamp
    return orjson.dumps(fly_record(APP, REGION, message, stamp, instance=INSTANCE, **top))


def hostile_cases(now_ns: int, max_bytes: int) -> list[tuple[str, str, bytes, str | None]]:
    """(name, subject, payload, malformed kind or None for a regular row) for each hostile input."""
    ts = format_timestamp_ns(now_ns - 60 * 10**9).encode()
    no_ts = orjson.loads(fly(now_ns=now_ns))
    del no_ts["timestamp"]
    deep = b'{"timestamp":"' + ts + b'","deep":' + b"[" * 300 + b"]" * 300 + b"}"
    cases: list[tuple[str, bytes, str | None]] = [
        ("plain text", b"plain text log line", "not_json"),
        ("truncated JSON", fly(now_ns=now_ns)[:-20], "not_json"),
        ("JSON array", b'["an", "array"]', "not_object"),
        ("JSON number", b"42", "not_object"),
        ("JSON string", b'"just a string"', "not_object"),
        ("JSON null", b"null", "not_object"),
        ("message is an object", fly({"structured": True, "n": [1, 2]}, now_ns=now_ns), None),
        ("host is a number", fly(now_ns=now_ns, host=42), None),
        ("numeric timestamp", fly(timestamp=1_700_000_000, now_ns=now_ns), "bad_timestamp"),
        ("missing timestamp", orjson.dumps(no_ts), "bad_timestamp"),
        ("timestamp yesterday", fly(timestamp="yesterday", now_ns=now_ns), "bad_timestamp"),
        ("timestamp year 1", fly(timestamp="0001-01-01T00:00:00.000000000Z", now_ns=now_ns), "bad_timestamp"),
        ("timestamp year 9999", fly(timestamp="9999-12-31T23:59:59.999999999Z", now_ns=now_ns), "bad_timestamp"),
        ("timestamp year 1999", fly(timestamp="1999-12-31T23:59:59.999999999Z", now_ns=now_ns), "bad_timestamp"),
        ("timestamp year 2200", fly(timestamp="2200-01-01T00:00:00Z", now_ns=now_ns), "bad_timestamp"),
        ("timestamp 2 days ahead", fly(timestamp=format_timestamp_ns(now_ns + 2 * MAX_FUTURE_NS), now_ns=now_ns),
         "bad_timestamp"),
        ("timestamp 1 hour ahead", fly(timestamp=format_timestamp_ns(now_ns + NS_PER_HOUR), now_ns=now_ns), None),
        ("timestamp year 2000", fly(timestamp="2000-01-01T00:00:00.000000000Z", now_ns=now_ns), None),
        ("timestamp with offset", fly(timestamp="2026-01-02T03:04:05.5+01:00", now_ns=now_ns), None),
        ("invalid UTF-8 in a field", fly(now_ns=now_ns).replace(b"hello", b"hel\xff\xfelo"), "invalid_utf8"),
        ("binary", b"\xff\xfe\x00\x01binary\x80", "invalid_utf8"),
        ("raw NUL in a string", fly(now_ns=now_ns).replace(b"hello", b"hel\x00lo"), "not_json"),
        ("NUL bytes only", b"\x00\x00\x00", "not_json"),
        ("escaped NUL", fly("a\u0000b", now_ns=now_ns), None),
        ("raw tab in a string", fly(now_ns=now_ns).replace(b"hello", b"hel\tlo"), "not_json"),
        ("lone surrogate", fly(now_ns=now_ns).replace(b"hello", b"\\ud800"), "not_json"),
        ("empty", b"", "empty"),
        ("whitespace", b" \t\r\n ", "empty"),
        ("reserved key", fly(now_ns=now_ns, _malformed=False), "reserved_key"),
        ("too deep to store", deep, "too_deep"),
        ("too deep to read", b"[" * 2000 + b"]" * 2000, "not_json"),
        ("two objects", fly(now_ns=now_ns) + fly(now_ns=now_ns), "not_json"),
        ("pretty-printed", orjson.dumps(orjson.loads(fly(now_ns=now_ns)), option=orjson.OPT_INDENT_2), None),
        ("big under the limit", fly("b" * (max_bytes - 1000), now_ns=now_ns), None),
        ("big JSON over the limit", fly("é" * max_bytes, now_ns=now_ns), "truncated"),
        ("big text over the limit", b"t" * (max_bytes + 1), "truncated"),
        ("big binary over the limit", b"\xff" * (max_bytes + 7), "truncated"),
    ]  # fmt: skip
    out = [(name, SUBJECT, payload, kind) for name, payload, kind in cases]
    # Subjects of another shape: the partition comes from the payload (or is "unknown").
    out += [
        ("short subject, Fly JSON", "logs.short", fly("via payload", now_ns=now_ns), None),
        ("long subject, Fly JSON", "logs.a.b.c.d.e.f", fly("via payload too", now_ns=now_ns), None),
        ("short subject, text", "logs.short", b"no partition at all", "not_json"),
        ("long subject, text", "logs.a.b.c.d.e.f", b"no partition either", "not_json"),
    ]
    return out


def stored(payload: bytes, max_bytes: int) -> bytes:
    """What the hot path hands on: the payload, or its truncated form."""
    return truncate_payload(payload, max_bytes) if len(payload) > max_bytes else payload


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    return exact_rows(table)


def extra_of(row: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(row["extra"]) if row["extra"] else {}


def check_row(row: dict[str, Any], payload: bytes, kind: str | None, received_ns: int, app: str, region: str,
              max_bytes: int) -> None:  # fmt: skip
    """A row is the payload: flagged and kept verbatim when malformed, rebuilt exactly otherwise."""
    extra = extra_of(row)
    if kind is None:
        assert extra.get(schema.MALFORMED_MARK) is None
        assert row["timestamp"] != received_ns
        assert orjson.loads(rebuild_payload(row, app, region)) == orjson.loads(payload)
        return
    assert extra[schema.MALFORMED_MARK] is True
    assert row["extra"].startswith('{"_malformed":true')
    assert row["timestamp"] == received_ns
    rebuilt = rebuild_payload(row, app, region)
    if kind == "truncated":
        assert extra[schema.TRUNCATED_MARK] is True and extra[schema.ORIGINAL_BYTES_MARK] == len(payload)
        assert payload.startswith(rebuilt) and max_bytes - 3 <= len(rebuilt) <= max_bytes
        kept = split_truncated(truncate_payload(payload, max_bytes))
        assert kept is not None and rebuilt == kept[1]
        assert (schema.RAW_BASE64_MARK in extra) == (not _is_utf8(rebuilt))
        assert _is_utf8(rebuilt) or not _is_utf8(payload)  # the cut never splits a character
    else:
        assert rebuilt == payload
        assert (schema.RAW_BASE64_MARK in extra) == (not _is_utf8(payload))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_each_hostile_kind_through_parse() -> None:
    max_bytes = 64 * 1024
    now = time.time_ns()
    good = [fly(f"good {i}", now_ns=now) for i in range(300)]
    cases = [c for c in hostile_cases(now, max_bytes) if c[1] == SUBJECT]
    payloads = good[:150] + [stored(p, max_bytes) for _, _, p, _ in cases] + good[150:]
    result = parse_batch(APP, REGION, Payloads(payloads), now, newest_accepted_ns(now))
    assert result.table.num_rows == len(payloads)
    by_message = {row["message"]: row for row in rows_of(result.table)}
    for i in range(300):  # not poisoned: every good row intact, with its own timestamp
        row = by_message[f"good {i}"]
        assert row["extra"] is None and row["timestamp"] == now - 60 * 10**9 and row["instance"] == INSTANCE
    table_rows = rows_of(result.table)
    for (name, _, payload, kind), got in zip(cases, find_rows(table_rows, cases, max_bytes), strict=True):
        try:
            check_row(got, payload, kind, now, APP, REGION, max_bytes)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc
    kinds = Counter(kind for _, _, _, kind in cases if kind is not None)
    assert result.malformed_kinds == dict(kinds)
    assert result.malformed == sum(kinds.values())
    assert result.wrong_type == 2  # message object, numeric host


def find_rows(rows: list[dict[str, Any]], cases: list[tuple[str, str, bytes, str | None]],
              max_bytes: int) -> list[dict[str, Any]]:  # fmt: skip
    """The row of each case, matched by rebuilt payload (each case's payload is distinct)."""
    index: dict[bytes, dict[str, Any]] = {}
    for row in rows:
        rebuilt = rebuild_payload(row, APP, REGION)
        if extra_of(row).get(schema.MALFORMED_MARK):
            index[rebuilt] = row
        else:
            index[orjson.dumps(orjson.loads(rebuilt), option=orjson.OPT_SORT_KEYS)] = row
    out = []
    for _, _, payload, kind in cases:
        if kind == "truncated":
            kept = split_truncated(truncate_payload(payload, max_bytes))
            assert kept is not None
            out.append(index[kept[1]])
        elif kind is None:
            out.append(index[orjson.dumps(orjson.loads(payload), option=orjson.OPT_SORT_KEYS)])
        else:
            out.append(index[payload])
    return out


def test_each_hostile_kind_alone_takes_the_same_path() -> None:
    """A payload alone gives the same row as in a batch (bulk and exact paths agree)."""
    now = time.time_ns()
    cases = [c for c in hostile_cases(now, 4096) if c[1] == SUBJECT]
    payloads = [stored(p, 4096) for _, _, p, _ in cases]
    together = parse_batch(APP, REGION, Payloads(payloads), now, newest_accepted_ns(now)).table
    alone = pa.concat_tables(
        parse_batch(APP, REGION, Payloads([p]), now, newest_accepted_ns(now)).table for p in payloads
    )
    assert together.sort_by("message").equals(alone.sort_by("message"))


def test_year_9999_in_a_canonical_batch_costs_no_halving() -> None:
    """A canonical text out of the window is refused by the window check, before Arrow's cast."""
    now = time.time_ns()
    payloads = [fly(f"ok {i}", now_ns=now) for i in range(1000)]
    payloads[500] = fly(timestamp="9999-12-31T23:59:59.999999999Z", now_ns=now)
    result = parse_batch(APP, REGION, Payloads(payloads), now, newest_accepted_ns(now))
    assert result.malformed_kinds == {"bad_timestamp": 1}


def test_truncated_form_round_trip() -> None:
    for payload, limit in [(b"x" * 10, 4), ("é😀".encode() * 3, 5), (b"\xff" * 9, 3), (b"ab", 1)]:
        form = truncate_payload(payload, limit)
        original, kept = split_truncated(form) or (0, b"")
        assert original == len(payload) and payload.startswith(kept) and limit - 3 <= len(kept) <= limit
    assert split_truncated(b"plain") is None
    assert (
        split_truncated(truncate_payload(b"x" * 10, 4)[:-5] + b"x" * 20) is None
    )  # kept longer than the size


def test_max_message_bytes_setting() -> None:
    assert load_run_config({}, {}).max_message_bytes == 4 * MiB
    assert load_run_config({}, {"MAX_MESSAGE_BYTES": "1MiB"}).max_message_bytes == MiB
    assert (
        load_run_config({"max_message_bytes": "2KB"}, {"MAX_MESSAGE_BYTES": "1MiB"}).max_message_bytes == 2000
    )
    for bad in ("0", "lots", "-1"):
        try:
            load_run_config({}, {"MAX_MESSAGE_BYTES": bad})
        except Exception as exc:
            assert "MAX_MESSAGE_BYTES" in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")


# -- end to end ---------------------------------------------------------------------------


def test_hostile_messages_end_to_end(tmp_path: Path, local_settings: ArchiveSettings) -> None:
    server = NatsServer(tmp_path / "nats", max_payload_bytes=8 * MiB)
    server.start()
    try:
        run_end_to_end(server, tmp_path, local_settings)
    finally:
        server.stop()


def run_end_to_end(server: NatsServer, tmp_path: Path, settings: ArchiveSettings) -> None:
    proc = start_archiver(server.url, settings, tmp_path, args=["--max-message-bytes", "2MiB"],
                          FLUSH_INTERVAL="2s")  # fmt: skip
    try:
        proc.wait_subscribed()
        started = time.time_ns()
        gen = FlyLogGenerator(seed=3, apps=2, regions=1, instances=1, start_ns=started - NS_PER_HOUR // 2,
                              span_ns=NS_PER_HOUR // 4)  # fmt: skip
        # Good messages of the hostile ones' partition, and of other partitions.
        good = [(SUBJECT, fly(f"good {i}", now_ns=started)) for i in range(600)] + gen.messages(1400)
        good = [good[i] for i in sorted(range(len(good)), key=lambda i: (i * 7919) % len(good))]
        cases = hostile_cases(started, E2E_MAX_MESSAGE_BYTES)
        hostile = [(subject, payload) for _, subject, payload, _ in cases]
        # Interleaved so the hostile ones share batches with good ones of the same partition.
        step = len(good) // len(hostile)
        sent: list[tuple[str, bytes]] = []
        for i, message in enumerate(hostile):
            sent += [*good[i * step : (i + 1) * step], message]
        sent += good[len(hostile) * step :]
        asyncio.run(publish(server.url, sent))
        wait_for(lambda: proc.metric("archiver_messages_archived_total") >= len(sent), 60, "archiving", proc)
        received_by = time.time_ns()
        kinds = Counter(kind for *_, kind in cases if kind is not None)
        metrics = {kind: proc.metric("archiver_messages_malformed_total", f'{{kind="{kind}"}}')
                   for kind in schema.MALFORMED_KINDS}  # fmt: skip
        assert metrics == {kind: float(kinds.get(kind, 0)) for kind in schema.MALFORMED_KINDS}
        assert proc.metric("archiver_messages_truncated_total") == kinds["truncated"]
        odd = sum(1 for subject, _ in sent if subject.count(".") != 3)
        assert proc.metric("archiver_messages_unrouted_total", '{reason="subject_shape"}') == odd
        assert proc.metric("archiver_messages_wrong_type_total") == 2
        assert proc.metric("archiver_messages_received_total") == len(sent)
        assert proc.metric("archiver_messages_archived_total") == len(sent)
        assert proc.stop() == 0
    finally:
        proc.kill()
    files = read_archive(settings)
    check_archive(files, good, cases, started, received_by)
    check_duckdb(Path(settings.prefix), sum(kinds.values()))


def check_archive(files: list[ArchivedFile], good: list[tuple[str, bytes]],
                  cases: list[tuple[str, str, bytes, str | None]], started: int, received_by: int) -> None:  # fmt: skip
    """Every message exactly once: good ones intact, hostile ones flagged and verbatim."""
    got: Counter[tuple[str, str, bytes]] = Counter()
    for f in files:
        for row in f.rows:
            region = row_region(f, row)
            rebuilt = rebuild_payload(row, f.app, region)
            if extra_of(row).get(schema.MALFORMED_MARK):
                assert started <= row["timestamp"] <= received_by, "malformed row not at its receive time"
                got[(f.app, region, b"raw:" + rebuilt)] += 1
            else:
                got[
                    (
                        f.app,
                        region,
                        b"json:" + orjson.dumps(orjson.loads(rebuilt), option=orjson.OPT_SORT_KEYS),
                    )
                ] += 1
    want: Counter[tuple[str, str, bytes]] = Counter()
    for subject, payload in good:
        _, app, region, _ = subject.split(".")
        want[(app, region, b"json:" + orjson.dumps(orjson.loads(payload), option=orjson.OPT_SORT_KEYS))] += 1
    for _, subject, payload, kind in cases:
        parts = subject.split(".")
        app, region = (
            (parts[1], parts[2])
            if len(parts) == 4
            else ((APP, REGION) if kind is None else ("unknown", "unknown"))
        )
        if kind is None:
            want[
                (app, region, b"json:" + orjson.dumps(orjson.loads(payload), option=orjson.OPT_SORT_KEYS))
            ] += 1
        elif kind == "truncated":
            kept = split_truncated(truncate_payload(payload, E2E_MAX_MESSAGE_BYTES))
            assert kept is not None
            want[(app, region, b"raw:" + kept[1])] += 1
        else:
            want[(app, region, b"raw:" + payload)] += 1
    missing, unexpected = want - got, got - want
    assert not missing and not unexpected, (
        f"missing {[(*k[:2], k[2][:80]) for k in missing]}, unexpected {[(*k[:2], k[2][:80]) for k in unexpected]}"
    )


def check_duckdb(directory: Path, malformed: int) -> None:
    """The documented queries find exactly the malformed rows."""
    con = duckdb.connect()
    source = f"read_parquet('{directory}/app=*/**/*.parquet', hive_partitioning = true)"
    like = con.execute(
        f"""SELECT count(*) FROM {source} WHERE extra LIKE '{{"_malformed":true%'"""
    ).fetchone()
    as_json = con.execute(
        f"SELECT count(*) FROM {source} WHERE json_extract(extra, '$._malformed')::BOOLEAN"
    ).fetchone()
    truncated = con.execute(
        f"SELECT count(*), min(json_extract(extra, '$._original_bytes')::BIGINT) FROM {source} "
        "WHERE json_extract(extra, '$._truncated')::BOOLEAN"
    ).fetchone()
    assert like == (malformed,) and as_json == (malformed,)
    assert truncated == (3, E2E_MAX_MESSAGE_BYTES + 1)


def test_truncation_marker_survives_the_spool(tmp_path: Path, local_settings: ArchiveSettings) -> None:
    """kill -9 before any flush: the restarted archiver replays the spool and still flags the truncation."""
    server = NatsServer(tmp_path / "nats", max_payload_bytes=2 * MiB)
    server.start()
    spool = str(tmp_path / "spool")
    try:
        proc = start_archiver(server.url, local_settings, tmp_path, args=["--max-message-bytes", "100KiB"],
                              FLUSH_INTERVAL="1h", SPOOL_DIR=spool)  # fmt: skip
        try:
            proc.wait_subscribed()
            big = fly("x" * 300_000, now_ns=time.time_ns())
            sent = [
                (SUBJECT, big),
                ("logs.short", b"y" * 200_000),
                (SUBJECT, fly("small", now_ns=time.time_ns())),
            ]
            asyncio.run(publish(server.url, sent))
            wait_for(lambda: proc.metric("archiver_messages_received_total") == 3, 30, "spooling", proc)
            assert proc.metric("archiver_messages_truncated_total") == 2
        finally:
            proc.kill()
        # Restarted with another limit: the stored form carries its own marker and size.
        proc = start_archiver(server.url, local_settings, tmp_path, args=["--max-message-bytes", "1MiB"],
                              FLUSH_INTERVAL="1h", SPOOL_DIR=spool)  # fmt: skip
        try:
            proc.wait_subscribed()
        finally:
            assert proc.stop() == 0
    finally:
        server.stop()
    rows = {(f.app, row["message"][:5]): row for f in read_archive(local_settings) for row in f.rows}
    assert set(rows) == {("web", "small"), ("web", '{"eve'), ("unknown", "yyyyy")}
    for key, size in ((("web", '{"eve'), len(big)), (("unknown", "yyyyy"), 200_000)):
        extra = extra_of(rows[key])
        assert extra == {"_malformed": True, "_truncated": True, "_original_bytes": size}
        assert len(rows[key]["message"]) == 100 * 1024
