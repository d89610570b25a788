"""The revision that gave outbox rows a format: rows the writer's SQL queued before it are
published unchanged after it (the history itself is tested in tests/test_migrations.py)."""

from __future__ import annotations

import json

import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from aggregation.publishing import EVENT_TYPE, STREAM
from aggregation.service import MIGRATIONS, SERVICE
from tributary import catalog
from tributary.events import decode, encode, make_event
from tributary.keys import Keys
from tributary.migrate import run_migrations
from tributary.outbox import ENTRY, OutboxRelay
from tributary.streams import client

from .conftest import DAY

VERSION_TABLE = "alembic_version_aggregation"


async def test_events_the_version_before_queued_are_published_after_the_upgrade(
    pg_engine: Engine, pg_schema: str, redis_client: aioredis.Redis, keys: Keys
) -> None:
    """Rows the writer's SQL queued before the format column (one event each) become
    entries and go out unchanged."""
    run_migrations(pg_engine, MIGRATIONS, pg_schema, VERSION_TABLE, "0001")
    registry = catalog.default_registry()
    payloads = [
        catalog.UsageAggregated(merchant_id=f"m{n}", date=DAY, metric="calls", value=n)
        for n in range(3)
    ]
    events = [make_event(EVENT_TYPE, p, "aggregation", registry) for p in payloads]
    with pg_engine.begin() as conn:
        for event in events:
            conn.execute(
                sa.text(
                    "INSERT INTO outbox (stream, event_id, fields, created_at)"
                    " VALUES (:stream, :event_id, :fields, now())"
                ),
                {"stream": STREAM, "event_id": event.id, "fields": json.dumps(encode(event))},
            )
    run_migrations(pg_engine, MIGRATIONS, pg_schema, VERSION_TABLE)
    with pg_engine.connect() as conn:
        formats = conn.execute(sa.text("SELECT format FROM outbox ORDER BY id")).scalars()
        assert list(formats) == [ENTRY] * 3
    relay = OutboxRelay(pg_engine, redis_client, keys, renderers=SERVICE.renderers)
    try:
        assert await relay.relay_once() == 3
    finally:
        relay.close()
    published = await client.entries(redis_client, keys.stream(STREAM))
    assert [decode(fields, registry) for _, fields in published] == events
