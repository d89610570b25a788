from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from tributary import catalog
from tributary.errors import MalformedEvent
from tributary.events import decode, encode, make_event


def test_every_event_type_belongs_to_a_design_stream() -> None:
    streams = {s for s, _ in catalog.EVENT_TYPES.values()}
    assert streams == {
        catalog.OUTLINE_COLLECT, catalog.USAGE_ANOMALIES, catalog.USAGE_FORECASTS,
        catalog.GMAIL_JOBS, catalog.GMAIL_JOB_EVENTS, catalog.TRAFFIC_FLUSHED,
        catalog.USAGE_AGGREGATED, catalog.DEVICE_READINGS, catalog.ALERTS,
    }  # fmt: skip


def test_payloads_round_trip_through_the_registry() -> None:
    registry = catalog.default_registry()
    payload = {"merchant_id": "m1", "date": "2026-11-23", "metric": "api_calls", "value": 7}
    event = make_event("usage.aggregated", payload, "aggregation", registry)
    back = decode(encode(event), registry)
    data = back.payload(catalog.UsageAggregated)
    assert data.date == date(2026, 11, 23)
    assert data.value == 7
    reading = make_event(
        "device.reading.recorded",
        {"device_id": "tank-1", "json_value": {"ph": 7.1}, "time": datetime.now(UTC).isoformat()},
        "simulator",
        registry,
    )
    assert decode(encode(reading), registry).payload(catalog.DeviceReadingRecorded).value is None


def test_invalid_payload_is_malformed() -> None:
    with pytest.raises(MalformedEvent, match="upload_delta"):
        make_event("traffic.flushed", {"node_id": "n", "upload_delta": -1}, "x",
                   catalog.default_registry())  # fmt: skip
