"""Archive keys as every backend accepts them: relative, ``/``-separated, no way out of the prefix.

One check for all backends, so a key valid on one is valid on every other
(the local backend's temporary names included: no key may use them).
"""

from __future__ import annotations

from archiver.errors import StorageError

#: Names starting with this are in-flight writes; listings skip them and keys may not use it.
TMP_PREFIX = ".tmp-"


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key (no empty, '.', '..' or temp segments); else StorageError."""
    if (
        not key
        or key.startswith("/")
        or "\x00" in key
        or any(seg in ("", ".", "..") or seg.startswith(TMP_PREFIX) for seg in key.split("/"))
    ):
        raise StorageError(
            f"invalid storage key {key!r}: must be relative with no empty, '.' or '..' segments"
        )
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a safe listing prefix (its directory part is a valid key); else StorageError."""
    directory = prefix.rpartition("/")[0]
    if prefix.startswith("/") or "\x00" in prefix or (directory and not _is_valid(directory)):
        raise StorageError(
            f"invalid storage prefix {prefix!r}: must be relative with no '.' or '..' segments"
        )
    return prefix


def _is_valid(key: str) -> bool:
    try:
        validate_key(key)
    except StorageError:
        return False
    return True
