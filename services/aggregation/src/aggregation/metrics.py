"""Prometheus metrics of aggregation runs, registered on the service's own registry."""

from __future__ import annotations

from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: run duration buckets, in seconds
RUN_SECONDS_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


_BY_REGISTRY: WeakKeyDictionary[CollectorRegistry, AggregationMetrics] = WeakKeyDictionary()


class AggregationMetrics:
    @classmethod
    def of(cls, registry: CollectorRegistry) -> AggregationMetrics:
        """The metrics on ``registry``, registered there on first use (a name registers once)."""
        found = _BY_REGISTRY.get(registry)
        if found is None:
            found = _BY_REGISTRY[registry] = cls(registry)
        return found

    def __init__(self, registry: CollectorRegistry) -> None:
        self.keys_read = Counter(
            "aggregation_keys_read", "Counter keys read from Redis.", registry=registry
        )
        self.keys_missing = Counter(
            "aggregation_keys_missing",
            "Keys that vanished (expired) between discovery and read.",
            registry=registry,
        )
        self.malformed = Counter(
            "aggregation_malformed_keys",
            "Keys skipped because their name or value could not be parsed.",
            registry=registry,
        )
        self.rows_written = Counter(
            "aggregation_rows_written", "Rows upserted into merchant_usage.", registry=registry
        )
        self.rows_changed = Counter(
            "aggregation_rows_changed",
            "Upserted rows whose value changed (each publishes usage.aggregated).",
            registry=registry,
        )
        self.runs = Counter(
            "aggregation_runs", "Finished runs by status.", ("status",), registry=registry
        )
        self.run_seconds = Histogram(
            "aggregation_run_duration_seconds",
            "Wall time of one run (one date).",
            buckets=RUN_SECONDS_BUCKETS,
            registry=registry,
        )
        self.last_success = Gauge(
            "aggregation_last_success_timestamp_seconds",
            "Unix time of the last run that completed (succeeded or partial).",
            registry=registry,
        )
