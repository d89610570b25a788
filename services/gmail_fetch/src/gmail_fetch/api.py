"""HTTP API: create, read, list and cancel analytics jobs.

``POST /api/analytics/jobs`` writes the job and queues ``gmail.job.created``
in one transaction (outbox); any replica's worker picks it up. Clients follow
a job with ``GET /api/analytics/jobs/{id}`` or by tailing ``gmail.job-events``.
Callers authenticate as for every service (``tributary.web.auth``): reads need
``gmail_fetch:read``, creating and cancelling jobs ``gmail_fetch:write``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response
from opentelemetry.trace import Tracer
from pydantic import BaseModel, ConfigDict, Field

from gmail_fetch import repository as repo
from gmail_fetch.config import GmailFetchSettings
from gmail_fetch.repository import Job
from tributary.transactions import Transactions
from tributary.web.errors import error_responses

NOT_FOUND = error_responses(404)
JobId = Annotated[str, Path(min_length=1, max_length=36, description="Job id.")]


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=200, description="Account whose mail to fetch.")
    type: Literal["fetch_messages"] = "fetch_messages"
    max_results: int | None = Field(
        None, ge=1, description="Newest messages to cover (default and cap: see settings)."
    )


class JobView(BaseModel):
    id: str
    user_id: str
    type: str
    status: Literal["pending", "processing", "completed", "failed", "cancelled"]
    max_results: int
    progress: int
    total: int
    current_step: str
    attempts: int
    fetched: int
    cached: int
    cache_hit_rate: float | None
    sync_mode: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def _view(job: Job) -> JobView:
    return JobView.model_validate(job.public())


def make_router(
    settings: GmailFetchSettings, store: Transactions, tracer: Tracer | None
) -> APIRouter:
    router = APIRouter(
        prefix="/api/analytics",
        tags=["analytics"],
    )

    @router.post("/jobs", status_code=202, response_model=JobView, responses=NOT_FOUND)
    async def create_job(body: JobRequest, response: Response) -> JobView:
        max_results = body.max_results or settings.default_max_results
        if max_results > settings.max_results_cap:
            raise HTTPException(422, f"max_results: must be at most {settings.max_results_cap}")
        if await store(repo.get_account, body.user_id) is None:
            raise HTTPException(404, f"no Gmail account for user {body.user_id!r}")
        job = await store(repo.create_job, body.user_id, body.type, max_results, tracer)
        response.headers["Location"] = f"/api/analytics/jobs/{job.id}"
        return _view(job)

    @router.get("/jobs/{job_id}", response_model=JobView, responses=NOT_FOUND)
    async def get_job(job_id: JobId) -> JobView:
        job = await store(repo.get_job, job_id)
        if job is None:
            raise HTTPException(404, f"job {job_id!r} not found")
        return _view(job)

    @router.get("/jobs", response_model=list[JobView])
    async def list_jobs(
        user_id: Annotated[str, Query(min_length=1, max_length=200)],
        limit: Annotated[int, Query(ge=1, le=200)] = 20,
    ) -> list[JobView]:
        return [_view(j) for j in await store(repo.list_jobs, user_id, limit)]

    @router.delete("/jobs/{job_id}", response_model=JobView, responses=error_responses(404, 409))
    async def cancel_job(job_id: JobId) -> JobView:
        job = await store(repo.cancel_job, job_id, tracer)
        if job is not None:
            return _view(job)
        existing = await store(repo.get_job, job_id)
        if existing is None:
            raise HTTPException(404, f"job {job_id!r} not found")
        raise HTTPException(409, f"job {job_id!r} is already {existing.status}")

    return router
