"""The one redaction rule: secrets never reach text that leaves the process.

Secrets are kept out of text in the first place (config fields excluded
from ``repr``, credentials split out of URLs, error messages built from
codes); this module is the safety net at every boundary where text leaves
the process: log lines (archiver's and third-party libraries'), the CLI's
error line and traceback, and HTTP responses. It removes

* the userinfo of any URL (``nats://user:pass@host`` -> ``nats://***@host``), and
* every secret value registered by :mod:`archiver.environment` when it loads
  ``ACCESS_TOKEN``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ACCESS_KEY_ID``,
  ``AWS_SESSION_TOKEN`` or the credentials of ``NATS_URL`` (also their
  URL-encoded forms).

Values shorter than :data:`MIN_SECRET_CHARS` are not replaced literally: a
four-character "secret" would mangle unrelated text (numbers in /metrics),
and is no secret anyway.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, unquote, urlsplit

MASK = "***"
#: Shorter values are not replaced verbatim (they would match ordinary text).
MIN_SECRET_CHARS = 8

#: Registered secrets in every form, longest first (so a secret containing another is masked whole).
_secrets: list[str] = []
_secret_bytes: list[bytes] = []
#: scheme://userinfo@ — greedy up to the authority's last '@' (a password may hold an unescaped '@').
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s\"'<>]*@")


def register_secret(value: str | None) -> None:
    """Remember ``value`` (and its URL-encoded forms) so that :func:`redact` masks it everywhere."""
    if not value or len(value) < MIN_SECRET_CHARS:
        return
    # As typed, URL-encoded (in a URL), decoded (from a URL) and JSON-escaped (in a JSON body).
    forms = {value, quote(value, safe=""), quote(value), unquote(value), json.dumps(value)[1:-1]}
    for form in forms:
        if len(form) >= MIN_SECRET_CHARS and form not in _secrets:
            _secrets.append(form)
            _secret_bytes.append(form.encode("utf-8", "surrogateescape"))
    _secrets.sort(key=len, reverse=True)
    _secret_bytes.sort(key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with URL userinfo and every registered secret replaced by ``***``."""
    if "://" in text:
        text = _USERINFO.sub(rf"\1{MASK}@", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_bytes(data: bytes) -> bytes:
    """:func:`redact` for a response body (bytes in, bytes out; unchanged when clean)."""
    for secret in _secret_bytes:
        if secret in data:
            data = data.replace(secret, MASK.encode())
    if b"://" in data and b"@" in data:
        data = redact(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
    return data


def safe_url(url: str) -> str:
    """``url`` without its userinfo: scheme, host, port and path only."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=f"{MASK}@{parts.netloc.rpartition('@')[2]}").geturl()


def split_url_credentials(url: str) -> tuple[str | None, str | None, str]:
    """(user, password, url without userinfo) of a URL, as written; None when absent."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not sep or not at:
        return None, None, url
    user, colon, password = userinfo.partition(":")
    return user, password if colon else None, f"{scheme}://{host}{slash}{path}"
