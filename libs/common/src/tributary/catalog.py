"""The event catalog: every stream of DESIGN.md section 2, its event types and payload models.

Producers and consumers validate payloads with the same models, so a model
here is the contract between two services. Adding a field with a default is
compatible; renaming or removing one needs a new version (``v``).
docs/events.md describes each stream for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tributary.retention.policy import StreamRetention

if TYPE_CHECKING:
    # the settings read the catalog (STREAM_RETENTION): it must not cost them the
    # import of the event machinery (Redis, OpenTelemetry)
    from tributary.events import Registry


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# -- streams ----------------------------------------------------------------------------

OUTLINE_COLLECT = "outline.collect"
USAGE_ANOMALIES = "usage.anomalies"
USAGE_FORECASTS = "usage.forecasts"
GMAIL_JOBS = "gmail.jobs"
GMAIL_JOB_EVENTS = "gmail.job-events"
TRAFFIC_FLUSHED = "traffic.flushed"
USAGE_AGGREGATED = "usage.aggregated"
DEVICE_READINGS = "device.readings"
ALERTS = "alerts"

#: seconds in an hour and in a day, for the retention defaults below
_HOUR, _DAY = 3600.0, 86400.0


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """Who writes a stream and how long its entries are kept.

    ``trimmed_by`` is the service whose lease holder trims it: its producer, or for a
    stream written outside the services (``device.readings``) the service consuming it.
    The defaults are what an operator would pick; ``STREAM_RETENTION`` overrides them
    (:mod:`tributary.retention.policy`).
    """

    trimmed_by: str
    retention: StreamRetention


#: every stream the system writes, with its default retention (docs/operations.md,
#: "Retention and footprint", explains each choice)
STREAMS: dict[str, StreamSpec] = {
    # work items: useless once collected; bounded by length too (a tick per server)
    OUTLINE_COLLECT: StreamSpec("snapshot", StreamRetention(6 * _HOUR, 100_000)),
    USAGE_ANOMALIES: StreamSpec("snapshot", StreamRetention(7 * _DAY)),
    USAGE_FORECASTS: StreamSpec("snapshot", StreamRetention(3 * _DAY)),
    GMAIL_JOBS: StreamSpec("gmail_fetch", StreamRetention(7 * _DAY)),
    # read by clients without a group: age alone
    GMAIL_JOB_EVENTS: StreamSpec("gmail_fetch", StreamRetention(3 * _DAY)),
    # one entry per node per flush: ~29 million a day at 100,000 nodes
    TRAFFIC_FLUSHED: StreamSpec("traffic_sync", StreamRetention(6 * _HOUR)),
    USAGE_AGGREGATED: StreamSpec("aggregation", StreamRetention(2 * _DAY)),
    DEVICE_READINGS: StreamSpec("alert", StreamRetention(6 * _HOUR)),
    ALERTS: StreamSpec("alert", StreamRetention(7 * _DAY)),
}

#: every ``<stream>.dlq``: bounded by length and age (an operator replays within a week)
DLQ_RETENTION = StreamRetention(7 * _DAY, 10_000)

# -- snapshot ---------------------------------------------------------------------------


class OutlineCollectRequested(Payload):
    """One work item per active Outline server per scheduler tick."""

    server_id: str
    tick: datetime


class UsageAnomalyDetected(Payload):
    server_id: str
    key_id: str
    key_name: str | None = None
    observed_bytes: int = Field(ge=0)
    baseline_bytes: float = Field(ge=0)
    score: float  # robust z-score (median/MAD) or EWMA deviation
    ratio: float | None = None  # observed / baseline, the old ">3x baseline" rule
    window_seconds: int = Field(gt=0)
    detected_at: datetime


class UsageForecastUpdated(Payload):
    server_id: str
    key_id: str
    key_name: str | None = None
    used_bytes: int = Field(ge=0)
    limit_bytes: int = Field(gt=0)
    predicted_limit_at: datetime | None  # None: not reached within the horizon
    hours_to_limit: float | None
    reached: bool = False


# -- gmail_fetch ------------------------------------------------------------------------


class GmailJobCreated(Payload):
    job_id: str


class GmailJobProgressed(Payload):
    job_id: str
    status: Literal["processing", "completed", "failed", "cancelled"]
    progress: int = Field(ge=0)
    total: int = Field(ge=0)
    current_step: str = ""
    fetched: int = 0
    cached: int = 0
    cache_hit_rate: float | None = None
    error: str | None = None


# -- traffic_sync -----------------------------------------------------------------------


class TrafficFlushed(Payload):
    node_id: str
    upload_delta: int = Field(ge=0)
    download_delta: int = Field(ge=0)
    upload_total: int = Field(ge=0)
    download_total: int = Field(ge=0)
    traffic_used_total: int = Field(ge=0)
    traffic_limit: int | None = None
    batch_id: str


# -- aggregation ------------------------------------------------------------------------


class UsageAggregated(Payload):
    merchant_id: str
    date: date
    metric: str
    value: int
    previous: int | None = None
    final: bool = False


# -- devices ----------------------------------------------------------------------------


class DeviceReadingRecorded(Payload):
    """A reading as the old aquarium worker knew it: the value is in ``value``,
    somewhere in ``json_value``, or in ``metadata``; rules say where."""

    device_id: str
    metric: str | None = None
    value: float | None = None
    json_value: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    time: datetime


# -- alert ------------------------------------------------------------------------------


class AlertChanged(Payload):
    """Alertmanager-like: status, labels, annotations, start/end, fingerprint."""

    status: Literal["firing", "resolved"]
    rule_id: str
    rule_name: str
    subject: str
    severity: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    value: float | None = None
    threshold: float | None = None
    starts_at: datetime
    ends_at: datetime | None = None
    fingerprint: str
    event_id: str  # the alert event's id in the alert service


#: event type -> (stream, payload model)
EVENT_TYPES: dict[str, tuple[str, type[Payload]]] = {
    "outline.collect.requested": (OUTLINE_COLLECT, OutlineCollectRequested),
    "usage.anomaly.detected": (USAGE_ANOMALIES, UsageAnomalyDetected),
    "usage.forecast.updated": (USAGE_FORECASTS, UsageForecastUpdated),
    "gmail.job.created": (GMAIL_JOBS, GmailJobCreated),
    "gmail.job.progressed": (GMAIL_JOB_EVENTS, GmailJobProgressed),
    "gmail.job.completed": (GMAIL_JOB_EVENTS, GmailJobProgressed),
    "gmail.job.failed": (GMAIL_JOB_EVENTS, GmailJobProgressed),
    "traffic.flushed": (TRAFFIC_FLUSHED, TrafficFlushed),
    "usage.aggregated": (USAGE_AGGREGATED, UsageAggregated),
    "device.reading.recorded": (DEVICE_READINGS, DeviceReadingRecorded),
    "alert.triggered": (ALERTS, AlertChanged),
    "alert.resolved": (ALERTS, AlertChanged),
}


def default_registry() -> Registry:
    """A registry with every event type of the catalog."""
    from tributary.events import Registry

    registry = Registry()
    for event_type, (_, model) in EVENT_TYPES.items():
        registry.register(event_type, model)
    return registry
