"""Where a process's resident memory goes, sampled from inside it (bench only; Linux, glibc).

``bench/ingest.py --mem-trace DIR`` starts this in the archiver's process (through a
``sitecustomize`` on PYTHONPATH) to write one JSON line per second to ``DIR/<pid>.jsonl``:

* the kernel's view: RSS, its anonymous and file-backed parts (``/proc/self/status``);
* Arrow's pool: bytes allocated now and its peak (``pyarrow.total_allocated_bytes``);
* glibc malloc over all its arenas (``mallinfo2``): heap bytes obtained from the OS (``arena``),
  in use (``uordblks``), free but kept (``fordblks``), and mmap()ed blocks (``hblkhd``);
* Python objects: blocks allocated by pymalloc (``sys.getallocatedblocks``);
* the memory cap's accounting of the service (:class:`archiver.service.buffer.Buffers`: open, in
  flight, held by other stages), found once through the garbage collector;
* threads.

Whenever RSS reaches a new high (by 8 MiB), a summary of ``/proc/self/smaps`` is written too:
resident bytes by kind of mapping (the heap, anonymous mappings by size, each shared library).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]  # fmt: skip


def _mallinfo() -> dict[str, int]:
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
    except (AttributeError, OSError):
        return {}
    return {"glibc_heap": info.arena, "glibc_used": info.uordblks, "glibc_free": info.fordblks,
            "glibc_mmap": info.hblkhd}  # fmt: skip


def _status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM", "Threads"):
            parts = value.split()
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return out


def _rollup() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("LazyFree", "AnonHugePages", "Shared_Clean"):
            out[key] = int(value.split()[0]) * 1024
    return out


def smaps_summary() -> dict[str, int]:
    """Resident bytes by kind of mapping: [heap], anonymous by size class, each file (largest first)."""
    sizes: dict[str, int] = {}
    name, size_kb = "", 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split(None, 1)[0]
        if "-" in first and not first.endswith(":"):  # a mapping's header line
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            path = fields[5] if len(fields) > 5 else ""
            size_kb = (hi - lo) // 1024
            if path:
                name = os.path.basename(path)
            else:
                name = "anon>=64MiB" if size_kb >= 65536 else "anon>=1MiB" if size_kb >= 1024 else "anon<1MiB"
        elif first == "Rss:":
            sizes[name] = sizes.get(name, 0) + int(line.split()[1]) * 1024
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:14])


def _buffers() -> Any:
    from archiver.service.buffer import Buffers

    for obj in gc.get_objects():
        if isinstance(obj, Buffers):
            return obj
    return None


def _run(path: Path) -> None:
    buffers = None
    peak = 0
    started = time.monotonic()
    with path.open("a") as out:
        while True:
            time.sleep(1.0)
            try:
                row = _sample(started)
            except Exception as exc:  # a sample lost is no reason to stop tracing
                row = {"t": round(time.monotonic() - started, 1), "error": repr(exc)}
            if buffers is None and "archiver.service.buffer" in sys.modules:
                buffers = _buffers()
            if buffers is not None:
                row["cap_open"] = buffers.open_bytes
                row["cap_inflight"] = buffers.inflight_bytes
                row["cap_held"] = buffers.held_bytes
                row["cap_excess"] = getattr(buffers, "excess_bytes", 0)
            if row.get("VmRSS", 0) > peak + 8 * 2**20:
                peak = row["VmRSS"]
                try:
                    row["smaps"] = smaps_summary()
                except (OSError, ValueError, IndexError) as exc:
                    row["smaps"] = {"error": repr(exc)}
            out.write(json.dumps(row) + "\n")
            out.flush()


def _sample(started: float) -> dict[str, Any]:
    """One line of the trace but the cap's counts and the smaps summary."""
    row: dict[str, Any] = {"t": round(time.monotonic() - started, 1)}
    row.update(_status())
    row.update(_mallinfo())
    row.update(_rollup())
    row["py_blocks"] = sys.getallocatedblocks()
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        pool = pa.default_memory_pool()
        row["arrow_pool"] = pool.backend_name
        row["arrow_bytes"] = pa.total_allocated_bytes()
        row["arrow_max"] = pool.max_memory()
    row["delta_loaded"] = "deltalake" in sys.modules
    return row


def start(directory: str) -> None:
    """Sample this process every second into ``directory/<pid>.jsonl`` (a daemon thread)."""
    path = Path(directory) / f"{os.getpid()}.jsonl"
    threading.Thread(target=_run, args=(path,), name="memtrace", daemon=True).start()
