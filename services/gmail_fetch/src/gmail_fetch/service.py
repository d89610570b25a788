"""The gmail_fetch service: the job workers (a consumer group of ``gmail.jobs``), the
outbox relay of job events, and the HTTP API."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from gmail_fetch import api, handlers
from gmail_fetch import repository as repo
from gmail_fetch.config import GmailFetchSettings
from gmail_fetch.crypto import TokenCipher
from gmail_fetch.gmail_http import GmailExecutor
from gmail_fetch.jobs import CredentialCache, JobRunner
from gmail_fetch.metrics import GmailMetrics
from gmail_fetch.models import analytics_jobs, message_cache
from gmail_fetch.quota import QuotaBucket
from gmail_fetch.repository import Job
from tributary import catalog
from tributary.errors import CycleFailed, failure_summary
from tributary.retention.tables import TableRetention
from tributary.service import Components, Resources, Service, default_cycle
from tributary.streams.runner import RunnerOptions, StreamRunner
from tributary.transactions import Transactions

NAME = "gmail_fetch"
MIGRATIONS = Path(__file__).parent / "migrations"
#: seconds a job's handler may run beyond the job's own deadline before the runner gives up
HANDLER_GRACE_SECONDS = 60.0


def runner_options(settings: GmailFetchSettings) -> RunnerOptions:
    """One entry per job; up to max_concurrent_jobs of them run at once in this replica."""
    claim_idle = settings.claim_idle_seconds
    return RunnerOptions(
        batch_size=settings.max_concurrent_jobs,
        concurrency=settings.max_concurrent_jobs,
        handler_timeout_s=settings.job_timeout_seconds + HANDLER_GRACE_SECONDS,
        # a live replica refreshes its jobs' claims every claim_idle / 3
        claim_idle_ms=int(claim_idle * 1000),
        housekeeping_interval_s=min(15.0, claim_idle / 2),
        max_deliveries=max(settings.max_deliveries, settings.job_max_attempts + 2),
        block_ms=1000,
    )


def retention(settings: GmailFetchSettings) -> list[TableRetention]:
    """Cached messages by age (a later job fetches them again), finished jobs by age."""
    return [
        TableRetention(
            message_cache.name, "fetched_at", timedelta(days=settings.cache_retention_days)
        ),
        # finished_at is set when a job ends: a job still pending or running has none
        TableRetention(
            analytics_jobs.name, "finished_at", timedelta(days=settings.job_retention_days)
        ),
    ]


@dataclass
class GmailFetch:
    """The service's parts: the job runner, its Gmail executor and its stream runner."""

    jobs: JobRunner
    executor: GmailExecutor
    runner: StreamRunner

    async def close_executor(self) -> None:
        # waits for requests still in flight (bounded by the HTTP timeout) off the loop
        await asyncio.to_thread(self.executor.close)


def assemble(res: Resources[GmailFetchSettings]) -> GmailFetch:
    settings = res.settings
    metrics = GmailMetrics(res.metrics.registry)
    executor = GmailExecutor(settings.max_inflight_requests, settings.http_timeout_seconds)
    cipher = TokenCipher(settings.encryption_keys())
    jobs = JobRunner(
        settings,
        Transactions(res.sessions, after_commit=res.relay.wake),
        executor,
        QuotaBucket(res.redis, res.keys, settings.quota_units_per_minute),
        CredentialCache(settings, cipher),
        metrics,
        res.telemetry.tracer,
    )
    runner = res.runner(catalog.GMAIL_JOBS, runner_options(settings))
    handlers.register(runner, jobs)
    return GmailFetch(jobs, executor, runner)


def build(res: Resources[GmailFetchSettings]) -> Components[GmailFetch]:
    app = assemble(res)
    router = api.make_router(
        res.settings,
        Transactions(res.sessions, after_commit=res.relay.wake),
        res.telemetry.tracer,
    )
    return Components(
        app=app,
        runners=[app.runner],
        routers=[router],
        release=[app.close_executor],
        uses_outbox=True,
        retention=retention(res.settings),
    )


async def once(res: Resources[GmailFetchSettings], parts: Components[GmailFetch]) -> None:
    """The jobs waiting (in the outbox or ``gmail.jobs``) until none is left; CycleFailed
    naming the jobs that ended failed meanwhile (or entries dead-lettered)."""
    started = repo.utcnow()
    while await res.relay.relay_once():  # jobs created through the API wait in the outbox
        pass
    await default_cycle(parts)

    def failed() -> list[Job]:
        with res.sessions() as session:
            return repo.failed_since(session, started)

    jobs = await asyncio.to_thread(failed)
    if jobs:
        raise CycleFailed(
            failure_summary("job(s) failed", [f"{job.id} ({job.error})" for job in jobs])
        )


SERVICE: Service[GmailFetchSettings, GmailFetch] = Service(
    name=NAME,
    settings_class=GmailFetchSettings,
    build=build,
    registry=catalog.default_registry(),
    schema="gmail",
    migrations=MIGRATIONS,
    once=once,
)
