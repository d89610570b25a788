"""traffic_sync: 100,000 dirty nodes flushed from Redis into MariaDB.

Measures, in one run against the local Redis and MariaDB:

- ``flush``: a full flush cycle as the service runs it, default settings
  (index + SCAN discovery, Lua moves, one transaction per 4,000-node batch
  with its ledger row, multi-row upserts of 1,000 rows with read-back of the
  totals, one ``traffic.flushed`` event per node in rendered outbox pages of
  1,000 (the nodes' numbers; the relay renders the events),
  Redis clean-up; four batches in flight);
- ``flush_without_events``: the same with ``TRAFFIC_SYNC_PUBLISH_EVENTS=false``;
- ``plain_insert``: the floor: the same rows written by plain multi-row
  INSERTs (1,000 rows per statement, one transaction) into an empty table;
- ``relay``: publishing the flush's events to the stream (not part of the
  flush: the relay does it in the background);
- ``outbox_insert``: not a target, the floor of the events' share: the
  flush's rendered pages for 100,000 ``traffic.flushed`` events alone, made
  beforehand and written as the flush writes them (a row per 1,000 events,
  one statement per batch), in one transaction into an empty table.

Each case opens its database connections before its clock starts (the
flush: one per batch in flight), as a running service has them in its pool:
opening one costs ~20 ms of CPU here (PyMySQL builds a TLS context for every
connection, even where the server offers no TLS), which is set-up, not work.

They run in the order plain_insert, flush_without_events, flush, relay,
outbox_insert, each in a fresh database: MariaDB's small default buffer pool
and redo log are still writing back a heavy phase's pages while the next one
runs.

Prints one JSON object per measurement and, last, the summary line:
{"nodes": ..., "seconds": ..., "nodes_per_s": ..., "plain_insert_rows_per_s": ...}

Env: REDIS_URL, MYSQL_URL (defaults: the local services), BENCH_NODES (100000).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from bench._spans import DropExporter
from traffic_sync.config import DEFAULT_BATCH_SIZE
from traffic_sync.counters import TrafficKeys
from traffic_sync.flush import Flusher, FlushOptions
from traffic_sync.metrics import FlushMetrics
from traffic_sync.models import node_traffic
from traffic_sync.mover import Mover
from traffic_sync.publishing import RENDERER, Shared, flushed_pages
from traffic_sync.repository import NodeTotals, utcnow
from traffic_sync.service import SERVICE
from tributary import catalog
from tributary.db import make_engine, make_sessionmaker
from tributary.events import new_event_id, utc_now_rfc3339
from tributary.keys import Keys
from tributary.outbox import OutboxRelay, add_rendered_pages, outbox_table
from tributary.runtime import tune_gc
from tributary.service import migrate
from tributary.telemetry import Telemetry, setup_telemetry

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
MYSQL_URL = os.environ.get("MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
NODES = int(os.environ.get("BENCH_NODES", "100000"))
CHUNK = 1000
#: nodes per flush batch (the service's default)
BATCH = DEFAULT_BATCH_SIZE
FILL_PIPELINE = 5000


def report(case: str, rows: int, seconds: float, **extra: object) -> float:
    rate = rows / seconds
    line = {"case": case, "rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rate)}
    print(json.dumps(line | extra), flush=True)
    return rate


def amounts(node: int) -> tuple[int, int]:
    return 1000 + node % 977, 500 + node % 313


async def fill(redis: aioredis.Redis, keys: TrafficKeys, n: int) -> None:
    """n dirty nodes, as record_traffic leaves them (untimed set-up)."""
    for start in range(0, n, FILL_PIPELINE):
        async with redis.pipeline(transaction=False) as pipe:
            for node in range(start, min(n, start + FILL_PIPELINE)):
                up, down = amounts(node)
                key = keys.node(node)
                pipe.hset(key, mapping={"upload": up, "download": down})
                pipe.expire(key, 86400)
            pipe.sadd(keys.dirty, *range(start, min(n, start + FILL_PIPELINE)))
            await pipe.execute()


def create_database(name: str) -> str:
    admin = sa.create_engine(MYSQL_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
    admin.dispose()
    return make_url(MYSQL_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    admin = sa.create_engine(MYSQL_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


def open_connections(engine: Engine, n: int) -> None:
    """Put ``n`` connections into the engine's pool (untimed set-up)."""
    connections = [engine.connect() for _ in range(n)]
    for connection in connections:
        connection.close()


def check_totals(engine: Engine, n: int) -> None:
    expected_up = sum(amounts(node)[0] for node in range(n))
    with engine.connect() as conn:
        rows, up = conn.execute(
            sa.select(sa.func.count(), sa.func.sum(node_traffic.c.upload_bytes))
        ).one()
    assert (rows, up) == (n, expected_up), f"flushed {rows} nodes / {up} bytes"


def plain_insert(n: int) -> tuple[float, str]:
    """The floor: the same rows, plain multi-row INSERTs into an empty table of the
    same shape; (seconds, database)."""
    database = f"bench_traffic_{uuid.uuid4().hex[:8]}"
    engine = make_engine(create_database(database), schema=None)
    node_traffic.to_metadata(sa.MetaData(), name="plain_traffic").create(engine)
    open_connections(engine, 1)
    now = utcnow()
    started = time.perf_counter()
    with engine.begin() as conn:
        for start in range(0, n, CHUNK):
            params: list[object] = []
            nodes = range(start, min(n, start + CHUNK))
            for node in nodes:
                up, down = amounts(node)
                params += (node, up, down, up + down, now)
            values = ",".join(["(%s,%s,%s,%s,%s)"] * len(nodes))
            conn.exec_driver_sql(
                "INSERT INTO plain_traffic"
                " (node_id, upload_bytes, download_bytes, traffic_used_bytes, updated_at)"
                f" VALUES {values}",
                tuple(params),
            )
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed, database


def outbox_insert(n: int) -> tuple[float, str]:
    """The events' outbox rows alone, as the flush writes them; (seconds, database)."""
    database = f"bench_traffic_{uuid.uuid4().hex[:8]}"
    engine = make_engine(create_database(database), schema=None)
    outbox_table(sa.MetaData()).create(engine)
    traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    with make_sessionmaker(engine)() as session:
        totals = [NodeTotals(node, *amounts(node), *amounts(node), sum(amounts(node)), None)
                  for node in range(n)]  # fmt: skip
        batches = []
        for start in range(0, n, BATCH):
            shared = Shared(new_event_id(), SERVICE.name, "1", utc_now_rfc3339(), traceparent)
            batches.append(flushed_pages(totals[start : start + BATCH], shared))
        started = time.perf_counter()
        for pages in batches:
            add_rendered_pages(session, catalog.TRAFFIC_FLUSHED, RENDERER, pages)
        session.commit()
        elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed, database


async def flush_once(
    redis: aioredis.Redis, telemetry: Telemetry, publish: bool
) -> tuple[float, str, Keys, Engine]:
    """Fill n nodes, flush them as the service does; (seconds, database, keys, engine)."""
    database = f"bench_traffic_{uuid.uuid4().hex[:8]}"
    keys = Keys(f"bench:{uuid.uuid4().hex[:8]}:")
    engine = make_engine(create_database(database), schema=None)
    telemetry.instrument_engine(engine)
    migrate(SERVICE, engine)
    tkeys = TrafficKeys(keys)
    await fill(redis, tkeys, NODES)
    options = FlushOptions(publish_events=publish)
    open_connections(engine, options.concurrency)
    flusher = Flusher(
        Mover(redis, tkeys),
        make_sessionmaker(engine),
        tracer=telemetry.tracer,
        registry=catalog.default_registry(),
        metrics=FlushMetrics(),
        options=options,
    )
    started = time.perf_counter()
    result = await flusher.flush()
    elapsed = time.perf_counter() - started
    assert result.nodes == NODES, f"flushed {result.nodes} of {NODES}"
    assert result.events == (NODES if publish else 0)
    check_totals(engine, NODES)
    return elapsed, database, keys, engine


async def relay_all(engine: Engine, redis: aioredis.Redis, keys: Keys) -> float:
    relay = OutboxRelay(engine, redis, keys, renderers=SERVICE.renderers)
    started = time.perf_counter()
    try:
        while await relay.relay_once():
            pass
    finally:
        relay.close()
    return time.perf_counter() - started


async def cleanup(redis: aioredis.Redis, keys: Keys) -> None:
    batch = [k async for k in redis.scan_iter(match=f"{keys.prefix}*", count=1000)]
    for start in range(0, len(batch), 1000):
        await redis.delete(*batch[start : start + 1000])


async def main() -> None:
    redis = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    exporter = DropExporter()
    # tracing as in production (Redis and SQLAlchemy instrumented), spans batched and dropped
    telemetry = setup_telemetry("traffic_sync", None, exporter=exporter, batch=True)
    telemetry.instrument_redis(redis)
    tune_gc()  # as every service does at start-up
    databases: list[str] = []
    used_keys: list[Keys] = []
    try:
        # lightest first (see the module's docstring)
        plain_seconds, database = plain_insert(NODES)
        databases.append(database)
        plain_rate = report("plain_insert", NODES, plain_seconds)

        seconds_quiet, database, keys, engine = await flush_once(redis, telemetry, publish=False)
        databases.append(database)
        used_keys.append(keys)
        quiet_rate = report("flush_without_events", NODES, seconds_quiet)
        engine.dispose()

        seconds, database, keys, engine = await flush_once(redis, telemetry, publish=True)
        databases.append(database)
        used_keys.append(keys)
        flush_rate = report("flush", NODES, seconds, events=NODES)
        relay_seconds = await relay_all(engine, redis, keys)
        report("relay", NODES, relay_seconds)
        engine.dispose()
        outbox_seconds, database = outbox_insert(NODES)
        databases.append(database)
        outbox_rate = report("outbox_insert", NODES, outbox_seconds)
        telemetry.provider.force_flush()
        print(json.dumps({"case": "spans_exported", "spans": exporter.count}))
        summary = {
            "nodes": NODES,
            "seconds": round(seconds, 3),
            "nodes_per_s": round(flush_rate),
            "plain_insert_rows_per_s": round(plain_rate),
            "vs_plain_insert": round(flush_rate / plain_rate, 3),
            "seconds_without_events": round(seconds_quiet, 3),
            "nodes_per_s_without_events": round(quiet_rate),
            "without_events_vs_plain_insert": round(quiet_rate / plain_rate, 3),
            "outbox_rows_alone_vs_plain_insert": round(outbox_rate / plain_rate, 3),
        }
        print(json.dumps(summary))
    finally:
        for keys in used_keys:
            await cleanup(redis, keys)
        for database in databases:
            drop_database(database)
        telemetry.shutdown()
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
