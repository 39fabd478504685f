"""Hostile app and region names end to end: a real ``archiver run`` and nats-server, then ``archiver query``.

Names NATS carries in a subject token are published as
``logs.<app>.<region>.<instance>``. The rest (a dot, whitespace, an empty
token: the client refuses whitespace and the server drops subjects with empty
tokens) reach the archiver through the payload fallback, on a subject of
another shape. Every object must stay under the archive root or prefix, and
``archiver query --app <name>`` must give back exactly that name's messages.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import orjson
from harness import (
    ARCHIVER,
    archive_env,
    archived_payloads,
    normalise,
    read_archive,
    start_archiver,
    wait_for,
)
from servers import SeaweedFS

from archiver.archive.escaping import MAX_SEGMENT_BYTES, encode_value, is_shortened
from archiver.config import ArchiveSettings
from archiver.demo.flymessage import fly_record
from archiver.demo.publish import publish
from archiver.demo.servers import NatsServer

#: (app, region) carried in the subject: any byte but whitespace and the token separator ".".
VIA_SUBJECT = [
    ("a/b", "r//x/"),
    ("\\\\srv\\share", "r\\e"),
    ("a=b", "region=x"),
    ("100%", "%2F"),
    ("%2E%2E", "~"),
    ("über", "日本"),
    ("caf\u00e9", "iad"),  # NFC ...
    ("cafe\u0301", "iad"),  # ... and NFD: two apps
    ("🦀~crab", "🦀"),
    ("x" * 1000, "r" * 1000),
    ("ü" * 1000, "ord"),
    ("y" * 1000, "ord"),
    ("*", ">"),
    ("nul\x00inside", "ams"),
]
#: (app, region) NATS cannot carry in a subject token: sent on ``logs.fallback`` with the names in the payload.
VIA_PAYLOAD = [
    (".", ".."),
    ("..", "."),
    ("", ""),
    (" leading", "trailing "),
    ("a b", "tab\there"),
    ("a.b", "r.e.g"),
    ("../../etc/passwd", "../.."),
    ("line\nbreak", "cr\rlf"),
    ("x" * 999 + ".", "."),
]
MESSAGES_PER_NAME = 3


def fly_payload(app: str, region: str, text: str, when_ns: int) -> bytes:
    """A Fly log message as the log stream sends it."""
    seconds, nanos = divmod(when_ns, 1_000_000_000)
    stamp = f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"
    return orjson.dumps(fly_record(app, region, text, stamp, instance="148ed726c12358", host="ab12"))


def outgoing() -> dict[str, list[tuple[str, bytes]]]:
    """Per app name: its (subject, payload) pairs."""
    now = time.time_ns() - 120 * 1_000_000_000
    out: dict[str, list[tuple[str, bytes]]] = {}
    for index, (app, region) in enumerate(VIA_SUBJECT + VIA_PAYLOAD):
        subject = f"logs.{app}.{region}.148ed726c12358" if index < len(VIA_SUBJECT) else "logs.fallback"
        out[app] = [
            (subject, fly_payload(app, region, f"message {i} of name #{index}", now + index * 1000 + i))
            for i in range(MESSAGES_PER_NAME)
        ]
    return out


def query_app(settings: ArchiveSettings, app: str) -> subprocess.CompletedProcess[bytes]:
    """``archiver query --app <app> --since 1h --format json`` as a separate process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ARCHIVE_", "BUCKET_"))}
    env |= archive_env(settings)
    argv = [*ARCHIVER, "query", "--app", app, "--since", "1h", "--format", "json"]
    return subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)


def archive_and_query(nats_server: NatsServer, settings: ArchiveSettings, work: Path) -> None:
    """Archive every hostile name, then check the archive and query each name back."""
    sent = outgoing()
    flat = [message for messages in sent.values() for message in messages]
    proc = start_archiver(nats_server.url, settings, work / "logs", SPOOL_DIR=str(work / "spool"))
    try:
        proc.wait_subscribed()
        asyncio.run(publish(nats_server.url, flat))
        wait_for(lambda: proc.metric("archiver_messages_received_total") >= len(flat), 20, "messages", proc)
    finally:
        assert proc.stop() == 0, proc.log()

    files = read_archive(settings)
    assert archived_payloads(files) == Counter(normalise(payload) for _, payload in flat)
    segments = {f.key.split("/")[0] for f in files}
    assert len(segments) == len(sent), "every name its own app segment"
    for key in (f.key for f in files):
        assert all(len(part.encode()) <= 255 for part in key.split("/")), key
        assert all(len(part.encode()) <= MAX_SEGMENT_BYTES + len("app=") for part in key.split("/")[:-1])

    # NUL cannot be passed in an argument; every other name is typed as is.
    queried = [app for app in sent if "\x00" not in app]
    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(queried, pool.map(lambda app: query_app(settings, app), queried), strict=True))
    for app, result in results.items():
        assert result.returncode == 0, (app, result.stderr.decode(errors="replace"))
        got = Counter(normalise(line) for line in result.stdout.splitlines())
        assert got == Counter(normalise(payload) for _, payload in sent[app]), app
    assert any(is_shortened(encode_value(app)) for app in queried)


def test_hostile_names_stay_in_a_local_archive(nats_server: NatsServer, tmp_path: Path) -> None:
    box = tmp_path / "box"
    root = box / "archive"
    settings = ArchiveSettings("file", "", str(root))
    archive_and_query(nats_server, settings, tmp_path / "work")

    real_root = os.path.realpath(root)
    outside = []
    for directory, _, names in os.walk(box):
        for name in names:
            path = os.path.realpath(os.path.join(directory, name))
            if os.path.commonpath([path, real_root]) != real_root:
                outside.append(path)
    assert not outside
    # Nothing anywhere else under the test directory either (spool and logs are expected there).
    stray = [p for p in tmp_path.rglob("*.parquet") if not str(p.resolve()).startswith(real_root + os.sep)]
    assert not stray


def test_hostile_names_stay_under_the_s3_prefix(
    nats_server: NatsServer, seaweedfs: SeaweedFS, s3_settings: ArchiveSettings, tmp_path: Path
) -> None:
    archive_and_query(nats_server, s3_settings, tmp_path / "work")

    client = seaweedfs.client()
    try:
        keys = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_settings.bucket):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
    finally:
        client.close()
    assert keys
    prefix = s3_settings.prefix + "/"
    assert [k for k in keys if not k.startswith(prefix)] == []
    assert all(len(k.encode()) <= 1024 for k in keys)
    assert all(".." not in k.split("/") and "." not in k.split("/") for k in keys)


def publish_raw(url: str, frames: bytes) -> None:
    """Publish ``frames`` (PUB operations, any bytes) over a plain socket, as a client in another language may."""
    host, port = url.rsplit("/", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.recv(65536)  # INFO
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n' + frames + b"PING\r\n")
        reply = b""
        while b"PONG" not in reply:
            chunk = sock.recv(65536)
            assert chunk and b"-ERR" not in chunk, reply + chunk
            reply += chunk


def test_a_subject_that_is_not_utf8_is_archived_and_ingest_goes_on(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A subject token of bytes that are not UTF-8 (NATS allows any byte but whitespace): nats-py's own
    path raises in its read loop on it and reads nothing more (a silent stall until the watchdog); the
    archiver archives it under the name its bytes decode to, leniently, and every message after it."""
    settings = ArchiveSettings("file", "", str(tmp_path / "archive"))
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    bad = orjson.dumps(fly_record("bad", "ams", "hello from a bad subject", stamp))
    good = [orjson.dumps(fly_record("good", "ams", f"after {i}", stamp)) for i in range(50)]
    frames = b"PUB logs.\xff\xfeapp.ams.i1 %d\r\n%s\r\n" % (len(bad), bad)
    frames += b"".join(b"PUB logs.good.ams.i1 %d\r\n%s\r\n" % (len(p), p) for p in good)
    proc = start_archiver(nats_server.url, settings, tmp_path / "logs")
    try:
        proc.wait_subscribed()
        publish_raw(nats_server.url, frames)
        wait_for(lambda: proc.metric("archiver_messages_received_total") >= 51, 20, "messages", proc)
    finally:
        assert proc.stop() == 0, proc.log()
    files = read_archive(settings)
    assert archived_payloads(files) == Counter(normalise(p) for p in [bad, *good])
    assert {f.app for f in files} == {"\ufffd\ufffdapp", "good"}
