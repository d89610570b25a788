"""HTTP API: servers (register, list, deactivate) and analytics.

The apiUrl is accepted on registration and never returned; the registration
body is parsed here, by the same code that registers a server from the CLI,
and its errors never quote the apiUrl. Every error answer has the shared shape
(tributary.web.errors).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from sqlalchemy.orm import Session, sessionmaker

from snapshot import analytics
from snapshot import repository as repo
from snapshot.credentials import SecretBox
from snapshot.forecast import find_key, forecast_key
from snapshot.servers import (
    DuplicateServer,
    Registration,
    RegistrationError,
    parse_registration,
    public_view,
    register_server,
    set_active,
    vet_destination,
)
from tributary.egress import EgressPolicy
from tributary.keys import Keys
from tributary.transactions import Transactions
from tributary.web.errors import error_response, error_responses

Clock = Callable[[], datetime]


NOT_FOUND = error_responses(404)


def servers_router(
    sessions: sessionmaker[Session], box: SecretBox, clock: Clock, egress: EgressPolicy
) -> APIRouter:
    router = APIRouter(prefix="/servers", tags=["servers"])
    db = Transactions(sessions)
    _registration_route(router, db, box, clock, egress)
    _read_routes(router, db, clock)
    _state_routes(router, db, clock)
    return router


def _registration_route(
    router: APIRouter, db: Transactions, box: SecretBox, clock: Clock, egress: EgressPolicy
) -> None:
    schema = Registration.model_json_schema(by_alias=True)
    body = {"required": True, "content": {"application/json": {"schema": schema}}}

    @router.post(
        "",
        status_code=201,
        summary="Register an Outline server",
        openapi_extra={"requestBody": body},
        responses=error_responses(400, 409),
    )
    async def register(request: Request) -> Response:
        """Body: ``{"apiUrl": "https://host:port/secret", "certSha256": "...", "name": ...}``."""
        try:
            raw = json.loads(await request.body() or b"null")
        except ValueError:
            return error_response(400, "body is not valid JSON")
        try:
            registration = parse_registration(raw)
            await asyncio.to_thread(vet_destination, egress, registration)
        except RegistrationError as exc:
            return error_response(422, f"invalid registration: {exc}")

        def create(session: Session) -> dict[str, Any]:
            return public_view(register_server(session, box, registration, clock()))

        try:
            view = await db(create)
        except DuplicateServer as exc:
            return error_response(409, str(exc))
        except RegistrationError as exc:
            return error_response(422, f"invalid registration: {exc}")
        return JSONResponse(status_code=201, content=jsonable_encoder(view))


def _read_routes(router: APIRouter, db: Transactions, clock: Clock) -> None:
    @router.get("", summary="List servers (never their apiUrl)")
    async def list_all(include_inactive: bool = False) -> list[dict[str, Any]]:
        def read(session: Session) -> list[dict[str, Any]]:
            now = clock()
            return [public_view(r, now) for r in repo.list_servers(session, include_inactive)]

        return await db.read(read)

    @router.get("/{server}", summary="One server, by id or name", responses=NOT_FOUND)
    async def get_one(server: str) -> dict[str, Any]:
        def read(session: Session) -> dict[str, Any] | None:
            row = repo.find_server(session, server)
            return public_view(row, clock()) if row is not None else None

        view = await db.read(read)
        if view is None:
            raise HTTPException(404, f"no server {server!r}")
        return view


def _state_routes(router: APIRouter, db: Transactions, clock: Clock) -> None:
    async def _set(server: str, active: bool) -> dict[str, Any]:
        def write(session: Session) -> dict[str, Any] | None:
            row = set_active(session, server, active, clock())
            return public_view(row) if row is not None else None

        view = await db(write)
        if view is None:
            raise HTTPException(404, f"no server {server!r}")
        return view

    @router.delete(
        "/{server}", summary="Deactivate a server (history is kept)", responses=NOT_FOUND
    )
    async def deactivate(server: str) -> dict[str, Any]:
        return await _set(server, False)

    @router.post(
        "/{server}/activate", summary="Activate a deactivated server again", responses=NOT_FOUND
    )
    async def activate(server: str) -> dict[str, Any]:
        return await _set(server, True)


def analytics_router(
    sessions: sessionmaker[Session], clock: Clock, redis: Redis, keys: Keys
) -> APIRouter:
    router = APIRouter(prefix="/analytics", tags=["analytics"])
    db = Transactions(sessions)

    @router.get("/top-consumers", summary="Keys that used most over a period")
    async def top_consumers(
        period: Literal["24h", "7d", "30d"] = "24h",
        limit: Annotated[int, Query(ge=1, le=1000)] = 10,
        server: str | None = None,
    ) -> list[dict[str, Any]]:
        return await db.read(analytics.top_consumers, period, limit, server)

    @router.get("/anomalies", summary="Anomaly episodes, newest first")
    async def anomalies(
        active_only: bool = True, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[dict[str, Any]]:
        return await db.read(analytics.anomalies, active_only, limit)

    @router.get("/forecast", summary="Time to quota of one key", responses=NOT_FOUND)
    async def forecast(
        server: Annotated[str, Query(min_length=1)], key: Annotated[str, Query(min_length=1)]
    ) -> dict[str, Any]:
        def compute(session: Session) -> dict[str, Any] | None:
            row = find_key(session, server, key)
            if row is None:
                return None
            result = forecast_key(session, row, clock())
            return {**result.__dict__, "state": result.state}

        found = await db.read(compute)
        if found is None:
            raise HTTPException(404, f"no key {key!r} on server {server!r}")
        return found

    @router.get("/summary", summary="Snapshot count, last collection per server, backoff")
    async def summary() -> dict[str, Any]:
        body = await db.read(analytics.summary, clock())
        body["scheduler"] = await redis.hgetall(keys.snapshot_scheduler)
        return body

    return router
