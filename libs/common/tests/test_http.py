from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, HTTPException
from pydantic import BaseModel, SecretStr, field_validator
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.engine import Engine

from tributary.config import ServiceSettings
from tributary.http import (
    HttpServer,
    ReadinessCheck,
    create_app,
    database_check,
    metrics_app,
    migrations_check,
    redis_check,
    serve,
)
from tributary.metrics import Metrics
from tributary.web.params import RowId
from tributary_testing.asgi import Exchange


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

    checks = [ReadinessCheck("slow", hang, timeout_s=0.05), ReadinessCheck("fine", fine)]
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

    check = migrations_check(applied, timeout_s=0.05)
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
    patient = ReadinessCheck("migrations", check.probe, timeout_s=10)
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


async def test_a_scrape_says_whether_the_service_is_ready() -> None:
    """tributary_ready follows the readiness checks at every scrape, on the API port and on
    METRICS_PORT alike, without anything probing /readyz (what the alert rules watch)."""
    applied = False
    checks = [migrations_check(lambda: applied)]
    metrics = Metrics()
    for app in (make_app(checks, metrics), metrics_app(metrics, checks)):
        async with client_for(app) as client:
            applied = False
            assert "tributary_ready 0.0" in (await client.get("/metrics")).text
            applied = True
            assert "tributary_ready 1.0" in (await client.get("/metrics")).text
    async with client_for(make_app(checks, metrics)) as client:
        applied = False
        assert (await client.get("/readyz")).status_code == 503
    assert metrics.ready._value.get() == 0


async def test_openapi_schema_lists_probes_and_routes(client: httpx.AsyncClient) -> None:
    for path in ("/openapi.json", "/docs", "/redoc"):  # off unless HTTP_DOCS says otherwise
        assert (await client.get(path)).status_code == 404
    schema = make_app().openapi()
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


# -- request guards: body size, unstorable text, integer bounds, the one error shape --------

LIMIT = 64 * 1024


class Note(BaseModel):
    text: str
    tags: dict[str, str] = {}
    secret: SecretStr | None = None


def guarded_router(seen: list[str]) -> APIRouter:
    router = APIRouter()

    @router.post("/notes", status_code=201)
    async def add_note(note: Note) -> dict[str, str]:
        seen.append(note.text)
        return {"text": note.text}

    @router.get("/notes/{note_id}")
    async def get_note(note_id: RowId, q: str = "") -> dict[str, object]:
        seen.append(q)
        if note_id == 404:
            raise HTTPException(404, f"note {note_id} not found")
        return {"id": note_id, "q": q}

    @router.get("/down")
    async def down() -> None:
        # a real refusal: nothing listens on that port
        engine = sa.create_engine(f"postgresql+psycopg://x@127.0.0.1:{closed_port()}/x")
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()

    return router


@pytest.fixture
def seen() -> list[str]:
    return []


@pytest.fixture
def guarded(seen: list[str]) -> FastAPI:
    return create_app("svc-test", Metrics(), routers=[guarded_router(seen)], max_body_bytes=LIMIT)


@pytest.fixture
async def gclient(guarded: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(guarded) as client:
        yield client


DECLARED = b'{"text": "' + b"x" * LIMIT + b'"}'


@pytest.mark.parametrize(
    ("chunks", "headers", "reads"),
    [
        # a Content-Length over the limit: answered before a byte of the body is read
        ([DECLARED], [(b"content-length", str(len(DECLARED)).encode())], 0),
        # chunked, 10 bytes then 16 KiB chunks: the fifth read passes 64 KiB, 97 are never read
        ([b'{"text": "'] + [b"x" * 16 * 1024] * 100 + [b'"}'], [], 5),
    ],
    ids=["content-length", "chunked"],
)
async def test_a_body_over_the_limit_is_a_413_read_no_further_than_the_limit(
    guarded: FastAPI,
    seen: list[str],
    chunks: list[bytes],
    headers: list[tuple[bytes, bytes]],
    reads: int,
) -> None:
    exchange = Exchange(list(chunks), headers)
    await guarded(exchange.scope, exchange.receive, exchange.send)  # type: ignore[arg-type]
    assert exchange.status == 413
    assert exchange.reads == reads
    assert seen == []


async def test_a_large_body_over_real_http_gets_a_413_and_the_route_never_runs(
    guarded: FastAPI, seen: list[str]
) -> None:
    server = HttpServer(guarded, "127.0.0.1", 0)
    port = await server.start()
    try:
        async with httpx.AsyncClient() as client:
            big = await client.post(
                f"http://127.0.0.1:{port}/notes",
                content=b'{"text": "' + b"x" * (20 * 1024 * 1024) + b'"}',
                headers={"content-type": "application/json"},
            )

            async def stream() -> AsyncIterator[bytes]:
                yield b'{"text": "'
                for _ in range(100):
                    yield b"x" * 16 * 1024
                yield b'"}'

            chunked = await client.post(
                f"http://127.0.0.1:{port}/notes",
                content=stream(),
                headers={"content-type": "application/json"},
            )
            fine = await client.post(f"http://127.0.0.1:{port}/notes", json={"text": "ok"})
    finally:
        await server.stop()
    assert big.status_code == 413
    assert big.json()["message"].startswith(f"request body larger than {LIMIT} bytes")
    assert chunked.status_code == 413
    assert fine.status_code == 201
    assert seen == ["ok"]


def test_the_body_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServiceSettings().http_max_body_bytes == 1024 * 1024
    monkeypatch.setenv("HTTP_MAX_BODY_BYTES", "2048")
    assert ServiceSettings().http_max_body_bytes == 2048


@pytest.mark.parametrize(
    ("path", "loc"),
    [
        ("/notes/1?q=a%00b", ["query", "q"]),
        ("/notes/a%00b", ["path"]),
        ("/notes/1?a%00=1", ["query", "a\x00"]),
    ],
)
async def test_nul_in_the_path_or_query_is_a_422_naming_it(
    gclient: httpx.AsyncClient, seen: list[str], path: str, loc: list[str]
) -> None:
    response = await gclient.get(path)
    assert response.status_code == 422
    body = response.json()
    assert body["detail"] == [
        {"loc": loc, "msg": "must not contain NUL characters", "type": "string_unstorable"}
    ]
    assert body["message"].startswith("invalid request: ")
    assert seen == []


@pytest.mark.parametrize(
    ("body", "loc", "msg"),
    [
        (b'{"text": "a\\u0000b"}', ["body", "text"], "NUL characters"),
        (b'{"text": "a", "tags": {"k": "\\u0000"}}', ["body", "tags", "k"], "NUL characters"),
        (b'{"text": "a", "tags": {"\\u0000": "v"}}', ["body", "tags", "\x00"], "NUL characters"),
        (b'{"text": "\\udcff"}', ["body", "text"], "unpaired surrogates"),
        (b'{"text": "\\uD800x"}', ["body", "text"], "unpaired surrogates"),
        (b'{"text": "\xed\xb3\xbf"}', ["body", "text"], "unpaired surrogates"),
    ],
)
async def test_unstorable_text_in_a_json_body_is_a_422_naming_the_field(
    gclient: httpx.AsyncClient, seen: list[str], body: bytes, loc: list[str], msg: str
) -> None:
    response = await gclient.post(
        "/notes", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    (item,) = response.json()["detail"]
    assert item["loc"] == loc
    assert item["msg"].endswith(msg)
    assert seen == []


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'{"text": "\\\\u0000"}', "\\u0000"),  # an escaped backslash, then u0000
        (b'{"text": "\\ud83d\\ude00"}', "\U0001f600"),  # a surrogate pair: one character
    ],
)
async def test_text_that_only_looks_unstorable_passes(
    gclient: httpx.AsyncClient, body: bytes, text: str
) -> None:
    response = await gclient.post(
        "/notes", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 201
    assert response.json() == {"text": text}


@pytest.mark.parametrize("note_id", ["99999999999999999999", "9223372036854775808", "0", "-1"])
async def test_integers_a_bigint_cannot_hold_are_a_422(
    gclient: httpx.AsyncClient, seen: list[str], note_id: str
) -> None:
    response = await gclient.get(f"/notes/{note_id}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "note_id"]
    assert seen == []
    assert (await gclient.get("/notes/9223372036854775807")).status_code == 200


async def test_http_errors_have_the_one_shape(gclient: httpx.AsyncClient) -> None:
    missing = await gclient.get("/notes/404")
    assert missing.status_code == 404
    assert missing.json() == {"message": "note 404 not found", "detail": []}
    unknown = await gclient.get("/nowhere")
    assert unknown.json() == {"message": "Not Found", "detail": []}
    wrong_method = await gclient.delete("/notes/1")
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"message": "Method Not Allowed", "detail": []}


async def test_validation_errors_never_echo_what_was_sent(gclient: httpx.AsyncClient) -> None:
    sent = {"text": ["s3cr3t-value"], "tags": {"h": {"v": "hdr-value"}}, "secret": ["hunter2"]}
    response = await gclient.post("/notes", json=sent)
    assert response.status_code == 422
    for value in ("s3cr3t-value", "hdr-value", "hunter2"):
        assert value not in response.text
    assert all(set(item) == {"loc", "msg", "type"} for item in response.json()["detail"])
    assert {tuple(i["loc"]) for i in response.json()["detail"]} == {
        ("body", "text"),
        ("body", "tags", "h"),
        ("body", "secret"),
    }


async def test_an_error_body_stays_small_however_much_is_wrong(
    gclient: httpx.AsyncClient,
) -> None:
    # 1,000 bad tags (numbers, not strings) with long keys: 1,000 errors, long locations
    tags = {f"{i:04}" + "k" * 36: i for i in range(1000)}
    response = await gclient.post("/notes", json={"text": "a", "tags": tags})
    assert response.status_code == 422
    assert len(response.content) <= 4096
    assert 0 < len(response.json()["detail"]) < 1000


async def test_an_unreachable_database_is_a_503(gclient: httpx.AsyncClient) -> None:
    response = await gclient.get("/down")
    assert response.status_code == 503
    assert response.json() == {
        "message": "a database or Redis is unavailable, try again later",
        "detail": [],
    }


async def test_the_openapi_schema_documents_the_one_error_shape(guarded: FastAPI) -> None:
    schema = guarded.openapi()
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    post = schema["paths"]["/notes"]["post"]["responses"]
    assert {"400", "413", "422", "503"} <= set(post)
    assert all(post[code]["content"] == error for code in ("400", "413", "422", "503"))
    get = schema["paths"]["/notes/{note_id}"]["get"]
    assert get["responses"]["422"]["content"] == error
    assert "413" not in get["responses"]
    assert get["parameters"][0]["schema"]["maximum"] == 2**63 - 1
    assert set(schema["paths"]["/healthz"]["get"]["responses"]) == {"200"}
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components
    assert components["ErrorBody"]["required"] == ["message", "detail"]
