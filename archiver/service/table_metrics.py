"""The committer stage's counters and their Prometheus families (read at scrape time, like the rest)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from archiver.service.upkeep import UpkeepStats


@dataclass(slots=True)
class TableStats:
    """What the service's committer did since start."""

    commits: int = 0
    failures: int = 0
    #: Files added to the table by this process.
    files: int = 0
    #: Files of replayed batches found already committed (a restart after kill -9), not added again.
    already_committed: int = 0


def commit_seconds() -> Histogram:
    """The latency histogram of one table commit (registered by the metrics registry)."""
    return Histogram(
        "archiver_table_commit_seconds",
        "Time to commit one group of uploaded files to the Delta table (refresh, check, commit).",
        buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        registry=None,
    )


class TableCollector(Collector):
    """Prometheus families of the committer, read at scrape time."""

    def __init__(
        self, stats: TableStats, gauges: Callable[[], tuple[int, float]], upkeep: UpkeepStats | None = None
    ) -> None:
        """``gauges()``: (files uploaded and not yet committed, age in seconds of the oldest such batch)."""
        self._stats = stats
        self._gauges = gauges
        self._upkeep = upkeep

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families."""
        s = self._stats
        yield CounterMetricFamily(
            "archiver_table_commits", "Commits of uploaded files to the Delta table.", s.commits
        )
        yield CounterMetricFamily(
            "archiver_table_commit_failures",
            "Table commits that failed (the files stay in the spool).",
            s.failures,
        )
        yield CounterMetricFamily(
            "archiver_table_files_committed", "Files this process added to the table.", s.files
        )
        uncommitted, age_s = self._gauges()
        yield GaugeMetricFamily(
            "archiver_table_uncommitted_files",
            "Files uploaded and not yet committed to the table.",
            value=uncommitted,
        )
        yield GaugeMetricFamily(
            "archiver_table_oldest_uncommitted_age_seconds",
            "Age of the oldest batch uploaded and not yet committed to the table (0 when none).",
            value=age_s,
        )
        u = self._upkeep
        if u is not None:
            yield GaugeMetricFamily(
                "archiver_table_upkeep_leader", "1 while this process runs the table upkeep.", value=u.leader
            )
            yield CounterMetricFamily("archiver_table_checkpoints", "Checkpoints written.", u.checkpoints)
            yield CounterMetricFamily(
                "archiver_table_vacuumed_files",
                "Files removed from the table and left behind, deleted by the upkeep's vacuum.",
                u.vacuumed_files,
            )
            yield CounterMetricFamily(
                "archiver_table_upkeep_failures", "Upkeep ticks that failed (tried again).", u.failures
            )
