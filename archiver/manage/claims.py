"""Claims: so that no two processes compact the same unit at once (duplicate work, never a correctness need).

A claim is a small create-only object
``_archiver/claims/app=<app segment>/<unit stamp>/<n>`` (``n`` zero-padded, so
listings sort by it) holding JSON ``{owner, host, pid, expires_ns}``. To
claim a unit: list its claim prefix; if the newest claim is *held* (see
below) by someone else, skip the unit; else create claim ``n + 1`` (create-
only: of two claimants of the same number one wins, the other skips).
Released (deleted, with the older ones seen) when done. A crashed owner's
claim expires after :data:`LEASE_S`; it is also recognised at once as dead
by a claimant on the same host (the ``host`` it names is this one and its
``pid`` is not running, or is this process's own under another owner: a
restarted container whose process got the same pid). So ``archiver compact``
run again after kill -9, or the service restarted, resumes at once.

The owner is one token per process (every compactor of a process is one
owner: the claim is about processes). A compaction that takes longer than
the lease may be duplicated by another process: the result is still exact
(:mod:`archiver.manage.compact`). In issue 14 the table commit's
per-partition app transaction becomes the guard; claims stay to avoid the
duplicate work.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field

import orjson

from archiver.archive.layout import RESERVED_PREFIX
from archiver.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from archiver.manage.compact_plan import WorkUnit
from archiver.storage.interface import Storage

CLAIMS_PREFIX = f"{RESERVED_PREFIX}claims/"
#: How long a claim holds without its owner releasing it.
LEASE_S = 15 * 60
#: Claim attempts when a claim vanishes between its listing and its read (released meanwhile).
ATTEMPTS = 3
_DIGITS = 8
_log = logging.getLogger("archiver.compact")


@dataclass(frozen=True, slots=True)
class Owner:
    """Who claims: one token per process, with the host and pid that let a claimant tell a dead owner."""

    token: str
    host: str
    pid: int

    @classmethod
    def of_this_process(cls) -> Owner:
        """This process's owner (a new one after a fork)."""
        pid = os.getpid()
        if _OWNER.get(pid) is None:
            _OWNER[pid] = cls(secrets.token_hex(8), socket.gethostname(), pid)
        return _OWNER[pid]


_OWNER: dict[int, Owner] = {}


@dataclass(frozen=True, slots=True)
class Claim:
    """A claim taken: its key, and the older claims seen (deleted with it)."""

    key: str
    older: list[str] = field(default_factory=list)


def claim_prefix(unit: WorkUnit) -> str:
    """Where the claims of a unit are."""
    # ``app=`` as in the archive's own folders: a bare segment can be "." or "..", which no key may hold.
    return f"{CLAIMS_PREFIX}app={unit.segment}/{unit.stamp}/"


def _number(key: str) -> int | None:
    name = key.rpartition("/")[2]
    return int(name) if name.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def holds(record: dict[str, object], owner: Owner, now_ns: int) -> bool:
    """Whether a claim's record keeps ``owner`` off the unit: unexpired, someone else's, not a dead process here."""
    if record.get("owner") == owner.token:
        return False
    expires = record.get("expires_ns")
    if not isinstance(expires, int) or expires <= now_ns:
        return False
    pid = record.get("pid")
    if record.get("host") != owner.host or not isinstance(pid, int):
        return True
    # On this host: held only while its process runs (and is not this one: a restart that got the same pid).
    return pid != owner.pid and _alive(pid)


async def acquire(storage: Storage, unit: WorkUnit, owner: Owner, lease_s: float = LEASE_S) -> Claim | None:
    """Claim ``unit`` for ``owner``; None when someone else holds it (or won the race to claim it)."""
    return await acquire_prefix(storage, claim_prefix(unit), owner, lease_s)


async def acquire_prefix(
    storage: Storage, prefix: str, owner: Owner, lease_s: float = LEASE_S
) -> Claim | None:
    """Claim what ``prefix`` (under :data:`CLAIMS_PREFIX`, ending in ``/``) stands for; None when held by another.

    Claiming again what ``owner`` holds renews it: claim ``n + 1``, a new lease.
    """
    for _ in range(ATTEMPTS):
        listed = sorted(
            (n, info.key) for info in await storage.list(prefix) if (n := _number(info.key)) is not None
        )
        newest = listed[-1][0] if listed else 0
        if listed:
            record = await _record(storage, listed[-1][1])
            if record is None:
                continue  # released meanwhile: look again
            if holds(record, owner, time.time_ns()):
                return None
        key = f"{prefix}{newest + 1:0{_DIGITS}d}"
        body = {"owner": owner.token, "host": owner.host, "pid": owner.pid,
                "expires_ns": time.time_ns() + int(lease_s * 1e9)}  # fmt: skip
        try:
            await storage.put(key, orjson.dumps(body))
        except ObjectExistsError:
            return None  # another claimant took this number first
        return Claim(key, [k for _, k in listed])
    return None


async def _record(storage: Storage, key: str) -> dict[str, object] | None:
    """A claim's record; None when it vanished (released meanwhile); empty when damaged (it holds nothing)."""
    try:
        record = orjson.loads(await storage.get(key))
    except ObjectNotFoundError:
        return None
    except orjson.JSONDecodeError:
        return {}
    return record if isinstance(record, dict) else {}


async def sweep(storage: Storage, owner: Owner) -> int:
    """Delete the claims nobody holds any more (their owner crashed after its work); how many.

    One listing of every claim (claims exist only while work runs, or after a crash).
    """
    by_unit: dict[str, list[str]] = {}
    for info in await storage.list(CLAIMS_PREFIX):
        if _number(info.key) is not None:
            by_unit.setdefault(info.key.rpartition("/")[0], []).append(info.key)
    stale = []
    for keys in by_unit.values():
        keys.sort()
        record = await _record(storage, keys[-1])
        if (
            record is not None
            and record.get("owner") != owner.token
            and not holds(record, owner, time.time_ns())
        ):
            stale += keys
    await storage.delete(stale)
    return len(stale)


async def release(storage: Storage, claim: Claim) -> None:
    """Delete the claim and the older ones it replaced; best effort (a claim left behind expires)."""
    try:
        await storage.delete([*claim.older, claim.key])
    except StorageError as exc:
        _log.warning("could not release claim %s: %s (it expires)", claim.key, exc)
