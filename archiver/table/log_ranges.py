"""Which bytes of a checkpoint the log reader needs: its footer, then the column chunks it decodes.

A checkpoint holds every live file's ``stats`` (the bulk: 4.7 of 7.5 MB at 15,000 live files)
and the tombstones' ``remove`` rows (1.5 MB at 21,600), which the reader never decodes, and
delta-rs writes it uncompressed. Read by ranges: the last :data:`TAIL_BYTES` (the footer, most
often whole in it), the rest of the footer if it is longer, then the chunks of the columns
:data:`COLUMNS` names (a chunk's dictionary page first), neighbours closer than
:data:`MERGE_GAP` fetched as one. The object is rebuilt at its size with zeros where nothing
was fetched, which Parquet never reads for those columns. Pure code: :mod:`archiver.table.log`
does the I/O.
"""

from __future__ import annotations

import io
import struct

#: Bytes fetched from a checkpoint's end to find its footer.
TAIL_BYTES = 64 * 1024
#: Checkpoints smaller than this are fetched whole (one GET beats three).
RANGED_FROM_BYTES = 1024 * 1024
#: Column chunks closer than this are fetched in one range.
MERGE_GAP = 64 * 1024
#: The checkpoint's columns the reader decodes (prefixes of the leaf paths).
COLUMNS = ("add.path", "add.size", "add.partitionValues.", "protocol.", "metaData.partitionColumns.")


def footer_start(size: int, tail: bytes) -> int:
    """Offset of the footer of a Parquet object of ``size`` bytes whose last bytes are ``tail``; ValueError if not Parquet."""
    if len(tail) < 8 or tail[-4:] != b"PAR1":
        raise ValueError("no Parquet magic at the end")
    length: int = struct.unpack("<I", tail[-8:-4])[0]
    if length + 8 > size:
        raise ValueError("a footer longer than the object")
    return size - 8 - length


def chunk_ranges(size: int, tail_start: int, tail: bytes) -> list[tuple[int, int]]:
    """(start, end) of the needed column chunks, merged, given the object's last bytes from ``tail_start``.

    ValueError when the footer is not one pyarrow reads.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(io.BytesIO(rebuild(size, [(tail_start, tail)])))
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(str(exc)) from None
    spans = []
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            column = row_group.column(index)
            if not column.path_in_schema.startswith(COLUMNS):
                continue
            start = column.data_page_offset
            if column.has_dictionary_page and column.dictionary_page_offset:
                start = min(start, column.dictionary_page_offset)
            spans.append((start, start + column.total_compressed_size))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start - merged[-1][1] <= MERGE_GAP:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def rebuild(size: int, pieces: list[tuple[int, bytes]]) -> bytearray:
    """An object of ``size`` bytes holding each (offset, bytes) piece, zeros elsewhere."""
    out = bytearray(size)
    for offset, data in pieces:
        out[offset : offset + len(data)] = data
    return out
