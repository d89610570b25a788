"""Fixtures of traffic_sync's tests: a migrated MySQL database, flushers, spans."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from traffic_sync.counters import TrafficKeys
from traffic_sync.flush import Checkpoint, Flusher, FlushOptions, no_checkpoint
from traffic_sync.metrics import FlushMetrics
from traffic_sync.mover import Mover
from traffic_sync.service import MIGRATIONS, SERVICE
from tributary import catalog
from tributary.db import make_engine, make_sessionmaker
from tributary.keys import Keys
from tributary.migrate import run_migrations
from tributary.service import migrate
from tributary_testing.process import service_env


@pytest.fixture
def tkeys(keys: Keys) -> TrafficKeys:
    return TrafficKeys(keys)


@pytest.fixture
def env(redis_url: str, mysql_database_url: str, tkeys: TrafficKeys) -> dict[str, str]:
    """The environment of ``python -m traffic_sync`` on the test's Redis prefix and database."""
    return service_env(
        redis_url=redis_url,
        database_url=mysql_database_url,
        stream_prefix=tkeys.keys.prefix,
        drop_prefixes=("TRAFFIC_SYNC_",),
        CONSUMER_NAME="traffic-sync-0",
        SHUTDOWN_TIMEOUT_SECONDS="15",
    )


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def pg_traffic_engine(postgres_url: str, pg_schema: str) -> Iterator[Engine]:
    """traffic_sync's tables on PostgreSQL (the dialect switch), in the test's schema."""
    engine = make_engine(postgres_url, schema=pg_schema)
    run_migrations(engine, MIGRATIONS, pg_schema, SERVICE.version_table)
    yield engine
    engine.dispose()


@pytest.fixture
def mysql_engine(mysql_database_url: str) -> Iterator[Engine]:
    engine = make_engine(mysql_database_url, schema=SERVICE.schema)
    migrate(SERVICE, engine)
    yield engine
    engine.dispose()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(spans: InMemorySpanExporter) -> Iterator[Tracer]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield provider.get_tracer("test")
    provider.shutdown()


FlusherFactory = Callable[..., Flusher]


def build_flusher(
    redis: aioredis.Redis,
    sessions: sessionmaker[Session],
    tkeys: TrafficKeys,
    tracer: Tracer,
    *,
    discovery: str = "both",
    metrics: FlushMetrics | None = None,
    checkpoint: Checkpoint = no_checkpoint,
    **options: Any,
) -> Flusher:
    return Flusher(
        Mover(redis, tkeys, discovery=discovery, scan_count=100),  # type: ignore[arg-type]
        sessions,
        tracer=tracer,
        registry=catalog.default_registry(),
        metrics=metrics or FlushMetrics(),
        options=FlushOptions(**options),
        checkpoint=checkpoint,
    )


@pytest.fixture
def make_flusher(
    redis_client: aioredis.Redis, mysql_engine: Engine, tkeys: TrafficKeys, tracer: Tracer
) -> FlusherFactory:
    """Flushers on the test's MySQL database and Redis prefix."""
    sessions = make_sessionmaker(mysql_engine)

    def make(**kwargs: Any) -> Flusher:
        return build_flusher(redis_client, sessions, tkeys, tracer, **kwargs)

    return make
