"""What ``/health`` and the stage gauges of ``/metrics`` say: each stage's condition, read at request time.

Unhealthy while NATS has been disconnected for ``NATS_DISCONNECT_GRACE`` (or
was never connected), while connected but not subscribed yet, or while
storage has been failing for ``STORAGE_FAILURE_GRACE``; a quiet stream alone
never fails it (the stall watchdog acts on that).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from archiver.config import RunConfig
from archiver.service.buffer import Buffers
from archiver.service.ingest import Ingest
from archiver.service.metrics import Stats
from archiver.service.source import NatsConnection
from archiver.service.spool import Spool
from archiver.service.uploader import Uploader

if TYPE_CHECKING:
    from archiver.service.committer import Committer


class Health:
    """Reads the stages of one pipeline for ``/health`` and the gauges."""

    def __init__(self, config: RunConfig, stats: Stats, source: NatsConnection, ingest: Ingest,
                 buffers: Buffers, spool: Spool | None, uploader: Uploader,
                 committer: Committer | None = None) -> None:  # fmt: skip
        self._config = config
        self._stats = stats
        self._source = source
        self._ingest = ingest
        self._buffers = buffers
        self._spool = spool
        self._uploader = uploader
        self._committer = committer

    def report(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, report): each condition and its age."""
        now = time.monotonic()
        source, uploader = self._source, self._uploader
        last = self._stats.last_message_monotonic
        failing = uploader.failing_since_s
        nats_for_s = now - source.state_since_s
        report: dict[str, Any] = {
            "nats": {"connected": source.connected, "subscribed": source.subscribed,
                     "for_s": round(nats_for_s, 3), "last_error": source.last_error},
            "last_message_age_s": None if last is None else round(now - last, 3),
            "storage": {"failing_for_s": None if failing is None else round(now - failing, 3),
                        "last_error": uploader.last_error if failing is not None else None},
            "buffered_bytes": self._buffers.buffered_bytes,
            "spool": None if self._spool is None else {
                "bytes": self._spool.bytes, "spilling": self._ingest.spilling,
                "oldest_unarchived_age_s": self.oldest_unarchived_age_s()},
        }  # fmt: skip
        committer = self._committer
        table_failing = None if committer is None else committer.failing_since_s
        if committer is not None:
            oldest = committer.oldest_uncommitted_ns()
            report["table"] = {
                "version": None if committer.table is None else committer.table.last_version,
                "uncommitted_files": committer.uncommitted_files,
                "oldest_uncommitted_age_s": None
                if oldest is None
                else round((time.time_ns() - oldest) / 1e9, 3),
                "failing_for_s": None if table_failing is None else round(now - table_failing, 3),
                "last_error": committer.last_error,
            }
        reasons = []
        if not source.connected and (
            source.ever_connected is False or nats_for_s >= self._config.nats_disconnect_grace_s
        ):
            reasons.append(f"NATS disconnected for {nats_for_s:.0f}s")
        elif not source.subscribed and source.connected:
            reasons.append("not subscribed yet")
        if failing is not None and now - failing >= self._config.storage_failure_grace_s:
            reasons.append(f"storage failing for {now - failing:.0f}s: {uploader.last_error}")
        if table_failing is not None and now - table_failing >= self._config.storage_failure_grace_s:
            assert committer is not None
            reasons.append(f"table commits failing for {now - table_failing:.0f}s: {committer.last_error}")
        report["status"] = "ok" if not reasons else "unhealthy"
        if reasons:
            report["reason"] = "; ".join(reasons)
        return not reasons, report

    def oldest_unarchived_age_s(self) -> float:
        """Age of the oldest message not yet archived (buffered, being uploaded, or spilled)."""
        committed = None if self._committer is None else self._committer.oldest_uncommitted_ns()
        candidates = [
            t for t in (self._buffers.oldest_open_ns(), self._uploader.oldest_pending_ns(), committed) if t
        ]
        if self._ingest.spilling and self._ingest.spill_started_ns:
            candidates.append(self._ingest.spill_started_ns)
        return 0.0 if not candidates else max(0.0, (time.time_ns() - min(candidates)) / 1e9)

    def gauges(self) -> dict[str, tuple[str, float]]:
        """The stages' gauges for ``/metrics``: name -> (help, value)."""
        failing = self._uploader.failing_since_s
        return {
            "spool_bytes": ("Bytes of spool segments on disk (the backlog).", self._spool.bytes if self._spool else 0),
            "oldest_unarchived_age_seconds": ("Age of the oldest message not yet archived.",
                                              self.oldest_unarchived_age_s()),
            "storage_failing_seconds": ("Seconds storage has been failing (0 when healthy).",
                                        0 if failing is None else time.monotonic() - failing),
            "nats_connected": ("1 while connected to NATS.", 1 if self._source.connected else 0),
            "nats_pending_bytes": ("Bytes received from NATS and queued for the archiver (not yet spooled).",
                                   self._source.pending_bytes),
        }  # fmt: skip
