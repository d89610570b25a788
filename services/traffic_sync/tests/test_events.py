"""traffic.flushed events: through the outbox, with correct deltas, totals, limit and trace."""

from __future__ import annotations

import redis.asyncio as aioredis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer
from sqlalchemy.engine import Engine

from traffic_sync import repository
from traffic_sync.counters import TrafficKeys, record_traffic
from traffic_sync.service import SERVICE
from tributary import catalog
from tributary.db import make_sessionmaker
from tributary.events import Event
from tributary.metrics import Metrics
from tributary.outbox import OutboxRelay, count_unpublished
from tributary.streams.runner import RunnerOptions, StreamRunner

from .conftest import FlusherFactory
from .stored import all_traffic


async def test_flushed_events_carry_deltas_totals_limit_and_the_flush_trace(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine,
    make_flusher: FlusherFactory, tracer: Tracer, spans: InMemorySpanExporter,
) -> None:  # fmt: skip
    sessions = make_sessionmaker(mysql_engine)
    with sessions.begin() as session:
        repository.set_limit(session, 2, 1000, repository.utcnow())
    await record_traffic(redis_client, 1, 10, 20, keys=tkeys)
    await record_traffic(redis_client, 2, 300, 400, keys=tkeys)
    flusher = make_flusher(batch_size=1)
    await flusher.flush()
    await record_traffic(redis_client, 2, 1, 2, keys=tkeys)
    await flusher.flush()

    relay = OutboxRelay(mysql_engine, redis_client, tkeys.keys, renderers=SERVICE.renderers)
    try:
        while await relay.relay_once():
            pass
    finally:
        relay.close()
    received: list[Event] = []
    runner = StreamRunner(
        redis_client, catalog.TRAFFIC_FLUSHED, "alert", "alert-0", tracer=tracer,
        registry=catalog.default_registry(), metrics=Metrics(), keys=tkeys.keys,
        options=RunnerOptions(block_ms=10),
    )  # fmt: skip

    @runner.handler("traffic.flushed")
    async def on_flushed(event: Event) -> None:
        received.append(event)

    await runner.drain()
    # batches apply concurrently: the order holds per node, not across nodes
    received.sort(key=lambda e: e.payload(catalog.TrafficFlushed).node_id)
    payloads = [e.payload(catalog.TrafficFlushed) for e in received]
    assert [(p.node_id, p.upload_delta, p.download_delta) for p in payloads] == [
        ("1", 10, 20),
        ("2", 300, 400),
        ("2", 1, 2),
    ]
    assert [(p.upload_total, p.download_total, p.traffic_used_total) for p in payloads] == [
        (10, 20, 30),
        (300, 400, 700),
        (301, 402, 703),
    ]
    assert [p.traffic_limit for p in payloads] == [None, 1000, 1000]
    assert len({p.batch_id for p in payloads}) == 3
    assert all(e.source == "traffic_sync" for e in received)

    finished = spans.get_finished_spans()
    sends = [s for s in finished if s.kind == SpanKind.PRODUCER]
    flushes = [s for s in finished if s.name == "traffic_sync flush"]
    processes = [s for s in finished if s.kind == SpanKind.CONSUMER]
    assert len(sends) == 3
    assert len(processes) == 3
    for event in received:
        send = next(s for s in sends if f"{s.context.span_id:016x}" in (event.traceparent or ""))
        process = next(
            p for p in processes if (p.attributes or {}).get("messaging.message.id") == event.id
        )
        # the producer span belongs to a flush's trace; the consumer continues it
        assert send.context.trace_id in {f.context.trace_id for f in flushes}
        assert process.parent is not None
        assert process.parent.span_id == send.context.span_id
        assert process.context.trace_id == send.context.trace_id


async def test_no_events_when_publishing_is_off(
    redis_client: aioredis.Redis, tkeys: TrafficKeys, mysql_engine: Engine,
    make_flusher: FlusherFactory,
) -> None:  # fmt: skip
    await record_traffic(redis_client, 1, 10, 20, keys=tkeys)
    report = await make_flusher(publish_events=False).flush()
    assert (report.nodes, report.events) == (1, 0)
    with make_sessionmaker(mysql_engine)() as session:
        assert all_traffic(session) == {1: (10, 20, 30)}
        assert count_unpublished(session) == 0
