"""Metrics: plain counters on the hot path, exposed in Prometheus format at scrape time.

Incrementing a prometheus_client Counter takes a lock; the message callback
instead bumps plain integers in :class:`Stats`, and :class:`StatsCollector`
turns them into metric families when ``/metrics`` is scraped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from archiver.archive.schema import MALFORMED_KINDS

DROP_REASONS = ("slow_consumer", "spool_full", "encode_error")
#: Why a message was not routed by its subject (``archiver_messages_unrouted_total``).
UNROUTED_REASONS = ("subject_shape",)
#: Per-app series beyond this many apps are summed under app="_other" (bounded cardinality).
MAX_APP_LABELS = 100
OTHER_APPS = "_other"


@dataclass(slots=True)
class Stats:
    """Counters and gauges of one archiver process."""

    messages_received: int = 0
    bytes_received: int = 0
    messages_archived: int = 0
    messages_malformed: int = 0
    malformed_kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MALFORMED_KINDS, 0))
    messages_wrong_type: int = 0
    messages_truncated: int = 0
    unrouted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(UNROUTED_REASONS, 0))
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    slow_consumer_events: int = 0
    files_written: int = 0
    bytes_written: int = 0
    upload_errors: int = 0
    encode_errors: int = 0
    nats_reconnects: int = 0
    nats_disconnects: int = 0
    stall_recoveries: int = 0
    jetstream_acks: int = 0
    jetstream_redeliveries: int = 0
    buffered_bytes: int = 0
    buffered_messages: int = 0
    last_message_monotonic: float | None = None
    newest_event_ns: int | None = None
    started_s: float = field(default_factory=time.time)
    app_messages_archived: dict[str, int] = field(default_factory=dict)

    def count_parsed(self, malformed_kinds: dict[str, int], wrong_type: int) -> None:
        """Add an archived batch's malformed rows (by kind) and wrong-typed rows."""
        for kind, count in malformed_kinds.items():
            self.malformed_kinds[kind] = self.malformed_kinds.get(kind, 0) + count
            self.messages_malformed += count
        self.messages_wrong_type += wrong_type

    def count_app(self, app: str, rows: int) -> None:
        """Add archived rows to an app's series (or to the overflow series past the cap)."""
        series = self.app_messages_archived
        if app not in series and len(series) >= MAX_APP_LABELS:
            app = OTHER_APPS
        series[app] = series.get(app, 0) + rows


class StatsCollector(Collector):
    """Prometheus collector reading a :class:`Stats` at scrape time."""

    def __init__(self, stats: Callable[[], Stats], extra: Callable[[], dict[str, tuple[str, float]]]) -> None:
        self._stats = stats
        self._extra = extra

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families."""
        s = self._stats()

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"archiver_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"archiver_{name}", doc, value=value)

        def labelled(name: str, doc: str, label: str, counts: Mapping[str, int]) -> CounterMetricFamily:
            family = CounterMetricFamily(f"archiver_{name}", doc, labels=[label])
            for value, count in sorted(counts.items()):
                family.add_metric([value], count)
            return family

        yield counter("messages_received", "Messages received from NATS.", s.messages_received)
        yield counter("bytes_received", "Payload bytes received from NATS.", s.bytes_received)
        yield counter("messages_archived", "Messages durably written to the archive.", s.messages_archived)
        yield labelled(
            "messages_malformed",
            "Messages archived as raw text (not a Fly JSON message), by kind; summed: every kind.",
            "kind",
            s.malformed_kinds,
        )
        yield counter(
            "messages_wrong_type",
            "Fly messages archived as rows with a known field of another type (kept in extra).",
            s.messages_wrong_type,
        )
        yield counter(
            "messages_truncated",
            "Messages longer than MAX_MESSAGE_BYTES, truncated on receipt (archived as malformed).",
            s.messages_truncated,
        )
        yield labelled(
            "messages_unrouted",
            "Messages whose subject is not logs.<app>.<region>.<instance> (routed by payload), by reason.",
            "reason",
            s.unrouted,
        )
        yield labelled(
            "messages_dropped", "Messages that could not be archived, by reason.", "reason", s.dropped
        )
        yield counter(
            "slow_consumer_events",
            "Slow-consumer errors reported by the NATS client.",
            s.slow_consumer_events,
        )
        per_app = CounterMetricFamily(
            "archiver_app_messages_archived",
            f"Messages archived per app (the first {MAX_APP_LABELS} apps; the rest under {OTHER_APPS}).",
            labels=["app"],
        )
        for app, count in sorted(s.app_messages_archived.items()):
            per_app.add_metric([app], count)
        yield per_app
        yield counter("files_written", "Parquet files written to the archive.", s.files_written)
        yield counter("bytes_written", "Bytes of Parquet written to the archive.", s.bytes_written)
        yield counter("upload_errors", "Failed upload attempts (each is retried).", s.upload_errors)
        yield counter("encode_errors", "Batches that failed to encode.", s.encode_errors)
        yield counter("nats_reconnects", "Reconnections to NATS.", s.nats_reconnects)
        yield counter("nats_disconnects", "Disconnections from NATS.", s.nats_disconnects)
        yield counter("stall_recoveries", "Re-subscriptions after the stream stalled.", s.stall_recoveries)
        yield counter("jetstream_acks", "JetStream messages acked once archived.", s.jetstream_acks)
        yield counter(
            "jetstream_redeliveries", "JetStream messages delivered more than once.", s.jetstream_redeliveries
        )
        yield gauge(
            "buffered_bytes",
            "Memory held by messages not yet archived, as the MAX_BUFFER_BYTES cap counts it.",
            s.buffered_bytes,
        )
        yield gauge("buffered_messages", "Messages received and not yet archived.", s.buffered_messages)
        lag = 0.0
        if s.newest_event_ns is not None:
            lag = max(0.0, time.time() - s.newest_event_ns / 1e9)
        yield gauge("newest_event_lag_seconds", "Now minus the newest archived event's timestamp.", lag)
        since = 0.0 if s.last_message_monotonic is None else time.monotonic() - s.last_message_monotonic
        yield gauge("seconds_since_last_message", "Seconds since the last message arrived.", since)
        for name, (doc, value) in self._extra().items():
            yield gauge(name, doc, value)


class Timings:
    """The histograms the uploader observes; registered with the rest by :class:`Metrics`."""

    def __init__(self) -> None:
        self.upload_seconds = Histogram(
            "archiver_upload_seconds",
            "Time to upload one file, retries included.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=None,
        )
        self.encode_seconds = Histogram(
            "archiver_encode_seconds",
            "Time to parse and encode one flushed partition.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=None,
        )


class Metrics:
    """The registry of one process: scrape-time stats, the stages' gauges, the histograms."""

    def __init__(
        self,
        stats: Stats,
        timings: Timings,
        gauges: Callable[[], dict[str, tuple[str, float]]] = dict,
        collectors: Sequence[Collector] = (),
    ) -> None:
        """``gauges``: more gauges read at scrape time, name -> (help, value); ``collectors``: a stage's own."""
        self.stats = stats
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(StatsCollector(lambda: self.stats, gauges))
        self.registry.register(timings.upload_seconds)
        self.registry.register(timings.encode_seconds)
        for collector in collectors:
            self.registry.register(collector)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return bytes(generate_latest(self.registry))
