"""An archive of JSON and plain-text logs with realistic fields and hostile ones, and DuckDB's answers on it.

Used by tests/test_query_forensics.py. Messages mix pino-style request logs
(numbers), structlog-style ones (the same fields as strings), plain text,
objects where other rows hold strings, escaped keys, invalid JSON, JSON over
several lines, keys with dots, non-ASCII and control characters.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson
from v1_files import to_v1

from archiver.archive.escaping import partition_value, partition_value_v1
from archiver.archive.layout import NS_PER_HOUR, object_key, object_name, v1_object_key
from archiver.archive.message import format_timestamp_ns
from archiver.codec.encode import encode_partition
from archiver.codec.payloads import Payloads
from archiver.config import ArchiveSettings
from archiver.demo.flymessage import fly_record
from archiver.storage.open import open_storage

S = 1_000_000_000
DAY = int(datetime(2026, 11, 23, tzinfo=UTC).timestamp()) * S
START, END = DAY - 2 * NS_PER_HOUR, DAY + 5 * NS_PER_HOUR
APPS = {"api": ("dfw", "ams"), "worker": ("iad",), "web": ("sin",)}
ROWS = 600
EVERYTHING = ["--since", "2026-11-22", "--until", "2026-11-24"]


def message_text(rnd: random.Random, n: int) -> str:
    """One log line: mostly JSON with request fields, some text, some hostile."""
    status = rnd.choice([200, 200, 200, 201, 304, 404, 500, 502, 503])
    user = rnd.randrange(120)
    rid = f"{rnd.getrandbits(48):012x}"
    kind = rnd.randrange(20)
    if kind < 7:
        return orjson.dumps({
            "level": rnd.choice([30, 30, 40, 50]), "time": 1700000000000 + n,
            "req": {"method": rnd.choice(["GET", "POST"]), "url": f"/orders/{n}", "headers": {"x-request-id": rid}},
            "status": status, "user": {"id": user, "name": rnd.choice(["ana", "Zoë", "bob"])},
            "msg": "request completed", "responseTime": n % 997,
        }).decode()  # fmt: skip
    if kind < 10:
        return orjson.dumps(
            {"event": "done", "status": str(status), "user": {"id": str(user)}, "level": "info"}
        ).decode()
    if kind < 12:
        return f"GET /orders/{n} {status} user={user} in {n % 50}ms"
    if kind == 12:
        return orjson.dumps(
            {"user": rnd.choice(["bob", "ana"]), "status": status, "msg": "plain user"}
        ).decode()
    if kind == 13:
        return rnd.choice([
            '{"status":null,"user":{"id":null}}', '{"status":true}', '{"status":{"code":500}}',
            '{"status":[500,"x"]}', '{"user":{"id":{"deep":1}}}', "{}", "[1, 2]", '"just a string"', "42",
        ])  # fmt: skip
    if kind == 14:
        return rnd.choice([
            '{"st\\u0061tus": 503, "us\\u0065r": {"id": 7}}', '{"status": 500', '{"status":1}{"status":2}',
            '{\n  "status": 502,\n  "user": {"id": 9}\n}', '{"a.b": {"c": 1}, "status": 404}',
            '{"status":"5\\u00300"}', ' {"status": 500} ', "{not json at all}",
        ])  # fmt: skip
    if kind == 15:
        return f"\x1b[31mERROR\x1b[0m status {status}\x07 done\r\n"
    if kind == 16:
        return orjson.dumps({"status": status / 100, "msg": "ratio", "user": {"id": user * 1.5}}).decode()
    return orjson.dumps(
        {"level": "warn", "msg": f"slow query {n} took {n % 300}ms", "db": {"host": f"10.0.0.{n % 9}"}}
    ).decode()


def build(settings: ArchiveSettings, seed: int = 3, v1_first_flush: bool = False) -> int:
    """Write the archive (two overlapping flushes per partition); the number of rows.

    With ``v1_first_flush`` each partition's first flush is written as schema v1 wrote it
    (``hour=``/``region=`` folders, nanosecond timestamps, no region column): the same rows in a
    mixed archive.
    """
    rnd = random.Random(seed)
    puts: list[tuple[str, bytes]] = []
    total = 0
    n = 0
    for app, regions in APPS.items():
        for region in regions:
            instance = f"{rnd.getrandbits(56):014x}"
            payloads = []
            for _ in range(ROWS):
                n += 1
                ts = rnd.randrange(START, END)
                level = rnd.choice(["info", "info", "warn", "error"])
                record = fly_record(
                    app, region, message_text(rnd, n), format_timestamp_ns(ts), instance=instance
                )
                record["log"] = {"level": level}
                payloads.append(orjson.dumps(record))
            total += len(payloads)
            for seq, part in enumerate([payloads[0::2], payloads[1::2]]):
                for f in encode_partition(app, region, Payloads(part), START).files:
                    # The region is a column: the writer id keeps names of one app's regions apart.
                    name = object_name(f.min_timestamp_ns, f"test{region}", seq)
                    if v1_first_flush and seq == 0:
                        key = v1_object_key(
                            partition_value_v1(app), partition_value_v1(region), f.hour_ns, name
                        )
                        puts.append((key, to_v1(f.data)))
                    else:
                        puts.append((object_key(partition_value(app), f.hour_ns, name), f.data))

    async def go() -> None:
        storage = open_storage(settings)
        try:
            for key, data in puts:
                await storage.put(key, data)
        finally:
            await storage.close()

    asyncio.run(go())
    return total


def json_path(path: tuple[str, ...]) -> str:
    """A DuckDB JSON path for the segments (each quoted)."""
    return "$." + ".".join(orjson.dumps(segment).decode() for segment in path)


def duck_condition(path: tuple[str, ...], op: str, value: str = "", numeric: bool = False) -> str:
    """SQL equal in meaning to one --where condition (see query.where), on column ``obj`` (see :func:`duck`)."""
    p = json_path(path).replace("'", "''")
    is_object = "coalesce(json_type(obj) = 'OBJECT', false)"
    kind = f"json_type(obj, '{p}')"
    if op == "has":
        return f"(CASE WHEN {is_object} THEN coalesce({kind} <> 'NULL', false) ELSE false END)"
    if op == "!has":
        return f"(CASE WHEN {is_object} THEN coalesce({kind} = 'NULL', true) ELSE false END)"
    text = f"json_extract_string(obj, '{p}')"
    literal = "'" + value.replace("'", "''") + "'"
    scalar = f"{kind} IN ('VARCHAR', 'BOOLEAN', 'UBIGINT', 'BIGINT', 'DOUBLE')"
    if op in ("~", "!~"):
        test = f"regexp_matches({text}, {literal})"
        test = test if op == "~" else f"NOT {test}"
        return f"(CASE WHEN {is_object} AND {scalar} THEN {test} ELSE false END)"
    sql_op = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[op]
    if numeric:
        return (
            f"(CASE WHEN NOT {is_object} THEN false"
            f" WHEN {kind} IN ('UBIGINT', 'BIGINT', 'DOUBLE') THEN json_extract(obj, '{p}')::DOUBLE {sql_op} {value}"
            f" WHEN {scalar} THEN {text} {sql_op} {literal} ELSE false END)"
        )
    return f"(CASE WHEN {is_object} AND {scalar} THEN {text} {sql_op} {literal} ELSE false END)"


def duck(settings: ArchiveSettings, sql: str) -> list[tuple[Any, ...]]:
    """DuckDB's rows for ``sql`` with ``logs`` the archive's files (hive partitioning on).

    ``timestamp`` is the exact time (nanoseconds); ``obj`` is the message where it is valid JSON (else null): DuckDB's JSON functions fail on
    invalid JSON and its CASE does not spare them the rows of another branch.
    """
    source = (
        # The exact time as a timestamp_ns: schema v2's µs timestamp plus timestamp_nanos (the README's rule).
        f"(SELECT * REPLACE (make_timestamp_ns(epoch_us(timestamp) * 1000 + timestamp_nanos) AS timestamp), "
        f"CASE WHEN json_valid(message) THEN message END AS obj "
        f"FROM read_parquet('{settings.prefix}/**/*.parquet', hive_partitioning = true))"
    )
    return duckdb.connect().execute(sql.replace("logs", source)).fetchall()
