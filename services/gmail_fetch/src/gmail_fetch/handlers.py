"""Handlers of the streams gmail_fetch consumes: ``gmail.jobs``."""

from __future__ import annotations

from gmail_fetch.jobs import JobRunner
from tributary import catalog
from tributary.events import Event
from tributary.streams.runner import StreamRunner


def register(runner: StreamRunner, jobs: JobRunner) -> None:
    @runner.handler("gmail.job.created")
    async def run_analytics_job(event: Event) -> None:
        """One attempt of the job; ``Retry`` (transient failure) redelivers it later."""
        await jobs.run(event.payload(catalog.GmailJobCreated).job_id)
