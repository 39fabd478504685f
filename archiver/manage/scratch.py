"""A compactor's scratch directory: the service's SPOOL_DIR/compact, else one in the temporary directory.

A killed compaction's leftovers are of no use: the directory is emptied at
start. A temporary one is named by the process's id, so a later start can tell
the directories of processes that are gone (a kill -9 of the service or of
``archiver compact`` leaves one, a partial merge inside) and delete them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

#: A temporary scratch directory's name: the prefix, the owning process's id, a dash.
TEMP_SCRATCH_PREFIX = "archiver-compact-"


def fresh_scratch(directory: str | None) -> str:
    """The scratch directory, emptied (what a killed compaction left is of no use)."""
    if directory is None:
        _sweep_temp_scratch(tempfile.gettempdir())
        return tempfile.mkdtemp(prefix=f"{TEMP_SCRATCH_PREFIX}{os.getpid()}-")
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(directory)
    os.makedirs(directory)
    return directory


def _sweep_temp_scratch(parent: str) -> None:
    """Delete the temporary scratch directories of processes that are gone (killed before their stop:
    with SPOOL_DIR off, each restart after a kill -9 would otherwise leave one, a partial merge inside)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            owner = entry.name.removeprefix(TEMP_SCRATCH_PREFIX).partition("-")[0]
            if entry.name.startswith(TEMP_SCRATCH_PREFIX) and owner.isdigit() and not _alive(int(owner)):
                shutil.rmtree(entry.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process: alive
    return True
