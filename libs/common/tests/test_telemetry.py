from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.engine import Engine

from tributary.http import HttpServer
from tributary.telemetry import Telemetry, setup_telemetry, traces_endpoint


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(exporter: InMemorySpanExporter) -> Iterator[Telemetry]:
    telemetry = setup_telemetry("svc-test", None, exporter=exporter)
    yield telemetry
    # also removes the process-wide patches, so other tests see plain clients
    telemetry.shutdown()


def names(exporter: InMemorySpanExporter) -> list[str]:
    return [span.name for span in exporter.get_finished_spans()]


def test_spans_carry_the_service_name(telemetry: Telemetry, exporter: InMemorySpanExporter) -> None:
    with telemetry.tracer.start_as_current_span("work"):
        pass

    (span,) = exporter.get_finished_spans()
    assert span.name == "work"
    assert span.resource.attributes["service.name"] == "svc-test"
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "tributary"


def test_without_exporter_spans_are_sampled_but_not_exported() -> None:
    telemetry = setup_telemetry("svc-test", None)
    try:
        with telemetry.tracer.start_as_current_span("work") as span:
            ctx = span.get_span_context()
        assert ctx.is_valid
        assert ctx.trace_flags.sampled
        assert telemetry.exporters == ()
    finally:
        telemetry.shutdown()


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("http://collector:4318/v1/traces", "http://collector:4318/v1/traces"),
    ],
)
def test_traces_endpoint(endpoint: str, expected: str) -> None:
    assert traces_endpoint(endpoint) == expected


def test_otlp_endpoint_configures_a_batching_otlp_exporter() -> None:
    # no span is made: shutdown has nothing to send to the absent collector
    telemetry = setup_telemetry("svc-test", "http://collector.invalid:4318")
    try:
        (otlp,) = telemetry.exporters
        assert isinstance(otlp, OTLPSpanExporter)
        assert otlp._endpoint == "http://collector.invalid:4318/v1/traces"
        assert isinstance(telemetry.processors[0], BatchSpanProcessor)
    finally:
        telemetry.shutdown(timeout=1)


def test_explicit_exporter_can_be_batched(exporter: InMemorySpanExporter) -> None:
    telemetry = setup_telemetry("svc-test", None, exporter=exporter, batch=True)
    with telemetry.tracer.start_as_current_span("work"):
        pass
    telemetry.shutdown()  # flushes the batch

    assert names(exporter) == ["work"]


def test_shutdown_twice_is_harmless(telemetry: Telemetry) -> None:
    telemetry.shutdown()
    telemetry.shutdown()


def test_instrument_engine_traces_statements(
    telemetry: Telemetry, exporter: InMemorySpanExporter, pg_engine: Engine
) -> None:
    telemetry.instrument_engine(pg_engine)
    telemetry.instrument_engine(pg_engine)  # idempotent: still one span per statement

    with pg_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1

    selects = [s for s in exporter.get_finished_spans() if s.name.startswith("SELECT")]
    assert len(selects) == 1
    assert selects[0].kind is SpanKind.CLIENT
    assert selects[0].resource.attributes["service.name"] == "svc-test"

    telemetry.uninstrument()
    exporter.clear()
    with pg_engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert exporter.get_finished_spans() == ()


async def test_instrument_redis_globally_is_idempotent(
    telemetry: Telemetry, exporter: InMemorySpanExporter, redis_client: aioredis.Redis
) -> None:
    telemetry.instrument_redis()
    telemetry.instrument_redis()

    await redis_client.ping()

    assert names(exporter) == ["PING"]
    telemetry.uninstrument()
    exporter.clear()
    await redis_client.ping()
    assert names(exporter) == []


async def test_a_later_telemetry_takes_over_the_redis_instrumentation(
    telemetry: Telemetry, exporter: InMemorySpanExporter, redis_client: aioredis.Redis
) -> None:
    other_exporter = InMemorySpanExporter()
    other = setup_telemetry("svc-other", None, exporter=other_exporter)
    telemetry.instrument_redis()
    try:
        other.instrument_redis()
        await redis_client.ping()
        # the first one no longer owns the patch: releasing it leaves the new owner's
        telemetry.uninstrument()
        await redis_client.ping()
    finally:
        other.shutdown()

    assert names(exporter) == []
    assert names(other_exporter) == ["PING", "PING"]


async def test_instrument_one_redis_client(
    telemetry: Telemetry, exporter: InMemorySpanExporter, redis_url: str
) -> None:
    traced = aioredis.Redis.from_url(redis_url)
    plain = aioredis.Redis.from_url(redis_url)
    try:
        telemetry.instrument_redis(traced)
        telemetry.instrument_redis(traced)
        await traced.ping()
        await plain.ping()
        assert names(exporter) == ["PING"]
    finally:
        await traced.aclose()
        await plain.aclose()


async def test_instrument_one_httpx_client(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(204))
    async with httpx.AsyncClient(transport=transport) as client:
        telemetry.instrument_httpx(client)
        telemetry.instrument_httpx(client)
        await client.get("http://upstream.test/x")

    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.CLIENT
    assert span.name == "GET"


def hello_router() -> APIRouter:
    router = APIRouter()

    @router.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @router.get("/hello/metrics")
    async def hello_metrics() -> dict[str, int]:
        return {"hellos": 1}

    return router


async def test_instrument_app_traces_requests_but_not_probes(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    app = FastAPI()
    app.include_router(hello_router())

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    telemetry.instrument_app(app)
    telemetry.instrument_app(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        assert (await client.get("/hello")).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/healthz?verbose=1")).status_code == 200
        assert (await client.get("/hello/metrics")).status_code == 200

    servers = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert [s.name for s in servers] == ["GET /hello", "GET /hello/metrics"]


async def test_one_trace_from_client_to_server(
    telemetry: Telemetry, exporter: InMemorySpanExporter
) -> None:
    app = FastAPI()
    app.include_router(hello_router())
    telemetry.instrument_app(app)
    telemetry.instrument_httpx()  # process-wide: clients made after this are traced
    server = HttpServer(app, "127.0.0.1", 0)
    port = await server.start()
    try:
        async with httpx.AsyncClient() as client:
            with telemetry.tracer.start_as_current_span("caller"):
                response = await client.get(f"http://127.0.0.1:{port}/hello")
        assert response.json() == {"hello": "world"}
    finally:
        await server.stop()

    spans = exporter.get_finished_spans()
    by_kind = {s.kind: s for s in spans}
    assert {SpanKind.CLIENT, SpanKind.SERVER} <= by_kind.keys()
    assert len({s.context.trace_id for s in spans}) == 1
    server_span = by_kind[SpanKind.SERVER]
    assert server_span.parent is not None
    assert server_span.parent.span_id == by_kind[SpanKind.CLIENT].context.span_id


async def test_uninstrument_app(telemetry: Telemetry, exporter: InMemorySpanExporter) -> None:
    app = FastAPI()
    app.include_router(hello_router())
    telemetry.instrument_app(app)
    telemetry.uninstrument()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        await client.get("/hello")
    assert exporter.get_finished_spans() == ()
