"""Claims: one holder per unit, taken over once expired or once its process is gone, swept when nobody holds them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import orjson

from archiver.config import ArchiveSettings
from archiver.manage import claims
from archiver.manage.claims import Owner, acquire, claim_prefix, holds, release, sweep
from archiver.manage.compact_plan import WorkUnit
from archiver.storage.interface import Storage
from archiver.storage.open import open_storage

UNIT = WorkUnit("a/b ü", 1_795_000_000 // 3600 * 3600 * 1_000_000_000)
HERE = Owner("me", "host-a", 10)
OTHER = Owner("them", "host-b", 20)


def run(tmp_path: Path, test: object) -> None:
    async def go() -> None:
        storage = open_storage(ArchiveSettings("file", "", str(tmp_path / "archive")))
        try:
            await test(storage)  # type: ignore[operator]
        finally:
            await storage.close()

    asyncio.run(go())


def test_one_holder_then_the_next(tmp_path: Path) -> None:
    async def test(storage: Storage) -> None:
        mine = await acquire(storage, UNIT, HERE)
        assert mine is not None and mine.key == f"{claim_prefix(UNIT)}00000001"
        assert claim_prefix(UNIT) == "_archiver/claims/app=a%2Fb ü/" + UNIT.stamp + "/"
        assert await acquire(storage, UNIT, OTHER) is None  # held by me
        again = await acquire(storage, UNIT, HERE)  # my own claim never keeps me off
        assert again is not None and again.key.endswith("00000002") and again.older == [mine.key]
        await release(storage, again)
        assert await storage.list(claim_prefix(UNIT)) == []
        theirs = await acquire(storage, UNIT, OTHER)
        assert theirs is not None and theirs.key.endswith("00000001")

    run(tmp_path, test)


def test_concurrent_claimants_have_one_winner(tmp_path: Path) -> None:
    async def test(storage: Storage) -> None:
        owners = [Owner(f"o{i}", f"h{i}", i) for i in range(5)]
        got = await asyncio.gather(*(acquire(storage, UNIT, o) for o in owners))
        assert sum(c is not None for c in got) == 1

    run(tmp_path, test)


def test_expired_or_dead_claims_are_taken_over(tmp_path: Path) -> None:
    async def test(storage: Storage) -> None:
        short = await acquire(storage, UNIT, OTHER, lease_s=0.01)
        assert short is not None
        await asyncio.sleep(0.02)
        taken = await acquire(storage, UNIT, HERE)  # expired
        assert taken is not None and taken.older == [short.key]

    run(tmp_path, test)
    now = time.time_ns()
    record = {"owner": "x", "host": "host-a", "pid": 10, "expires_ns": now + 10**12}
    assert not holds(record, HERE, now)  # my pid on my host, another owner: my earlier incarnation
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    assert not holds({**record, "pid": int(dead.stdout)}, HERE, now)  # its process has exited
    assert holds({**record, "pid": 1}, HERE, now)  # alive on this host
    assert holds({**record, "host": "host-b", "pid": int(dead.stdout)}, HERE, now)  # another host: the lease
    assert not holds({**record, "expires_ns": now - 1, "host": "host-b"}, HERE, now)
    assert not holds({}, HERE, now)  # damaged: holds nothing


def test_sweep_deletes_only_what_nobody_holds(tmp_path: Path) -> None:
    async def test(storage: Storage) -> None:
        other_unit = UNIT._replace(start_ns=UNIT.start_ns + 3600 * 10**9)
        held = await acquire(storage, UNIT, OTHER)
        mine = await acquire(storage, other_unit, HERE)
        stale = f"{claim_prefix(other_unit)[:-1]}0/00000001"
        await storage.put(stale, orjson.dumps({"owner": "gone", "expires_ns": 0}))
        assert held is not None and mine is not None
        assert await sweep(storage, HERE) == 1  # not the held one, not my own
        assert sorted(i.key for i in await storage.list(claims.CLAIMS_PREFIX)) == sorted([held.key, mine.key])

    run(tmp_path, test)


def test_apps_named_dot_dot_or_empty_are_claimed_inside_the_prefix(tmp_path: Path) -> None:
    """An app called ``..`` (or ``.``, or empty) is claimed like any other: its claim key is a valid key."""

    async def test(storage: Storage) -> None:
        for app in ("..", ".", ""):
            unit = WorkUnit(app, UNIT.start_ns)
            claim = await acquire(storage, unit, HERE)
            assert claim is not None and claim.key.startswith("_archiver/claims/app=")
            await release(storage, claim)
            assert await storage.list(claim_prefix(unit)) == []

    run(tmp_path, test)
