"""Commits to the archive table through delta-rs: adds exactly once, guarded compactions, prunes.

Every method blocks (delta-rs does its I/O on its own runtime, and some calls hold the GIL while
they wait): the service calls them in a worker thread, never on the event loop. One handle is
used by one thread at a time (a lock serialises them). Every deltalake exception is converted
here into :class:`~archiver.errors.TableError` (its message redacted); a guarded commit that lost
raises :class:`~archiver.errors.TableConflictError`.

Rules (design14.md "Exactly once"), checked here because delta-rs does not enforce them:

* **adds**: each commit carries ``Transaction(app_id=<writer>, version=<highest batch
  sequence>)``; before committing, the handle is refreshed and a version at or below the
  recorded one is skipped (a batch replayed after kill -9 is never added twice). delta-rs would
  accept a lower version and move the record back, so the check is ours.
* **compaction**: one commit of ``RemoveAction(data_change=False)`` per input and
  ``AddAction(data_change=False)`` per output, carrying ``Transaction("compact/<app>/<date>",
  n + 1)`` for every app-day it touches, after checking every input is still live. Two compactors
  of one app-day can then never both commit (delta-rs skips the conflict check for
  ``data_change=False`` removes: without the guard both commit and the rows double).
* **prune** removes (``data_change=True``) carry the same guards, so a prune and a compaction of
  one app-day cannot both commit either (a compaction must not bring pruned rows back).

Post-commit hooks are off on every commit: delta-rs's log clean-up hook lists all of
``_delta_log/`` and its checkpoint hook runs at its own interval; :mod:`archiver.table.upkeep`
does both on the service's schedule.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import unquote

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    PostCommitHookProperties,
    RemoveAction,
    Transaction,
)

from archiver.errors import TableConflictError, TableError
from archiver.redact import redact
from archiver.table.files import LiveFile, TableFile
from archiver.table.location import storage_options, table_uri
from archiver.table.schema import PARTITION_COLUMNS, TABLE_SCHEMA

if TYPE_CHECKING:
    from archiver.config import ArchiveSettings

#: Hooks off: routine commits neither checkpoint nor list the log (upkeep does both on a schedule).
NO_HOOKS = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)
#: Refresh-check-commit rounds of an add commit whose app transaction met a concurrent one.
ADD_ATTEMPTS = 5


def guard_id(app: str, date: str) -> str:
    """The app transaction id that guards one app-day against a second compaction or prune."""
    return f"compact/{app}/{date}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def add_action(file: TableFile, data_change: bool) -> AddAction:
    """The delta-rs AddAction of a file (its key as the path: delta-rs percent-encodes it once)."""
    values = {"app": file.app, "date": file.date}
    return AddAction(file.key, file.size, values, file.modification_time_ms, data_change, file.stats)


def remove_action(file: LiveFile, data_change: bool, deleted_ms: int) -> RemoveAction:
    """The delta-rs RemoveAction of a live file."""
    return RemoveAction(file.key, data_change, deleted_ms, file.size, {"app": file.app, "date": file.date})


@contextmanager
def delta_errors(what: str) -> Iterator[None]:
    """Convert whatever delta-rs raises (Rust panics included) into TableError naming ``what``."""
    try:
        yield
    except TableError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # pyo3's PanicException derives from BaseException
        raise TableError(f"{what}: {type(exc).__name__}: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    """The redacted first line of a delta-rs error (its text goes on with a Rust backtrace)."""
    return redact(str(exc).strip().partition("\n")[0])


def diagnosis(settings: ArchiveSettings) -> TableError | None:
    """Our log reader's error naming a damaged or foreign log object (delta-rs's errors do not name it).

    Only on a failure path, from a worker thread (it runs its own event loop); None when it finds nothing.
    """
    import asyncio

    from archiver.storage.open import open_storage
    from archiver.table.log import read_snapshot

    async def read() -> None:
        storage = open_storage(settings)
        try:
            await read_snapshot(storage)
        finally:
            await storage.close()

    try:
        asyncio.get_running_loop()
        return None  # called on an event loop's thread (not how the service calls it): no second loop here
    except RuntimeError:
        pass
    try:
        asyncio.run(read())
    except TableError as exc:
        return exc
    except Exception:  # storage down: keep delta-rs's error
        return None
    return None


class ArchiveTable:
    """An open handle on the archive's Delta table (one per process; calls block, run them in a thread)."""

    def __init__(self, settings: ArchiveSettings, delta: DeltaTable) -> None:
        self.settings = settings
        self.url = settings.url
        self.delta = delta
        self.lock = threading.Lock()
        #: The version as of this handle's last refresh or commit (readable from any thread, unlike ``version``).
        self.last_version = delta.version()

    @classmethod
    def open(cls, settings: ArchiveSettings) -> ArchiveTable | None:
        """The table at the archive root, or None when there is none yet (see :mod:`archiver.table.bootstrap`)."""
        try:
            with delta_errors(f"cannot open the Delta table at {settings.url}"):
                try:
                    delta = DeltaTable(table_uri(settings), storage_options=storage_options(settings))
                except TableNotFoundError:
                    return None
        except TableError as exc:
            raise diagnosis(settings) or exc from None
        return cls(settings, delta)

    @property
    def version(self) -> int:
        """The version this handle has read."""
        return self.delta.version()

    def refresh(self) -> int:
        """Read the commits made since (by anyone); the new version."""
        try:
            with delta_errors(f"cannot read the Delta log of {self.url}"):
                self.delta.update_incremental()
                return self.delta.version()
        except TableError as exc:
            raise diagnosis(self.settings) or exc from None

    def live_keys(self, partitions: Iterable[tuple[str, str]] | None = None) -> set[str]:
        """Keys of the live files as of the last refresh (of the given (app, date) partitions only)."""
        import pyarrow as pa

        wanted = None if partitions is None else set(partitions)
        with delta_errors(f"cannot list the live files of {self.url}"):
            table = pa.table(self.delta.get_add_actions(flatten=True))
            paths = table.column("path").to_pylist()
            apps = table.column("partition.app").to_pylist()
            dates = [str(d) for d in table.column("partition.date").to_pylist()]
        return {
            unquote(path)
            for path, app, date in zip(paths, apps, dates, strict=True)
            if wanted is None or (app or "", date) in wanted
        }

    def _commit(self, actions: list[AddAction | RemoveAction], transactions: list[Transaction]) -> None:
        properties = CommitProperties(app_transactions=transactions)
        self.delta.create_write_transaction(
            actions,
            mode="append",
            schema=TABLE_SCHEMA,
            partition_by=list(PARTITION_COLUMNS),
            commit_properties=properties,
            post_commithook_properties=NO_HOOKS,
        )

    def commit_adds(self, files: Sequence[TableFile], app_id: str, version: int) -> bool:
        """Add ``files`` as batch ``version`` of writer ``app_id``: True if committed, False if already done."""
        return self.commit_sequence(app_id, dict.fromkeys(range(version, version + 1), files)) > 0

    def commit_sequence(self, app_id: str, batches: Mapping[int, Sequence[TableFile]]) -> int:
        """Add the files of writer ``app_id``'s batches (by sequence) not yet committed, in one commit; how many.

        The commit's app transaction version is the highest sequence; sequences at or below the one the
        table holds for ``app_id`` are left out (committed before a crash, replayed now).
        """
        try:
            return self._commit_sequence(app_id, batches)
        except TableConflictError:
            raise
        except TableError as exc:  # a damaged or foreign log object: name it
            raise diagnosis(self.settings) or exc from None

    def _commit_sequence(self, app_id: str, batches: Mapping[int, Sequence[TableFile]]) -> int:
        from deltalake.exceptions import CommitFailedError

        count = sum(len(files) for files in batches.values())
        what = (
            f"cannot commit {count} files of {app_id} (up to batch {max(batches, default=0)}) to {self.url}"
        )
        with self.lock, delta_errors(what):
            for _ in range(ADD_ATTEMPTS):
                self.delta.update_incremental()
                self.last_version = self.delta.version()
                done = self.delta.transaction_version(app_id)
                todo = {seq: files for seq, files in batches.items() if done is None or seq > done}
                if not todo:
                    return 0
                actions: list[AddAction | RemoveAction] = [
                    add_action(f, data_change=True) for files in todo.values() for f in files
                ]
                try:
                    self._commit(actions, [Transaction(app_id, max(todo), _now_ms())])
                    self.last_version = self.delta.version()
                    return len(actions)
                except CommitFailedError:
                    continue  # a concurrent commit of the same app id: refresh and check again
            raise TableError(f"{what}: it kept meeting concurrent commits of the same writer id")

    def _guarded_commit(
        self,
        removed: Sequence[LiveFile],
        added: Sequence[TableFile],
        actions: list[AddAction | RemoveAction],
        what: str,
    ) -> None:
        """Check the inputs are live, then commit with every touched app-day's guard moved one on."""
        # Parts' app-days too: a compaction of v1 inputs only (never registered) removes nothing.
        partitions = sorted({(f.app, f.date) for f in removed} | {(f.app, f.date) for f in added})
        self.delta.update_incremental()
        live = self.live_keys(partitions)
        gone = [f.key for f in removed if f.key not in live]
        if gone:
            raise TableConflictError(f"{what}: {len(gone)} of its inputs are no longer live, e.g. {gone[0]}")
        guards = {
            guard_id(app, date): self.delta.transaction_version(guard_id(app, date)) or 0
            for app, date in partitions
        }
        try:
            self._commit(actions, [Transaction(g, v + 1, _now_ms()) for g, v in guards.items()])
        except Exception as exc:
            self._settle(removed, added, guards, what, exc)

    def _settle(
        self,
        removed: Sequence[LiveFile],
        added: Sequence[TableFile],
        guards: dict[str, int],
        what: str,
        exc: Exception,
    ) -> None:
        """After a failed guarded commit: return if it landed after all, else raise the right error."""
        self.delta.update_incremental()
        moved = {g: self.delta.transaction_version(g) or 0 for g in guards}
        live = self.live_keys({(f.app, f.date) for f in removed} | {(f.app, f.date) for f in added})
        if not any(f.key in live for f in removed) and all(f.key in live for f in added):
            # It landed although its answer was lost (or a prune of the same files did: the same outcome).
            return
        if moved != guards or any(f.key not in live for f in removed):
            raise TableConflictError(f"{what}: another compaction or prune of the app-day won") from None
        raise TableError(f"{what}: {type(exc).__name__}: {first_line(exc)}") from None

    def commit_compaction(
        self, removed: Sequence[LiveFile], added: Sequence[TableFile], new: bool = False
    ) -> None:
        """Replace ``removed`` by ``added`` in one guarded commit; TableConflictError if another won (imports: ``new``)."""
        now = _now_ms()
        actions: list[AddAction | RemoveAction] = [remove_action(f, False, now) for f in removed]
        actions += [add_action(f, data_change=new) for f in added]
        what = f"cannot commit the compaction of {len(removed)} files into {len(added)} to {self.url}"
        with self.lock, delta_errors(what):
            self._guarded_commit(removed, added, actions, what)

    def commit_removes(self, removed: Sequence[LiveFile]) -> None:
        """Remove ``removed`` (prune: vacuum deletes the files after the retention) in one guarded commit."""
        now = _now_ms()
        actions: list[AddAction | RemoveAction] = [remove_action(f, True, now) for f in removed]
        what = f"cannot commit the removal of {len(removed)} files from {self.url}"
        with self.lock, delta_errors(what):
            self._guarded_commit(removed, (), actions, what)
