"""Queries on accounts and analytics_jobs (the message cache: ``cache.py``).

Every function runs inside the caller's transaction. A job's state change and
the event telling clients about it are written together: the event goes to
the outbox in the same transaction (DESIGN.md section 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from opentelemetry.trace import Tracer
from sqlalchemy.orm import Session

from gmail_fetch.models import (
    FAILED,
    FINAL_STATUSES,
    PENDING,
    PROCESSING,
    accounts,
    analytics_jobs,
    message_cache,
)
from tributary import catalog, outbox
from tributary.events import Event, make_event, new_event_id

SOURCE = "gmail_fetch"
_REGISTRY = catalog.default_registry()


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Account:
    user_id: str
    email: str
    refresh_token_encrypted: str
    history_id: int | None
    synced_depth: int | None
    auth_error: str | None


@dataclass(frozen=True)
class Job:
    id: str
    user_id: str
    type: str
    status: str
    max_results: int
    progress: int
    total: int
    current_step: str
    attempts: int
    fetched: int
    cached: int
    sync_mode: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def cache_hit_rate(self) -> float | None:
        return round(self.cached / self.total, 4) if self.total else None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def public(self) -> dict[str, Any]:
        """What the API shows (no secrets live on a job)."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "type": self.type,
            "status": self.status,
            "max_results": self.max_results,
            "progress": self.progress,
            "total": self.total,
            "current_step": self.current_step,
            "attempts": self.attempts,
            "fetched": self.fetched,
            "cached": self.cached,
            "cache_hit_rate": self.cache_hit_rate,
            "sync_mode": self.sync_mode,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


def _job(row: Any) -> Job:
    return Job(**{c.name: row._mapping[c.name] for c in analytics_jobs.columns})


# -- accounts -------------------------------------------------------------------------------


def get_account(session: Session, user_id: str) -> Account | None:
    row = session.execute(sa.select(accounts).where(accounts.c.user_id == user_id)).first()
    if row is None:
        return None
    m = row._mapping
    return Account(
        m["user_id"],
        m["email"],
        m["refresh_token_encrypted"],
        m["history_id"],
        m["synced_depth"],
        m["auth_error"],
    )


def upsert_account(session: Session, user_id: str, email: str, encrypted_token: str) -> bool:
    """Add or re-authorize an account; returns True when it is new.

    A different mailbox under the same user id starts over: its sync state and
    cached messages belong to the old mailbox.
    """
    now = utcnow()
    existing = get_account(session, user_id)
    if existing is None:
        session.execute(
            sa.insert(accounts).values(
                user_id=user_id,
                email=email,
                refresh_token_encrypted=encrypted_token,
                created_at=now,
                updated_at=now,
            )
        )
        return True
    values: dict[str, Any] = {
        "email": email,
        "refresh_token_encrypted": encrypted_token,
        "auth_error": None,
        "updated_at": now,
    }
    if existing.email.lower() != email.lower():
        values.update(history_id=None, synced_depth=None)
        session.execute(sa.delete(message_cache).where(message_cache.c.user_id == user_id))
    session.execute(sa.update(accounts).where(accounts.c.user_id == user_id).values(**values))
    return False


def update_account(session: Session, user_id: str, **values: Any) -> None:
    session.execute(
        sa.update(accounts)
        .where(accounts.c.user_id == user_id)
        .values(updated_at=utcnow(), **values)
    )


# -- jobs -----------------------------------------------------------------------------------


def job_event(job: Job, event_type: str = "gmail.job.progressed") -> Event:
    """A ``gmail.job-events`` event telling where ``job`` stands.

    The catalog has no "pending" status: a job waiting for its next attempt is
    still in progress for its clients, and its current_step says it is retrying.
    """
    payload = catalog.GmailJobProgressed.model_validate(
        {
            "job_id": job.id,
            "status": PROCESSING if job.status == PENDING else job.status,
            "progress": job.progress,
            "total": job.total,
            "current_step": job.current_step,
            "fetched": job.fetched,
            "cached": job.cached,
            "cache_hit_rate": job.cache_hit_rate,
            "error": job.error,
        }
    )
    return make_event(event_type, payload, SOURCE, _REGISTRY)


def _publish(session: Session, job: Job, tracer: Tracer | None, event_type: str) -> None:
    outbox.add(session, catalog.GMAIL_JOB_EVENTS, job_event(job, event_type), tracer)


def create_job(
    session: Session, user_id: str, job_type: str, max_results: int, tracer: Tracer | None
) -> Job:
    """Write a pending job and queue ``gmail.job.created`` for the workers."""
    now = utcnow()
    job_id = new_event_id()
    row = session.execute(
        sa.insert(analytics_jobs)
        .values(
            id=job_id,
            user_id=user_id,
            type=job_type,
            status=PENDING,
            max_results=max_results,
            current_step="Queued",
            created_at=now,
            updated_at=now,
        )
        .returning(*analytics_jobs.columns)
    ).one()
    created = make_event(
        "gmail.job.created", catalog.GmailJobCreated(job_id=job_id), SOURCE, _REGISTRY
    )
    outbox.add(session, catalog.GMAIL_JOBS, created, tracer)
    return _job(row)


def get_job(session: Session, job_id: str, lock: bool = False) -> Job | None:
    stmt = sa.select(analytics_jobs).where(analytics_jobs.c.id == job_id)
    row = session.execute(stmt.with_for_update() if lock else stmt).first()
    return _job(row) if row is not None else None


def _update_job(
    session: Session, job_id: str, where: sa.ColumnElement[bool] | None = None, **values: Any
) -> Job | None:
    stmt = sa.update(analytics_jobs).where(analytics_jobs.c.id == job_id)
    if where is not None:
        stmt = stmt.where(where)
    row = session.execute(
        stmt.values(updated_at=utcnow(), **values).returning(*analytics_jobs.columns)
    ).first()
    return _job(row) if row is not None else None


def start_attempt(session: Session, job_id: str, tracer: Tracer | None) -> Job | None:
    """Mark the job processing and count the attempt; None when it is already final."""
    job = get_job(session, job_id, lock=True)
    if job is None or job.final:
        return job
    attempt = job.attempts + 1
    started = _update_job(
        session,
        job_id,
        status=PROCESSING,
        attempts=attempt,
        started_at=job.started_at or utcnow(),
        current_step=f"Starting (attempt {attempt})",
    )
    assert started is not None
    _publish(session, started, tracer, "gmail.job.progressed")
    return started


def record_progress(
    session: Session, job_id: str, tracer: Tracer | None, **values: Any
) -> Job | None:
    """Progress of a processing job, with its event; None if it stopped processing
    (cancelled meanwhile)."""
    job = _update_job(session, job_id, analytics_jobs.c.status == PROCESSING, **values)
    if job is not None:
        _publish(session, job, tracer, "gmail.job.progressed")
    return job


def finish_job(
    session: Session, job_id: str, status: str, tracer: Tracer | None, **values: Any
) -> Job | None:
    """completed / failed, with its event; None if it was no longer processing."""
    job = _update_job(
        session,
        job_id,
        analytics_jobs.c.status == PROCESSING,
        status=status,
        finished_at=utcnow(),
        **values,
    )
    if job is not None:
        _publish(session, job, tracer, f"gmail.job.{status}")
    return job


def requeue_job(
    session: Session, job_id: str, error: str, step: str, tracer: Tracer | None
) -> Job | None:
    """A failed attempt that will be retried: back to pending, with why."""
    job = _update_job(
        session,
        job_id,
        analytics_jobs.c.status == PROCESSING,
        status=PENDING,
        error=error,
        current_step=step,
    )
    if job is not None:
        _publish(session, job, tracer, "gmail.job.progressed")
    return job


def cancel_job(session: Session, job_id: str, tracer: Tracer | None) -> Job | None:
    """Cancel a pending or processing job (the worker notices at its next batch)."""
    job = _update_job(
        session,
        job_id,
        analytics_jobs.c.status.in_((PENDING, PROCESSING)),
        status="cancelled",
        finished_at=utcnow(),
        current_step="Cancelled",
    )
    if job is not None:
        _publish(session, job, tracer, "gmail.job.progressed")
    return job


def list_jobs(session: Session, user_id: str, limit: int) -> list[Job]:
    stmt = (
        sa.select(analytics_jobs)
        .where(analytics_jobs.c.user_id == user_id)
        .order_by(analytics_jobs.c.created_at.desc())
        .limit(limit)
    )
    return [_job(row) for row in session.execute(stmt)]


def failed_since(session: Session, since: datetime) -> list[Job]:
    """Jobs that ended failed at or after ``since`` (``once`` reports them)."""
    stmt = (
        sa.select(analytics_jobs)
        .where(analytics_jobs.c.status == FAILED, analytics_jobs.c.finished_at >= since)
        .order_by(analytics_jobs.c.finished_at)
    )
    return [_job(row) for row in session.execute(stmt)]
