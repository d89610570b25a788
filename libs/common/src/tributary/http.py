"""The HTTP surface every service has (DESIGN.md section 6).

:func:`create_app` builds the FastAPI app: ``/healthz`` (the process is
alive), ``/readyz`` (every :class:`ReadinessCheck` passes), ``/metrics``
(Prometheus text) and the service's own routers. :func:`serve` runs it with
uvicorn inside the service's event loop; the service owns the signals and
says when to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import sqlalchemy as sa
import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.engine import Engine

from tributary.config import DEFAULT_MAX_BODY_BYTES
from tributary.logs import redact
from tributary.metrics import Metrics
from tributary.web.access import ApiAccess
from tributary.web.auth import Guard, Policy, public, requires
from tributary.web.errors import install_error_handlers
from tributary.web.limits import BodyLimit
from tributary.web.openapi import document_security, install_openapi
from tributary.web.text import TextGuard

log = logging.getLogger(__name__)

#: per-check bound of /readyz, in seconds; below the usual probe timeout
DEFAULT_CHECK_TIMEOUT = 2.0
#: how long in-flight requests get once the server is told to stop, in (whole) seconds
DEFAULT_GRACEFUL_TIMEOUT = 5

Probe = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class ReadinessCheck:
    """A named probe: ready when ``probe()`` returns, not ready when it raises or is slow."""

    name: str
    probe: Probe
    timeout_s: float = DEFAULT_CHECK_TIMEOUT


# -- check builders ------------------------------------------------------


def redis_check(
    client: aioredis.Redis, name: str = "redis", timeout_s: float = DEFAULT_CHECK_TIMEOUT
) -> ReadinessCheck:
    """Ready when Redis answers PING."""

    async def probe() -> None:
        await client.ping()

    return ReadinessCheck(name, probe, timeout_s)


def database_check(
    engine: Engine, name: str = "database", timeout_s: float = DEFAULT_CHECK_TIMEOUT
) -> ReadinessCheck:
    """Ready when the database answers ``SELECT 1`` (run in a thread: the engine is sync)."""

    def select_one() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    return ReadinessCheck(name, _ThreadProbe(select_one), timeout_s)


def migrations_check(
    fn: Callable[[], bool], name: str = "migrations", timeout_s: float = DEFAULT_CHECK_TIMEOUT
) -> ReadinessCheck:
    """Ready when ``fn()`` (blocking, run in a thread) says the schema is at head."""

    def applied() -> None:
        if not fn():
            raise RuntimeError("database migrations are not applied")

    return ReadinessCheck(name, _ThreadProbe(applied), timeout_s)


class _ThreadProbe:
    """Runs a blocking probe in a thread, at most one at a time.

    A timed-out thread cannot be cancelled: against a hung database each
    probe would leave one more worker blocked until the default executor is
    exhausted. Instead a probe still running is awaited again by the next
    request rather than started twice.
    """

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn = fn
        self._running: asyncio.Future[None] | None = None

    async def __call__(self) -> None:
        running = self._running
        loop = asyncio.get_running_loop()
        if running is None or running.done() or running.get_loop() is not loop:
            running = asyncio.ensure_future(asyncio.to_thread(self._fn))
            # the outcome is read by whoever awaits it in time; a late failure
            # must not be reported as "exception never retrieved"
            running.add_done_callback(_consume)
            self._running = running
        await asyncio.shield(running)


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


# -- readiness -----------------------------------------------------------


async def _run_check(check: ReadinessCheck) -> dict[str, Any]:
    started = time.perf_counter()
    error: str | None = None
    try:
        async with asyncio.timeout(check.timeout_s):
            await check.probe()
    except TimeoutError:
        error = f"timed out after {check.timeout_s:g}s"
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        error = redact(f"{type(exc).__name__}: {exc}")
    result: dict[str, Any] = {
        "status": "ok" if error is None else "failed",
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    if error is not None:
        result["error"] = error
    return result


async def readiness(
    checks: Sequence[ReadinessCheck], metrics: Metrics | None = None
) -> tuple[bool, dict[str, Any]]:
    """Run every check concurrently; (all passed, per-check results). With ``metrics``,
    ``tributary_ready`` is set to the outcome."""
    results = await asyncio.gather(*(_run_check(c) for c in checks))
    by_name = {c.name: r for c, r in zip(checks, results, strict=True)}
    ready = all(r["status"] == "ok" for r in results)
    if metrics is not None:
        metrics.ready.set(1 if ready else 0)
    return ready, by_name


# -- the app -------------------------------------------------------------


def _probe_router(
    metrics: Metrics, checks: Sequence[ReadinessCheck], with_metrics: bool
) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", dependencies=[public()])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", dependencies=[public()])
    async def readyz() -> JSONResponse:
        ready, results = await readiness(checks, metrics)
        body = {"status": "ok" if ready else "unavailable", "checks": results}
        return JSONResponse(status_code=200 if ready else 503, content=body)

    if with_metrics:
        router.add_api_route(
            "/metrics",
            _prometheus(metrics, checks),
            methods=["GET"],
            dependencies=[requires("metrics")],
        )
    return router


def _prometheus(
    metrics: Metrics, checks: Sequence[ReadinessCheck]
) -> Callable[[], Awaitable[Response]]:
    async def prometheus() -> Response:
        # a scrape runs the readiness checks too: tributary_ready then says what /readyz
        # would, wherever nothing probes /readyz (compose checks /healthz)
        await readiness(checks, metrics)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return prometheus


def metrics_app(metrics: Metrics, checks: Sequence[ReadinessCheck] = ()) -> FastAPI:
    """/metrics alone, without credentials: what METRICS_PORT serves (nothing else there)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.add_api_route("/metrics", _prometheus(metrics, tuple(checks)), methods=["GET"])
    return app


def create_app(
    service_name: str,
    metrics: Metrics,
    checks: Sequence[ReadinessCheck] = (),
    routers: Sequence[APIRouter] = (),
    version: str = "0.1.0",
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    access: ApiAccess | None = None,
) -> FastAPI:
    """The service's app: probes, metrics, and its own routers (with an OpenAPI schema).

    Every request passes the shared guards first: the credentials and the scope
    of its route (``access``; none given: no authentication), then a body over
    ``max_body_bytes`` is a 413 before it is read, text no store can keep (NUL,
    unpaired surrogates) a 422; every error answer has the one documented shape.
    /docs, /redoc and /openapi.json exist only if ``access.docs`` says so
    (``app.openapi()`` works either way).
    """
    access = access or ApiAccess()
    docs = access.docs != "off"
    app = FastAPI(
        title=service_name,
        version=version,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    install_error_handlers(app)
    app.include_router(_probe_router(metrics, tuple(checks), access.metrics_on_api))
    for router in routers:
        app.include_router(router)
    docs_paths = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    policy = Policy(service_name, access.docs, frozenset(p for p in docs_paths if p and docs))

    def security(schema: dict[str, Any]) -> dict[str, Any]:
        return document_security(schema, app.routes, policy, access.oidc_discovery_url)

    install_openapi(app, security)
    # the last added runs first: credentials, then the size bound, before anything reads
    # the body
    app.add_middleware(TextGuard)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(Guard, routes=app.routes, policy=policy, authenticator=access.authenticator)
    return app


# -- serving -------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers, telling when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # the service installs its own handlers and sets the stop event
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()


class HttpServer:
    """uvicorn serving ``app`` in the running loop; ``port`` is the bound one (port 0 works)."""

    def __init__(
        self,
        app: FastAPI,
        host: str,
        port: int,
        graceful_timeout_s: int = DEFAULT_GRACEFUL_TIMEOUT,
    ) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,  # logging is configured by tributary.logs
            access_log=False,  # probes every few seconds would drown the log
            ws="none",
            lifespan="on",
            server_header=False,
            timeout_graceful_shutdown=graceful_timeout_s,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Listen and return the bound port; raises OSError when it cannot."""
        self._task = asyncio.create_task(self._serve(), name="http-server")
        listening = asyncio.create_task(self._server.listening.wait())
        await asyncio.wait({self._task, listening}, return_when=asyncio.FIRST_COMPLETED)
        if not listening.done():
            listening.cancel()
            await self._task  # raises why it ended
            raise OSError("HTTP server stopped during start-up")
        port: int = self._server.servers[0].sockets[0].getsockname()[1]
        self.port = port
        log.info("HTTP server listening on port %d", port)
        return port

    async def _serve(self) -> None:
        try:
            await self._server.serve()
        except SystemExit:
            # uvicorn exits the process when it cannot bind or lifespan fails;
            # the service decides what a failed HTTP server means
            raise OSError(
                f"HTTP server failed to start on {self._server.config.host}:"
                f"{self._server.config.port}"
            ) from None

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), run the lifespan shutdown."""
        if self._task is None:
            return
        self._server.should_exit = True
        await self._task


async def serve(
    app: FastAPI,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    started: Callable[[int], None] | None = None,
) -> None:
    """Serve ``app`` until ``stop`` is set; ``started(port)`` is called once listening."""
    server = HttpServer(app, host, port)
    bound = await server.start()
    if started is not None:
        started(bound)
    try:
        await stop.wait()
    finally:
        await server.stop()
