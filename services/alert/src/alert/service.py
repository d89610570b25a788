"""The alert service: consumers of every input stream, the leader's tick, the notifier,
the outbox relay and the HTTP API."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx

from alert import api, handlers
from alert.app import AlertApp
from alert.clock import Clock, utc_now
from alert.config import AlertSettings
from alert.dryrun import dry_run
from alert.emit import Emitter
from alert.engine import Evaluator
from alert.index import RuleCache
from alert.metrics import AlertMetrics
from alert.notify.notifier import Notifier
from alert.repository import notification_retention, resolved_retention
from alert.samples import SOURCES
from alert.scheduler import Ticker
from tributary import catalog
from tributary.egress import EgressPolicy
from tributary.service import Components, Periodic, Resources, Service
from tributary.streams.runner import RunnerOptions

NAME = "alert"
MIGRATIONS = Path(__file__).parent / "migrations"


def assemble(
    res: Resources[AlertSettings],
    *,
    clock: Clock = utc_now,
    http_client: httpx.AsyncClient | None = None,
    jitter: Callable[[], float] = random.random,
    egress: EgressPolicy | None = None,
) -> AlertApp:
    """The service's parts; tests inject a clock, an HTTP client and the egress policy."""
    settings = res.settings
    policy = egress or EgressPolicy.from_settings(settings)
    cache = RuleCache()
    emitter = Emitter(res.telemetry.tracer, res.service.registry, clock)
    metrics = AlertMetrics(res.metrics.registry)
    app = AlertApp(
        settings=settings,
        group=res.service.name,
        sessions=res.sessions,
        clock=clock,
        registry=res.service.registry,
        cache=cache,
        evaluator=Evaluator(
            cache,
            emitter,
            clock,
            max_clock_skew=settings.max_clock_skew_seconds,
            max_window_points=settings.max_window_points,
        ),
        ticker=Ticker(cache, emitter, clock),
        notifier=Notifier(
            res.sessions,
            cache,
            settings,
            clock,
            res.telemetry.tracer,
            metrics,
            http_client,
            jitter,
            policy,
        ),
        metrics=metrics,
        relay=res.relay,
        producer=res.producer,
        egress=policy,
    )
    options = RunnerOptions(
        batch_size=settings.batch_size,
        block_ms=settings.read_block_ms,
        max_deliveries=settings.max_deliveries,
    )
    for source in SOURCES:
        runner = res.runner(source, options)
        handlers.register(runner, app, source)
        app.runners[source] = runner
    return app


def build(res: Resources[AlertSettings]) -> Components[AlertApp]:
    app = assemble(res)
    settings = app.settings
    return Components(
        app=app,
        runners=list(app.runners.values()),
        periodic=[
            Periodic("tick", settings.tick_interval_seconds, app.tick),
        ],
        routers=[api.router(app)],
        tasks=[app.notifier.run],
        uses_outbox=True,
        retention=[
            resolved_retention(timedelta(days=settings.resolved_retention_days)),
            *notification_retention(timedelta(days=settings.notification_retention_days)),
        ],
    )


SERVICE: Service[AlertSettings, AlertApp] = Service(
    name=NAME,
    settings_class=AlertSettings,
    build=build,
    registry=catalog.default_registry(),
    schema=NAME,
    migrations=MIGRATIONS,
    once=dry_run,
)
