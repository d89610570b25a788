"""usage.aggregated: one event per changed row, through the outbox, readable by any consumer."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from aggregation.keys import KeyFormat
from tributary import catalog
from tributary.events import decode, encode, make_event
from tributary.keys import Keys
from tributary.streams import client as streams
from tributary.tracing import parse_traceparent

from .conftest import DAY, AppFactory, counters, outbox_events

pytestmark = pytest.mark.asyncio


async def published(redis_client: aioredis.Redis, keys: Keys) -> list[dict[str, str]]:
    return [
        f for _, f in await streams.entries(redis_client, keys.stream(catalog.USAGE_AGGREGATED))
    ]


async def test_changed_rows_publish_usage_aggregated_once(
    make_app: AppFactory, redis_client: aioredis.Redis, key_format: KeyFormat, keys: Keys
) -> None:
    values = {("m1", "calls"): 5, ("m2", "calls"): 7, ('m"3\\', "emails"): 1}
    await counters(redis_client, key_format, values)
    res, app = await make_app()
    registry = catalog.default_registry()

    first = await app.aggregator.aggregate(DAY)
    assert first.events == 3
    while await res.relay.relay_once():
        pass
    events = [decode(fields, registry) for fields in await published(redis_client, keys)]
    payloads = {(p.merchant_id, p.metric): p for p in
                (e.payload(catalog.UsageAggregated) for e in events)}  # fmt: skip
    assert {k: p.value for k, p in payloads.items()} == values
    assert all(p.date == DAY and p.previous is None and p.final for p in payloads.values())
    assert len({e.id for e in events}) == 3
    for event in events:
        assert event.type == "usage.aggregated"
        assert event.source == "aggregation"
        assert parse_traceparent(event.traceparent) is not None
        # the same envelope the library's encode() gives
        reference = make_event("usage.aggregated", event.data, "aggregation", registry)
        assert set(encode(event)) == set(encode(reference)) | {"traceparent"}
    raw = await published(redis_client, keys)
    assert all(set(json.loads(f["data"])) <= set(catalog.UsageAggregated.model_fields) for f in raw)
    assert events[0].id[14] == "7", "UUIDv7 ids"

    again = await app.aggregator.aggregate(DAY)
    assert again.events == 0
    assert len(outbox_events(res.engine)) == 3

    await redis_client.incrby(key_format.counter("m2", DAY, "calls"), 3)
    third = await app.aggregator.aggregate(DAY)
    assert third.events == 1
    while await res.relay.relay_once():
        pass
    last = decode((await published(redis_client, keys))[-1], registry)
    payload = last.payload(catalog.UsageAggregated)
    assert (payload.merchant_id, payload.value, payload.previous) == ("m2", 10, 7)


async def test_no_events_when_publishing_is_off(
    make_app: AppFactory, redis_client: aioredis.Redis, key_format: KeyFormat
) -> None:
    await counters(redis_client, key_format, {("m1", "calls"): 5})
    res, app = await make_app(publish_events=False)
    result = await app.aggregator.aggregate(DAY)
    assert result.rows_changed == 1
    assert result.events == 0
    assert outbox_events(res.engine) == []
