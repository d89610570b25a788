"""The gmail_fetch service: the job workers (a consumer group of ``gmail.jobs``), the
outbox relay of job events, and the HTTP API."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

from gmail_fetch import api, handlers
from gmail_fetch.config import GmailFetchSettings
from gmail_fetch.crypto import TokenCipher
from gmail_fetch.gmail_http import GmailExecutor
from gmail_fetch.jobs import CredentialCache, JobRunner
from gmail_fetch.metrics import GmailMetrics
from gmail_fetch.quota import QuotaBucket
from tributary import catalog
from tributary.service import Components, Resources, Service
from tributary.streams.runner import RunnerOptions
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


def build_job_runner(res: Resources) -> tuple[JobRunner, GmailExecutor]:
    settings = cast(GmailFetchSettings, res.settings)
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
    return jobs, executor


def build(res: Resources) -> Components:
    settings = cast(GmailFetchSettings, res.settings)
    jobs, executor = build_job_runner(res)
    runner = res.runner(catalog.GMAIL_JOBS, runner_options(settings))
    handlers.register(runner, jobs)
    router = api.make_router(
        settings, Transactions(res.sessions, after_commit=res.relay.wake), res.telemetry.tracer
    )

    async def close_executor() -> None:
        # waits for requests still in flight (bounded by the HTTP timeout) off the loop
        await asyncio.to_thread(executor.close)

    return Components(
        runners=[runner], routers=[router], on_shutdown=[close_executor], uses_outbox=True
    )


SERVICE = Service(
    name=NAME,
    settings_class=GmailFetchSettings,
    build=build,
    registry=catalog.default_registry(),
    schema="gmail",
    migrations=MIGRATIONS,
)
