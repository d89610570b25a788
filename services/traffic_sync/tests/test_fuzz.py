"""schemathesis against the traffic_sync API over real HTTP: no 5xx, every answer as
documented."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import Engine

from traffic_sync.api import make_router
from traffic_sync.counters import TrafficKeys, record_traffic
from tributary.db import make_sessionmaker
from tributary.metrics import Metrics
from tributary_testing.auth import AUTH, check_every_operation_needs_a_token, secured_app
from tributary_testing.fuzz import fuzz_api

pytestmark = pytest.mark.fuzz


async def test_fuzzing_the_api_finds_no_server_error_and_no_undocumented_answer(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine
) -> None:
    await record_traffic(redis_client, 0, 100, 50, keys=tkeys)
    router = make_router(make_sessionmaker(mysql_engine), redis_client, tkeys)
    app = secured_app("traffic_sync", Metrics(), [router])
    assert await check_every_operation_needs_a_token(app) > 0
    run = await fuzz_api(app, headers=AUTH)
    assert run.passed, run.output
    print(run.summary())
