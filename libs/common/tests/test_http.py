from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, field_validator
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.engine import Engine

from tributary.http import (
    HttpServer,
    ReadinessCheck,
    create_app,
    database_check,
    migrations_check,
    redis_check,
    serve,
)
from tributary.metrics import Metrics


class Item(BaseModel):
    name: str
    quantity: int

    @field_validator("name")
    @classmethod
    def _no_spaces(cls, value: str) -> str:
        if " " in value:
            raise ValueError("must not contain spaces")
        return value


def items_router() -> APIRouter:
    router = APIRouter()

    @router.post("/items")
    async def add_item(item: Item) -> Item:
        return item

    @router.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return router


def make_app(checks: Sequence[ReadinessCheck] = (), metrics: Metrics | None = None) -> FastAPI:
    return create_app("svc-test", metrics or Metrics(), checks, routers=[items_router()])


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(make_app()) as client:
        yield client


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_with_real_redis_and_database(
    redis_client: aioredis.Redis, pg_engine: Engine
) -> None:
    checks = [redis_check(redis_client), database_check(pg_engine), migrations_check(lambda: True)]
    async with client_for(make_app(checks)) as client:
        response = await client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"redis", "database", "migrations"}
    assert all(result["status"] == "ok" for result in body["checks"].values())


async def test_readyz_without_checks_is_ready(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {}}


async def test_readyz_503_names_the_failed_check(pg_engine: Engine) -> None:
    # no retries: the check should report the refusal, not outwait redis-py's backoff
    unreachable = aioredis.Redis(host="127.0.0.1", port=closed_port(), retry=Retry(NoBackoff(), 0))
    checks = [redis_check(unreachable), database_check(pg_engine)]
    try:
        async with client_for(make_app(checks)) as client:
            response = await client.get("/readyz")
    finally:
        await unreachable.aclose()

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["status"] == "ok"
    redis_result = body["checks"]["redis"]
    assert redis_result["status"] == "failed"
    assert redis_result["error"].startswith("ConnectionError")


async def test_readyz_reports_unapplied_migrations() -> None:
    async with client_for(make_app([migrations_check(lambda: False)])) as client:
        response = await client.get("/readyz")

    assert response.status_code == 503
    result = response.json()["checks"]["migrations"]
    assert result == {
        "status": "failed",
        "error": "RuntimeError: database migrations are not applied",
        "duration_ms": result["duration_ms"],
    }


async def test_readyz_bounds_a_hanging_check() -> None:
    never = asyncio.Event()

    async def hang() -> None:
        await never.wait()

    async def fine() -> None:
        return None

    checks = [ReadinessCheck("slow", hang, timeout=0.05), ReadinessCheck("fine", fine)]
    async with client_for(make_app(checks)) as client:
        response = await client.get("/readyz")

    assert response.status_code == 503
    results = response.json()["checks"]
    assert results["slow"]["error"] == "timed out after 0.05s"
    assert results["fine"]["status"] == "ok"


async def test_readyz_errors_are_redacted() -> None:
    async def leaky() -> None:
        raise RuntimeError("cannot reach redis://:hunter2@cache:6379/0")

    async with client_for(make_app([ReadinessCheck("leaky", leaky)])) as client:
        response = await client.get("/readyz")

    assert "hunter2" not in response.text
    assert response.json()["checks"]["leaky"]["error"].endswith("redis://:***@cache:6379/0")


async def test_a_blocked_thread_probe_is_not_started_twice() -> None:
    gate = threading.Event()
    calls = 0

    def applied() -> bool:
        nonlocal calls
        calls += 1
        gate.wait(timeout=10)
        return True

    check = migrations_check(applied, timeout=0.05)
    app = make_app([check])
    try:
        async with client_for(app) as client:
            first = await client.get("/readyz")
            second = await client.get("/readyz")
        assert (first.status_code, second.status_code) == (503, 503)
        assert calls == 1
    finally:
        gate.set()
    # the running probe finishes and the next one reports ready
    patient = ReadinessCheck("migrations", check.probe, timeout=10)
    async with client_for(make_app([patient])) as client:
        assert (await client.get("/readyz")).status_code == 200


async def test_metrics_exposition() -> None:
    metrics = Metrics()
    metrics.processed.labels(stream="orders", group="svc").inc(3)
    async with client_for(make_app(metrics=metrics)) as client:
        response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert 'tributary_events_processed_total{group="svc",stream="orders"} 3.0' in response.text


async def test_openapi_schema_lists_probes_and_routes(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert schema["info"]["title"] == "svc-test"
    assert {"/healthz", "/readyz", "/metrics", "/items"} <= set(schema["paths"])


async def test_malformed_json_is_a_4xx(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/items", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["message"] == (
        "invalid request: body: invalid JSON (Expecting property name enclosed in double"
        " quotes at character 1)"
    )


async def test_invalid_body_names_the_fields(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "a b", "quantity": "many"})

    assert response.status_code == 422
    message = response.json()["message"]
    assert "body.name: Value error, must not contain spaces" in message
    assert "body.quantity:" in message


async def test_invalid_path_parameter(client: httpx.AsyncClient) -> None:
    response = await client.get("/items/abc")
    assert response.status_code == 422
    assert response.json()["message"].startswith("invalid request: path.item_id:")


async def test_valid_request_passes(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "ab", "quantity": 2})
    assert response.status_code == 200
    assert response.json() == {"name": "ab", "quantity": 2}


async def test_serve_on_port_zero_until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    bound: asyncio.Future[int] = loop.create_future()
    task = asyncio.create_task(serve(make_app(), "127.0.0.1", 0, stop, started=bound.set_result))
    port = await asyncio.wait_for(bound, 10)

    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/healthz")
    assert response.json() == {"status": "ok"}

    stop.set()
    await asyncio.wait_for(task, 10)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/healthz")


async def test_port_in_use_is_an_os_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = HttpServer(make_app(), "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(OSError, match="failed to start"):
            await server.start()
