"""Where ``archiver import`` reads its lines: files, directories, stdin and S3 objects, plain, gzip or zstd.

Compression is recognised by magic bytes, not names; the compressed bytes
read are counted for the progress bar.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import zstandard

from archiver.errors import UsageError

if TYPE_CHECKING:
    from archiver.storage.interface import Storage

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True, slots=True)
class Source:
    """One input: a display name, its size when known, and how to open it."""

    name: str
    size: int | None
    open: Callable[[], BinaryIO]


def decompressed(raw: io.RawIOBase) -> io.BufferedIOBase:
    """``raw`` decompressed when it starts with gzip or zstd magic bytes, else as is."""
    buffered = io.BufferedReader(raw)
    head = buffered.peek(4)[:4]
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=buffered)  # reads concatenated members, as gzip -d does
    if head.startswith(_ZSTD_MAGIC):
        reader = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
        return io.BufferedReader(reader)
    return buffered


def local_sources(path: str) -> Iterator[Source]:
    """A file, or every file under a directory (recursive, sorted)."""
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                yield from local_sources(os.path.join(root, name))
        return
    if not os.path.isfile(path):
        raise UsageError(f"import: no such file or directory: {path}")
    yield Source(path, os.path.getsize(path), lambda: open(path, "rb"))  # noqa: SIM115 - closed by the reader


async def s3_objects(storage: Storage) -> list[tuple[Storage, str, int]]:
    """Every object under ``s3://bucket/prefix`` of ``storage``, with its size."""
    await storage.check()
    return [(storage, info.key, info.size) for info in await storage.list("")]


class CountingReader(io.RawIOBase):
    """A source read through, each read's (compressed) byte count handed to ``count`` for the progress bar."""

    def __init__(self, raw: BinaryIO, count: Callable[[int], None]) -> None:
        self.raw = raw
        self.count = count

    def readable(self) -> bool:
        """Always: a reader."""
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        """Read into ``buffer``, counting the bytes; 0 at the end."""
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.count(len(data))
        return len(data)

    def close(self) -> None:
        """Close the source (never stdin)."""
        if self.raw is not sys.stdin.buffer:
            self.raw.close()
        super().close()
