"""Queries of the aggregation schema: runs, their errors, per-date state, usage rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from aggregation.models import aggregation_days as days
from aggregation.models import aggregation_run_errors as run_errors
from aggregation.models import aggregation_runs as runs
from aggregation.models import merchant_usage as usage
from aggregation.reader import Malformed
from tributary.retention.tables import TableRetention

RUNNING, SUCCEEDED, PARTIAL, FAILED = "running", "succeeded", "partial", "failed"
#: statuses of a run that read and wrote every readable key of its date
COMPLETE = (SUCCEEDED, PARTIAL)
ABANDONED = "abandoned: the process running it stopped before it finished"

# Advisory lock of one date, namespaced by schema so that services (and tests) sharing
# a database but not a schema do not block each other.
_TRY_LOCK = sa.text(
    "SELECT pg_try_advisory_lock(hashtext(current_schema() || '.aggregation'),"
    " (CAST(:day AS date) - DATE '2000-01-01'))"
)
_UNLOCK = sa.text(
    "SELECT pg_advisory_unlock(hashtext(current_schema() || '.aggregation'),"
    " (CAST(:day AS date) - DATE '2000-01-01'))"
)


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    usage_date: date
    merchant_filter: str | None
    trigger: str
    status: str
    attempt: int
    started_at: datetime
    finished_at: datetime | None
    keys_read: int
    keys_missing: int
    rows_written: int
    rows_changed: int
    errors: int
    error: str | None
    finalizing: bool


@dataclass(frozen=True, slots=True)
class Day:
    usage_date: date
    last_run_id: int | None
    last_status: str | None
    aggregated_at: datetime | None
    keys_read: int
    rows_written: int
    errors: int
    final: bool
    finalized_at: datetime | None
    retry_attempts: int
    next_retry_at: datetime | None


def _run(row: Any) -> Run:
    return Run(**{name: row._mapping[name] for name in Run.__slots__})


def _day(row: Any) -> Day:
    return Day(**{name: row._mapping[name] for name in Day.__slots__})


# -- the per-date lock ------------------------------------------------------------


def try_lock_date(conn: Connection, day: date) -> bool:
    """Session-level lock on ``day``: one run of a date at a time, across processes.

    It dies with the connection, so a killed process never leaves it behind.
    """
    return bool(conn.execute(_TRY_LOCK, {"day": day}).scalar_one())


def unlock_date(conn: Connection, day: date) -> None:
    conn.execute(_UNLOCK, {"day": day})


# -- runs -------------------------------------------------------------------------


def abandon_stale_runs(session: Session, day: date, now: datetime) -> int:
    """Close runs of ``day`` still marked running: their process died (we hold the lock)."""
    stmt = (
        sa.update(runs)
        .where(runs.c.usage_date == day, runs.c.status == RUNNING)
        .values(status=FAILED, error=ABANDONED, finished_at=now)
    )
    return int(session.execute(stmt).rowcount)  # type: ignore[attr-defined]


def start_run(
    session: Session,
    day: date,
    merchant_id: str | None,
    trigger: str,
    now: datetime,
    *,
    attempt: int = 0,
    finalizing: bool = False,
) -> int:
    stmt = (
        sa.insert(runs)
        .values(
            usage_date=day,
            merchant_filter=merchant_id,
            trigger=trigger,
            status=RUNNING,
            attempt=attempt,
            started_at=now,
            finalizing=finalizing,
        )
        .returning(runs.c.id)
    )
    return int(session.execute(stmt).scalar_one())


def record_progress(
    conn: Connection,
    run_id: int,
    *,
    keys_read: int,
    keys_missing: int,
    rows_written: int,
    rows_changed: int,
    errors: int,
    malformed: Sequence[Malformed] = (),
) -> None:
    """Add a batch's counts (and the malformed keys to keep) to its run, in its transaction."""
    conn.execute(
        sa.update(runs)
        .where(runs.c.id == run_id)
        .values(
            keys_read=runs.c.keys_read + keys_read,
            keys_missing=runs.c.keys_missing + keys_missing,
            rows_written=runs.c.rows_written + rows_written,
            rows_changed=runs.c.rows_changed + rows_changed,
            errors=runs.c.errors + errors,
        )
    )
    if malformed:
        conn.execute(
            sa.insert(run_errors),
            [
                {"run_id": run_id, "key": m.key, "reason": m.reason, "value": m.value}
                for m in malformed
            ],
        )


def finish_run(
    session: Session, run_id: int, status: str, now: datetime, error: str | None = None
) -> Run:
    stmt = (
        sa.update(runs)
        .where(runs.c.id == run_id)
        .values(status=status, finished_at=now, error=error)
        .returning(*runs.c)
    )
    return _run(session.execute(stmt).one())


def get_run(session: Session, run_id: int) -> Run | None:
    row = session.execute(sa.select(runs).where(runs.c.id == run_id)).first()
    return None if row is None else _run(row)


def list_runs(
    session: Session,
    *,
    day: date | None = None,
    status: str | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[Run]:
    stmt = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
    if day is not None:
        stmt = stmt.where(runs.c.usage_date == day)
    if status is not None:
        stmt = stmt.where(runs.c.status == status)
    if before_id is not None:
        stmt = stmt.where(runs.c.id < before_id)
    return [_run(row) for row in session.execute(stmt)]


def list_run_errors(session: Session, run_id: int, limit: int = 100) -> list[Malformed]:
    stmt = (
        sa.select(run_errors.c.key, run_errors.c.reason, run_errors.c.value)
        .where(run_errors.c.run_id == run_id)
        .order_by(run_errors.c.id)
        .limit(limit)
    )
    return [Malformed(row.key, row.reason, row.value) for row in session.execute(stmt)]


def run_retention(max_age: timedelta) -> TableRetention:
    """Finished runs started more than ``max_age`` ago go (their errors with them: ON
    DELETE CASCADE); a run still running stays."""
    return TableRetention(runs.name, "started_at", max_age, where=f"status <> '{RUNNING}'")


# -- days -------------------------------------------------------------------------


def lock_day(session: Session, day: date) -> Day:
    """The state of ``day`` (created if new), locked for update."""
    session.execute(postgres_insert(days).values(usage_date=day).on_conflict_do_nothing())
    row = session.execute(sa.select(days).where(days.c.usage_date == day).with_for_update()).one()
    return _day(row)


def save_day(session: Session, day: date, **values: Any) -> None:
    session.execute(sa.update(days).where(days.c.usage_date == day).values(**values))


def get_day(session: Session, day: date) -> Day | None:
    row = session.execute(sa.select(days).where(days.c.usage_date == day)).first()
    return None if row is None else _day(row)


def list_days(session: Session, start: date, end: date) -> list[Day]:
    stmt = (
        sa.select(days)
        .where(days.c.usage_date.between(start, end))
        .order_by(days.c.usage_date.desc())
    )
    return [_day(row) for row in session.execute(stmt)]


def unfinished_days(session: Session, start: date, end: date) -> list[date]:
    """Dates in [start, end] that have been aggregated but are not final yet."""
    stmt = sa.select(days.c.usage_date).where(
        days.c.usage_date.between(start, end), days.c.final.is_(False)
    )
    return sorted(session.execute(stmt).scalars())


def final_days(session: Session, candidates: Sequence[date]) -> set[date]:
    stmt = sa.select(days.c.usage_date).where(
        days.c.usage_date.in_(list(candidates)), days.c.final.is_(True)
    )
    return set(session.execute(stmt).scalars())


def due_retries(session: Session, now: datetime) -> list[tuple[date, int]]:
    """(date, retries so far) of the dates whose retry is due."""
    stmt = (
        sa.select(days.c.usage_date, days.c.retry_attempts)
        .where(days.c.next_retry_at <= now)
        .order_by(days.c.usage_date)
    )
    return [(row.usage_date, int(row.retry_attempts)) for row in session.execute(stmt)]


# -- usage ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageRow:
    merchant_id: str
    usage_date: date
    metric: str
    metric_value: int
    updated_at: datetime


def query_usage(
    session: Session,
    merchant_id: str,
    start: date,
    end: date,
    metric: str | None = None,
    limit: int = 1000,
) -> list[UsageRow]:
    stmt = (
        sa.select(
            usage.c.merchant_id,
            usage.c.usage_date,
            usage.c.metric,
            usage.c.metric_value,
            usage.c.updated_at,
        )
        .where(usage.c.merchant_id == merchant_id, usage.c.usage_date.between(start, end))
        .order_by(usage.c.usage_date, usage.c.metric)
        .limit(limit)
    )
    if metric is not None:
        stmt = stmt.where(usage.c.metric == metric)
    return [UsageRow(*row) for row in session.execute(stmt)]
