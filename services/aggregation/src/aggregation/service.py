"""The aggregation service: its parts built from the shared resources, and its Service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import redis.asyncio as aioredis

from aggregation import repository as repo
from aggregation.aggregator import Aggregator, AggregatorOptions, Clock, failure_line, utc_now
from aggregation.api import router
from aggregation.config import AggregationSettings
from aggregation.keys import KeyFormat
from aggregation.metrics import AggregationMetrics
from aggregation.policy import RetryPolicy
from aggregation.publishing import EVENT_TYPE, RENDERERS
from aggregation.reader import Batch, CounterReader, ReadOptions, counter_client
from aggregation.scheduler import Scheduler
from aggregation.writer import UsageWriter
from tributary import catalog
from tributary.errors import CycleFailed
from tributary.redis_client import RedisTarget
from tributary.service import Components, Periodic, Resources, Service

NAME = "aggregation"
MIGRATIONS = Path(__file__).parent / "migrations"


class CounterClient:
    """The Redis client of counter reads (:func:`aggregation.reader.counter_client`),
    opened on first use. Separate from the shared client: it decodes leniently."""

    def __init__(self, target: RedisTarget) -> None:
        self._target = target
        self._client: aioredis.Redis | None = None

    def get(self) -> aioredis.Redis:
        if self._client is None:
            self._client = counter_client(self._target)
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


@dataclass
class AggregationApp:
    settings: AggregationSettings
    aggregator: Aggregator
    scheduler: Scheduler
    client: CounterClient
    keys: KeyFormat
    metrics: AggregationMetrics

    async def aclose(self) -> None:
        await self.client.aclose()


def assemble(
    res: Resources[AggregationSettings],
    *,
    clock: Clock = utc_now,
    after_read: Callable[[Batch], Awaitable[None]] | None = None,
) -> AggregationApp:
    settings = res.settings
    client = CounterClient(RedisTarget.of(settings))
    keys = KeyFormat(settings.stream_prefix)
    reader = CounterReader(
        client.get,
        keys,
        ReadOptions(
            discovery=settings.discovery,
            batch_size=settings.batch_size,
            mget_chunk=settings.mget_chunk,
            scan_count=settings.scan_count,
        ),
        after_read,
    )
    writer = UsageWriter(
        res.telemetry.tracer,
        NAME,
        settings.write_method,
        settings.copy_threshold,
        res.service.registry.version_for(EVENT_TYPE),
    )
    metrics = AggregationMetrics.of(res.metrics.registry)
    aggregator = Aggregator(
        res.engine,
        reader,
        writer,
        AggregatorOptions(
            grace=timedelta(hours=settings.finality_grace_hours),
            publish_events=settings.publish_events,
            write_concurrency=settings.write_concurrency,
            max_recorded_errors=settings.max_recorded_errors,
            retry=RetryPolicy(
                settings.retry_base_seconds,
                settings.retry_max_seconds,
                settings.retry_max_attempts,
            ),
        ),
        clock=clock,
        metrics=metrics,
        on_commit=res.relay.wake,
    )
    scheduler = Scheduler(
        aggregator,
        res.sessions,
        interval=timedelta(seconds=settings.interval_seconds),
        lookback_days=settings.lookback_days,
        clock=clock,
    )
    return AggregationApp(settings, aggregator, scheduler, client, keys, metrics)


def build(res: Resources[AggregationSettings]) -> Components[AggregationApp]:
    app = assemble(res)

    async def tick() -> None:
        await app.scheduler.tick()

    periodic = (
        [Periodic("scheduler", app.settings.tick_seconds, tick)]
        if app.settings.scheduler_enabled
        else []
    )
    return Components(
        app=app,
        periodic=periodic,
        routers=[router(res.sessions)],
        release=[app.aclose],
        uses_outbox=True,
        retention=[repo.run_retention(timedelta(days=app.settings.run_retention_days))],
    )


async def once(res: Resources[AggregationSettings], parts: Components[AggregationApp]) -> None:
    """One scheduled pass (today, yesterday, unfinished dates, due retries), scheduler or not;
    CycleFailed naming the runs not done in full."""
    failures = failure_line(await parts.app.scheduler.tick(force_pass=True))
    if failures:
        raise CycleFailed(failures)


SERVICE: Service[AggregationSettings, AggregationApp] = Service(
    name=NAME,
    settings_class=AggregationSettings,
    build=build,
    registry=catalog.default_registry(),
    schema=NAME,
    migrations=MIGRATIONS,
    once=once,
    renderers=RENDERERS,
)
