"""One process of a service: resources built once, consumers, leader-only schedulers,
the outbox relay and the HTTP surface, all stopped cleanly on SIGTERM/SIGINT.

A service describes itself with a :class:`Service` (name, settings class,
schema, migrations, event registry) and a ``build`` function that returns its
:class:`Components` given the shared :class:`Resources`. The contract is generic
over the service's settings type ``S`` and its application type ``A`` (the
object ``build`` assembles): ``run``, ``once`` and the CLI verbs reach both
through it, typed, without casts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from fastapi import APIRouter
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tributary import redis_client
from tributary.config import ServiceSettings
from tributary.db import DatabaseTls, await_db, make_engine, make_sessionmaker
from tributary.errors import CycleFailed, ServiceCrashed, StoppedBeforeStart
from tributary.events import Registry
from tributary.http import (
    HttpServer,
    ReadinessCheck,
    create_app,
    database_check,
    metrics_app,
    migrations_check,
    redis_check,
)
from tributary.keys import Keys
from tributary.leases import Lease, run_as_leader
from tributary.logs import configure_logging
from tributary.metrics import Metrics
from tributary.outbox import OutboxRelay, Renderers
from tributary.retention.sweep import RetentionSweep
from tributary.retention.tables import TableRetention
from tributary.runtime import tune_gc
from tributary.streams.producer import Producer
from tributary.streams.runner import RunnerOptions, StreamRunner
from tributary.tasks import cancel_and_wait
from tributary.telemetry import Telemetry, setup_telemetry
from tributary.web.access import ApiAccess

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]
#: a service's settings type
S = TypeVar("S", bound=ServiceSettings)
#: a service's application: whatever its ``build`` assembles
A = TypeVar("A")


@dataclass(frozen=True)
class Periodic:
    """A job run every ``interval_s`` seconds; by default on the lease holder only."""

    name: str
    interval_s: float
    job: Job
    leader_only: bool = True


@dataclass
class Components(Generic[A]):
    """What a service runs in its process, and the application it was built around."""

    #: the service's assembled parts (``once`` and the CLI verbs use them)
    app: A
    runners: Sequence[StreamRunner] = ()
    periodic: Sequence[Periodic] = ()
    routers: Sequence[APIRouter] = ()
    checks: Sequence[ReadinessCheck] = ()
    #: extra long-running tasks: ``async def task(stop)``
    tasks: Sequence[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = ()
    #: ``run`` only: work to finish before exit, after consumers stopped (a final flush)
    on_shutdown: Sequence[Job] = ()
    #: release what ``build`` opened (clients, pools), after ``run``, ``once`` or a verb
    release: Sequence[Job] = ()
    uses_outbox: bool = False
    #: the service's own tables under retention, purged by the library's pass along with
    #: its inbox and outbox (:mod:`tributary.retention`)
    retention: Sequence[TableRetention] = ()


@dataclass
class Resources(Generic[S]):
    """Everything built once at start-up and handed to the service explicitly."""

    settings: S
    service: Service[S, Any]
    redis: aioredis.Redis
    engine: Engine
    sessions: sessionmaker[Session]
    telemetry: Telemetry
    metrics: Metrics
    keys: Keys
    producer: Producer
    consumer_name: str
    #: publishes the service's outbox; call ``relay.wake()`` after committing outbox rows
    relay: OutboxRelay

    def runner(self, stream: str, options: RunnerOptions | None = None) -> StreamRunner:
        """A runner of ``stream`` in the service's consumer group, as this replica."""
        s = self.settings
        return StreamRunner(
            self.redis,
            stream,
            self.service.name,
            self.consumer_name,
            tracer=self.telemetry.tracer,
            registry=self.service.registry,
            metrics=self.metrics,
            keys=self.keys,
            options=options or RunnerOptions(max_deliveries=s.max_deliveries),
        )

    def lease(self, name: str, ttl_s: float | None = None) -> Lease:
        kwargs = {} if ttl_s is None else {"ttl_s": ttl_s}
        return Lease(
            self.redis, self.keys, f"{self.service.name}:{name}", metrics=self.metrics, **kwargs
        )


@dataclass
class Service(Generic[S, A]):
    name: str
    settings_class: type[S]
    build: Callable[[Resources[S]], Components[A]]
    registry: Registry = field(default_factory=Registry)
    #: PostgreSQL schema of the service's tables (None: the database in the URL)
    schema: str | None = None
    #: Alembic script folder (None: the service has no tables)
    migrations: Path | None = None
    #: one cycle of the service's work, for ``once`` (cron / CronJob)
    once: Callable[[Resources[S], Components[A]], Awaitable[None]] | None = None
    #: the outbox page renderers of its rendered pages, by name (its relay gets them)
    renderers: Renderers = field(default_factory=dict)

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.name}"

    def configured(self, settings: S) -> Service[S, A]:
        """This service with ``DB_SCHEMA`` applied (tests and shared databases move it)."""
        if settings.db_schema and settings.db_schema != self.schema:
            return dataclasses.replace(self, schema=settings.db_schema)
        return self


def default_consumer_name(settings: ServiceSettings, slot: int = 0) -> str:
    """Stable per replica: the host (pod) name plus a slot, never a fresh uuid."""
    base = settings.consumer_name or socket.gethostname()
    return base if slot == 0 else f"{base}-{slot}"


def migrate(service: Service[Any, Any], engine: Engine) -> None:
    """Apply the service's migrations (idempotent)."""
    if service.migrations is None:
        return
    from tributary.migrate import run_migrations

    # run_migrations creates the schema itself, under its migration lock
    run_migrations(engine, service.migrations, service.schema, service.version_table)


def _migrations_applied(service: Service[Any, Any], engine: Engine) -> Callable[[], bool]:
    def applied() -> bool:
        if service.migrations is None:
            return True
        from tributary.migrate import is_up_to_date

        return bool(
            is_up_to_date(engine, service.migrations, service.schema, service.version_table)
        )

    return applied


async def open_resources(
    service: Service[S, Any], settings: S, stop: asyncio.Event | None = None
) -> Resources[S]:
    """Connect to Redis and the database (bounded wait) and build the shared objects.

    With ``stop``, the wait for the database ends as soon as it is set, raising
    :class:`StoppedBeforeStart` (a pod told to stop while its database is down exits
    at once, cleanly, instead of being killed at the end of its grace period)."""
    telemetry = setup_telemetry(service.name, settings.otel_exporter_otlp_endpoint, set_global=True)
    telemetry.instrument_redis()
    telemetry.instrument_httpx()
    redis = redis_client.connect(redis_client.RedisTarget.of(settings))
    engine = make_engine(settings.database_url, schema=service.schema, tls=DatabaseTls.of(settings))
    telemetry.instrument_engine(engine)
    try:
        if not await await_db(engine, stop or asyncio.Event()):
            raise StoppedBeforeStart(f"{service.name} stopped while waiting for its database")
    except BaseException:
        await redis.aclose()
        engine.dispose()
        telemetry.shutdown()
        raise
    return assemble_resources(
        service, settings, redis, engine, telemetry, default_consumer_name(settings)
    )


def assemble_resources(
    service: Service[S, Any],
    settings: S,
    redis: aioredis.Redis,
    engine: Engine,
    telemetry: Telemetry,
    consumer_name: str,
) -> Resources[S]:
    """The shared objects around already-open connections (tests pass their own)."""
    metrics = Metrics()
    keys = Keys(settings.stream_prefix)
    return Resources(
        settings=settings,
        service=service,
        redis=redis,
        engine=engine,
        sessions=make_sessionmaker(engine),
        telemetry=telemetry,
        metrics=metrics,
        keys=keys,
        producer=Producer(redis, telemetry.tracer, keys, metrics),
        consumer_name=consumer_name,
        relay=OutboxRelay(
            engine,
            redis,
            keys,
            metrics,
            schema_label=service.schema or service.name,
            renderers=service.renderers,
        ),
    )


async def close_resources(res: Resources[Any]) -> None:
    res.relay.close()
    await res.redis.aclose()
    res.engine.dispose()
    res.telemetry.shutdown()


async def _periodic_loop(periodic: Periodic, stop: asyncio.Event) -> None:
    """A job on every replica (not leader-only), every ``interval_s`` seconds."""
    while not stop.is_set():
        try:
            await periodic.job()
        except Exception:
            log.exception("periodic job %s failed", periodic.name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), periodic.interval_s)


def retention_sweep(res: Resources[Any], parts: Components[Any]) -> RetentionSweep:
    """The service's stores under retention: the streams it trims (catalog), the DLQs of
    those and of the streams it consumes, its inbox/outbox and ``parts.retention``."""
    return RetentionSweep.for_service(
        res.service.name,
        res.settings,
        res.redis,
        res.engine,
        res.metrics,
        consumed=[r.stream for r in parts.runners],
        registered=parts.retention,
    )


def retention_periodic(res: Resources[Any], parts: Components[Any]) -> Periodic | None:
    """The retention pass as a leader-only periodic job (None: ``RETENTION_ENABLED`` off)."""
    if not res.settings.retention_enabled:
        return None
    sweep = retention_sweep(res, parts)

    async def retention() -> None:
        await sweep.run_pass()

    return Periodic("retention", res.settings.retention_interval_seconds, retention)


def _tasks(
    res: Resources[Any], parts: Components[Any], stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(r.run(stop), name=f"consume:{r.stream}") for r in parts.runners]
    retention = retention_periodic(res, parts)
    for p in [*parts.periodic, *([retention] if retention else [])]:
        coro = (
            run_as_leader(res.lease(p.name), p.interval_s, p.job, stop)
            if p.leader_only
            else _periodic_loop(p, stop)
        )
        tasks.append(asyncio.create_task(coro, name=f"periodic:{p.name}"))
    tasks.extend(asyncio.create_task(t(stop), name="task") for t in parts.tasks)
    if parts.uses_outbox:
        tasks.append(asyncio.create_task(res.relay.run(stop), name="outbox-relay"))
    return tasks


def _http_servers(res: Resources[Any], parts: Components[Any]) -> list[HttpServer]:
    """The API on HTTP_HOST:HTTP_PORT, and /metrics alone on METRICS_PORT if that is set."""
    settings = res.settings
    checks = [
        redis_check(res.redis),
        database_check(res.engine),
        migrations_check(_migrations_applied(res.service, res.engine)),
        *parts.checks,
    ]
    app = create_app(
        res.service.name,
        res.metrics,
        checks,
        parts.routers,
        max_body_bytes=settings.http_max_body_bytes,
        access=ApiAccess.from_settings(settings),
    )
    res.telemetry.instrument_app(app)
    if settings.http_exposed_without_auth:
        log.warning(
            "the HTTP API on %s:%d has no authentication (no API_TOKENS, no OIDC_ISSUER) and "
            "HTTP_ALLOW_INSECURE is set: anyone who reaches it can read and change everything",
            settings.http_host,
            settings.http_port,
        )
    elif not settings.api_auth_configured:
        log.warning(
            "the HTTP API has no authentication (no API_TOKENS, no OIDC_ISSUER); it listens "
            "on the loopback address %s only",
            settings.http_host,
        )
    servers = [HttpServer(app, settings.http_host, settings.http_port)]
    if settings.metrics_port is not None:
        servers.append(
            HttpServer(metrics_app(res.metrics, checks), settings.http_host, settings.metrics_port)
        )
    return servers


async def _stop_all(tasks: list[asyncio.Task[None]], bound: float) -> None:
    """Wait for tasks to finish on their own, then cancel whatever is left."""
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=bound)
    for task in pending:
        log.warning("task %s did not stop within %.0fs; cancelling it", task.get_name(), bound)
    await cancel_and_wait(pending)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


@contextlib.asynccontextmanager
async def started(
    service: Service[S, A],
    settings: S,
    *,
    apply_migrations: bool = True,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[tuple[Resources[S], Components[A]]]:
    """The service's resources opened, its migrations applied and its parts built; on
    exit its ``release`` hooks run and the resources close. ``run``, ``once`` and every
    CLI verb that needs the application start it this one way."""
    res = await open_resources(service, settings, stop)
    try:
        if apply_migrations:
            await asyncio.to_thread(migrate, service, res.engine)
        parts = service.build(res)
        try:
            yield res, parts
        finally:
            await _release(parts, settings.shutdown_timeout_seconds)
    finally:
        await close_resources(res)


async def _release(parts: Components[Any], bound: float) -> None:
    for hook in parts.release:
        try:
            await asyncio.wait_for(hook(), bound)
        except Exception:
            log.exception("releasing %s failed", getattr(hook, "__qualname__", hook))


async def run_service(
    service: Service[S, Any],
    settings: S,
    stop: asyncio.Event | None = None,
    *,
    apply_migrations: bool = True,
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop``): then stop reading, finish in-flight work
    within ``SHUTDOWN_TIMEOUT_SECONDS``, flush the outbox and telemetry, return."""
    configure_logging(settings.log_level, service.name)
    stop = stop or asyncio.Event()
    install_signal_handlers(stop)
    try:
        async with started(service, settings, apply_migrations=apply_migrations, stop=stop) as (
            res,
            parts,
        ):
            crashed = await _serve(res, parts, stop)
    except StoppedBeforeStart as exc:
        log.warning("%s", exc)
        return
    if crashed is not None:
        raise ServiceCrashed(f"{crashed[0]} failed: {type(crashed[1]).__name__}: {crashed[1]}")


async def _serve(
    res: Resources[Any], parts: Components[Any], stop: asyncio.Event
) -> tuple[str, BaseException] | None:
    """Run the process's tasks and HTTP API until stop or a crash; then stop them in order."""
    settings, service = res.settings, res.service
    tune_gc()
    servers = _http_servers(res, parts) if settings.http_port else []
    for n, server in enumerate(servers):
        try:
            await server.start()
        except OSError:
            for started_server in servers[:n]:
                await started_server.stop()
            raise
    tasks = _tasks(res, parts, stop)
    log.info("%s running as consumer %s", service.name, res.consumer_name)
    crashed = await _wait_for_stop_or_crash(stop, tasks)
    stop.set()
    await _stop_all(tasks, settings.shutdown_timeout_seconds)
    for hook in parts.on_shutdown:
        await asyncio.wait_for(hook(), settings.shutdown_timeout_seconds)
    for server in servers:
        await server.stop()
    log.info("%s stopped", service.name)
    return crashed


async def _wait_for_stop_or_crash(
    stop: asyncio.Event, tasks: list[asyncio.Task[None]]
) -> tuple[str, BaseException] | None:
    """Return on stop, or as soon as a task ends with an error (logged; the rest stop too):
    then the task's name and its error."""
    stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait())
    pending: set[asyncio.Task[Any]] = {stopper, *tasks}
    crashed: tuple[str, BaseException] | None = None
    while not stop.is_set():
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not stopper and not t.cancelled() and t.exception()]
        if failed:
            error = failed[0].exception()
            assert error is not None
            log.error("a task failed; stopping the service", exc_info=error)
            crashed = (failed[0].get_name(), error)
            break
        if not pending - {stopper}:
            break
    stopper.cancel()
    return crashed


async def run_once(service: Service[S, Any], settings: S) -> None:
    """One cycle of the service's work, then exit (cron/CronJob friendly).

    Raises :class:`~tributary.errors.CycleFailed` when the cycle failed: the service's
    ``once`` says so itself; the default cycle (its consumers in burst mode, then its
    periodic jobs) when it dead-lettered entries. The outbox is published either way.
    """
    configure_logging(settings.log_level, service.name)
    async with started(service, settings) as (res, parts):
        failure: CycleFailed | None = None
        try:
            if service.once is not None:
                await service.once(res, parts)
            else:
                await default_cycle(parts)
        except CycleFailed as exc:
            failure = exc
        if parts.uses_outbox:
            while await res.relay.relay_once():
                pass
        if failure is not None:
            raise failure


async def default_cycle(parts: Components[Any]) -> None:
    """The consumers until nothing is left, then each periodic job once; CycleFailed when
    an entry was dead-lettered meanwhile."""
    dead: dict[str, int] = {}
    for runner in parts.runners:
        before = runner.dead_lettered
        await runner.run(burst=True)
        if runner.dead_lettered > before:
            dead[runner.stream] = runner.dead_lettered - before
    for p in parts.periodic:
        await p.job()
    if dead:
        where = ", ".join(f"{n} on {stream}" for stream, n in dead.items())
        raise CycleFailed(f"entries dead-lettered: {where} (see `dlq list`)")
