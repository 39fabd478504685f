"""--where, --count and --top against DuckDB's answer on the same files; bad input; terminal safety.

The archive (tests/forensics_archive.py) mixes JSON request logs, the same
fields as strings, plain text and hostile messages. Each --where case is
compared row for row with DuckDB's ``json_extract`` equivalent, each --count
count for count with a ``GROUP BY``, and --top with the same RE2 collapse in
DuckDB's ``regexp_replace``.
"""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from forensics_archive import EVERYTHING, build, duck, duck_condition

from archiver.archive.timestamps import table_ns
from archiver.cli.main import main
from archiver.config import ArchiveSettings
from query.patterns import COLLAPSE
from query.where import parse_condition

Row = tuple[int, str, str, str | None]  # ts, app, region, message


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> ArchiveSettings:
    settings = ArchiveSettings("file", "", str(tmp_path_factory.mktemp("forensics") / "archive"))
    build(settings)
    return settings


def cli(settings: ArchiveSettings, *args: str) -> Result:
    url = settings.url if settings.scheme == "s3" else settings.prefix
    env: dict[str, str | None] = {"ARCHIVE_URL": None, "BUCKET_NAME": None}
    if settings.scheme == "s3":
        env |= {"AWS_ENDPOINT_URL_S3": settings.s3.endpoint_url, "AWS_ACCESS_KEY_ID": settings.s3.access_key_id,
                "AWS_SECRET_ACCESS_KEY": settings.s3.secret_access_key, "AWS_REGION": settings.s3.region}  # fmt: skip
    return CliRunner().invoke(main, ["query", "--archive", url, *args], env=env)


def query_rows(settings: ArchiveSettings, tmp_path: Path, *args: str) -> list[Row]:
    out = tmp_path / f"{uuid.uuid4().hex}.parquet"
    result = cli(settings, *EVERYTHING, *args, "--format", "parquet", "--output", str(out))
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    ts = table_ns(table).to_pylist()  # exact: the µs timestamp and timestamp_nanos
    assert ts == sorted(ts)
    return sorted(zip(ts, *(table[c].to_pylist() for c in ("app", "region", "message")), strict=True))


def duck_rows(settings: ArchiveSettings, where: str) -> list[Row]:
    rows = duck(settings, f"SELECT epoch_ns(timestamp), app, region, message FROM logs WHERE {where}")
    return sorted(rows)


def condition_sql(text: str) -> str:
    c = parse_condition(text)
    return duck_condition(c.path, c.op, c.value, c.number is not None)


WHERE_CASES: list[tuple[list[str], str]] = [
    (["status>=500"], ""),
    (["status=503"], ""),
    (["status!=200"], ""),
    (["status<300"], ""),
    (["status == 404"], ""),
    (["status>0.5"], ""),
    (["status <= 404"], ""),
    (['status="503"'], ""),
    (["status>abc"], ""),
    (["user.id=42"], ""),
    (["user.id>=100"], ""),
    (["user.name=Zoë"], ""),
    (["user.name!=bob"], ""),
    (["user.name~^[A-Z]"], ""),
    (["req.headers.x-request-id~^[0-9a-f]{3}0"], ""),
    (["req.method!~GET"], ""),
    (['msg="request completed"'], ""),
    (["msg=request completed"], ""),
    (["level>=40"], ""),
    (['"a.b".c=1'], ""),
    (["has:user.id"], ""),
    (["has:status"], ""),
    (["!has:status"], ""),
    (["!has:user.id"], ""),
    (["has:db.host"], ""),
    (["status>=500", "user.id<60"], ""),
    (["status>=500", "has:req"], "app = 'api' AND region = 'ams'"),
]


@pytest.mark.parametrize(
    "case", WHERE_CASES, ids=[" ".join(c[0]) + (" +" if c[1] else "") for c in WHERE_CASES]
)
def test_where_matches_duckdb(archive: ArchiveSettings, tmp_path: Path, case: tuple[list[str], str]) -> None:
    conditions, extra = case
    args = [a for c in conditions for a in ("--where", c)]
    if extra:
        args += ["--app", "api", "--region", "ams"]
    sql = " AND ".join([condition_sql(c) for c in conditions] + ([extra] if extra else []))
    expected = duck_rows(archive, sql)
    assert expected or conditions == ['"a.b".c=1'], "a case that matches nothing tests little"
    assert query_rows(archive, tmp_path, *args) == expected


def test_where_combines_with_every_filter(archive: ArchiveSettings, tmp_path: Path) -> None:
    args = ["--where", "status>=500", "--level", "error", "--contains", "request", "--grep", "GET|POST",
            "--since", "2026-11-22T23:30", "--until", "2026-11-23T02:45"]  # fmt: skip
    sql = (
        f"{condition_sql('status>=500')} AND lower(level) = 'error' AND contains(message, 'request')"
        " AND regexp_matches(message, 'GET|POST')"
        " AND epoch_ns(timestamp) >= epoch_ns(TIMESTAMPTZ '2026-11-22 23:30:00+00')"
        " AND epoch_ns(timestamp) < epoch_ns(TIMESTAMPTZ '2026-11-23 02:45:00+00')"
    )
    out = tmp_path / "x.parquet"
    result = cli(archive, *args, "--format", "parquet", "-o", str(out))
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    got = sorted(zip(table_ns(table).to_pylist(), table["message"].to_pylist(), strict=True))
    assert got and got == sorted(duck(archive, f"SELECT epoch_ns(timestamp), message FROM logs WHERE {sql}"))


def test_where_on_s3_matches_local(archive: ArchiveSettings, s3_settings: ArchiveSettings) -> None:
    build(s3_settings)
    args = [*EVERYTHING, "--where", "status>=500", "--where", "has:user.id", "--format", "json"]
    local, remote = cli(archive, *args), cli(s3_settings, *args)
    assert local.exit_code == remote.exit_code == 0, remote.output
    assert local.stdout and local.stdout == remote.stdout


def test_hostile_json_messages(archive: ArchiveSettings) -> None:
    # Escaped keys, several lines, blanks around, an escaped value: all read as JSON does.
    result = cli(archive, *EVERYTHING, "--where", "status=503", "--where", "user.id=7", "--format", "json")
    assert result.exit_code == 0
    assert any("st\\u0061tus" in orjson.loads(line)["message"] for line in result.stdout.splitlines())
    result = cli(archive, *EVERYTHING, "--where", "status=502", "--where", "user.id=9")
    assert result.exit_code == 0 and '{\n  "status": 502,' in result.stdout  # JSON over several lines
    result = cli(archive, *EVERYTHING, "--where", 'status="500"', "--format", "json")
    messages = {orjson.loads(line)["message"] for line in result.stdout.splitlines()}
    assert '{"status":"5\\u00300"}' in messages
    # Invalid JSON, two objects in one message, arrays and scalars never match and are no error.
    for bad in ('{"status": 500', '{"status":1}{"status":2}', "[1, 2]", "42", "{not json at all}"):
        assert bad not in messages


@pytest.mark.parametrize(
    ("by", "sql_group"),
    [
        (None, "NULL"),
        ("level", "level"),
        ("app", "app"),
        ("region", "region"),
        ("instance", "instance"),
        ("field:req.method", "CASE WHEN json_type(obj) = 'OBJECT' THEN json_extract_string(obj, '$.req.method') END"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("every", ["1h", "15m", "1d"])
def test_count_matches_duckdb(archive: ArchiveSettings, by: str | None, sql_group: str, every: str) -> None:
    width = {"1h": 3600, "15m": 900, "1d": 86400}[every] * 1_000_000_000
    args = [*EVERYTHING, "--count", "--every", every, "--format", "csv"]
    if by is not None:
        args += ["--by", by]
    result = cli(archive, *args)
    assert result.exit_code == 0, result.output
    got = {(r[0], r[1] if by else None): int(r[-1]) for r in list(csv.reader(io.StringIO(result.stdout)))[1:]}
    rows = duck(archive, f"SELECT epoch_ns(timestamp) // {width} * {width} AS b, {sql_group} AS g, count(*) "
                         "FROM logs GROUP BY ALL")  # fmt: skip
    from query.textout import iso_time

    expected = {(iso_time(b), g if by else None): n for b, g, n in rows}
    # CSV writes a null group as an empty field.
    assert {k: v for k, v in got.items()} == {
        (t, "" if g is None and by else g): n for (t, g), n in expected.items()
    }


def test_count_with_where_json_and_text(archive: ArchiveSettings) -> None:
    from query.textout import iso_time

    hour = 3_600_000_000_000
    result = cli(archive, *EVERYTHING, "--count", "--every", "1h", "--by", "app", "--where", "status>=500",
                 "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    got = {(r["time"], r["app"]): r["count"] for r in map(orjson.loads, result.stdout.splitlines())}
    rows = duck(archive, f"SELECT epoch_ns(timestamp) // {hour} * {hour}, app, count(*) FROM logs "
                         f"WHERE {condition_sql('status>=500')} GROUP BY ALL")  # fmt: skip
    assert got and got == {(iso_time(b), app): n for b, app, n in rows}
    text = cli(archive, *EVERYTHING, "--count", "--every", "1h", "--by", "level")
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0] == "logs per level, 1h buckets" and ("█" in text.stdout or "#" in text.stdout)
    header = lines[1].split()
    assert header[:2] == ["TIME", "(UTC)"]
    at = header.index("TOTAL") - 1  # "TIME (UTC)" is one cell of two words
    totals = [int(line.split()[at].replace(",", "")) for line in lines[2:]]
    assert sum(totals) == duck(archive, "SELECT count(*) FROM logs")[0][0]


def duck_top(settings: ArchiveSettings, n: int, where: str = "true") -> list[tuple[Any, ...]]:
    expression = "message"
    for pattern, replacement in COLLAPSE:
        expression = (f"regexp_replace({expression}, '{pattern.replace(chr(39), chr(39) * 2)}', "
                      f"'{replacement.replace(chr(39), chr(39) * 2)}', 'g')")  # fmt: skip
    return duck(settings, f"SELECT {expression} AS p, count(*) AS c, min(epoch_ns(timestamp)), "
                          f"max(epoch_ns(timestamp)) FROM logs WHERE {where} GROUP BY p "
                          f"ORDER BY c DESC, p ASC LIMIT {n}")  # fmt: skip


@pytest.mark.parametrize("where", [[], ["--app", "api"]])
def test_top_matches_duckdb(archive: ArchiveSettings, where: list[str]) -> None:
    result = cli(archive, *EVERYTHING, *where, "--top", "12", "--format", "json")
    assert result.exit_code == 0, result.output
    from query.textout import iso_time

    got = [
        (r["pattern"], r["count"], r["first"], r["last"])
        for r in map(orjson.loads, result.stdout.splitlines())
    ]
    expected = [
        (p, c, iso_time(lo), iso_time(hi))
        for p, c, lo, hi in duck_top(archive, 12, "app = 'api'" if where else "true")
    ]
    assert got == expected
    assert any("<n>" in p for p, *_ in got)
    text = cli(archive, *EVERYTHING, *where, "--top", "3")
    assert text.exit_code == 0 and text.stdout.startswith("COUNT") and text.stdout.count("e.g. ") == 3


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> ArchiveSettings:
    settings = ArchiveSettings("file", "", str(tmp_path_factory.mktemp("mixed") / "archive"))
    build(settings, v1_first_flush=True)
    return settings


@pytest.mark.parametrize(
    "question",
    [
        ["--where", "status>=500", "--where", "has:user.id", "--format", "json"],
        ["--region", "dfw", "--where", "status>=500", "--format", "json"],
        # Whole hours: rows from footers (v1: the region from the key) or the one column (v2: region).
        ["--count", "--every", "1h", "--by", "region", "--format", "csv"],
        ["--count", "--every", "1h", "--by", "level", "--format", "csv"],
        ["--count", "--every", "1h", "--format", "csv"],
        # Rows: exact times, the region column or key.
        ["--count", "--every", "15m", "--by", "region", "--format", "csv"],
        ["--region", "dfw", "--count", "--every", "1h", "--format", "csv"],
        ["--count", "--every", "1h", "--by", "field:req.method", "--where", "status>=500", "--format", "csv"],
        ["--top", "12", "--format", "json"],
    ],
)
def test_a_mixed_v1_v2_archive_answers_as_v2(
    archive: ArchiveSettings, mixed: ArchiveSettings, question: list[str]
) -> None:
    """The same rows, each partition's first flush as schema v1 wrote it: the (DuckDB-checked) v2 answers."""
    assert any("/hour=" in str(p) for p in Path(mixed.prefix).rglob("*.parquet"))
    v2, both = cli(archive, *EVERYTHING, *question), cli(mixed, *EVERYTHING, *question)
    assert v2.exit_code == 0 and both.exit_code == 0, both.output
    if "--top" in question:
        # The example is any message of the pattern: which one depends on the order files are read.
        def answer(text: str) -> list[dict[str, Any]]:
            return [
                {k: v for k, v in orjson.loads(line).items() if k != "example"} for line in text.splitlines()
            ]

        assert answer(v2.stdout) and answer(both.stdout) == answer(v2.stdout)
    else:
        assert v2.stdout and both.stdout == v2.stdout


def test_names_and_messages_are_escaped_on_a_terminal() -> None:
    from archiver.terminal import visible
    from query.terminal import safe_for_terminal

    table = pa.table({"app": ["a\x1b]0;pwned\x07"], "region": ["ams"], "instance": ["i\x9b2J"],
                      "message": ["\x1b[31mred\x1b[0m\tok\r\n"]})  # fmt: skip
    piped = safe_for_terminal(table, message=False)
    assert piped["app"].to_pylist() == ["a\\x1b]0;pwned\\x07"]
    assert piped["instance"].to_pylist() == ["i\\x9b2J"]
    assert piped["message"].to_pylist() == ["\x1b[31mred\x1b[0m\tok\r\n"]  # a pipe gets the exact bytes
    tty = safe_for_terminal(table, message=True)
    assert tty["message"].to_pylist() == ["\\x1b[31mred\\x1b[0m\tok\\r\\n"]
    assert "\t" in visible("".join(map(chr, range(0xA0))))  # tab stays
    assert all(c.isprintable() or c == "\t" for c in visible("".join(map(chr, range(0xA0)))))


def _run(settings: ArchiveSettings, args: list[str], tty: bool) -> bytes:
    """``archiver query`` as a process, its stdout a terminal (a pty) or a pipe."""
    import os
    import pty
    import subprocess
    import sys

    argv = [sys.executable, "-m", "archiver", "query", "--archive", settings.prefix, *args]
    if not tty:
        return subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout
    leader, follower = pty.openpty()
    with subprocess.Popen(argv, stdout=follower, stderr=subprocess.DEVNULL) as proc:
        os.close(follower)
        out = bytearray()
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=60) == 0
    os.close(leader)
    return bytes(out)


def test_text_on_a_terminal_is_escaped_and_exact_in_a_pipe(archive: ArchiveSettings) -> None:
    args = [*EVERYTHING, "--grep", "ERROR.*status", "--app", "web"]
    on_tty, piped = _run(archive, args, tty=True), _run(archive, args, tty=False)
    assert b"\x1b[31mERROR" in piped and b"\x07" in piped  # the exact bytes
    assert b"\x1b" not in on_tty and b"\x07" not in on_tty
    assert b"\\x1b[31mERROR\\x1b[0m status" in on_tty and b"\\x07 done\\r\\n" in on_tty
    json_out = _run(archive, [*args, "--format", "json"], tty=True)
    assert b"\x1b" not in json_out and b"\\u001b[31mERROR" in json_out  # JSON escapes it itself


def test_hostile_app_names_are_escaped(local_settings: ArchiveSettings) -> None:
    import asyncio

    from forensics_archive import DAY

    from archiver.archive.escaping import partition_value
    from archiver.archive.layout import object_key, object_name
    from archiver.codec.encode import encode_partition
    from archiver.codec.payloads import Payloads
    from archiver.demo.flymessage import fly_record
    from archiver.storage.open import open_storage

    app = "evil\x1b]0;owned\x07"
    payload = orjson.dumps(fly_record(app, "ams", "hello", "2026-11-23T00:00:01Z", instance="i\x1b[2J"))
    (f,) = encode_partition(app, "ams", Payloads([payload]), DAY).files

    async def put() -> None:
        storage = open_storage(local_settings)
        await storage.put(object_key(partition_value(app), f.hour_ns, object_name(DAY, "w", 1)), f.data)
        await storage.close()

    asyncio.run(put())
    listed = CliRunner().invoke(main, ["ls", "--archive", local_settings.prefix])
    assert listed.exit_code == 0 and listed.stdout == "evil\\x1b]0;owned\\x07\n"
    shown = cli(local_settings, *EVERYTHING)
    assert shown.exit_code == 0 and "app[i\\x1b[2J] ams [info] hello" in shown.stdout
    counted = cli(local_settings, *EVERYTHING, "--count", "--by", "app")
    assert counted.exit_code == 0 and "\x1b" not in counted.stdout and "evil\\x1b]0;owned" in counted.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--where", "status"], "--where: no operator"),
        (["--where", "status>>5"], "must be quoted"),
        (["--where", "status=<5"], "must be quoted"),
        (["--where", "=5"], "--where: expected a field name"),
        (["--where", "a..b=1"], "--where: empty field name"),
        (["--where", 'status="5'], "--where:"),
        (["--where", "msg~(unclosed"], "invalid regular expression"),
        (["--where", "has:"], "--where:"),
        (["--where", ""], "--where: expected a field name"),
        (["--count", "--by", "colour"], "--by: expected one of"),
        (["--count", "--by", "field:"], "--by: expected one of"),
        (["--count", "--every", "soon"], "--every:"),
        (["--count", "--every", "0"], "--every: must be at least"),
        (["--count", "--every", "-5m"], "--every:"),
        (["--by", "level"], "--by needs --count"),
        (["--every", "1h"], "--every needs --count"),
        (["--count", "--top", "3"], "cannot be combined"),
        (["--count", "--tail", "3"], "cannot be combined"),
        (["--top", "3", "--format", "parquet", "-o", "x.parquet"], "not parquet"),
        (["--follow", "--until", "1h"], "--follow cannot be combined with --until"),
        (["--follow", "--limit", "3"], "--follow cannot be combined with --limit"),
        (["--follow", "--count"], "cannot be combined"),
        (["--top", "0"], "--top"),
    ],
)
def test_bad_input_is_one_line_exit_2(archive: ArchiveSettings, args: list[str], message: str) -> None:
    result = cli(archive, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr


def test_count_of_whole_hours_skips_a_damaged_file_as_a_query_does(local_settings: ArchiveSettings) -> None:
    build(local_settings)
    args = [*EVERYTHING, "--count", "--every", "1h", "--by", "level", "--format", "json"]
    before = cli(local_settings, *args)
    assert before.exit_code == 0 and before.stdout
    listed = next(Path(local_settings.prefix).rglob("*.parquet"))
    # Beside a file of the same hour: a v2 name starts with its hour, YYYYMMDDTHH.
    (listed.parent / f"{listed.name[:11]}-zzzz-damaged.parquet").write_bytes(b"PAR1 not really")
    after = cli(local_settings, *args)
    assert after.exit_code == 0 and after.stdout == before.stdout
    assert "warning: skipped" in after.stderr and "zzzz-damaged.parquet" in after.stderr
    strict = cli(local_settings, *args, "--strict")
    assert strict.exit_code == 1 and "zzzz-damaged.parquet" in strict.stderr
