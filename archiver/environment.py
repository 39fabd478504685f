"""The process environment: the only module that reads environment variables.

Each ``load_*`` function takes the command-line options that override
variables of the same meaning (an option wins) and an ``environ`` mapping
(``os.environ`` when not given, so tests pass their own), looks the values up,
and leaves checking them to :mod:`archiver.config`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

from archiver.archive_url import parse_archive_url, s3_endpoint
from archiver.config import (
    ArchiveSettings,
    RunConfig,
    S3Settings,
    compact_target_bytes,
    run_config,
)
from archiver.redact import register_secret, split_url_credentials


def _pick(options: Mapping[str, object | None], environ: Mapping[str, str], name: str) -> str | None:
    value = options.get(name.lower())
    if value is not None:
        return str(value)
    text = environ.get(name)
    return text if text not in (None, "") else None


def load_s3_settings(environ: Mapping[str, str] | None = None) -> S3Settings:
    """S3 settings from the standard AWS variables."""
    env = os.environ if environ is None else environ
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    register_secret(env.get("AWS_SESSION_TOKEN"))  # botocore may pick it up from the environment
    return S3Settings(
        endpoint_url=s3_endpoint(endpoint),
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "auto",
        access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
        secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        ca_bundle=env.get("AWS_CA_BUNDLE") or None,
        # Upper case first, as botocore (through requests' getproxies) does; empty means unset.
        https_proxy=env.get("HTTPS_PROXY") or env.get("https_proxy") or None,
        http_proxy=env.get("HTTP_PROXY") or env.get("http_proxy") or None,
        no_proxy=env.get("NO_PROXY") or env.get("no_proxy") or None,
    )


def load_archive_settings(
    archive_url: str | None = None, environ: Mapping[str, str] | None = None
) -> ArchiveSettings:
    """Resolve ``--archive``/``ARCHIVE_URL``/``BUCKET_NAME`` into archive settings."""
    env = os.environ if environ is None else environ
    text = archive_url or env.get("ARCHIVE_URL") or None
    if text is None:
        bucket = env.get("BUCKET_NAME")
        text = f"s3://{bucket}" if bucket else "./archive"
    return parse_archive_url(text, load_s3_settings(env))


def load_run_config(
    options: Mapping[str, object | None] | None = None, environ: Mapping[str, str] | None = None
) -> RunConfig:
    """Build the run configuration: options (by lower-case variable name) over the environment."""
    opts = options or {}
    env = os.environ if environ is None else environ

    def pick(name: str) -> str | None:
        return _pick(opts, env, name)

    return run_config(pick, lambda url: load_archive_settings(url, env))


def load_compact_target_bytes(option: str | None = None, environ: Mapping[str, str] | None = None) -> int:
    """``--target-bytes`` or ``COMPACT_TARGET_BYTES``: the most bytes per compacted file."""
    env = os.environ if environ is None else environ
    return compact_target_bytes(option if option is not None else (env.get("COMPACT_TARGET_BYTES") or None))


def register_environment_secrets(environ: Mapping[str, str] | None = None) -> None:
    """Register the secrets of the environment with :mod:`archiver.redact` (before anything is parsed)."""
    env = os.environ if environ is None else environ
    for name in ("ACCESS_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"):
        register_secret(env.get(name))
    user, password, _ = split_url_credentials(env.get("NATS_URL") or "")
    register_secret(password if password is not None else user)
    register_secret(unquote(password) if password is not None else None)


def aws_variables() -> dict[str, str]:
    """The ``AWS_*`` variables of this process alone (the demo ignores every other setting of the environment)."""
    return {name: value for name, value in os.environ.items() if name.startswith("AWS_")}


def child_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with ``overrides``: what a worker process is started with."""
    return {**os.environ, **overrides}


def cache_directory(environ: Mapping[str, str] | None = None) -> Path:
    """archiver's directory in the user's cache (``$XDG_CACHE_HOME/archiver``, else ``~/.cache/archiver``)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or ""
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "archiver"
