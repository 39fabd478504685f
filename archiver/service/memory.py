"""Allocator tuning of the service: how freed memory goes back to the OS under a long spill.

Set once at start-up by :class:`archiver.service.pipeline.Service`; the memory
cap (:mod:`archiver.service.buffer`) counts bytes, and this keeps the resident
size close to what it counts.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

import pyarrow as pa

#: glibc's M_MMAP_THRESHOLD parameter of mallopt(3), and the size from which blocks are mmap()ed.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 * 1024


def use_lean_memory() -> str:
    """Arrow on jemalloc (else the system allocator), glibc's mmap threshold fixed; Arrow's pool name.

    The fixed threshold makes a partition's buffer (one growing ``bytearray``) mmap()ed, so it
    goes back to the OS whole when freed.
    """
    # pyarrow's default, mimalloc, kept ~2x the live Arrow bytes resident while parsing and did not
    # give them back; jemalloc returns freed pages within a second (bench/memory.py, BENCHMARKS.md).
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc
        pa.set_memory_pool(pa.system_memory_pool())
    # glibc raises its threshold (up to 32 MiB) each time an mmap()ed block is freed, after which
    # buffers of a few MiB come from the heap and their freed space stays resident: under a long
    # spill RSS crept to ~2x the bytes held. A fixed threshold kept it within ~60 MiB of them.
    with contextlib.suppress(AttributeError, OSError):  # not glibc (musl, macOS): nothing to tune
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    return str(pa.default_memory_pool().backend_name)


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident set size now (0 where /proc is missing: no correction then)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0
