"""HTTP API: usage rows, runs, per-date status (JSON). Routes are sync: FastAPI runs them
in its thread pool, off the event loop, as the engine is synchronous."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy.orm import Session, sessionmaker

from aggregation import repository as repo
from aggregation.keys import MAX_NAME_LENGTH
from tributary.web.errors import error_responses
from tributary.web.params import RowId

#: widest date range one /usage request may ask for, in days
MAX_RANGE_DAYS = 366
#: default range of /usage and /days when none is given, in days
DEFAULT_RANGE_DAYS = 31
MAX_LIMIT = 10_000

Status = Literal["running", "succeeded", "partial", "failed"]
Name = Annotated[str, Query(min_length=1, max_length=MAX_NAME_LENGTH)]


def _range(start: date | None, end: date | None) -> tuple[date, date]:
    end = end or datetime.now(UTC).date()
    start = start or end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if start > end:
        raise HTTPException(422, detail=f"from ({start}) must not be after to ({end})")
    if (end - start).days >= MAX_RANGE_DAYS:
        raise HTTPException(422, detail=f"the range may span at most {MAX_RANGE_DAYS} days")
    return start, end


def _run_json(run: repo.Run) -> dict[str, Any]:
    body = asdict(run)
    body["date"] = body.pop("usage_date")
    return body


def _day_json(day: repo.Day) -> dict[str, Any]:
    body = asdict(day)
    body["date"] = body.pop("usage_date")
    return body


def router(sessions: sessionmaker[Session]) -> APIRouter:
    api = APIRouter(tags=["aggregation"])

    @api.get("/usage")
    def get_usage(
        merchant: Name,
        metric: Annotated[str | None, Query(min_length=1, max_length=MAX_NAME_LENGTH)] = None,
        start: Annotated[date | None, Query(alias="from")] = None,
        end: Annotated[date | None, Query(alias="to")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 1000,
    ) -> dict[str, Any]:
        """A merchant's daily values, oldest first (default: the last 31 days)."""
        first, last = _range(start, end)
        with sessions() as session:
            rows = repo.query_usage(session, merchant, first, last, metric, limit + 1)
        return {
            "merchant": merchant,
            "from": first,
            "to": last,
            "metric": metric,
            "rows": [
                {
                    "date": r.usage_date,
                    "metric": r.metric,
                    "value": r.metric_value,
                    "updated_at": r.updated_at,
                }
                for r in rows[:limit]
            ],
            "truncated": len(rows) > limit,
        }

    @api.get("/runs")
    def get_runs(
        day: Annotated[date | None, Query(alias="date")] = None,
        status: Status | None = None,
        before: Annotated[RowId | None, Query(description="runs with a smaller id")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        """Recent runs, newest first."""
        with sessions() as session:
            runs = repo.list_runs(session, day=day, status=status, limit=limit, before_id=before)
        return {"runs": [_run_json(run) for run in runs]}

    @api.get("/runs/{run_id}", responses=error_responses(404))
    def get_run(
        run_id: RowId, errors: Annotated[int, Query(ge=0, le=MAX_LIMIT)] = 100
    ) -> dict[str, Any]:
        """One run, with the malformed keys it recorded."""
        with sessions() as session:
            run = repo.get_run(session, run_id)
            if run is None:
                raise HTTPException(404, detail=f"no run {run_id}")
            bad = repo.list_run_errors(session, run_id, errors)
        return {**_run_json(run), "malformed": [asdict(m) for m in bad]}

    @api.get("/days")
    def get_days(
        start: Annotated[date | None, Query(alias="from")] = None,
        end: Annotated[date | None, Query(alias="to")] = None,
    ) -> dict[str, Any]:
        """Per-date status: last aggregation, keys, rows, errors, final, next retry."""
        first, last = _range(start, end)
        with sessions() as session:
            days = repo.list_days(session, first, last)
        return {"days": [_day_json(day) for day in days]}

    return api
