"""Running a job delivered on ``gmail.jobs``: attempts, retries, completion, failure.

An attempt is counted in the job row before it starts, so a replica killed
mid-job still used one: the next delivery (XAUTOCLAIM by another replica)
resumes it, and the cache makes it skip what the dead one already stored.

- completed: counts, cache hit rate, the account's new historyId;
- permanent errors (invalid_grant, 403 permissions, 404 user) fail it at once;
- transient ones send it back to pending and raise ``Retry(delay_s=)`` so the
  stream runner redelivers it with backoff, up to ``job_max_attempts``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from google.oauth2.credentials import Credentials
from opentelemetry.trace import Tracer
from sqlalchemy.orm import Session

from gmail_fetch import repository as repo
from gmail_fetch.config import GmailFetchSettings
from gmail_fetch.crypto import TokenCipher
from gmail_fetch.errors import (
    AuthorizationRevoked,
    JobCancelled,
    PermanentJobError,
    TransientJobError,
)
from gmail_fetch.gmail_api import GmailClient
from gmail_fetch.gmail_http import GmailExecutor, make_credentials
from gmail_fetch.metrics import GmailMetrics
from gmail_fetch.models import COMPLETED, FAILED
from gmail_fetch.quota import QuotaBucket
from gmail_fetch.repository import Account, Job
from gmail_fetch.sync import JobSync, SyncOutcome
from tributary.backoff import compute_backoff
from tributary.errors import Retry
from tributary.logs import redact
from tributary.transactions import Transactions

log = logging.getLogger(__name__)


def completion_step(outcome: SyncOutcome) -> str:
    """The last step of a completed job; messages deleted between listing and fetching
    (a 404 batch part) were skipped, and are counted here."""
    step = f"Completed: {outcome.fetched} fetched, {outcome.cached} cached"
    if outcome.missing:
        step += f", {outcome.missing} deleted before they could be fetched (skipped)"
    return step


class CredentialCache:
    """Credentials per account, kept across jobs so a still-valid access token is reused."""

    def __init__(self, settings: GmailFetchSettings, cipher: TokenCipher) -> None:
        self._settings = settings
        self._cipher = cipher
        # user id -> (encrypted token it was built from, plaintext refresh token, credentials)
        self._entries: dict[str, tuple[str, str, Credentials]] = {}

    def get(self, account: Account) -> Credentials:
        entry = self._entries.get(account.user_id)
        if entry is None or entry[0] != account.refresh_token_encrypted:
            plain = self._cipher.decrypt(account.refresh_token_encrypted)
            entry = (
                account.refresh_token_encrypted,
                plain,
                make_credentials(self._settings, plain),
            )
            self._entries[account.user_id] = entry
        return entry[2]

    def rotated(self, account: Account) -> str | None:
        """The new encrypted refresh token when Google rotated it during the job."""
        entry = self._entries.get(account.user_id)
        if entry is None or not entry[2].refresh_token or entry[2].refresh_token == entry[1]:
            return None
        encrypted = self._cipher.encrypt(entry[2].refresh_token)
        self._entries[account.user_id] = (encrypted, entry[2].refresh_token, entry[2])
        return encrypted

    def forget(self, user_id: str) -> None:
        self._entries.pop(user_id, None)


class JobRunner:
    def __init__(
        self,
        settings: GmailFetchSettings,
        store: Transactions,
        executor: GmailExecutor,
        quota: QuotaBucket,
        credentials: CredentialCache,
        metrics: GmailMetrics,
        tracer: Tracer,
    ) -> None:
        self.settings = settings
        self.store = store
        self.executor = executor
        self.quota = quota
        self.credentials = credentials
        self.metrics = metrics
        self.tracer = tracer

    async def run(self, job_id: str) -> None:
        """Run one attempt of ``job_id`` (the handler of ``gmail.job.created``)."""
        job = await self.store(repo.start_attempt, job_id, self.tracer)
        if job is None:
            log.warning("job %s does not exist; ignoring its event", job_id)
            return
        if job.final:
            log.info("job %s is already %s", job.id, job.status)
            return
        if job.attempts > self.settings.job_max_attempts:
            await self._fail(job, f"gave up after {job.attempts - 1} attempts that did not finish")
            return
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.settings.job_timeout_seconds):
                outcome = await self._attempt(job)
        except JobCancelled:
            self.metrics.jobs.labels("cancelled").inc()
            log.info("job %s was cancelled", job.id)
        except PermanentJobError as exc:
            await self._fail(job, str(exc))
        except TimeoutError:
            await self._retry_or_fail(
                job, f"attempt exceeded {self.settings.job_timeout_seconds:.0f}s"
            )
        except TransientJobError as exc:
            await self._retry_or_fail(job, str(exc), exc.retry_after)
        else:
            await self._complete(job, outcome)
        finally:
            self.metrics.job_seconds.observe(time.monotonic() - started)

    async def _attempt(self, job: Job) -> SyncOutcome:
        account = await self.store(repo.get_account, job.user_id)
        if account is None:
            raise PermanentJobError(f"no Gmail account for user {job.user_id}")
        if account.auth_error:
            raise PermanentJobError(account.auth_error)
        client = GmailClient(
            self.settings,
            self.executor,
            self.quota,
            self.credentials.get(account),
            account.user_id,
            tracer=self.tracer,
            metrics=self.metrics,
        )
        try:
            return await JobSync(
                job, account, client, self.store, self.settings, self.metrics, self.tracer
            ).run()
        except AuthorizationRevoked as exc:
            await self.store(repo.update_account, account.user_id, auth_error=str(exc))
            self.credentials.forget(account.user_id)
            raise
        except (PermanentJobError, TransientJobError, JobCancelled):
            raise
        except Exception as exc:
            # a bug or an outage we did not foresee: worth another attempt, never a crash
            log.exception("job %s: unexpected error", job.id)
            raise TransientJobError(redact(f"{type(exc).__name__}: {exc}")) from exc

    async def _complete(self, job: Job, outcome: SyncOutcome) -> None:
        account = await self.store(repo.get_account, job.user_id)
        rotated = self.credentials.rotated(account) if account is not None else None
        rate = outcome.cached / outcome.total if outcome.total else None

        def complete(session: Session) -> Job | None:
            extra: dict[str, Any] = {"refresh_token_encrypted": rotated} if rotated else {}
            repo.update_account(
                session,
                job.user_id,
                history_id=outcome.history_id,
                synced_depth=outcome.synced_depth,
                **extra,
            )
            return repo.finish_job(
                session,
                job.id,
                COMPLETED,
                self.tracer,
                progress=outcome.total,
                total=outcome.total,
                fetched=outcome.fetched,
                cached=outcome.cached,
                sync_mode=outcome.mode,
                error=None,
                current_step=completion_step(outcome),
            )

        if await self.store(complete) is None:
            log.info("job %s finished after being cancelled; result kept in the cache", job.id)
            return
        self.metrics.jobs.labels("completed").inc()
        log.info(
            "job %s completed (%s sync): %d messages, %d fetched, %d cached, %d vanished, "
            "cache hit rate %s",
            job.id,
            outcome.mode,
            outcome.total,
            outcome.fetched,
            outcome.cached,
            outcome.missing,
            "n/a" if rate is None else f"{rate:.1%}",
        )

    async def _fail(self, job: Job, error: str) -> None:
        error = redact(error)
        await self.store(
            repo.finish_job,
            job.id,
            FAILED,
            self.tracer,
            error=error,
            current_step="Failed",
        )
        self.metrics.jobs.labels("failed").inc()
        log.warning("job %s failed: %s", job.id, error)

    async def _retry_or_fail(self, job: Job, error: str, retry_after: float = 0.0) -> None:
        """Back to pending with backoff (at least what Gmail asked, up to the longest
        backoff), or failed on the last attempt."""
        error = redact(error)
        if job.attempts >= self.settings.job_max_attempts:
            await self._fail(job, f"failed after {job.attempts} attempts: {error}")
            return
        s = self.settings
        delay = max(
            compute_backoff(
                job.attempts, base=s.job_retry_base_seconds, cap=s.job_retry_max_seconds
            ),
            min(retry_after, s.job_retry_max_seconds),
        )
        step = f"Attempt {job.attempts} failed; retrying in {delay:.0f}s"
        await self.store(repo.requeue_job, job.id, error, step, self.tracer)
        self.metrics.jobs.labels("retried").inc()
        raise Retry(f"job {job.id} attempt {job.attempts} failed: {error}", delay_s=delay)
