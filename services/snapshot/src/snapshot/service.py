"""The snapshot service: its Service description and what ``build`` wires together."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from snapshot.api import analytics_router, servers_router
from snapshot.collector import READ_DEADLINE_FACTOR, Collector
from snapshot.config import SnapshotSettings
from snapshot.credentials import SecretBox
from snapshot.cycle import uncollected
from snapshot.handlers import register_handlers
from snapshot.instruments import RedactUrlSpans, SnapshotMetrics
from snapshot.jobs import Analysis, Scheduler
from snapshot.maintenance import Maintenance, retention
from snapshot.outline import OutlineClients
from tributary import catalog
from tributary.egress import EgressPolicy
from tributary.errors import CycleFailed
from tributary.service import Components, Periodic, Resources, Service
from tributary.streams.runner import RunnerOptions, StreamRunner

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA = "snapshot"

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Snapshot:
    """Every part of the service, built once from the shared resources."""

    settings: SnapshotSettings
    clients: OutlineClients
    collector: Collector
    scheduler: Scheduler
    maintenance: Maintenance
    analysis: Analysis
    runner: StreamRunner
    metrics: SnapshotMetrics

    async def maintain(self) -> None:
        await asyncio.to_thread(self.maintenance.run_once)

    async def check_drift(self) -> None:
        await asyncio.to_thread(self.maintenance.drift_once)

    async def analyse(self) -> None:
        await asyncio.to_thread(self.analysis.run_once)


def runner_options(settings: SnapshotSettings) -> RunnerOptions:
    # A batch of work items is collected COLLECT_CONCURRENCY servers at a time, each bounded
    # by READ_DEADLINE_FACTOR request timeouts: four rounds, plus the database, fit in the
    # handler's deadline, itself well below the claim time, so a live replica's batch is
    # never taken over.
    rounds = 4
    deadline = rounds * settings.http_timeout_seconds * READ_DEADLINE_FACTOR + 30
    return RunnerOptions(
        batch_size=settings.collect_concurrency * rounds,
        concurrency=1,  # one batch at a time; the collector runs its servers concurrently
        handler_timeout_s=deadline,
        claim_idle_ms=int(deadline * 2000),
        max_deliveries=settings.max_deliveries,
    )


def assemble(
    res: Resources[SnapshotSettings], clock: Clock = system_clock, rng: random.Random | None = None
) -> Snapshot:
    """Build the service's parts (tests pass their own clock)."""
    settings = res.settings
    res.telemetry.provider.add_span_processor(RedactUrlSpans())
    metrics = SnapshotMetrics(res.metrics.registry)
    clients = OutlineClients(
        settings.http_timeout_seconds,
        settings.http_concurrency,
        settings.connections_per_server,
        egress=EgressPolicy.from_settings(settings),
    )
    tracer = res.telemetry.tracer
    collector = Collector(
        res.sessions,
        clients,
        SecretBox(settings.encryption_key),
        settings,
        metrics,
        tracer,
        clock=clock,
        rng=rng,
        group=res.service.name,
    )
    runner = res.runner(catalog.OUTLINE_COLLECT, runner_options(settings))
    register_handlers(runner, collector)
    scheduler = Scheduler(
        res.sessions,
        res.producer,
        res.redis,
        res.keys,
        res.service.registry,
        metrics,
        clock,
        res.consumer_name,
    )
    maintenance = Maintenance(res.sessions, settings, metrics, clock)
    analysis = Analysis(
        res.sessions, settings, res.service.registry, metrics, clock, tracer, res.relay.wake
    )
    return Snapshot(settings, clients, collector, scheduler, maintenance, analysis, runner, metrics)


def components(
    res: Resources[SnapshotSettings], app: Snapshot, clock: Clock = system_clock
) -> Components[Snapshot]:
    s = app.settings

    async def tick() -> None:
        await app.scheduler.tick()

    return Components(
        app=app,
        runners=[app.runner],
        periodic=[
            Periodic("tick", s.collect_interval_seconds, tick),
            Periodic("maintenance", s.maintenance_interval_seconds, app.maintain),
            Periodic("drift", s.drift_interval_seconds, app.check_drift),
            Periodic("analysis", s.analysis_interval_seconds, app.analyse),
        ],
        routers=[
            servers_router(res.sessions, SecretBox(s.encryption_key), clock, app.clients.egress),
            analytics_router(res.sessions, clock, res.redis, res.keys),
        ],
        release=[app.clients.aclose],
        uses_outbox=True,
        retention=retention(s, clock),
    )


def build(res: Resources[SnapshotSettings]) -> Components[Snapshot]:
    return components(res, assemble(res))


async def once(res: Resources[SnapshotSettings], parts: Components[Snapshot]) -> None:
    """One cycle: tick, collect every server, then upkeep and analysis; CycleFailed
    naming the servers not collected (failed, or backing off from earlier failures)."""
    app = parts.app
    started = app.collector.clock()
    result = await app.scheduler.tick()
    await app.runner.run(burst=True)
    await app.maintain()
    await app.analyse()
    failures = await asyncio.to_thread(
        uncollected, res.sessions, [*result.published, *result.in_backoff], started
    )
    if failures:
        raise CycleFailed(failures)


SERVICE: Service[SnapshotSettings, Snapshot] = Service(
    name="snapshot",
    settings_class=SnapshotSettings,
    build=build,
    registry=catalog.default_registry(),
    schema=SCHEMA,
    migrations=MIGRATIONS,
    once=once,
)
