"""The one exception tree of archiver.

Every error archiver raises on purpose derives from :class:`ArchiverError`.
Third-party errors (botocore, nats-py, pyarrow, OS errors) are converted at
the module that talks to them, so callers handle this tree only::

    ArchiverError
    ├── ConfigError          bad option or environment value (CLI exit 2)
    ├── UsageError           bad query arguments (CLI exit 2)
    ├── StorageError         the archive cannot be read or written (exit 1)
    │   ├── ObjectExistsError   a create-only write found the key taken
    │   ├── ObjectNotFoundError a read found no such key
    │   └── StorageUnavailableError  endpoint, bucket or credentials failed
    ├── SourceError          the NATS stream cannot be reached (exit 1)
    └── EncodeError          a batch could not be turned into Parquet

Messages never contain secrets: code that builds them must not format
credentials, tokens or signed URLs into them (a third-party error's text is
passed through :func:`archiver.redact.redact` before it is kept). The CLI and
the log handler redact once more on the way out.
"""

from __future__ import annotations


class ArchiverError(Exception):
    """Root of every error archiver raises on purpose."""

    exit_code = 1


class ConfigError(ArchiverError):
    """An option or environment variable has an invalid value."""

    exit_code = 2


class UsageError(ArchiverError):
    """Command-line arguments that cannot be acted on (bad time, bad regex)."""

    exit_code = 2


class StorageError(ArchiverError):
    """The archive storage failed an operation."""


class ObjectExistsError(StorageError):
    """A create-only write found the key already present."""


class ObjectNotFoundError(StorageError):
    """A read or stat found no object at the key."""


class StorageUnavailableError(StorageError):
    """The endpoint, bucket or credentials do not work."""


class SourceError(ArchiverError):
    """The NATS log stream cannot be reached or subscribed."""


class EncodeError(ArchiverError):
    """A batch of messages could not be encoded as Parquet."""
