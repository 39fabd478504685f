"""``archiver run`` (the real Service) whose storage stops for good at one step of a compaction: for kill -9 tests.

Usage: python tests/paused_service.py POINT MARKER, configured by the environment as ``archiver run``.
POINT: ``some-outputs`` (the second part of a group is never uploaded), ``all-outputs`` (every part
uploaded, no input deleted) or ``mid-delete`` (half the inputs deleted). Once there, the MARKER file
is written and the process waits for its SIGKILL.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from archiver.archive.layout import RESERVED_PREFIX
from archiver.environment import load_run_config
from archiver.logs import setup_logging
from archiver.service.pipeline import Service
from archiver.storage.interface import ObjectInfo, Storage
from archiver.storage.open import open_storage


class PausingStorage(Storage):
    """A real storage that stops at the chosen point of the first compaction to reach it."""

    def __init__(self, inner: Storage, point: str, marker: Path) -> None:
        self.inner, self.point, self.marker, self.url = inner, point, marker, inner.url
        self.parts = 0

    async def _pause(self) -> None:
        self.marker.write_text(self.point)
        await asyncio.Event().wait()  # until SIGKILL

    async def put(self, key: str, data: bytes) -> None:
        await self.inner.put(key, data)

    async def put_file(self, key: str, path: str) -> None:
        self.parts += 1
        if self.point == "some-outputs" and self.parts == 2:
            await self._pause()
        await self.inner.put_file(key, path)

    async def get(self, key: str) -> bytes:
        return await self.inner.get(key)

    async def get_file(self, key: str, path: str) -> None:
        await self.inner.get_file(key, path)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        return await self.inner.list(prefix)

    async def list_dirs(self, prefix: str) -> list[str]:
        return await self.inner.list_dirs(prefix)

    async def delete(self, keys: Sequence[str]) -> None:
        inputs = [k for k in keys if not k.startswith(RESERVED_PREFIX)]
        if inputs and self.point == "all-outputs":
            await self._pause()
        if len(inputs) > 1 and self.point == "mid-delete":
            await self.inner.delete(inputs[: len(inputs) // 2])
            await self._pause()
        await self.inner.delete(keys)

    async def check(self) -> None:
        await self.inner.check()

    async def close(self) -> None:
        await self.inner.close()


async def main(point: str, marker: Path) -> None:
    config = load_run_config()
    setup_logging(config.log_level)
    service = Service(config, PausingStorage(open_storage(config.archive), point, marker))
    await service.run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
