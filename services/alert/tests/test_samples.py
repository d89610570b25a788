"""Every input stream's payload as a sample; the old worker's three places for a value."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from alert.samples import SampleError, sample_of
from tributary import catalog
from tributary.events import Event, make_event

REGISTRY = catalog.default_registry()
WHEN = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)


def event(source: str, payload: dict[str, object]) -> Event:
    (event_type,) = [t for t, (s, _) in catalog.EVENT_TYPES.items() if s == source]
    return make_event(event_type, payload, "test", REGISTRY)


def test_device_reading_value_json_value_and_metadata() -> None:
    e = make_event(
        "device.reading.recorded",
        {
            "device_id": "aq-1",
            "metric": "temp",
            "value": 25.5,
            "json_value": {"water": {"ph": 7.1, "temp": 99}, "ok": True, "note": "x"},
            "metadata": {"battery": "87", "tank": "reef", "ph": 1},
            "time": WHEN,
        },
        "test",
        REGISTRY,
    )
    s = sample_of(catalog.DEVICE_READINGS, e)
    assert s.subject == "aq-1"
    assert s.time == WHEN
    assert s.metrics["temp"] == 25.5  # the reading's own metric names value
    assert s.metrics["value"] == 25.5
    assert s.metrics["json_value.water.ph"] == 7.1
    assert s.metrics["water.ph"] == 7.1
    assert s.metrics["water.temp"] == 99
    assert s.metrics["ok"] == 1.0
    assert "note" not in s.metrics
    assert s.metrics["battery"] == 87.0  # numeric strings count
    assert s.metrics["metadata.ph"] == 1.0
    assert s.labels["tank"] == "reef"
    assert s.labels["device_id"] == "aq-1"
    assert s.labels["source"] == catalog.DEVICE_READINGS


def test_scalar_json_value_names_the_metric() -> None:
    e = make_event(
        "device.reading.recorded",
        {"device_id": "d", "metric": "level", "json_value": "12.5", "time": WHEN},
        "test",
        REGISTRY,
    )
    s = sample_of(catalog.DEVICE_READINGS, e)
    assert s.metrics == {"json_value": 12.5, "level": 12.5}


def test_other_sources() -> None:
    traffic = sample_of(
        catalog.TRAFFIC_FLUSHED,
        event(
            catalog.TRAFFIC_FLUSHED,
            {
                "node_id": "n1",
                "upload_delta": 1,
                "download_delta": 2,
                "upload_total": 10,
                "download_total": 20,
                "traffic_used_total": 30,
                "traffic_limit": 60,
                "batch_id": "b",
            },
        ),
    )
    assert traffic.subject == "n1"
    assert traffic.metrics["traffic_used_ratio"] == 0.5
    usage = sample_of(
        catalog.USAGE_AGGREGATED,
        event(
            catalog.USAGE_AGGREGATED,
            {
                "merchant_id": "m1",
                "date": date(2025, 1, 6),
                "metric": "orders",
                "value": 12,
                "previous": 10,
            },
        ),
    )
    assert (usage.subject, usage.metrics) == ("m1", {"orders": 12.0, "orders.delta": 2.0})
    anomaly = sample_of(
        catalog.USAGE_ANOMALIES,
        event(
            catalog.USAGE_ANOMALIES,
            {
                "server_id": "s1",
                "key_id": "k1",
                "observed_bytes": 100,
                "baseline_bytes": 10.0,
                "score": 4.2,
                "window_seconds": 3600,
                "detected_at": WHEN,
            },
        ),
    )
    assert anomaly.subject == "s1/k1"
    assert anomaly.time == WHEN
    assert anomaly.labels["server_id"] == "s1"
    forecast = sample_of(
        catalog.USAGE_FORECASTS,
        event(
            catalog.USAGE_FORECASTS,
            {
                "server_id": "s1",
                "key_id": "k1",
                "used_bytes": 50,
                "limit_bytes": 100,
                "predicted_limit_at": None,
                "hours_to_limit": 5.0,
            },
        ),
    )
    assert forecast.metrics["used_ratio"] == 0.5
    assert forecast.metrics["hours_to_limit"] == 5.0


def test_unusable_events() -> None:
    e = make_event("device.reading.recorded", {"device_id": "", "time": WHEN}, "test", REGISTRY)
    with pytest.raises(SampleError):
        sample_of(catalog.DEVICE_READINGS, e)
    e = make_event(
        "traffic.flushed",
        {
            "node_id": "n",
            "upload_delta": 0,
            "download_delta": 0,
            "upload_total": 0,
            "download_total": 0,
            "traffic_used_total": 0,
            "batch_id": "b",
        },
        "test",
        REGISTRY,
        time="yesterday",
    )
    with pytest.raises(SampleError):
        sample_of(catalog.TRAFFIC_FLUSHED, e)
