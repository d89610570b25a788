"""traffic_sync's Prometheus metrics, registered on the process's registry at build time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: flush cycle duration buckets, in seconds
FLUSH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class FlushMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry()
        self.nodes_flushed = Counter(
            "traffic_sync_nodes_flushed",
            "Node deltas applied to the database.",
            registry=registry,
        )
        self.bytes_flushed = Counter(
            "traffic_sync_bytes_flushed",
            "Bytes added to node counters.",
            ("direction",),
            registry=registry,
        )
        self.batches_applied = Counter(
            "traffic_sync_batches_applied",
            "Batches committed to the database (recovered ones included).",
            registry=registry,
        )
        self.flush_seconds = Histogram(
            "traffic_sync_flush_duration_seconds",
            "Duration of a flush cycle.",
            buckets=FLUSH_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "traffic_sync_errors",
            "Flush errors: bad node data, failed batches, failed cycles.",
            ("kind",),
            registry=registry,
        )
        self.rejected_nodes = Counter(
            "traffic_sync_rejected_nodes",
            "Nodes whose data was bad and was set aside in traffic_rejects.",
            ("reason",),
            registry=registry,
        )
        self.dirty_nodes = Gauge(
            "traffic_sync_dirty_nodes",
            "Dirty nodes found by the last flush cycle.",
            registry=registry,
        )
        self.pending_batches = Gauge(
            "traffic_sync_pending_batches",
            "Batches moved out of Redis but not yet applied, after the last cycle.",
            registry=registry,
        )
        self.last_flush = Gauge(
            "traffic_sync_last_flush_timestamp_seconds",
            "Unix time the last flush cycle finished.",
            registry=registry,
        )
