"""Fixtures of the alert service's tests: the service wired to the test's own Redis key
prefix and PostgreSQL schema, a manual clock, a real local webhook server and a
real local SMTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request, Response
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.engine import Engine

from alert import api
from alert.app import AlertApp
from alert.clock import ManualClock
from alert.config import AlertSettings
from alert.service import SERVICE
from simulators.ports import free_port
from tributary.egress import egress_client
from tributary.http import HttpServer, create_app
from tributary.keys import Keys
from tributary.service import Service, assemble_resources, migrate
from tributary.telemetry import Telemetry, setup_telemetry
from tributary.web.access import ApiAccess

from .harness import Harness, egress_policy

#: a Monday, noon UTC
T0 = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(exporter: InMemorySpanExporter) -> Iterator[Telemetry]:
    telemetry = setup_telemetry("alert", None, exporter=exporter)
    yield telemetry
    telemetry.shutdown()


@pytest.fixture
def settings(postgres_url: str, redis_url: str, keys: Keys, pg_schema: str) -> AlertSettings:
    return AlertSettings(
        REDIS_URL=redis_url,
        DATABASE_URL=postgres_url,
        STREAM_PREFIX=keys.prefix,
        HTTP_PORT=0,
        db_schema=pg_schema,
        notify_retry_base_seconds=10,
        webhook_timeout_seconds=2,
        max_deliveries=2,
        read_block_ms=5,
        # the tests' webhook receivers listen on loopback: allow-listed, as an operator would
        EGRESS_ALLOW_NETWORKS="127.0.0.0/8",
    )


@pytest.fixture
def service(settings: AlertSettings) -> Service[AlertSettings, AlertApp]:
    return SERVICE.configured(settings)


@pytest.fixture
def migrated(pg_engine: Engine, service: Service[AlertSettings, AlertApp]) -> Engine:
    migrate(service, pg_engine)
    return pg_engine


@pytest.fixture
async def harness(
    settings: AlertSettings,
    service: Service[AlertSettings, AlertApp],
    migrated: Engine,
    redis_client: aioredis.Redis,
    telemetry: Telemetry,
    clock: ManualClock,
) -> AsyncIterator[Harness]:
    # the client the notifier builds for itself, with the tests' stub DNS
    http = egress_client(egress_policy(settings), timeout=settings.webhook_timeout_seconds)
    telemetry.instrument_httpx(http)
    res = assemble_resources(service, settings, redis_client, migrated, telemetry, "test-0")
    harness = Harness(res, clock, http)
    yield harness
    await http.aclose()
    res.relay.close()


@pytest.fixture
async def http(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the service's HTTP API (in process), /openapi.json served (no
    credentials configured: every caller may read it)."""
    app = create_app(
        "alert",
        harness.res.metrics,
        [],
        [api.router(harness.app)],
        access=ApiAccess(docs="protected"),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://alert.test") as c:
        yield c


# -- a real webhook receiver ----------------------------------------------------------------


@dataclass
class Hook:
    """What the local webhook server received, and how it should answer."""

    url: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0
    #: the body of its answers
    answer: bytes = b""

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [c["json"] for c in self.calls]


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    state = Hook()
    app = FastAPI()

    @app.post("/hook")
    async def receive(request: Request) -> Response:
        body = await request.body()
        state.calls.append(
            {"headers": dict(request.headers), "body": body, "json": await request.json()}
        )
        if state.delay:
            await asyncio.sleep(state.delay)
        return Response(state.answer, status_code=state.status)

    server = HttpServer(app, "127.0.0.1", 0)
    port = await server.start()
    state.url = f"http://127.0.0.1:{port}/hook"
    yield state
    await server.stop()


# -- a real SMTP server -----------------------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            {
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "data": envelope.content.decode("utf8", errors="replace"),
            }
        )
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()
