"""Every input stream's facts as samples: (source, subject, metrics, labels, time).

One event becomes one :class:`Sample` that offers several metrics by name; a rule
reads the one it names. Device readings keep the old worker's three places for
a value (``value``, ``json_value``, ``metadata``): each numeric leaf is offered
under its full path (``json_value.water.temp``, ``metadata.battery``) and, for the
short forms, under its dotted name (``water.temp``, ``battery``), the reading's
own ``metric`` naming ``value``. Precedence of the short names: value, then
json_value, then metadata.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from alert.clock import as_utc
from tributary import catalog
from tributary.events import Event

SOURCES = (
    catalog.DEVICE_READINGS,
    catalog.TRAFFIC_FLUSHED,
    catalog.USAGE_AGGREGATED,
    catalog.USAGE_ANOMALIES,
    catalog.USAGE_FORECASTS,
)
#: the label that names a sample's subject, per source (others use "subject" only)
SUBJECT_LABELS = {
    catalog.DEVICE_READINGS: "device_id",
    catalog.TRAFFIC_FLUSHED: "node_id",
    catalog.USAGE_AGGREGATED: "merchant_id",
}
DEVICE_PATH_ROOTS = ("value", "json_value", "metadata")
#: bounds on what one reading may contribute (a huge JSON document is not a sample)
MAX_DEPTH = 6
MAX_LEAVES = 200
MAX_LABELS = 20
MAX_LABEL_LENGTH = 200


class SampleError(ValueError):
    """The event is well-formed but cannot be a sample (no subject, bad time...)."""


@dataclass(frozen=True, slots=True)
class Sample:
    source: str
    subject: str
    time: datetime
    metrics: dict[str, float]
    labels: dict[str, str]
    event_id: str


def number(value: Any) -> float | None:
    """A finite float from a JSON value (bools count as 1/0, numeric strings parse)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return result if math.isfinite(result) else None


def _leaves(value: Any, prefix: str, depth: int = 0) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return
        for key, child in value.items():
            yield from _leaves(child, f"{prefix}.{key}" if prefix else str(key), depth + 1)
    elif isinstance(value, list):
        if depth >= MAX_DEPTH:
            return
        for i, child in enumerate(value):
            yield from _leaves(child, f"{prefix}.{i}" if prefix else str(i), depth + 1)
    else:
        yield prefix, value


def _offer(metrics: dict[str, float], root: str, doc: Any) -> None:
    """Numeric leaves of ``doc`` under ``root.<path>`` and (if free) ``<path>``."""
    count = 0
    for path, leaf in _leaves(doc, ""):
        value = number(leaf)
        if value is None or not path:
            continue
        metrics[f"{root}.{path}"] = value
        metrics.setdefault(path, value)
        count += 1
        if count >= MAX_LEAVES:
            return


def device_metrics(reading: catalog.DeviceReadingRecorded) -> dict[str, float]:
    metrics: dict[str, float] = {}
    value = number(reading.value) if reading.value is not None else None
    if value is not None:
        metrics["value"] = value
        if reading.metric:
            metrics[reading.metric] = value
    json_value = reading.json_value
    if isinstance(json_value, dict | list):
        _offer(metrics, "json_value", json_value)
    elif (scalar := number(json_value)) is not None:
        metrics["json_value"] = scalar
        if reading.metric:
            metrics.setdefault(reading.metric, scalar)
    if reading.metadata:
        _offer(metrics, "metadata", reading.metadata)
    return metrics


def device_labels(reading: catalog.DeviceReadingRecorded) -> dict[str, str]:
    """String metadata entries become labels too (bounded), for selectors and silences."""
    labels: dict[str, str] = {}
    for key, value in reading.metadata.items():
        if len(labels) >= MAX_LABELS:
            break
        if isinstance(value, str) and len(value) <= MAX_LABEL_LENGTH and len(key) <= 100:
            labels[key] = value
    labels["device_id"] = reading.device_id
    if reading.metric:
        labels["reading_metric"] = reading.metric
    return labels


def _device(event: Event) -> tuple[str, datetime | None, dict[str, float], dict[str, str]]:
    reading = event.payload(catalog.DeviceReadingRecorded)
    return reading.device_id, reading.time, device_metrics(reading), device_labels(reading)


def _traffic(event: Event) -> tuple[str, datetime | None, dict[str, float], dict[str, str]]:
    p = event.payload(catalog.TrafficFlushed)
    metrics: dict[str, float] = {
        "upload_delta": float(p.upload_delta),
        "download_delta": float(p.download_delta),
        "upload_total": float(p.upload_total),
        "download_total": float(p.download_total),
        "traffic_used_total": float(p.traffic_used_total),
    }
    if p.traffic_limit is not None:
        metrics["traffic_limit"] = float(p.traffic_limit)
        if p.traffic_limit > 0:
            metrics["traffic_used_ratio"] = p.traffic_used_total / p.traffic_limit
    return p.node_id, None, metrics, {"node_id": p.node_id}


def _aggregated(event: Event) -> tuple[str, datetime | None, dict[str, float], dict[str, str]]:
    p = event.payload(catalog.UsageAggregated)
    metrics = {p.metric: float(p.value)}
    if p.previous is not None:
        metrics[f"{p.metric}.delta"] = float(p.value - p.previous)
    labels = {"merchant_id": p.merchant_id, "date": p.date.isoformat(), "final": str(p.final)}
    return p.merchant_id, None, metrics, labels


def _key_labels(server_id: str, key_id: str, key_name: str | None) -> dict[str, str]:
    labels = {"server_id": server_id, "key_id": key_id}
    if key_name:
        labels["key_name"] = key_name[:MAX_LABEL_LENGTH]
    return labels


def _anomaly(event: Event) -> tuple[str, datetime | None, dict[str, float], dict[str, str]]:
    p = event.payload(catalog.UsageAnomalyDetected)
    metrics = {
        "score": p.score,
        "observed_bytes": float(p.observed_bytes),
        "baseline_bytes": p.baseline_bytes,
    }
    if p.ratio is not None:
        metrics["ratio"] = p.ratio
    subject = f"{p.server_id}/{p.key_id}"
    return subject, p.detected_at, metrics, _key_labels(p.server_id, p.key_id, p.key_name)


def _forecast(event: Event) -> tuple[str, datetime | None, dict[str, float], dict[str, str]]:
    p = event.payload(catalog.UsageForecastUpdated)
    metrics = {
        "used_bytes": float(p.used_bytes),
        "limit_bytes": float(p.limit_bytes),
        "used_ratio": p.used_bytes / p.limit_bytes,
        "reached": 1.0 if p.reached else 0.0,
    }
    if p.hours_to_limit is not None:
        metrics["hours_to_limit"] = p.hours_to_limit
    subject = f"{p.server_id}/{p.key_id}"
    return subject, None, metrics, _key_labels(p.server_id, p.key_id, p.key_name)


Extractor = Callable[[Event], tuple[str, datetime | None, dict[str, float], dict[str, str]]]
EXTRACTORS: dict[str, Extractor] = {
    catalog.DEVICE_READINGS: _device,
    catalog.TRAFFIC_FLUSHED: _traffic,
    catalog.USAGE_AGGREGATED: _aggregated,
    catalog.USAGE_ANOMALIES: _anomaly,
    catalog.USAGE_FORECASTS: _forecast,
}
#: the event type each source stream carries
EVENT_TYPES = {stream: t for t, (stream, _) in catalog.EVENT_TYPES.items() if stream in SOURCES}


def _event_time(event: Event) -> datetime:
    try:
        return as_utc(datetime.fromisoformat(event.time))
    except ValueError:
        raise SampleError(f"event time {event.time!r} is not RFC 3339") from None


def sample_of(source: str, event: Event) -> Sample:
    """The sample an event of ``source`` carries; raises SampleError or MalformedEvent."""
    subject, when, metrics, labels = EXTRACTORS[source](event)
    if not subject or len(subject) > 300:
        raise SampleError("subject must be 1..300 characters")
    labels["subject"] = subject
    labels["source"] = source
    return Sample(
        source=source,
        subject=subject,
        time=as_utc(when) if when is not None else _event_time(event),
        metrics=metrics,
        labels=labels,
        event_id=event.id,
    )
