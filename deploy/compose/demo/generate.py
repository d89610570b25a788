"""Demo profile: the scenario's generators (simulators.scenario, as in ``make demo``):
traffic counters, usage counters and device readings every 2 s, written the way the
real writers do (traffic_sync.counters, aggregation.tracking, alert's POST /readings).

After every step it writes what it has written so far (the scenario's oracle) to
``DEMO_ORACLE`` (default ``/demo/oracle.json``, replaced atomically), which the compose
end-to-end test compares with the services' tables. SIGTERM (``docker compose stop``)
lets the step under way finish, writes the oracle a last time and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from simulators.scenario import Scenario

REDIS_URL = os.environ.get("REDIS_URL", "redis://redis:6379/0")
PREFIX = os.environ.get("STREAM_PREFIX", "")
ALERT_URL = os.environ.get("ALERT_URL", "http://alert:8000")
ORACLE = Path(os.environ.get("DEMO_ORACLE", "/demo/oracle.json"))
EVERY_SECONDS = float(os.environ.get("DEMO_STEP_SECONDS", "2"))


def write_oracle(scenario: Scenario) -> None:
    temporary = ORACLE.with_suffix(".tmp")
    temporary.write_text(json.dumps({"steps": scenario.step_no, **scenario.oracle.to_json()}))
    os.replace(temporary, ORACLE)


async def main() -> None:
    scenario = Scenario(seed=int(os.environ.get("DEMO_SEED", "7")), prefix=PREFIX)
    redis = aioredis.Redis.from_url(REDIS_URL)
    # the token of the first API_TOKENS entry (name:token:scopes)
    token = os.environ["API_TOKENS"].split(",")[0].strip().split(":")[1]
    headers = {"Authorization": f"Bearer {token}"}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with httpx.AsyncClient(timeout=10, headers=headers) as http:
        while not stop.is_set():
            try:
                await scenario.step(redis, http, ALERT_URL)
            except (OSError, httpx.HTTPError, aioredis.RedisError) as exc:
                print(json.dumps({"step": "failed", "error": str(exc)}), flush=True)
            write_oracle(scenario)
            if scenario.step_no % 30 == 0:
                print(json.dumps({"step": scenario.step_no, "time": time.time()}), flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), EVERY_SECONDS)
    await redis.aclose()
    print(json.dumps({"stopped_after_steps": scenario.step_no}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
