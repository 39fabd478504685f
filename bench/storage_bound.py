"""How far any codec setting can take the archive: the message text alone under the strongest compressors.

The storage target is "gzip-6 JSON lines / archive bytes >= 2.0 for every
system". The ``message`` column is the one that does not shrink to a few
bytes per row (every other column together costs ~4.5 B/row compacted), so
its size bounds the ratio from above. For each system's compacted app-hours
(built by :func:`storage_levers.app_hours`, the traffic of
:mod:`storage_text`), the messages of each app-hour are joined by newlines in
the archive's row order (time) and compressed as one stream with zstd 19,
zstd 22 with a 128 MiB window and long-distance matching, and xz -9e (LZMA,
a 64 MiB dictionary). ``gzip / xz`` is then the best ratio the archive could
reach even if every other column cost nothing, with rows in time order and
the message kept as text: where it is below 2.0, no writer option (level,
window, page size, dictionary) can reach the target.

Usage: .venv/bin/python bench/storage_bound.py [--messages 100000] [--rate 1000] [--systems HDFS,...]
"""

from __future__ import annotations

import argparse
import lzma

import zstandard
from common import LOGHUB
from storage import MIX
from storage_levers import app_hours

from archiver.archive import schema
from archiver.demo.corpus import sample_systems

_LONG = zstandard.ZstdCompressionParameters.from_level(22, window_log=27, enable_ldm=True)


def message_bytes(text: bytes) -> tuple[int, int, int]:
    """(zstd-19, zstd-22 long window, xz -9e) compressed sizes of ``text``."""
    return (
        len(zstandard.ZstdCompressor(level=19).compress(text)),
        len(zstandard.ZstdCompressor(compression_params=_LONG).compress(text)),
        len(lzma.compress(text, preset=9 | lzma.PRESET_EXTREME)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--systems", default=None, help="comma-separated (default: every system and mix)")
    args = parser.parse_args()
    corpus = sample_systems(LOGHUB if LOGHUB.is_dir() else None)
    labels = (args.systems or ",".join([*sorted(corpus), MIX])).split(",")
    print(
        "| system | gzip-6 JSON lines B/msg | message zstd-19 | zstd-22 long | xz -9e | bound: gzip / xz(message) |"
    )
    print("|---|---|---|---|---|---|")
    for label in labels:
        tables, gz = app_hours(corpus if label == MIX else {label: corpus[label]}, args.rate, args.messages)
        sizes = [0, 0, 0]
        for table in tables:
            text = "\n".join(table.column(schema.MESSAGE).to_pylist()).encode()
            sizes = [a + b for a, b in zip(sizes, message_bytes(text), strict=True)]
        per = [s / args.messages for s in sizes]
        print(
            f"| {label} | {gz / args.messages:.1f} | {per[0]:.1f} | {per[1]:.1f} | {per[2]:.1f} | "
            f"{gz / sizes[2]:.2f}× |",
            flush=True,
        )


if __name__ == "__main__":
    main()
