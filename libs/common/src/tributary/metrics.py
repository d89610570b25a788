"""Prometheus metrics of the streams machinery and leases (DESIGN.md section 5).

Built once per process at start-up with its own registry and passed to the
runners; nothing is registered at import time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: handler latency buckets, in seconds
DEFAULT_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ("stream", "group")
        self.processed = Counter(
            "tributary_events_processed",
            "Events handled successfully.",
            labels,
            registry=self.registry,
        )
        self.failed = Counter(
            "tributary_events_failed",
            "Handler failures (each attempt).",
            labels,
            registry=self.registry,
        )
        self.retried = Counter(
            "tributary_events_retried",
            "Events scheduled for redelivery.",
            labels,
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "tributary_events_dead_lettered",
            "Events moved to <stream>.dlq.",
            labels,
            registry=self.registry,
        )
        self.ignored = Counter(
            "tributary_events_ignored",
            "Events of a type the group has no handler for.",
            labels,
            registry=self.registry,
        )
        self.published = Counter(
            "tributary_events_published",
            "Events written to a stream.",
            ("stream",),
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "tributary_handler_duration_seconds",
            "Handler latency.",
            labels,
            buckets=DEFAULT_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "tributary_consumer_lag",
            "Entries in the stream not yet delivered to the group.",
            labels,
            registry=self.registry,
        )
        self.pending = Gauge(
            "tributary_consumer_pending",
            "Entries delivered to the group but not acked.",
            labels,
            registry=self.registry,
        )
        self.lease_held = Gauge(
            "tributary_lease_held",
            "1 while this process holds the named lease.",
            ("lease",),
            registry=self.registry,
        )
        self.ready = Gauge(
            "tributary_ready",
            "1 when every readiness check (/readyz) passed at the last probe or scrape.",
            registry=self.registry,
        )
        self._retention_metrics()
        self.outbox_backlog = Gauge(
            "tributary_outbox_backlog",
            "Outbox rows not yet published (a page of events counts as one row).",
            ("schema",),
            registry=self.registry,
        )

    def _retention_metrics(self) -> None:
        """Footprint and retention (tributary.retention): what each store holds, what the
        lease holder's passes removed."""
        self.stream_length = Gauge(
            "tributary_stream_length",
            "Entries in the stream (XLEN).",
            ("stream",),
            registry=self.registry,
        )
        self.stream_oldest_age = Gauge(
            "tributary_stream_oldest_entry_age_seconds",
            "Age of the stream's oldest entry (from its id).",
            ("stream",),
            registry=self.registry,
        )
        self.stream_held_back = Gauge(
            "tributary_stream_held_back_entries",
            "Unacknowledged backlog of the group holding back the stream's retention (0: none).",
            ("stream",),
            registry=self.registry,
        )
        self.stream_lagging = Gauge(
            "tributary_retention_lagging_group",
            "1 while the group holds back more than RETENTION_LAG_WARN_ENTRIES entries.",
            ("stream", "group"),
            registry=self.registry,
        )
        self.table_rows = Gauge(
            "tributary_table_rows",
            "Approximate rows of a table under retention (the database's estimate).",
            ("table",),
            registry=self.registry,
        )
        self.table_oldest_age = Gauge(
            "tributary_table_oldest_row_age_seconds",
            "Age of the oldest row of a table under retention.",
            ("table",),
            registry=self.registry,
        )
        self.retention_removed = Counter(
            "tributary_retention_removed",
            "Stream entries and table rows removed by retention.",
            ("store", "name"),
            registry=self.registry,
        )
        self.retention_dropped = Counter(
            "tributary_retention_dropped_unacknowledged",
            "Entries trimmed past a lagging group (RETENTION_TRIM_PAST_LAGGING): lost to it.",
            ("stream",),
            registry=self.registry,
        )
        self.retention_last_pass = Gauge(
            "tributary_retention_last_pass_timestamp_seconds",
            "When this process last finished a retention pass (unix time).",
            registry=self.registry,
        )


def observe_many(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe`` of each amount, with a lock taken per bucket touched rather
    than two per amount (a per-event handler's latencies, a batch at a time).

    The same counts and sum as observing one by one: an amount goes in the first
    bucket whose upper bound is not below it, as ``Histogram.observe`` does. A
    histogram without the fields this reads (another client version) is observed
    one by one.
    """
    if not amounts:
        return
    try:
        bounds, buckets, total = histogram._upper_bounds, histogram._buckets, histogram._sum
    except AttributeError:
        for amount in amounts:
            histogram.observe(amount)
        return
    total.inc(sum(amounts))
    for index, count in Tally(bisect_left(bounds, a) for a in amounts).items():
        buckets[index].inc(count)
