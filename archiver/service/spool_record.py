"""The spool's record format, its one owner: framing, the subject field and the JetStream tag.

A record is ``<u32 body length><u32 crc32(body)><u16 subject length>
<subject><payload>``: 10 bytes of framing, the sequence number implicit (see
:mod:`archiver.service.spool`). The *subject field* of a record received from
JetStream carries a tag after the subject, ``\\x00<stream seq>\\x00<ack subject>``,
so the spool itself knows which stream sequences it holds and how to ack them
(:mod:`archiver.service.jetstream`); a core-NATS record has none. A NATS subject
never holds a NUL, so the first NUL ends the subject.

Writers build the prefix (subject length and field) once per subject and keep its
crc32, so the hot path only extends the crc over the payload
(:meth:`archiver.service.spool.Spool.append`); readers split the field with
:func:`record_subject` and :func:`jetstream_tag`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

#: ``<u32 body length><u32 crc32(body)>`` before every record's body.
FRAME = struct.Struct("<II")
_SUBJECT_LEN = struct.Struct("<H")
_TAG_SEPARATOR = b"\x00"
READ_CHUNK_BYTES = 4 * 1024 * 1024


def subject_prefix(subject: bytes) -> tuple[bytes, int]:
    """The record prefix of a subject field and its crc32 (cached per subject by the caller)."""
    prefix = _SUBJECT_LEN.pack(len(subject)) + subject
    return prefix, zlib.crc32(prefix)


def tagged_prefix(subject: bytes, stream_seq: int, reply: str) -> tuple[bytes, int]:
    """The record prefix of a JetStream message: its subject, then its stream sequence and ack subject."""
    return subject_prefix(b"%s\x00%d\x00%s" % (subject, stream_seq, reply.encode()))


def record_subject(field: bytes) -> bytes:
    """The NATS subject of a record's subject field (without a JetStream tag)."""
    return field.partition(_TAG_SEPARATOR)[0]


def jetstream_tag(field: bytes) -> tuple[int, str] | None:
    """(stream sequence, ack subject) of a JetStream record's subject field; None for a core-NATS one."""
    _, sep, tag = field.partition(_TAG_SEPARATOR)
    if not sep:
        return None
    stream_seq, _, reply = tag.partition(_TAG_SEPARATOR)
    return int(stream_seq), reply.decode()


def read_records(path: Path, seq: int, offset: int) -> Iterator[tuple[int, bytes, bytes, int]]:
    """(seq, subject field, payload, offset after it) of valid records from ``offset``; stops at a torn tail."""
    with path.open("rb") as handle:
        handle.seek(offset)
        carry = b""
        while True:
            chunk = handle.read(READ_CHUNK_BYTES)
            data = carry + chunk
            pos = 0
            while pos + 8 <= len(data):
                body_len, crc = FRAME.unpack_from(data, pos)
                end = pos + 8 + body_len
                if end > len(data):
                    break
                body = data[pos + 8 : end]
                if body_len < 2 or zlib.crc32(body) != crc:
                    return
                subject_len = _SUBJECT_LEN.unpack_from(body)[0]
                offset += end - pos
                yield seq, body[2 : 2 + subject_len], body[2 + subject_len :], offset
                seq += 1
                pos = end
            carry = data[pos:]
            if not chunk:
                return
