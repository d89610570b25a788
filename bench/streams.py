"""Throughput of the streams runner, against a raw redis-py loop measured in the same run.

Prints one JSON object per measurement and, last, the summary line:
{"noop_events_per_s": ..., "raw_events_per_s": ..., "inbox_events_per_s": ...}

``runner_one_redis_command_per_event`` is a handler that awaits one ``INCR`` (the
peers harness's handler); ``bare_redis_incr_16_lanes`` is its ceiling: the same
INCRs from as many tasks as the runner has lanes, with no runner at all.

Tracing stays on as in production: every handler call gets a consumer span
(per-event handlers: one span per event, built by tributary.spans), exported
through the SDK's BatchSpanProcessor to an exporter that drops them.
Env: REDIS_URL, DATABASE_URL (defaults: the local services), BENCH_EVENTS.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
import sqlalchemy as sa
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer
from pydantic import BaseModel
from sqlalchemy.orm import Session

from bench._spans import DropExporter
from tributary.db import ensure_schema, make_engine, make_sessionmaker
from tributary.events import Event, Registry, encode, make_event
from tributary.inbox import aprocess_once, inbox_table
from tributary.keys import Keys
from tributary.metrics import Metrics
from tributary.runtime import tune_gc
from tributary.streams import client
from tributary.streams.runner import RunnerOptions, StreamRunner

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
EVENTS = int(os.environ.get("BENCH_EVENTS", "100000"))
BATCH = 1000
STREAM = "bench.events"


class Sample(BaseModel):
    node: str
    upload: int
    download: int


def make_tracer() -> tuple[Tracer, TracerProvider, DropExporter]:
    exporter = DropExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=65536))
    return provider.get_tracer("bench"), provider, exporter


async def fill(redis: aioredis.Redis, key: str, registry: Registry, n: int) -> None:
    """XADD n encoded events (untimed set-up), with a traceparent as a producer would."""
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for start in range(0, n, 5000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + 5000)):
                event = make_event(
                    "bench.sample",
                    {"node": f"n{i % 100}", "upload": i, "download": 2 * i},
                    "bench",
                    registry,
                    traceparent=tp,
                )
                client.add(pipe, key, encode(event))
            await pipe.execute()


async def raw_loop(redis: aioredis.Redis, key: str) -> None:
    """The floor: XREADGROUP + XACK and nothing else."""
    await redis.xgroup_create(key, "raw", id="0")
    while True:
        got = await client.read_group(redis, "raw", "c", key, BATCH, None)
        if not got:
            return
        await redis.xack(key, "raw", *[i for i, _ in got])


async def bare_incr_lanes(redis: aioredis.Redis, counter: str, n: int, lanes: int) -> None:
    """The ceiling of a per-event handler that awaits one Redis command: ``lanes`` tasks
    awaiting ``INCR`` in turn on one redis-py client, with no stream, runner or span."""
    todo = iter(range(n))

    async def lane() -> None:
        for _ in todo:
            await redis.incr(counter)

    await asyncio.gather(*(lane() for _ in range(lanes)))


async def inbox_drain(
    redis: aioredis.Redis, keys: Keys, registry: Registry, tracer: Tracer
) -> None:
    """A batch handler whose effect row and inbox rows commit in one PostgreSQL transaction."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    engine = make_engine(DATABASE_URL, schema=schema)
    ensure_schema(engine, schema)
    metadata = sa.MetaData(schema=schema)  # not a same-named table elsewhere on the path
    inbox_table(metadata)
    effects = sa.Table(
        "effects",
        metadata,
        sa.Column("event_id", sa.String(64)),
        sa.Column("upload", sa.BigInteger),
    )
    metadata.create_all(engine)
    sessions = make_sessionmaker(engine)
    options = RunnerOptions(batch_size=BATCH, block_ms=10, housekeeping_interval_s=3600)
    runner = StreamRunner(
        redis, STREAM, "inbox", "c", tracer=tracer, registry=registry, keys=keys,
        options=options, metrics=Metrics(),
    )  # fmt: skip

    @runner.batch_handler("bench.sample")
    async def record(events: list[Event]) -> None:
        uploads = {e.id: e.payload(Sample).upload for e in events}

        def write(session: Session, new_ids: set[str]) -> None:
            session.execute(
                effects.insert(), [{"event_id": i, "upload": uploads[i]} for i in new_ids]
            )

        await aprocess_once(sessions, "inbox", list(uploads), write)

    try:
        await runner.drain(timeout=600, fail_fast=True)
        with engine.connect() as conn:
            written = conn.execute(sa.text("SELECT count(*) FROM effects")).scalar_one()
        assert written == EVENTS, f"inbox bench wrote {written} of {EVENTS}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


async def timed(label: str, n: int, fn: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await fn()
    elapsed = time.perf_counter() - started
    rate = n / elapsed
    print(
        json.dumps(
            {"case": label, "events": n, "seconds": round(elapsed, 3), "events_per_s": round(rate)}
        )
    )
    return rate


async def main() -> None:
    redis = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    keys = Keys(f"bench:{uuid.uuid4().hex[:8]}:")
    key = keys.stream(STREAM)
    registry = Registry()
    registry.register("bench.sample", Sample)
    tracer, provider, exporter = make_tracer()
    options = RunnerOptions(batch_size=BATCH, block_ms=10, housekeeping_interval_s=3600)
    try:
        await fill(redis, key, registry, EVENTS)
        raw = await timed("raw_xreadgroup_xack", EVENTS, lambda: raw_loop(redis, key))

        tune_gc()  # as every service does at start-up
        runner = StreamRunner(
            redis, STREAM, "noop", "c", tracer=tracer, registry=registry, keys=keys,
            options=options, metrics=Metrics(),
        )  # fmt: skip

        @runner.handler("bench.sample")
        async def noop(event: Event) -> None:
            return None

        noop_rate = await timed("runner_noop", EVENTS, runner.drain)
        batch_runner = StreamRunner(
            redis, STREAM, "noop-batch", "c", tracer=tracer, registry=registry, keys=keys,
            options=options, metrics=Metrics(),
        )  # fmt: skip

        @batch_runner.batch_handler("bench.sample")
        async def noop_batch(events: list[Event]) -> None:
            return None

        batch_rate = await timed("runner_noop_batch_handler", EVENTS, batch_runner.drain)
        counter = keys.key("bench:incr")
        ceiling = await timed(
            "bare_redis_incr_16_lanes",
            EVENTS,
            lambda: bare_incr_lanes(redis, counter, EVENTS, options.concurrency),
        )
        incr_runner = StreamRunner(
            redis, STREAM, "incr", "c", tracer=tracer, registry=registry, keys=keys,
            options=options, metrics=Metrics(),
        )  # fmt: skip

        @incr_runner.handler("bench.sample")
        async def incr(event: Event) -> None:
            await redis.incr(counter)

        incr_rate = await timed("runner_one_redis_command_per_event", EVENTS, incr_runner.drain)
        inbox_rate = await timed(
            "runner_inbox_postgresql", EVENTS, lambda: inbox_drain(redis, keys, registry, tracer)
        )
        provider.force_flush()
        print(json.dumps({"case": "spans_exported", "spans": exporter.count}))
        summary = {
            "noop_events_per_s": round(noop_rate),
            "raw_events_per_s": round(raw),
            "inbox_events_per_s": round(inbox_rate),
            "noop_vs_raw": round(noop_rate / raw, 3),
            "noop_batch_events_per_s": round(batch_rate),
            "noop_batch_vs_raw": round(batch_rate / raw, 3),
            "incr_events_per_s": round(incr_rate),
            "incr_vs_raw": round(incr_rate / raw, 3),
            "bare_incr_per_s": round(ceiling),
            "incr_vs_bare_incr": round(incr_rate / ceiling, 3),
        }
        print(json.dumps(summary))
    finally:
        provider.shutdown()
        async for k in redis.scan_iter(match=f"{keys.prefix}*"):
            await redis.delete(k)
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
