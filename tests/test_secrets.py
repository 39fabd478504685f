"""Secrets never leave the process: not in logs, errors, /health, /metrics, --help or tracebacks.

Every credential is set to a unique random string; the real ``archiver run``
is driven through NATS authentication failures, NATS down and up, S3
credential failures and S3 outages (its own SeaweedFS, with those unique
credentials), and the CLI through its errors; then every byte of stdout,
stderr, the spool and the HTTP answers is searched for the strings.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import nats
import pytest
from harness import ARCHIVER, ArchiverProcess, start_archiver, wait_for
from hypothesis import given
from hypothesis import strategies as st
from servers import SeaweedFS

import archiver.redact as redact_module
from archiver.config import ArchiveSettings, RunConfig, S3Settings
from archiver.demo.flymessage import fly_message
from archiver.demo.servers import HOST, NatsServer, free_port
from archiver.environment import load_run_config
from archiver.errors import ConfigError
from archiver.redact import MASK, redact, redact_bytes, register_secret, safe_url


def _unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex}"


TOKEN = _unique("tok")  # ACCESS_TOKEN, wrong for the server
NATS_USER = "someuser"
NATS_PASS = _unique("natspass")  # the server's real password, given only in NATS_URL
NATS_WRONG_PASS = _unique("natswrong")
KEY_ID = "AKID" + uuid.uuid4().hex[:16].upper()
SECRET_KEY = _unique("s3secret")
WRONG_KEY_ID = "AKIDX" + uuid.uuid4().hex[:15].upper()
WRONG_SECRET_KEY = _unique("s3wrong")
ROTATED_SECRET_KEY = _unique("s3rotated")  # the server's secret for a while: the archiver's is then wrong
SECRETS = [
    TOKEN,
    NATS_PASS,
    NATS_WRONG_PASS,
    KEY_ID,
    SECRET_KEY,
    WRONG_KEY_ID,
    WRONG_SECRET_KEY,
    ROTATED_SECRET_KEY,
]


class AuthNatsServer(NatsServer):
    """nats-server that wants user/password."""

    def argv(self) -> list[str]:
        """The usual command line plus --user/--pass."""
        return [*super().argv(), "--user", NATS_USER, "--pass", NATS_PASS]


class TokenNatsServer(NatsServer):
    """nats-server that wants a token."""

    def argv(self) -> list[str]:
        """The usual command line plus --auth."""
        return [*super().argv(), "--auth", TOKEN]


SPECIAL_PASS = f"{NATS_PASS}@/:%?#"


class SpecialPasswordNatsServer(NatsServer):
    """nats-server whose password holds URL delimiters."""

    def argv(self) -> list[str]:
        """The usual command line plus --user/--pass."""
        return [*super().argv(), "--user", NATS_USER, "--pass", SPECIAL_PASS]


def assert_clean(what: str, data: bytes) -> None:
    """No secret, in any usual encoding, occurs in ``data``."""
    for secret in SECRETS:
        for form in {secret, secret.lower(), secret.upper()}:
            assert form.encode() not in data, (
                f"{what} leaks {form!r}:\n{data.decode(errors='replace')[-4000:]}"
            )


# -- unit: the redaction rule and the config objects ----------------------------------------


def test_config_repr_and_nats_url_hold_no_secret() -> None:
    config = load_run_config(
        {"nats_url": f"nats://{NATS_USER}:{NATS_PASS}@{HOST}:4222", "access_token": TOKEN},
        {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "ARCHIVE_URL": "s3://b"},
    )
    assert config.nats_url == f"nats://{HOST}:4222"
    assert (config.nats_url_user, config.nats_url_password) == (NATS_USER, NATS_PASS)
    assert config.archive.s3.secret_access_key == SECRET_KEY
    for text in (
        repr(config),
        str(config),
        repr(config.archive),
        repr(config.archive.s3),
        config.archive.url,
    ):
        assert_clean("repr", text.encode())
    token_url = RunConfig(archive=config.archive, nats_url=f"nats://{TOKEN}@[::1]:4222/")
    assert token_url.nats_url == "nats://[::1]:4222/"
    assert (token_url.nats_url_user, token_url.nats_url_password) == (TOKEN, None)


def test_percent_encoded_nats_password_is_decoded() -> None:
    config = RunConfig(archive=ArchiveSettings("file", "", "/tmp/x"), nats_url="nats://u:p%40ss%2Fw0rd!@h:1")
    assert (config.nats_url, config.nats_url_user, config.nats_url_password) == (
        "nats://h:1",
        "u",
        "p@ss/w0rd!",
    )
    assert "p%40ss%2Fw0rd!" not in redact("url nats://x@h p%40ss%2Fw0rd! p@ss/w0rd!")


@pytest.mark.parametrize(
    "variable,value",
    [
        ("NATS_URL", f"http://{NATS_USER}:{NATS_PASS}@host:4222"),
        ("NATS_URL", f"nats://{NATS_USER}:{NATS_PASS}@[::1"),
        ("AWS_ENDPOINT_URL_S3", f"ftp://{KEY_ID}:{SECRET_KEY}@host"),
        ("AWS_ENDPOINT_URL_S3", f"http://{KEY_ID}:{SECRET_KEY}@[::1"),
        ("ARCHIVE_URL", f"s3://{KEY_ID}:{SECRET_KEY}@bucket/prefix"),
        ("ARCHIVE_URL", f"s3://{SECRET_KEY}@bucket"),
        ("ARCHIVE_URL", f"gs://{SECRET_KEY}@[bucket"),
    ],
    # The secrets are random per process: ids of their own keep the collection the same in every worker.
    ids=[
        "nats-http",
        "nats-bad-host",
        "endpoint-ftp",
        "endpoint-bad-host",
        "archive-key",
        "archive-secret",
        "gs",
    ],
)
def test_config_errors_hold_no_secret(variable: str, value: str) -> None:
    env = {"ARCHIVE_URL": "/tmp/archive", variable: value}
    with pytest.raises(ConfigError) as caught:
        load_run_config({}, env)
    assert caught.value.args[0].startswith(f"{variable}: ")
    assert_clean("ConfigError", str(caught.value).encode())


def test_redact_masks_userinfo_and_registered_values() -> None:
    register_secret(SECRET_KEY)
    assert (
        redact(f"nats://{NATS_USER}:x@h:4222 and tls://tok@[::1]:1/p")
        == "nats://***@h:4222 and tls://***@[::1]:1/p"
    )
    assert redact("nats://u:p@ss@h:1/x@y") == "nats://***@h:1/x@y"
    assert redact(f"error {SECRET_KEY}; quoted {json.dumps(SECRET_KEY)}") == f'error {MASK}; quoted "{MASK}"'
    assert redact_bytes(f'{{"e":"{SECRET_KEY}"}}'.encode()) == b'{"e":"***"}'
    assert redact("no secrets at http://host:1/path, user@example.com") == (
        "no secrets at http://host:1/path, user@example.com"
    )
    assert safe_url(f"nats://u:{NATS_PASS}@h:4222") == "nats://***@h:4222"
    assert safe_url("nats://h:4222") == "nats://h:4222"
    register_secret("short")  # too short to replace safely: ignored
    assert redact("a short note") == "a short note"


@pytest.mark.fuzz
@given(
    secret=st.text(
        st.characters(blacklist_characters="*", blacklist_categories=("Cs",)), min_size=8, max_size=40
    ),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
)
def test_redact_property(secret: str, before: str, after: str) -> None:
    """Whatever surrounds a registered secret, it is gone after redaction (also as JSON and URL-encoded)."""
    # The registry is the process's: an arbitrary secret ("00000000") left in it would mask text in the
    # tests that run after this one in the same process.
    saved = list(redact_module._secrets), list(redact_module._secret_bytes)
    register_secret(secret)
    try:
        for text in (
            before + secret + after,
            json.dumps(before + secret + after),
            before + quote(secret, safe=""),
        ):
            assert secret not in redact(text)
            assert secret.encode() not in redact_bytes(text.encode("utf-8", "surrogateescape"))
    finally:
        redact_module._secrets[:], redact_module._secret_bytes[:] = saved


def test_s3_settings_repr() -> None:
    s3 = S3Settings("http://h:1", "us-east-1", KEY_ID, SECRET_KEY)
    assert_clean("S3Settings repr", repr(s3).encode())


# -- the real processes -------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ARCHIVE_", "BUCKET_", "NATS_"))}
    return base | {"ACCESS_TOKEN": TOKEN, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                   "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"} | extra  # fmt: skip


def _scrape(proc: ArchiverProcess, bodies: list[bytes]) -> int:
    """GET /health and /metrics; keep the bodies; the health status (0 when unreachable)."""
    status = 0
    for path in ("/health", "/metrics"):
        try:
            code, body = proc.get(path)
        except OSError:
            continue
        bodies.append(body)
        status = code if path == "/health" else status
    return status


def _set_credentials(s3: SeaweedFS, secret_key: str) -> None:
    """The credentials SeaweedFS accepts from its next start: KEY_ID and ``secret_key``."""
    s3.access_key, s3.secret_key = KEY_ID, secret_key
    assert s3.env is not None
    s3.env |= {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": secret_key}


def _wait_status(
    proc: ArchiverProcess, status: int, bodies: list[bytes], what: str, timeout_s: float = 40
) -> None:
    wait_for(lambda: _scrape(proc, bodies) == status, timeout_s, what, proc)


def _publish(url: str, count: int, tag: str) -> None:
    async def go() -> None:
        nc = await nats.connect(url, user=NATS_USER, password=NATS_PASS)
        for i in range(count):
            await nc.publish(
                "logs.a.r.i", fly_message("a", "r", f"{tag} {i}", "2026-01-01T00:00:00Z", instance="i")
            )
        await nc.flush()
        await nc.close()

    import asyncio

    asyncio.run(go())


def test_nothing_leaks_from_processes(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    started = time.monotonic()
    nats_server = AuthNatsServer(tmp_path / "nats")
    s3 = SeaweedFS(tmp_path / "weed")  # our own, with the unique credentials
    _set_credentials(s3, SECRET_KEY)
    logs = tmp_path / "logs"
    bodies: list[bytes] = []
    procs: list[ArchiverProcess] = []
    try:
        nats_server.start()
        s3.start()
        s3.create_bucket("arch")
        good = s3.archive_settings("arch", "p")
        good_url = f"nats://{NATS_USER}:{NATS_PASS}@{HOST}:{nats_server.port}"
        bare_url = f"nats://{HOST}:{nats_server.port}"
        common = {"ACCESS_TOKEN": "", "STORAGE_FAILURE_GRACE": "0", "NATS_DISCONNECT_GRACE": "0",
                  "FLUSH_INTERVAL": "0.3"}  # fmt: skip

        # The main run: right credentials in NATS_URL, debug logging (every library's lines).
        main = start_archiver(good_url, good, logs, **common, LOG_LEVEL="debug")
        procs.append(main)
        # Wrong NATS credentials three ways: ACCESS_TOKEN, NATS_URL userinfo, and through --workers 2.
        wrong_token = start_archiver(
            bare_url, good, logs, **(common | {"ACCESS_TOKEN": TOKEN, "ORG": NATS_USER})
        )
        wrong_url = start_archiver(
            f"nats://{NATS_USER}:{NATS_WRONG_PASS}@{HOST}:{nats_server.port}", good, logs, **common
        )
        workers = start_archiver(
            f"nats://{NATS_USER}:{NATS_WRONG_PASS}@{HOST}:{nats_server.port}", good, logs, ["--workers", "2"],
            **(common | {"ACCESS_TOKEN": TOKEN}),
        )  # fmt: skip
        procs += [wrong_token, wrong_url, workers]
        main.wait_subscribed()
        for proc in (wrong_token, wrong_url, workers):
            _wait_status(proc, 503, bodies, "503 while NATS refuses")
        time.sleep(1.5)  # the workers' supervisor polls its children once a second
        for proc in (wrong_token, wrong_url, workers):
            _scrape(proc, bodies)
            assert proc.proc.poll() is None
        # The server sends -ERR 'Authorization Violation' and closes; under load the client may see the
        # reset first, so wait for a retry that reads the error itself.
        wait_for(
            lambda: "Authorization" in (json.loads(wrong_url.get("/health")[1])["nats"]["last_error"] or ""),
            30, "the auth error in /health", wrong_url,
        )  # fmt: skip
        _scrape(wrong_url, bodies)

        # NATS down, then up again.
        _publish(good_url, 20, "before")
        wait_for(lambda: main.metric("archiver_files_written_total") >= 1, 20, "first file", main)
        nats_server.kill()
        _wait_status(main, 503, bodies, "503 while NATS is down")
        nats_server.start()
        _wait_status(main, 200, bodies, "reconnected")

        # S3 refuses the archiver's signature (the server's secret was rotated), then is down
        # (connection refused), then takes the archiver's credentials again.
        s3.kill()
        _set_credentials(s3, ROTATED_SECRET_KEY)
        s3.start()
        _publish(good_url, 20, "during")
        wait_for(lambda: main.metric("archiver_upload_errors_total") >= 1, 30, "an upload error", main)
        _wait_status(main, 503, bodies, "503 while S3 refuses the signature")
        report = json.loads(main.get("/health")[1])
        assert "access denied" in report.get("reason", ""), report
        s3.kill()
        for _ in range(3):
            _scrape(main, bodies)
            time.sleep(0.3)
        _set_credentials(s3, SECRET_KEY)
        s3.start()
        _wait_status(main, 200, bodies, "uploads recovered")
        wait_for(lambda: main.metric("archiver_files_written_total") >= 2, 30, "the second file", main)

        for proc in procs:
            assert proc.stop() == 0, proc.log()

        # Failing at start: wrong secret (SignatureDoesNotMatch), unknown key (InvalidAccessKeyId),
        # an S3 endpoint on a closed port. Each exits 1 with one line.
        closed = f"http://{HOST}:{free_port()}"
        failing = [
            start_archiver(good_url, good, logs, AWS_SECRET_ACCESS_KEY=WRONG_SECRET_KEY),
            start_archiver(good_url, good, logs, AWS_ACCESS_KEY_ID=WRONG_KEY_ID, AWS_SECRET_ACCESS_KEY=WRONG_SECRET_KEY),
            start_archiver(good_url, good, logs, AWS_ENDPOINT_URL_S3=closed),
        ]  # fmt: skip
        procs += failing
        for proc in failing:
            assert proc.proc.wait(30) == 1, proc.log()
            assert any(line.startswith("error: ") for line in proc.log().splitlines()), proc.log()
            assert "Traceback" not in proc.log()
    finally:
        for proc in procs:
            proc.kill()
        nats_server.stop()
        s3.kill()

    for path in sorted(logs.rglob("*")):
        if path.is_file():
            assert_clean(str(path), path.read_bytes())
    for body in bodies:
        assert_clean("HTTP answer", body)
    assert any(b"Authorization Violation" in b for b in bodies)
    assert time.monotonic() - started < 60


def test_nothing_leaks_from_the_cli(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    bucket = f"secrets-{uuid.uuid4().hex[:12]}"
    seaweedfs.create_bucket(bucket)
    closed = f"http://{HOST}:{free_port()}"
    wrong_creds = _env(ARCHIVE_URL=f"s3://{bucket}/p", AWS_ENDPOINT_URL_S3=seaweedfs.endpoint_url,
                       AWS_SECRET_ACCESS_KEY=WRONG_SECRET_KEY)  # fmt: skip
    unknown_key = wrong_creds | {"AWS_ACCESS_KEY_ID": WRONG_KEY_ID}
    down = _env(ARCHIVE_URL=f"s3://{bucket}/p", AWS_ENDPOINT_URL_S3=closed)
    nats_creds = _env(
        NATS_URL=f"nats://{NATS_USER}:{NATS_PASS}@{HOST}:{free_port()}", ARCHIVE_URL=str(tmp_path)
    )
    # Every archive command with a wrong secret; the reads with an unknown key and with S3 down.
    cases: list[tuple[list[str], dict[str, str], set[int]]] = [
        (["query", "--app", "a", "--since", "1h", "--format", "json"], wrong_creds, {1}),
        (["ls", "--app", "a"], wrong_creds, {1}),
        (["compact"], wrong_creds, {1}),
        (["prune", "--older-than", "1d", "--dry-run"], wrong_creds, {1}),
        (["stats"], wrong_creds, {1}),
        (["import", "-"], wrong_creds, {1}),
    ]
    for env in (unknown_key, down):
        cases += [(["query", "--since", "1h"], env, {1}), (["ls"], env, {1})]
    cases += [
        (["run", "--bogus"], nats_creds, {2}),
        (["run", "--nats-url", f"http://{NATS_USER}:{NATS_PASS}@h:1"], nats_creds, {2}),
        (["run", "--nats-url", f"nats://{NATS_USER}:{NATS_PASS}@[::1"], nats_creds, {2}),
        (["run", "--archive", f"s3://{KEY_ID}:{SECRET_KEY}@bucket"], nats_creds, {2}),
        (["run", "--flush-interval", "soon"], nats_creds, {2}),
        (["run", "--access-token"], nats_creds, {2}),
        (["query", "--since", "yesterday-ish"], wrong_creds, {2}),
        (["--version"], nats_creds, {0}),
    ]
    commands = ["", "run", "demo", "query", "ls", "compact", "prune", "import", "stats"]
    cases += [([*c.split(), "--help"], nats_creds | {"ACCESS_TOKEN": TOKEN}, {0}) for c in commands]
    procs = [
        (args, codes, subprocess.Popen([*ARCHIVER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL))
        for args, env, codes in cases
    ]  # fmt: skip
    for args, codes, proc in procs:
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode in codes, (args, proc.returncode, out.decode(errors="replace"))
        assert_clean(f"archiver {' '.join(args)}", out)
        if proc.returncode != 0:
            assert b"Traceback" not in out, (args, out.decode(errors="replace"))
            assert out.decode(errors="replace").strip().splitlines()[-1].startswith(("error: ", "Error: ")), (
                args,
                out.decode(errors="replace"),
            )


def test_credentials_in_nats_url_authenticate(tmp_path: Path, local_settings: ArchiveSettings) -> None:
    """``nats://token@host`` and a percent-encoded ``nats://user:p%40ss@host`` still log in (as options)."""
    token_server = TokenNatsServer(tmp_path / "nats-token")
    password_server = SpecialPasswordNatsServer(tmp_path / "nats-password")
    try:
        token_server.start()
        password_server.start()
        urls = [
            f"nats://{TOKEN}@{HOST}:{token_server.port}",
            f"nats://{NATS_USER}:{quote(SPECIAL_PASS, safe='')}@{HOST}:{password_server.port}",
        ]
        procs = [start_archiver(url, local_settings, tmp_path / "logs", ACCESS_TOKEN="") for url in urls]
        for proc, server in zip(procs, (token_server, password_server), strict=True):
            try:
                proc.wait_subscribed()
                assert json.loads(proc.get("/health")[1])["nats"]["connected"]
            finally:
                assert proc.stop() == 0
            assert_clean("run with credentials in NATS_URL", proc.log_path.read_bytes())
            assert f"nats://{HOST}:{server.port}" in proc.log()
    finally:
        token_server.stop()
        password_server.stop()
