"""The write-ahead spool: every received message on local disk before it counts.

Files in ``SPOOL_DIR``::

    <first-seq:020d>.seg   append-only segments of records, named by the
                           sequence number of their first record
    journal                append-only commit records (intent / done)

A record (:mod:`archiver.service.spool_record`, the format's one owner) is
``<u32 body length><u32 crc32(body)><u16 subject length><subject><payload>``;
sequence numbers are implicit (segment's first sequence + index), so a record
costs 10 bytes of framing. Appends go to an
in-memory buffer that is written to the segment in one ``write`` a few
milliseconds later (group commit, :data:`archiver.service.ingest.COMMIT_DELAY_S`,
sooner past :data:`WRITE_THRESHOLD_BYTES`): a message counts as received once that write has
returned, so a process kill (kill -9, OOM) loses nothing received. The
segment is fsynced every ``SPOOL_FSYNC_INTERVAL`` (or after every write
when it is 0), which bounds what an OS crash can lose. A torn or corrupt
tail (crc mismatch, short record) ends a segment's replay.

Exactly once, at every crash point (see :mod:`archiver.service.pipeline`):

1. a flushed batch is the records of one partition with sequence numbers in
   ``[first_seq, end_seq)``; it is encoded, then an *intent* naming the
   batch and the object key of each of its hour files is appended to the
   journal and fsynced, *before* any upload;
2. each file is uploaded create-only (``If-None-Match: *`` / link), so a
   second upload of the same key is refused, never duplicated;
3. a *done* record follows; segments wholly below the low-water mark (the
   oldest sequence some batch or buffer still needs) are deleted.

After a crash (:mod:`archiver.service.recovery`), intents without *done* are
re-encoded from the spool and uploaded under the same keys (a refusal means
it was already there); every other record not covered by a *done* batch is
buffered again. Crashing
before the intent loses nothing (nothing was uploaded); during or after
the upload, the keys are fixed, so no row is ever written twice.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import zlib
from pathlib import Path

from archiver.errors import SpoolError
from archiver.service.journal import Intent, Journal, JournalFile, fsync_dir
from archiver.service.spool_record import FRAME, read_records

#: Bound once: an imported name's method is looked up as an attribute at each call (CPython 3.11 compiles
#: ``FRAME.pack(...)`` without its method-call shortcut), and the hot path packs a frame per message.
_pack_frame = FRAME.pack
SEGMENT_SUFFIX = ".seg"
DEFAULT_SEGMENT_BYTES = 32 * 1024 * 1024
#: Group-commit threshold: past this the hot path writes at once instead of waiting for the commit delay.
WRITE_THRESHOLD_BYTES = 256 * 1024


class Spool:
    """Segments plus journal in one directory; not thread-safe (owned by the event loop)."""

    def __init__(self, directory: str, max_bytes: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.next_seq = 0
        #: Sequence number of the first record not yet written to the OS.
        self.written_seq = 0
        self._pending = bytearray()
        self._segment_fd = -1
        self._segment_first_seq = 0
        self._segment_size = 0
        self._segments: dict[int, int] = {}  # first seq -> size in bytes
        self._disk_bytes = 0
        self._cursor: tuple[int, int, int] | None = None  # (seq, segment first seq, byte offset)
        self.journal = JournalFile(self.directory)
        self._lock_fd = -1
        self.dirty = False

    # -- opening and replay -----------------------------------------------------------

    def open(self) -> Journal:
        """Create the directory, read the journal, find the next sequence; start a new segment."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SpoolError(
                    f"SPOOL_DIR: {self.directory} is in use by another archiver (give each its own)"
                ) from None
            journal = self.journal.open()
            for path in sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}")):
                first = int(path.stem)
                count = sum(1 for _ in read_records(path, first, 0))
                self._segments[first] = path.stat().st_size
                self._disk_bytes += self._segments[first]
                self.next_seq = max(self.next_seq, first + count)
            self.written_seq = self.next_seq
            self._roll()
        except (OSError, ValueError) as exc:
            raise SpoolError(f"SPOOL_DIR: cannot use {self.directory}: {exc}") from None
        return journal

    def read(self, from_seq: int, to_seq: int, max_records: int) -> list[tuple[int, bytes, bytes]]:
        """Up to ``max_records`` written records with from_seq <= seq < to_seq, in order (thread-safe read).

        Sequential calls resume where the last one stopped instead of rescanning the segment.
        """
        out: list[tuple[int, bytes, bytes]] = []
        to_seq = min(to_seq, self.written_seq)
        firsts = sorted(self._segments)
        for i, first in enumerate(firsts):
            end = firsts[i + 1] if i + 1 < len(firsts) else to_seq
            if end <= from_seq or first >= to_seq:
                continue
            start_seq, offset = first, 0
            cursor = self._cursor
            if cursor is not None and cursor[1] == first and cursor[0] <= from_seq:
                start_seq, offset = cursor[0], cursor[2]
            path = self.directory / _segment_name(first)
            for seq, subject, payload, next_offset in read_records(path, start_seq, offset):
                if seq >= to_seq:
                    return out
                if seq >= from_seq:
                    out.append((seq, subject, payload))
                    self._cursor = (seq + 1, first, next_offset)
                    if len(out) >= max_records:
                        return out
        return out

    @property
    def first_seq(self) -> int:
        """Oldest sequence still on disk."""
        return min(self._segments, default=self.next_seq)

    # -- the hot path ---------------------------------------------------------------

    def append(self, prefix: bytes, prefix_crc: int, payload: bytes) -> int:
        """Queue one record (``prefix`` from :mod:`~archiver.service.spool_record`) for the next group commit.

        Returns the bytes now pending (the caller commits early past WRITE_THRESHOLD_BYTES),
        or 0 when the spool is full: the caller drops and counts the message.
        """
        body_len = len(prefix) + len(payload)
        pending = self._pending
        if self._disk_bytes + len(pending) + body_len + 8 > self.max_bytes:
            return 0
        pending += _pack_frame(body_len, zlib.crc32(payload, prefix_crc))
        pending += prefix
        pending += payload
        self.next_seq += 1
        return len(pending)

    @property
    def pending_bytes(self) -> int:
        """Bytes appended but not yet written."""
        return len(self._pending)

    @property
    def pending_records(self) -> int:
        """Records appended but not yet written."""
        return self.next_seq - self.written_seq

    def write_pending(self) -> int:
        """Write what is pending in one syscall (group commit); the number of records it made durable."""
        if not self._pending:
            return 0
        data = bytes(self._pending)
        self._pending.clear()
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._segment_fd, view)
                view = view[written:]
        except OSError as exc:
            raise SpoolError(f"spool write failed in {self.directory}: {exc.strerror}") from None
        count = self.next_seq - self.written_seq
        self.written_seq = self.next_seq
        self._segment_size += len(data)
        self._disk_bytes += len(data)
        self._segments[self._segment_first_seq] = self._segment_size
        self.dirty = True
        if self._segment_size >= self.segment_bytes:
            self._roll()
        return count

    def fsync(self) -> None:
        """Make written records survive an OS crash (call from a thread)."""
        fd = self._segment_fd
        if fd >= 0 and self.dirty:
            self.dirty = False
            try:
                os.fsync(fd)
            except OSError:
                self.dirty = True  # rolled and closed meanwhile: the roll fsynced it

    @property
    def bytes(self) -> int:
        """Bytes of segments on disk."""
        return self._disk_bytes

    # -- journal and trimming ----------------------------------------------------------

    def write_intent(self, intent: Intent) -> None:
        """Append an intent and fsync it (call from the journal thread)."""
        self.journal.write_intent(intent)

    def write_done(self, intent: Intent) -> None:
        """Append a done record for the batch (call from the journal thread)."""
        self.journal.write_done(intent)

    def trim(self, low_water_seq: int) -> int:
        """Delete closed segments wholly below ``low_water_seq``; bytes freed."""
        firsts = sorted(self._segments)
        freed = 0
        for first, following in itertools.pairwise(firsts):
            if following <= low_water_seq and first != self._segment_first_seq:
                size = self._segments.pop(first)
                freed += size
                self._disk_bytes -= size
                (self.directory / _segment_name(first)).unlink(missing_ok=True)
        if freed:
            self.journal.compact(min(self._segments, default=self.next_seq))
        return freed

    def close(self) -> None:
        """Write what is pending, fsync and close the files."""
        self.write_pending()
        if self._segment_fd >= 0:
            os.fsync(self._segment_fd)
            os.close(self._segment_fd)
        self.journal.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
        self._segment_fd = self._lock_fd = -1

    # -- internals ----------------------------------------------------------------

    def _roll(self) -> None:
        if self._segment_fd >= 0:
            os.fsync(self._segment_fd)
            os.close(self._segment_fd)
        self._segment_first_seq = self.next_seq
        path = self.directory / _segment_name(self.next_seq)
        if path.exists():  # an empty segment left by a crash right after rolling
            path.unlink()
        self._segment_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._segment_size = 0
        self._segments[self._segment_first_seq] = 0
        fsync_dir(self.directory)


def _segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"
