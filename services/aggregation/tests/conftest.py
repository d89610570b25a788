"""Fixtures of the aggregation tests: the service's parts on the real Redis and PostgreSQL,
in the test's own key prefix and schema."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any, Protocol, cast

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from aggregation.config import AggregationSettings
from aggregation.keys import KeyFormat
from aggregation.models import merchant_usage as usage
from aggregation.reader import Batch
from aggregation.service import SERVICE, AggregationApp, assemble
from tributary.db import make_sessionmaker
from tributary.keys import Keys
from tributary.outbox import stored_rows
from tributary.service import Resources, Service, close_resources, migrate, open_resources

DAY = date(2025, 3, 10)


class Clock:
    """A settable clock (UTC)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class AppFactory(Protocol):
    async def __call__(
        self,
        *,
        clock: Callable[[], datetime] | None = None,
        after_read: Callable[[Batch], Awaitable[None]] | None = None,
        **settings: Any,
    ) -> tuple[Resources[AggregationSettings], AggregationApp]: ...


@pytest.fixture
def service(pg_schema: str) -> Service[AggregationSettings, AggregationApp]:
    return dataclasses.replace(SERVICE, schema=pg_schema)


@pytest.fixture
def base_settings(redis_url: str, postgres_url: str, keys: Keys) -> dict[str, Any]:
    return {
        "redis_url": redis_url,
        "database_url": postgres_url,
        "stream_prefix": keys.prefix,
        "http_port": 0,
        "log_level": "WARNING",
    }


@pytest.fixture
def key_format(keys: Keys) -> KeyFormat:
    return KeyFormat(keys.prefix)


@pytest.fixture
def clock() -> Clock:
    # late on DAY + 3: DAY is long past its grace period
    return Clock(datetime(2025, 3, 13, 12, 0, tzinfo=UTC))


@pytest.fixture
async def make_app(
    service: Service[AggregationSettings, AggregationApp],
    base_settings: dict[str, Any],
    clock: Clock,
) -> AsyncIterator[AppFactory]:
    opened: list[tuple[Resources[AggregationSettings], AggregationApp]] = []
    migrated = False

    async def factory(
        *,
        clock: Callable[[], datetime] | None = clock,
        after_read: Callable[[Batch], Awaitable[None]] | None = None,
        **settings: Any,
    ) -> tuple[Resources[AggregationSettings], AggregationApp]:
        nonlocal migrated
        config = AggregationSettings(**{**base_settings, **settings})
        res = await open_resources(service, config)
        if not migrated:
            migrate(service, res.engine)
            migrated = True
        app = assemble(res, clock=clock or (lambda: datetime.now(UTC)), after_read=after_read)
        opened.append((res, app))
        return res, app

    yield factory
    for res, app in reversed(opened):
        await app.aclose()
        await close_resources(res)


@pytest.fixture
async def app(make_app: AppFactory) -> tuple[Resources[AggregationSettings], AggregationApp]:
    return await make_app()


def rows_of(engine: Engine, day: date = DAY) -> dict[tuple[str, str], int]:
    with make_sessionmaker(engine)() as session:
        stmt = sa.select(usage.c.merchant_id, usage.c.metric, usage.c.metric_value).where(
            usage.c.usage_date == day
        )
        return {(m, k): int(v) for m, k, v in session.execute(stmt)}


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def outbox_events(engine: Engine) -> list[dict[str, str]]:
    """The entries of every usage.aggregated event in the outbox (published or not), in
    order, as the service's relay makes them from its rendered pages."""
    with engine.connect() as conn:
        rows = stored_rows(conn, SERVICE.renderers)
    assert all(row.problem is None for row in rows), [row.problem for row in rows]
    return [entry for row in rows for entry in row.entries]


async def counters(
    client: aioredis.Redis, keys: KeyFormat, values: dict[tuple[str, str], int], day: date = DAY
) -> None:
    """Counters written by a foreign writer: plain SET, no index."""
    async with client.pipeline(transaction=False) as pipe:
        for (merchant, metric), value in values.items():
            pipe.set(keys.counter(merchant, day, metric), value)
        await pipe.execute()


async def redis_values(
    client: aioredis.Redis, keys: KeyFormat, day: date = DAY
) -> dict[tuple[str, str], int]:
    """Every well-formed counter of ``day`` in Redis, as the aggregator should store them."""
    found: dict[tuple[str, str], int] = {}
    async for key in client.scan_iter(match=keys.pattern(day), count=1000):
        merchant, _, metric = key[len(keys.counter_prefix) :].split(":")
        found[(merchant, metric)] = int(cast(str, await client.get(key)))
    return found
