"""The compactor stage's counters and their Prometheus families (read at scrape time, like the rest)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(slots=True)
class CompactionStats:
    """What the service's compactor did since start, and the backlog its last scan found."""

    compactions: int = 0
    #: App-days rolled up into day files (their bytes, files and rows are in the counters below too).
    rollups: int = 0
    #: Outputs of compactions or roll-ups that never became live in the table, deleted.
    orphans: int = 0
    failures: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    files_in: int = 0
    files_out: int = 0
    rows: int = 0
    #: Closed app-hours not yet compacted: found by the last scan, less those done since.
    backlog: int = 0


def compaction_seconds() -> Histogram:
    """The duration histogram of one app-hour's compaction (registered by the metrics registry)."""
    return Histogram(
        "archiver_compaction_seconds",
        "Time to compact one app-hour (claim, fetch, merge, upload, delete).",
        buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
        registry=None,
    )


class CompactionCollector(Collector):
    """Prometheus families of a :class:`CompactionStats`, read at scrape time."""

    def __init__(self, stats: CompactionStats, cpu_seconds: Callable[[], float]) -> None:
        self._stats = stats
        self._cpu_seconds = cpu_seconds

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families."""
        s = self._stats
        for name, doc, value in (
            ("compactions", "App-hours compacted by this process.", s.compactions),
            ("rollups", "App-days rolled up into day files by this process.", s.rollups),
            (
                "compaction_orphans",
                "Compacted or day files that lost their table commit, deleted.",
                s.orphans,
            ),
            ("compaction_failures", "Compactions that failed (retried later).", s.failures),
            ("compaction_bytes_in", "Bytes of the files compactions (and roll-ups) replaced.", s.bytes_in),
            ("compaction_bytes_out", "Bytes of the files compactions wrote.", s.bytes_out),
            ("compaction_files_in", "Files compactions replaced.", s.files_in),
            ("compaction_files_out", "Files compactions wrote.", s.files_out),
            ("compaction_rows", "Rows compactions rewrote.", s.rows),
            (
                "compaction_cpu_seconds",
                "CPU time of the compactor's thread (footers, merges, parts).",
                self._cpu_seconds(),
            ),
        ):
            yield CounterMetricFamily(f"archiver_{name}", doc, value=value)
        yield GaugeMetricFamily(
            "archiver_compaction_backlog",
            "Closed app-hours not yet compacted (the last scan's, less those compacted since).",
            value=s.backlog,
        )
