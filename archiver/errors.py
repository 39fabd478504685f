"""The one exception tree of archiver (and of ``query``, which reads its archive).

Every error archiver raises on purpose derives from :class:`ArchiverError`
and is defined here. Third-party errors (botocore, nats-py, pyarrow, OS
errors) are converted at the module that talks to them, so callers handle
this tree only::

    ArchiverError
    ├── ConfigError          bad option or environment value (CLI exit 2)
    ├── UsageError           bad query arguments (CLI exit 2)
    ├── StorageError         the archive cannot be read or written (exit 1)
    │   ├── ObjectExistsError   a create-only write found the key taken
    │   │   └── ConflictError   S3 409: another conditional write of the key is in flight
    │   ├── ObjectNotFoundError a read found no such key
    │   │   └── VanishedError   a listed file was gone when read: its hour is listed again
    │   ├── StorageUnavailableError  endpoint, bucket or credentials failed
    │   └── DamagedFileError    --strict: a file is not a readable archive file
    ├── BadFileError         a file is not a readable archive file: skipped with a warning
    ├── OutputError          query results could not be written (disk full, I/O error)
    ├── SourceError          the NATS stream cannot be reached (exit 1)
    ├── SpoolError           the spool directory cannot be used or written
    ├── TableError           the archive's Delta table cannot be read or committed (names the log object)
    │   └── TableConflictError  a guarded commit lost: another compactor or prune of the app-day won
    └── EncodeError          a batch could not be turned into Parquet

Three of them are signals inside a command rather than its outcome:
``ConflictError`` is retried by the S3 backend, ``VanishedError`` is answered
by listing the hour again (``query.plan``), and ``BadFileError`` is the reason
``query`` and ``ls`` give when they skip a file (with ``--strict`` they raise
``DamagedFileError`` instead). Each still derives from the root, so one that
escaped would be one line and exit 1, never a traceback. The only exception
class outside this module is the S3 HTTP backend's private ``_Failure``
(an error answer's code and status), which never leaves that module: it
becomes a :class:`StorageError` there.

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


class ConflictError(ObjectExistsError):
    """409 ConditionalRequestConflict: another conditional write of the key is in flight."""


class ObjectNotFoundError(StorageError):
    """A read or stat found no object at the key."""


class VanishedError(ObjectNotFoundError):
    """A file disappeared between its listing and its read: the hour must be listed again."""


class StorageUnavailableError(StorageError):
    """The endpoint, bucket or credentials do not work."""


class BadFileError(ArchiverError):
    """A file that cannot be read as an archive file; it is skipped with a warning."""


class DamagedFileError(StorageError):
    """``--strict``: a file that cannot be read as an archive file fails the command (exit 1)."""

    def __init__(self, key: str, problem: BadFileError | str) -> None:
        super().__init__(f"cannot read {key}: {problem} (--strict)")
        self.key = key


class OutputError(ArchiverError):
    """The results could not be written (disk full, I/O error): one line, exit 1."""


class SourceError(ArchiverError):
    """The NATS log stream cannot be reached or subscribed."""


class SpoolError(ArchiverError):
    """The spool directory cannot be used."""


class TableError(ArchiverError):
    """The archive's Delta Lake table (``_delta_log/``) cannot be read or committed to.

    A damaged or foreign object in the log names its key; a delta-rs failure is converted here
    with its message redacted.
    """


class TableConflictError(TableError):
    """A guarded commit lost: its inputs are no longer live, or another guarded commit of the app-day won."""


class EncodeError(ArchiverError):
    """A batch of messages could not be encoded as Parquet."""
