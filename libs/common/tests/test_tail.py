from __future__ import annotations

import io

import redis.asyncio as aioredis
from opentelemetry.trace import NoOpTracer
from rich.console import Console

from tributary.events import make_event
from tributary.keys import Keys
from tributary.streams import client
from tributary.streams.producer import Producer
from tributary.tail import tail


async def test_tail_prints_decoded_entries_and_group_lag(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    producer = Producer(redis_client, NoOpTracer(), keys)
    await producer.publish("alerts", make_event("alert.triggered", {"rule": "r1"}, "alert"))
    await client.add(redis_client, keys.stream("alerts"), {"junk": "1"})
    await redis_client.xgroup_create(keys.stream("alerts"), "notifier", id="0")
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    printed = await tail(redis_client, keys, ["alerts"], console, from_start=True, count=2)
    text = out.getvalue()
    assert printed == 2
    assert "alert.triggered from alert" in text
    assert '{"rule": "r1"}' in text
    assert "MALFORMED" in text
    assert "group notifier: lag 2, pending 0" in text
