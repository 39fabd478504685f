"""Where delta-rs finds the table: its URI and storage options, from the archive's settings only.

Nothing here reads the environment (that is :mod:`archiver.environment`'s): the endpoint,
keys and region come from :class:`~archiver.config.ArchiveSettings`. Measured on SeaweedFS
(FINDINGS §6): these options and nothing else; every commit is a create-only
``PUT _delta_log/N.json`` with ``If-None-Match: *``, which S3, Tigris and SeaweedFS honour,
so no lock service or "unsafe rename" option is needed. When the settings carry no keys,
delta-rs's own credential chain applies (as aiobotocore's does for the rest of archiver).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from archiver.storage.open import is_local

if TYPE_CHECKING:
    from archiver.config import ArchiveSettings


def table_uri(settings: ArchiveSettings) -> str:
    """The table root as delta-rs names it: the archive directory, or ``s3://bucket[/prefix]``."""
    if is_local(settings):
        return settings.prefix
    return f"s3://{settings.bucket}/{settings.prefix}" if settings.prefix else f"s3://{settings.bucket}"


def storage_options(settings: ArchiveSettings) -> dict[str, str] | None:
    """delta-rs (object_store) options reaching the archive; None for a local directory."""
    if is_local(settings):
        return None
    s3 = settings.s3
    options = {"AWS_REGION": s3.region}
    if s3.endpoint_url:
        options["AWS_ENDPOINT_URL"] = s3.endpoint_url
        if s3.endpoint_url.lower().startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    if s3.access_key_id and s3.secret_access_key:
        options["AWS_ACCESS_KEY_ID"] = s3.access_key_id
        options["AWS_SECRET_ACCESS_KEY"] = s3.secret_access_key
    return options
