"""Demo profile: the scenario's generators (simulators.scenario, as in ``make demo``):
traffic counters, usage counters and device readings every 2 s, written the way the
real writers do (traffic_sync.counters, aggregation.tracking, alert's POST /readings)."""

from __future__ import annotations

import asyncio
import json
import os
import time

import httpx
import redis.asyncio as aioredis

from simulators.scenario import Scenario

REDIS_URL = os.environ.get("REDIS_URL", "redis://redis:6379/0")
PREFIX = os.environ.get("STREAM_PREFIX", "")
ALERT_URL = os.environ.get("ALERT_URL", "http://alert:8000")


async def main() -> None:
    scenario = Scenario(seed=int(os.environ.get("DEMO_SEED", "7")), prefix=PREFIX)
    redis = aioredis.Redis.from_url(REDIS_URL)
    # the token of the first API_TOKENS entry (name:token:scopes)
    token = os.environ["API_TOKENS"].split(",")[0].strip().split(":")[1]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=10, headers=headers) as http:
        while True:
            try:
                await scenario.step(redis, http, ALERT_URL)
            except (OSError, httpx.HTTPError, aioredis.RedisError) as exc:
                print(json.dumps({"step": "failed", "error": str(exc)}), flush=True)
            if scenario.step_no % 30 == 0:
                print(json.dumps({"step": scenario.step_no, "time": time.time()}), flush=True)
            await asyncio.sleep(2)


if __name__ == "__main__":
    asyncio.run(main())
