"""traffic_sync's history: the outbox revision converts the rendered pages the version
before wrote, and the relay publishes them as that version would have; on MySQL/MariaDB
and on PostgreSQL."""

from __future__ import annotations

import base64
import json
import zlib
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from traffic_sync.publishing import RENDERER, Shared, flushed_pages, render_page
from traffic_sync.repository import NodeTotals
from traffic_sync.service import MIGRATIONS, SERVICE
from tributary import catalog
from tributary.db import make_engine
from tributary.events import new_event_id
from tributary.keys import Keys
from tributary.migrate import check_migrations, run_migrations
from tributary.outbox import RENDERED, OutboxRelay
from tributary.streams import client

TOTALS = [NodeTotals(n, n, 2 * n, 10 * n, 20 * n, 30 * n, None if n % 2 else 1000)
          for n in range(1, 6)]  # fmt: skip


def old_fields(args: object) -> str:
    """A rendered page's ``fields`` as the version before the format column wrote them."""
    text = json.dumps({"$render": RENDERER, "args": args}, separators=(",", ":"))
    return "zlib:" + base64.b64encode(zlib.compress(text.encode(), 1)).decode("ascii")


@pytest.mark.parametrize("dialect", ["mysql", "postgresql"])
async def test_pages_of_the_version_before_are_published_the_same_after_the_upgrade(
    dialect: str, request: pytest.FixtureRequest, redis_client: aioredis.Redis, keys: Keys
) -> None:
    if dialect == "postgresql":
        schema: str | None = request.getfixturevalue("pg_schema")
        engine = make_engine(request.getfixturevalue("postgres_url"), schema=schema)
    else:
        schema, engine = None, make_engine(request.getfixturevalue("mysql_database_url"))
    try:
        run_migrations(engine, MIGRATIONS, schema, SERVICE.version_table, "0001")
        shared = Shared(new_event_id(), "traffic_sync", "1", "2026-12-04T00:00:00.000Z")
        pages = flushed_pages(TOTALS, shared, chunk=2)
        insert = sa.text("INSERT INTO outbox (stream, event_id, fields, created_at)"
                         " VALUES (:stream, :event_id, :fields, :created_at)")  # fmt: skip
        now = datetime.now(UTC)
        with engine.begin() as conn:
            for first_id, args in pages:
                conn.execute(insert, {"stream": catalog.TRAFFIC_FLUSHED, "event_id": first_id,
                                      "fields": old_fields(args), "created_at": now})  # fmt: skip
        run_migrations(engine, MIGRATIONS, schema, SERVICE.version_table)
        check_migrations(engine, MIGRATIONS, schema, SERVICE.version_table)
        with engine.connect() as conn:
            formats = conn.execute(sa.text("SELECT format FROM outbox ORDER BY id")).scalars()
            assert list(formats) == [RENDERED] * 3

        relay = OutboxRelay(engine, redis_client, keys, renderers=SERVICE.renderers)
        try:
            while await relay.relay_once():
                pass
        finally:
            relay.close()
    finally:
        engine.dispose()
    published = await client.entries(redis_client, keys.stream(catalog.TRAFFIC_FLUSHED))
    assert [fields for _, fields in published] == [
        e for _, args in pages for e in render_page(args)
    ]
