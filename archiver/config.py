"""Configuration: the settings of every command, their defaults, and how each value is checked.

Every setting comes from an environment variable and may be overridden by a
command-line option of the same meaning (an option wins); reading them is
:mod:`archiver.environment`'s, the only module that reads the process
environment. Here they are checked: an invalid value raises
:class:`~archiver.errors.ConfigError` with one line naming the variable and
what it accepts. Secrets are held in fields excluded from ``repr`` so they
never reach logs or error messages; NATS_URL credentials
(``nats://user:pass@host``) are split out of the URL into such fields, and
every secret is registered with :mod:`archiver.redact`, the safety net at
the process's boundaries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from archiver.errors import ConfigError
from archiver.redact import redact, register_secret, split_url_credentials
from archiver.units import duration_setting, on_off, port_setting, size_setting, url_scheme

LOG_LEVELS = ("debug", "info", "warning", "error")
#: Largest file compaction writes (``COMPACT_TARGET_BYTES``); a bigger hour becomes several files.
DEFAULT_COMPACT_TARGET_BYTES = 256 * 1024**2
#: The service compacts an app-hour this long after it ended (``COMPACT_AFTER``), or FLUSH_INTERVAL if longer:
#: an hour's files keep coming for a flush interval after it ends, so never sooner than that.
DEFAULT_COMPACT_AFTER_S = 600.0
#: ``TABLE_COMMIT_INTERVAL``: 60 s keeps table upkeep under 5% of ingest CPU at a year (BENCHMARKS.md).
DEFAULT_TABLE_COMMIT_INTERVAL_S = 60.0

#: A setting's text by variable name (an option's value, else the variable's); None when not set.
Lookup = Callable[[str], "str | None"]


@dataclass(frozen=True, slots=True)
class S3Settings:
    """How to reach an S3-compatible endpoint (Tigris, AWS S3, SeaweedFS)."""

    endpoint_url: str | None = None
    region: str = "auto"
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None  # AWS_CA_BUNDLE: the CAs to trust instead of the system's
    #: HTTPS_PROXY/HTTP_PROXY/NO_PROXY (see archiver.storage.http_transport); may hold a password.
    https_proxy: str | None = field(default=None, repr=False)
    http_proxy: str | None = field(default=None, repr=False)
    no_proxy: str | None = None

    def __post_init__(self) -> None:
        # The key id is not a credential by itself, but it names the account: masked too.
        register_secret(self.access_key_id)
        register_secret(self.secret_access_key)
        for proxy in (self.https_proxy, self.http_proxy):
            user, password, _ = split_url_credentials(proxy or "")
            register_secret(password if password is not None else user)


@dataclass(frozen=True, slots=True)
class ArchiveSettings:
    """Where the archive is: ``s3://bucket/prefix`` or a local directory."""

    scheme: str  # "s3" or "file"
    bucket: str  # S3 bucket; empty for file
    prefix: str  # S3 key prefix without surrounding slashes, or the absolute directory
    s3: S3Settings = field(default_factory=S3Settings)

    @property
    def url(self) -> str:
        """Display form, safe to log (no credentials)."""
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return self.prefix


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Settings of ``archiver run``."""

    archive: ArchiveSettings
    #: Never holds credentials: ``nats://user:pass@host`` is split into the two fields below.
    nats_url: str = "nats://[fdaa::3]:4223"
    org: str = "personal"
    access_token: str | None = field(default=None, repr=False)
    #: User and password from NATS_URL's userinfo (a user without password is a token).
    nats_url_user: str | None = field(default=None, repr=False)
    nats_url_password: str | None = field(default=None, repr=False)
    subject: str = "logs.>"
    queue: str | None = None
    flush_interval_s: float = 60.0
    flush_bytes: int = 64 * 1024**2
    max_buffer_bytes: int = 256 * 1024**2
    #: A longer message is truncated to this many bytes, marked and counted (never dropped).
    max_message_bytes: int = 4 * 1024**2
    http_port: int = 8686
    #: Empty: every interface, IPv4 and IPv6 (Fly's checks and 6PN). Never a public Fly service.
    http_host: str = ""
    log_level: str = "info"
    #: None disables the spool (memory only; for benchmarks of its cost).
    spool_dir: str | None = "./spool"
    spool_fsync_interval_s: float = 0.2
    spool_max_bytes: int = 2 * 1024**3
    storage_failure_grace_s: float = 120.0
    #: Re-subscribe when connected but silent this long (0 disables).
    stall_timeout_s: float = 600.0
    #: /health fails once NATS has been disconnected this long (a blip is normal).
    nats_disconnect_grace_s: float = 15.0
    workers: int = 1
    #: "auto" (uvloop when installed), "uvloop" or "asyncio".
    event_loop: str = "auto"
    #: JetStream mode: consume SUBJECT from this stream through a durable consumer (None: core NATS).
    jetstream_stream: str | None = None
    jetstream_durable: str = "archiver"
    #: Compact an app-hour once it ended this long ago (None: the service does not compact).
    compact_after_s: float | None = DEFAULT_COMPACT_AFTER_S
    compact_target_bytes: int = DEFAULT_COMPACT_TARGET_BYTES
    table: bool = True  # TABLE: the archive root is a Delta table the service commits to (off: plain files)
    table_commit_interval_s: float = DEFAULT_TABLE_COMMIT_INTERVAL_S
    table_vacuum_retention_s: float = 3600.0  # a file removed from the table and left behind: deleted then

    def __post_init__(self) -> None:
        register_secret(self.access_token)
        user, password, bare_url = split_url_credentials(self.nats_url)
        # As written in the URL (maybe percent-encoded) and as sent (decoded, like nats.go does).
        register_secret(password if password is not None else user)  # a user alone is a token
        if user is not None:
            # Frozen dataclass: set once here, so no code path ever sees the credentials in the URL.
            object.__setattr__(self, "nats_url", bare_url)
            object.__setattr__(self, "nats_url_user", unquote(user))
            object.__setattr__(self, "nats_url_password", None if password is None else unquote(password))
        register_secret(self.nats_url_password)
        if self.nats_url_password is None:
            register_secret(self.nats_url_user)


#: Defaults as an instance, because slotted dataclass attributes are descriptors on the class.
_DEFAULTS = RunConfig(archive=ArchiveSettings("file", "", ""))


def compact_target_bytes(text: str | None) -> int:
    """``--target-bytes``/``COMPACT_TARGET_BYTES`` checked: the most bytes per compacted file."""
    return size_setting("COMPACT_TARGET_BYTES", text, DEFAULT_COMPACT_TARGET_BYTES)


def run_config(pick: Lookup, archive: Callable[[str | None], ArchiveSettings]) -> RunConfig:
    """The checked settings of ``archiver run``: each value from ``pick``, the archive from ``archive(url)``."""

    def seconds(name: str, default_s: float, *, allow_zero: bool = True) -> float:
        return duration_setting(name, pick(name), default_s, allow_zero=allow_zero)

    # Checked in the order a bad value is reported in when several are.
    log_level, nats_url, subject = _stream(pick)
    flush_interval_s, flush_bytes, max_buffer, compact_after_s = _flushing(pick)
    workers, spool_dir, jetstream_stream, event_loop = _process(pick)
    return RunConfig(
        table=on_off("TABLE", pick("TABLE"), default=True),
        table_commit_interval_s=seconds("TABLE_COMMIT_INTERVAL", DEFAULT_TABLE_COMMIT_INTERVAL_S),
        table_vacuum_retention_s=seconds("TABLE_VACUUM_RETENTION", _DEFAULTS.table_vacuum_retention_s),
        compact_after_s=compact_after_s,
        compact_target_bytes=compact_target_bytes(pick("COMPACT_TARGET_BYTES")),
        event_loop=event_loop,
        jetstream_stream=jetstream_stream,
        jetstream_durable=_jetstream_name("JETSTREAM_DURABLE", pick("JETSTREAM_DURABLE"))
        or _DEFAULTS.jetstream_durable,
        workers=workers,
        nats_disconnect_grace_s=seconds("NATS_DISCONNECT_GRACE", _DEFAULTS.nats_disconnect_grace_s),
        stall_timeout_s=seconds("STALL_TIMEOUT", _DEFAULTS.stall_timeout_s),
        archive=archive(pick("ARCHIVE_URL")),
        nats_url=nats_url,
        org=pick("ORG") or _DEFAULTS.org,
        access_token=pick("ACCESS_TOKEN"),
        subject=subject,
        queue=pick("QUEUE"),
        flush_interval_s=flush_interval_s,
        flush_bytes=flush_bytes,
        max_buffer_bytes=max_buffer,
        max_message_bytes=size_setting(
            "MAX_MESSAGE_BYTES", pick("MAX_MESSAGE_BYTES"), _DEFAULTS.max_message_bytes
        ),
        http_port=port_setting("HTTP_PORT", pick("HTTP_PORT"), _DEFAULTS.http_port),
        http_host=pick("HTTP_HOST") or _DEFAULTS.http_host,
        log_level=log_level,
        spool_dir=spool_dir,
        spool_fsync_interval_s=seconds("SPOOL_FSYNC_INTERVAL", _DEFAULTS.spool_fsync_interval_s),
        spool_max_bytes=size_setting("SPOOL_MAX_BYTES", pick("SPOOL_MAX_BYTES"), _DEFAULTS.spool_max_bytes),
        storage_failure_grace_s=seconds("STORAGE_FAILURE_GRACE", _DEFAULTS.storage_failure_grace_s),
    )


def _stream(pick: Lookup) -> tuple[str, str, str]:
    """LOG_LEVEL, NATS_URL and SUBJECT, checked."""
    log_level = (pick("LOG_LEVEL") or "info").lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL: expected one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    nats_url = pick("NATS_URL") or _DEFAULTS.nats_url
    if url_scheme(nats_url) not in ("nats", "tls", "ws", "wss"):
        raise ConfigError(f"NATS_URL: expected nats://host:port, got {redact(nats_url)!r}")
    subject = pick("SUBJECT") or _DEFAULTS.subject
    if " " in subject or subject.startswith(".") or subject.endswith(".") or ".." in subject:
        raise ConfigError(f"SUBJECT: expected a NATS subject such as logs.> or logs.myapp.*.*, got {subject!r}")  # fmt: skip
    return log_level, nats_url, subject


def _flushing(pick: Lookup) -> tuple[float, int, int, float | None]:
    """FLUSH_INTERVAL, FLUSH_BYTES, MAX_BUFFER_BYTES and COMPACT_AFTER, checked against each other."""
    interval_s = duration_setting("FLUSH_INTERVAL", pick("FLUSH_INTERVAL"), _DEFAULTS.flush_interval_s)
    flush_bytes = size_setting("FLUSH_BYTES", pick("FLUSH_BYTES"), _DEFAULTS.flush_bytes)
    max_buffer = size_setting("MAX_BUFFER_BYTES", pick("MAX_BUFFER_BYTES"), _DEFAULTS.max_buffer_bytes)
    if max_buffer < flush_bytes:
        raise ConfigError(f"MAX_BUFFER_BYTES: must be at least FLUSH_BYTES ({flush_bytes} bytes), got {max_buffer} bytes")  # fmt: skip
    compact = pick("COMPACT_AFTER")
    if compact is not None and compact.lower() == "off":
        return interval_s, flush_bytes, max_buffer, None
    after_s = duration_setting("COMPACT_AFTER", compact, max(DEFAULT_COMPACT_AFTER_S, interval_s), allow_zero=True)  # fmt: skip
    if after_s < interval_s:
        raise ConfigError(f"COMPACT_AFTER: must be at least FLUSH_INTERVAL ({interval_s:g}s) or off, got {compact!r}")  # fmt: skip
    return interval_s, flush_bytes, max_buffer, after_s


def _process(pick: Lookup) -> tuple[int, str | None, str | None, str]:
    """WORKERS, SPOOL_DIR, JETSTREAM_STREAM and EVENT_LOOP, checked against each other."""
    workers_text = pick("WORKERS") or "1"
    if not workers_text.isdigit() or not 1 <= int(workers_text) <= 64:
        raise ConfigError(f"WORKERS: expected a number of processes 1-64, got {workers_text!r}")
    spool_dir = _spool_dir(pick("SPOOL_DIR"))
    jetstream_stream = _jetstream_name("JETSTREAM_STREAM", pick("JETSTREAM_STREAM"))
    if jetstream_stream is not None and spool_dir is None:
        raise ConfigError("SPOOL_DIR: JetStream mode (JETSTREAM_STREAM) needs the spool, got off")
    if jetstream_stream is not None and int(workers_text) > 1:
        # Each worker has its own spool: a redelivery to another worker could not be recognised.
        raise ConfigError(f"WORKERS: JetStream mode (JETSTREAM_STREAM) runs one process, got {workers_text}")
    event_loop = (pick("EVENT_LOOP") or "auto").lower()
    if event_loop not in ("auto", "uvloop", "asyncio"):
        raise ConfigError(f"EVENT_LOOP: expected auto, uvloop or asyncio, got {event_loop!r}")
    return int(workers_text), spool_dir, jetstream_stream, event_loop


def _jetstream_name(name: str, text: str | None) -> str | None:
    # JetStream names become API subject tokens: no whitespace, dots, wildcards or path separators.
    if text is not None and any(c in text for c in " \t\r\n.*>/\\"):
        raise ConfigError(f"{name}: expected a JetStream name without spaces, '.', '*', '>' or slashes, got {text!r}")  # fmt: skip
    return text


def _spool_dir(text: str | None) -> str | None:
    if text is None:
        return str(Path(_DEFAULTS.spool_dir or "./spool").resolve())
    if text.lower() in ("off", "none"):
        return None
    return str(Path(text).expanduser().resolve())
