# ruff: noqa: S310  (demo script: fixed http URLs from the compose file)
"""Demo profile: a steady trickle of traffic counters, usage counters and device
readings, written the way the real writers do (traffic_sync.counters, the
aggregation tracking helper, alert's POST /readings)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import time
import urllib.request

import redis
import redis.asyncio as aioredis

from aggregation.tracking import track_usage_sync
from traffic_sync.counters import TrafficKeys, record_traffic
from tributary.streams.names import Keys

REDIS_URL = os.environ.get("REDIS_URL", "redis://redis:6379/0")
PREFIX = os.environ.get("STREAM_PREFIX", "")
ALERT_URL = os.environ.get("ALERT_URL", "http://alert:8000")
NODES = 20
MERCHANTS = [f"merchant-{i}" for i in range(10)]
TANKS = ["reef", "lagoon", "quarantine"]


def readings(step: int) -> list[dict[str, object]]:
    # the reef tank warms up past 28 °C for a while every ten minutes
    warm = 2.5 * max(0.0, math.sin(step / 60 * math.pi))
    return [
        {
            "device_id": f"tank-{tank}",
            "metric": "temp",
            "value": 26 + random.random() + warm * (tank == "reef"),
        }
        for tank in TANKS
    ]


def post_readings(body: list[dict[str, object]]) -> None:
    request = urllib.request.Request(
        f"{ALERT_URL}/readings",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5):
            pass
    except OSError as exc:
        print(json.dumps({"readings": "failed", "error": str(exc)}), flush=True)


async def main() -> None:
    async_client = aioredis.from_url(REDIS_URL)
    sync_client = redis.Redis.from_url(REDIS_URL)
    traffic_keys = TrafficKeys(keys=Keys(prefix=PREFIX))
    step = 0
    while True:
        for node in range(1, NODES + 1):
            await record_traffic(
                async_client,
                node,
                random.randint(0, 50_000_000),
                random.randint(0, 200_000_000),
                keys=traffic_keys,
            )
        for merchant in MERCHANTS:
            track_usage_sync(
                sync_client, merchant, "requests", random.randint(1, 50), prefix=PREFIX
            )
        await asyncio.to_thread(post_readings, readings(step))
        if step % 30 == 0:
            print(json.dumps({"step": step, "time": time.time()}), flush=True)
        step += 1
        await asyncio.sleep(5)


if __name__ == "__main__":
    asyncio.run(main())
