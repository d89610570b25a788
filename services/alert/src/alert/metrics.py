"""The alert service's own Prometheus metrics, in the process's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.samples = Counter(
            "alert_samples", "Samples received, per source.", ("source",), registry=registry
        )
        self.samples_skipped = Counter(
            "alert_samples_skipped",
            "Samples not evaluated: invalid, duplicate, out of order, from the future.",
            ("source", "reason"),
            registry=registry,
        )
        self.evaluations = Counter(
            "alert_evaluations",
            "Rule evaluations (one per sample and matching rule).",
            ("source",),
            registry=registry,
        )
        self.transitions = Counter(
            "alert_transitions",
            "State transitions: pending, triggered, resolved.",
            ("kind",),
            registry=registry,
        )
        self.notifications_sent = Counter(
            "alert_notifications_sent",
            "Notifications delivered.",
            ("receiver_kind",),
            registry=registry,
        )
        self.notifications_failed = Counter(
            "alert_notifications_failed",
            "Delivery attempts that failed (retried or given up).",
            ("receiver_kind",),
            registry=registry,
        )
        self.notifications_suppressed = Counter(
            "alert_notifications_suppressed",
            "Notifications not sent: silenced, in maintenance, inhibited.",
            ("reason",),
            registry=registry,
        )
        self.tick_seconds = Histogram(
            "alert_tick_duration_seconds", "Duration of one tick.", registry=registry
        )
