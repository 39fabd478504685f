"""Allocator tuning of the service: freed memory goes back to the OS, and the resident size is read.

Set once at start-up by :class:`archiver.service.pipeline.Service`, before it
opens the Delta table; the memory cap (:mod:`archiver.service.buffer`) counts
bytes, this keeps the resident size close to what it counts, and
:func:`resident_bytes` tells the cap what it did not count. Three allocators
share the process (BENCHMARKS.md, "Where the service's memory goes"): glibc's
malloc (Python's buffers, zstd), Arrow's pool (jemalloc), and delta-rs's own
jemalloc (deltalake's wheel links one).
"""

from __future__ import annotations

import contextlib
import ctypes
import os

import pyarrow as pa

#: glibc's M_MMAP_THRESHOLD parameter of mallopt(3), and the size from which blocks are mmap()ed.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 * 1024
#: delta-rs's jemalloc, read from the environment when deltalake loads: freed pages go back at once.
#: Its default (10 s decay) kept ~20 MB of each log read resident (the compactor and upkeep read all
#: 28,650 live files of a simulated year); the CPU of a commit is not measurably different.
DELTA_MALLOC_CONF = "dirty_decay_ms:0,muzzy_decay_ms:0"
_DELTA_MALLOC_CONF_VARIABLE = "_RJEM_MALLOC_CONF"
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def use_lean_memory() -> str:
    """Arrow on jemalloc (else the system allocator), freed pages returned at once, glibc's mmap threshold fixed.

    Returns Arrow's pool name. Call it before deltalake is imported (it configures delta-rs's allocator).
    The fixed threshold makes a partition's buffer (one growing ``bytearray``) mmap()ed, so it
    goes back to the OS whole when freed.
    """
    # pyarrow's default, mimalloc, kept ~2x the live Arrow bytes resident while parsing and did not
    # give them back; jemalloc returns freed pages within a second (bench/memory.py, BENCHMARKS.md).
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        # At once rather than after a second: an encode's ~2x its batch was still resident when the
        # next encode or the compactor's merge (another jemalloc arena) ran; no CPU difference measured.
        pa.jemalloc_set_decay_ms(0)
    except NotImplementedError:  # a pyarrow built without jemalloc
        pa.set_memory_pool(pa.system_memory_pool())
    # Kept if the operator set it: this names an allocator's own tuning, not a setting of archiver.
    os.environ.setdefault(_DELTA_MALLOC_CONF_VARIABLE, DELTA_MALLOC_CONF)
    # glibc raises its threshold (up to 32 MiB) each time an mmap()ed block is freed, after which
    # buffers of a few MiB come from the heap and their freed space stays resident: under a long
    # spill RSS crept to ~2x the bytes held. A fixed threshold kept it within ~60 MiB of them.
    with contextlib.suppress(AttributeError, OSError):  # not glibc (musl, macOS): nothing to tune
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    return str(pa.default_memory_pool().backend_name)


def trim_heap() -> None:
    """Give glibc's free heap pages back to the OS (after an encode: its small blocks' holes, 20-40 MiB)."""
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None).malloc_trim(0)


def resident_bytes() -> int:
    """This process's resident set size now (0 where /proc is missing: no correction then)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0
