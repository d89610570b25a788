"""The same flush on PostgreSQL (the dialect switch): ON CONFLICT upserts, the ledger."""

from __future__ import annotations

import redis.asyncio as aioredis
import sqlalchemy as sa
from opentelemetry.trace import Tracer
from sqlalchemy.engine import Engine

from traffic_sync import repository
from traffic_sync.counters import TrafficKeys, record_traffic
from traffic_sync.models import rejects
from tributary.db import make_sessionmaker
from tributary.outbox import count_unpublished

from .conftest import build_flusher
from .stored import all_traffic


async def test_flush_on_postgresql_is_exactly_once_too(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, pg_traffic_engine: Engine, tracer: Tracer,
) -> None:  # fmt: skip
    sessions = make_sessionmaker(pg_traffic_engine)
    with sessions.begin() as session:
        repository.set_limit(session, 3, 500, repository.utcnow())
    for node in range(1, 4):
        await record_traffic(redis_client, node, node * 10, node, keys=tkeys)
    await redis_client.hset(tkeys.node(4), "upload", "bogus")
    flusher = build_flusher(redis_client, sessions, tkeys, tracer, batch_size=2)
    # a batch moved before a "crash", recovered by the flush
    await flusher.mover.move("left-behind", [b"1"])
    report = await flusher.flush()
    assert (report.nodes, report.recovered, report.rejected) == (3, 1, 1)
    await record_traffic(redis_client, 3, 1, 1, keys=tkeys)
    await flusher.flush()
    with sessions() as session:
        assert all_traffic(session) == {
            1: (10, 1, 11),
            2: (20, 2, 22),
            3: (31, 4, 35),
        }
        assert repository.get_node(session, 3).traffic_limit_bytes == 500  # type: ignore[union-attr]
        # four events, a page (one row) per applied batch: the recovered one, {2, 3}, {3}
        assert count_unpublished(session) == 3
        assert session.execute(sa.select(rejects.c.reason)).scalars().all() == ["not_integer"]
