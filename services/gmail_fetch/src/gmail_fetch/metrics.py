"""gmail_fetch's own Prometheus metrics, on the service's registry (/metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class GmailMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry()
        self.requests = Counter(
            "gmail_fetch_gmail_calls_total",
            "Gmail API calls (batch parts counted as messages.get) by outcome.",
            ["method", "outcome"],
            registry=registry,
        )
        self.parts_retried = Counter(
            "gmail_fetch_batch_parts_retried_total",
            "Batch parts re-sent after a 429, 403 rate limit or 5xx.",
            registry=registry,
        )
        self.vanished = Counter(
            "gmail_fetch_messages_vanished_total",
            "Listed messages gone by the time they were fetched (404 batch part): skipped.",
            registry=registry,
        )
        self.jobs = Counter(
            "gmail_fetch_jobs_total", "Job attempts by outcome.", ["outcome"], registry=registry
        )
        self.cache = Counter(
            "gmail_fetch_cache_lookups_total",
            "Messages a job needed, served from the cache (hit) or fetched (miss).",
            ["result"],
            registry=registry,
        )
        self.job_seconds = Histogram(
            "gmail_fetch_job_seconds",
            "Duration of job attempts.",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
            registry=registry,
        )
