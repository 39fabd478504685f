"""``archiver import``: backfill the archive from Fly log JSON lines (files, directories, stdin, S3).

Each source (a file, an S3 object, stdin) is read line by line, plain, gzip
or zstd (recognised by its magic bytes, not its name), and each non-blank
line is routed by its payload's ``fly.app.name``/``fly.region`` (``unknown``
when absent) into a batch per (app, region), encoded by the live path's
:func:`~archiver.codec.encode.encode_partition` into the same hive layout. A line
that is not a Fly JSON object is archived as raw text and counted.

Idempotent: batches are cut at fixed sizes within one source only, and a
batch's file of hour H is ``<YYYYMMDDTHH>-i-<digest>.parquet`` with the digest
over its app, region, index in the source and exact lines, written
create-only. Importing the same content again (even from another path)
writes the same keys, which are refused as already there. The digest is
taken over the v1 escaping of app and region, as v1 did, so a batch imported
by v1 (``hour=HH/region=R/i-<digest>.parquet``) and again now is known as the
same batch (:func:`archiver.archive.supersede.identity`) and read once. A malformed line has no timestamp of its own:
it gets the newest valid timestamp read from the same source by the time its
batch is written (else the ``<epoch>`` of a shipper object's name, else the
Unix epoch), never the clock, so it too lands in the same partition every time. A batch name that a
compaction has since merged is recognised by readers from the compacted
file's ``archiver.replaces`` and deleted by the next compaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, TextIO

from archiver.archive.escaping import decode_value, partition_value, partition_value_v1
from archiver.archive.layout import import_name, object_key
from archiver.archive.message import parse_timestamp
from archiver.codec.encode import encode_partition
from archiver.codec.payloads import Payloads
from archiver.environment import load_archive_settings
from archiver.errors import ObjectExistsError
from archiver.manage.import_sources import CountingReader, Source, decompressed, local_sources, s3_objects
from archiver.service.routing import app_region_from_payload
from archiver.storage.interface import Storage
from archiver.storage.open import open_storage
from archiver.units import format_bytes

if TYPE_CHECKING:
    from archiver.table.writer import ArchiveTable

#: Raw bytes of one (app, region) batch before it is encoded and written.
BATCH_BYTES = 32 * 1024**2
#: Raw bytes buffered over all batches of a source; beyond it the largest is written early.
MAX_BUFFER_BYTES = 128 * 1024**2
#: Archive writes in flight at once.
UPLOAD_CONCURRENCY = 16
_TIMESTAMP = re.compile(rb'"timestamp":\s*"([^"\\]{10,40})"')
_SHIPPER_EPOCH = re.compile(r"(?:^|/)(\d{9,11})-[^/]*\Z")


@dataclass(slots=True)
class ImportStats:
    """Counts for the progress bar and the summary line."""

    sources: int = 0
    total_sources: int = 0
    bytes_read: int = 0
    total_bytes: int | None = 0
    lines: int = 0
    malformed: int = 0
    blank: int = 0
    written: int = 0
    existing: int = 0
    #: Files added to the archive's Delta table (None: it is plain files).
    added: int | None = None

    def add_read(self, count: int) -> None:
        """Count ``count`` more bytes read from the sources."""
        self.bytes_read += count


class Importer:
    """Routes lines into per-(app, region) batches and writes them create-only."""

    def __init__(self, storage: Storage, stats: ImportStats, refresh: Callable[[], None]) -> None:
        self.storage = storage
        self.stats = stats
        self.refresh = refresh
        self.batches: dict[tuple[str, str], list[bytes]] = {}
        self.sizes: dict[tuple[str, str], int] = {}
        self.counts: dict[tuple[str, str], int] = {}
        #: The v1 segments of each batch's app and region: what the digest is taken over.
        self.v1_segments: dict[tuple[str, str], tuple[str, str]] = {}
        self.buffered = 0
        self.uploads = asyncio.Semaphore(UPLOAD_CONCURRENCY)
        self.pending: set[asyncio.Task[None]] = set()
        #: Newest valid timestamp read from the source (0: none yet), and the fallback before one is.
        self.latest_ns = 0
        self.fallback_ns = 0
        #: Every import file of this run, written or found already there (added to the table, if any).
        self.keys: set[str] = set()

    async def run_source(self, name: str, stream: Iterable[bytes]) -> None:
        """Import one source; every batch is cut within it, so its file names depend on it alone."""
        self.batches, self.sizes, self.counts, self.buffered = {}, {}, {}, 0
        match = _SHIPPER_EPOCH.search(name)
        self.latest_ns, self.fallback_ns = 0, int(match[1]) * 1_000_000_000 if match else 0
        for count, line in enumerate(stream, 1):
            payload = line.rstrip(b"\r\n")
            if not payload.strip():
                self.stats.blank += 1
                continue
            await self._add(payload)
            if count % 4096 == 0:
                self.refresh()
        for key in sorted(self.batches):
            await self._flush(key)

    async def _add(self, payload: bytes) -> None:
        found = _TIMESTAMP.search(payload)
        if found is not None:
            ns = parse_timestamp(found[1].decode("ascii", "replace"))
            if ns is not None and ns > self.latest_ns:
                self.latest_ns = ns
        app, region = app_region_from_payload(payload)
        key = (partition_value(app), partition_value(region))
        if key not in self.v1_segments:
            self.v1_segments[key] = (partition_value_v1(app), partition_value_v1(region))
        self.batches.setdefault(key, []).append(payload)
        self.sizes[key] = self.sizes.get(key, 0) + len(payload)
        self.buffered += len(payload)
        self.stats.lines += 1
        if self.sizes[key] >= BATCH_BYTES:
            await self._flush(key)
        elif self.buffered >= MAX_BUFFER_BYTES:
            await self._flush(max(self.sizes, key=lambda k: (self.sizes[k], k)))

    async def _flush(self, key: tuple[str, str]) -> None:
        payloads = self.batches.pop(key, [])
        self.buffered -= self.sizes.pop(key, 0)
        if not payloads:
            return
        index = self.counts.get(key, 0)
        self.counts[key] = index + 1
        app_segment, region_segment = key
        app, region = decode_value(app_segment), decode_value(region_segment)
        v1_app, v1_region = self.v1_segments[key]
        digest = hashlib.sha256(f"{v1_app}\0{v1_region}\0{index}\0".encode())
        for payload in payloads:
            digest.update(payload)
            digest.update(b"\n")
        received_ns = self.latest_ns or self.fallback_ns  # for malformed lines only
        encoded = await asyncio.to_thread(encode_partition, app, region, Payloads(payloads), received_ns)
        self.stats.malformed += encoded.malformed
        for file in encoded.files:
            where = object_key(app_segment, file.hour_ns, import_name(file.hour_ns, digest.hexdigest()[:24]))
            await self.uploads.acquire()  # writes overlap reading and encoding, a bounded number at once
            task = asyncio.ensure_future(self._put(where, file.data))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        self.refresh()

    async def _put(self, key: str, data: bytes) -> None:
        self.keys.add(key)
        try:
            await self.storage.put(key, data)
            self.stats.written += 1
        except ObjectExistsError:
            self.stats.existing += 1  # imported before: same content, same name
        finally:
            self.uploads.release()

    async def drain(self) -> None:
        """Wait for every write in flight; the first failure is raised."""
        while self.pending:
            await asyncio.gather(*list(self.pending))


class Progress:
    """A one-line progress bar on a TTY stderr (files, bytes, lines); silent when piped."""

    def __init__(self, stats: ImportStats, stream: TextIO) -> None:
        self.stats = stats
        self.stream = stream
        self.enabled = stream.isatty()
        self.last = 0.0

    def refresh(self, force: bool = False) -> None:
        """Redraw at most five times a second."""
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.2):
            return
        self.last = now
        s = self.stats
        bar = ""
        if s.total_bytes:
            done = min(1.0, s.bytes_read / s.total_bytes)
            bar = f"[{'#' * int(done * 30):<30}] {done:4.0%} "
        size = format_bytes(s.bytes_read) + (f"/{format_bytes(s.total_bytes)}" if s.total_bytes else "")
        self.stream.write(f"\r\x1b[K{bar}{s.sources}/{s.total_sources} files  {size}  {s.lines:,} lines")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the line."""
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


async def run_import(
    sources: list[str], storage: Storage, stdin: BinaryIO | None = None, table: ArchiveTable | None = None
) -> ImportStats:
    """Import every source into ``storage`` (and add the files to ``table``); the counts (summary printed by the caller)."""
    stats = ImportStats()
    progress = Progress(stats, sys.stderr)
    importer = Importer(storage, stats, progress.refresh)
    plan: list[Source | tuple[Storage, str, int]] = []
    remote: list[Storage] = []
    try:
        for text in sources:
            if text == "-":
                plan.append(Source("-", None, lambda: stdin or sys.stdin.buffer))
            elif text.startswith("s3://"):
                # Credentials and endpoint from the same AWS_* settings as the archive.
                remote.append(open_storage(load_archive_settings(text)))
                plan.extend(await s3_objects(remote[-1]))
            else:
                plan.extend(local_sources(text))
        stats.total_sources = len(plan)
        sizes = [p.size if isinstance(p, Source) else p[2] for p in plan]
        stats.total_bytes = None if None in sizes else sum(s or 0 for s in sizes)
        for item in plan:
            if isinstance(item, Source):
                raw = item.open()
                name = item.name
            else:
                source_storage, name, _ = item
                raw = io.BytesIO(await source_storage.get(name))
            counting = CountingReader(raw, stats.add_read)
            try:
                with decompressed(counting) as stream:
                    await importer.run_source(name, stream)
            finally:
                counting.close()
            stats.sources += 1
            progress.refresh(force=True)
        await importer.drain()
        if table is not None:  # the archive is a Delta table: the files are added, exactly once
            from archiver.manage.import_table import add_imports

            stats.added = await add_imports(storage, table, importer.keys)
    finally:
        for task in importer.pending:
            task.cancel()
        progress.clear()
        for source_storage in remote:
            await source_storage.close()
    return stats
