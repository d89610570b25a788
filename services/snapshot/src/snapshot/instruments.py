"""The service's own Prometheus metrics, and the span processor that hides apiUrl paths.

The httpx instrumentation records each request's full URL on its span
(``url.full`` / ``http.url``); for Outline that URL is the credential.
:class:`RedactUrlSpans` rewrites those attributes as the span starts, before
any exporter sees it, keeping only ``host:port`` and the API endpoint.
"""

from __future__ import annotations

import re

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_API_PATHS = ("/experimental/server/metrics", "/metrics/transfer", "/access-keys", "/server")
_URL = re.compile(r"^(?P<origin>[a-z][a-z0-9+.\-]*://[^/?#]+)(?P<path>[^?#]*)(?P<rest>.*)$")
_URL_ATTRIBUTES = ("url.full", "http.url", "http.target", "url.path")


def mask_url(url: str) -> str:
    """``https://host:port/<secret>/server?x`` -> ``https://host:port/***/server?x``."""
    match = _URL.match(url)
    if match is None:
        return "***" if url.startswith("/") else url
    path = match["path"]
    suffix = next((p for p in _API_PATHS if path.endswith(p)), "")
    masked = f"/***{suffix}" if path not in ("", "/") else path
    return f"{match['origin']}{masked}{match['rest']}"


def _mask_path(path: str) -> str:
    suffix = next((p for p in _API_PATHS if path.split("?")[0].endswith(p)), "")
    return f"/***{suffix}"


class RedactUrlSpans(SpanProcessor):
    """Masks the secret path in URL attributes of outgoing HTTP client spans."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attributes = span.attributes or {}
        for name in _URL_ATTRIBUTES:
            value = attributes.get(name)
            if isinstance(value, str) and value:
                masked = mask_url(value) if "://" in value else _mask_path(value)
                span.set_attribute(name, masked)

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class SnapshotMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.collections = Counter(
            "snapshot_collections",
            "Server collections by outcome (collected, failed, skipped) and reason.",
            ("outcome", "reason"),
            registry=registry,
        )
        self.collect_seconds = Histogram(
            "snapshot_collect_duration_seconds",
            "Time to collect one server (HTTP and database).",
            registry=registry,
        )
        self.snapshots = Counter(
            "snapshot_snapshots_written", "Per-key snapshots written.", registry=registry
        )
        self.drops = Counter(
            "snapshot_reading_drops",
            "Readings that went down by more than the tracked ageing (clamped to 0).",
            registry=registry,
        )
        self.interval_fallbacks = Counter(
            "snapshot_interval_fallbacks",
            "Keys whose delta came from the 30-day window although an interval answer was "
            "there, by reason (unmatched: the answer cannot name the key; inconsistent: a "
            "cached or empty answer the window contradicts).",
            ("reason",),
            registry=registry,
        )
        self.interval_unmatched = Counter(
            "snapshot_interval_unmatched_entries",
            "Interval answer entries whose accessKeyId names no key (null: parseInt of a "
            "non-numeric id or of unlabelled traffic).",
            registry=registry,
        )
        self.clamped_counts = Counter(
            "snapshot_negative_byte_counts",
            "Negative byte counts in Outline answers, read as 0.",
            registry=registry,
        )
        self.servers_in_backoff = Gauge(
            "snapshot_servers_in_backoff",
            "Active servers skipped by the last tick because they are backing off.",
            registry=registry,
        )
        self.work_items = Counter(
            "snapshot_work_items_published",
            "outline.collect work items published.",
            registry=registry,
        )
        self.drift_keys = Gauge(
            "snapshot_drift_keys",
            "Keys whose summed deltas differ from the 30-day value beyond tolerance.",
            registry=registry,
        )
        self.anomalies = Counter(
            "snapshot_anomaly_episodes", "Anomaly episodes opened.", registry=registry
        )
        self.forecasts = Counter(
            "snapshot_forecast_events",
            "usage.forecasts events by state.",
            ("state",),
            registry=registry,
        )
