"""Fixtures: a snapshot service on the real Redis and PostgreSQL plus the Outline simulator."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from simulators.outline import ManualClock, OutlineSimulator
from snapshot.service import SERVICE, assemble
from tributary.keys import Keys
from tributary.service import close_resources, migrate, open_resources

from .harness import START, Harness, make_settings


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def harness(
    redis_url: str,
    postgres_url: str,
    pg_schema: str,
    keys: Keys,
    clock: ManualClock,
    settings_overrides: dict[str, Any],
) -> AsyncIterator[Harness]:
    settings = make_settings(redis_url, postgres_url, keys, **settings_overrides)
    service = dataclasses.replace(SERVICE, schema=pg_schema)
    res = await open_resources(service, settings)
    sim = OutlineSimulator(0, clock=clock, seed=7)
    await sim.start()
    try:
        migrate(service, res.engine)
        app = assemble(res, clock=lambda: datetime.fromtimestamp(clock(), UTC),
                       rng=random.Random(3))  # fmt: skip
        yield Harness(res, app, sim, clock)
        await app.clients.aclose()
    finally:
        await sim.stop()
        await close_resources(res)
