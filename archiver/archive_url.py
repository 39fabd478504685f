"""The archive's location: ``ARCHIVE_URL`` (``s3://bucket[/prefix]``, ``file:///path`` or a directory) and the S3 endpoint.

Checked here once for every command; a bad value is one :class:`~archiver.errors.ConfigError`
line. The prefix rules (no empty, ``.`` or ``..`` segment, at most
:data:`MAX_S3_PREFIX_BYTES`) are what keeps every key of the archive inside it.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from archiver.config import ArchiveSettings, S3Settings
from archiver.errors import ConfigError
from archiver.redact import redact
from archiver.units import url_scheme

#: Longest S3 key prefix: leaves room for archiver's keys (under 400 bytes) within S3's 1,024.
MAX_S3_PREFIX_BYTES = 600
#: What ``--archive`` accepts, as every command's help says it.
ARCHIVE_URL_HELP = (
    "s3://bucket[/prefix], file:///path or a directory [env: ARCHIVE_URL, else s3://$BUCKET_NAME]."
)


def s3_endpoint(text: str | None) -> str | None:
    """``AWS_ENDPOINT_URL_S3`` checked: an http(s) URL, or None for AWS itself."""
    if text is not None and url_scheme(text) not in ("http", "https"):
        raise ConfigError(f"AWS_ENDPOINT_URL_S3: expected an http(s):// URL, got {redact(text)!r}")
    return text


def parse_archive_url(text: str, s3: S3Settings | None = None) -> ArchiveSettings:
    """Parse ``s3://bucket[/prefix]``, ``file:///abs/path`` or a plain directory path."""
    accepts = "expected s3://bucket[/prefix], file:///abs/path or a directory path"
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise ConfigError(f"ARCHIVE_URL: {accepts}, got {redact(text)!r}") from None
    if "@" in parts.netloc:
        raise ConfigError(
            "ARCHIVE_URL: credentials do not belong in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if parts.scheme == "s3":
        bucket = parts.netloc
        prefix = parts.path.strip("/")
        if not bucket or parts.query or parts.fragment:
            raise ConfigError(f"ARCHIVE_URL: {accepts}, got {text!r}")
        if any(seg in ("", ".", "..") for seg in prefix.split("/")) and prefix:
            raise ConfigError(f"ARCHIVE_URL: prefix may not hold empty, '.' or '..' segments: {text!r}")
        if len(prefix.encode()) > MAX_S3_PREFIX_BYTES:
            # Keys below it take up to 400 bytes (archiver.archive.layout) and S3 stops at 1,024.
            raise ConfigError(
                f"ARCHIVE_URL: prefix longer than {MAX_S3_PREFIX_BYTES} bytes: {text[:80]!r}..."
            )
        return ArchiveSettings("s3", bucket, prefix, s3 or S3Settings())
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigError(f"ARCHIVE_URL: {accepts}, got {text!r}")
        return ArchiveSettings("file", "", str(Path(unquote(parts.path)).resolve()))
    if parts.scheme and len(parts.scheme) > 1:  # a one-letter scheme is a Windows drive
        raise ConfigError(f"ARCHIVE_URL: {accepts}, got {text!r}")
    if not text.strip():
        raise ConfigError(f"ARCHIVE_URL: {accepts}, got an empty value")
    return ArchiveSettings("file", "", str(Path(text).expanduser().resolve()))
