"""One TracerProvider per process and the library instrumentations (DESIGN.md section 5).

:func:`setup_telemetry` builds the provider at start-up; nothing is created at
import time. Instrumentations are handed *this* provider explicitly, so they
work without the global provider (tests build several providers in one
process); ``set_global=True`` additionally installs it as the global one for
code that calls ``trace.get_tracer``.

Without an OTLP endpoint or an explicit exporter the provider has no span
processor: spans are still created and sampled, so trace ids reach the logs
and ``traceparent`` keeps its sampled flag for the next service, but they are
dropped when they end. A sampler that drops them instead would switch tracing
off downstream (ParentBased samplers follow the flag), which is worse than the
cost of building spans nobody exports.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from opentelemetry import metrics, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Tracer

if TYPE_CHECKING:
    # imported where used, not here: a worker that serves no HTTP, exports no
    # spans or opens no database must not pay their import time at start-up
    # (FastAPI, httpx, SQLAlchemy and their instrumentations: ~0.2 s)
    import httpx
    import redis
    import redis.asyncio as aioredis
    from fastapi import FastAPI
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

#: name of the tracer the library's own spans (send/process) come from
TRACER_NAME = "tributary"
#: OTLP/HTTP path of the traces signal, appended to OTEL_EXPORTER_OTLP_ENDPOINT
TRACES_PATH = "/v1/traces"
#: probes and scrapes are not worth a trace each. A comma-separated list of
#: regexes searched in the full URL, so anchored: /api/metrics is still traced
DEFAULT_EXCLUDED_URLS = r"^[a-z]+://[^/]+/(healthz|readyz|metrics)/?(\?|$)"


class _Instrumentor(Protocol):
    """What is used of BaseInstrumentor, whose module is marked untyped."""

    @property
    def is_instrumented_by_opentelemetry(self) -> bool: ...

    def instrument(self, **kwargs: Any) -> Any: ...

    def uninstrument(self, **kwargs: Any) -> Any: ...


def traces_endpoint(otlp_endpoint: str) -> str:
    """The traces URL of an OTLP/HTTP base endpoint, as the OTel spec derives it."""
    base = otlp_endpoint.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def setup_telemetry(
    service_name: str,
    otlp_endpoint: str | None,
    *,
    exporter: SpanExporter | None = None,
    batch: bool = False,
    set_global: bool = False,
) -> Telemetry:
    """Build the process's TracerProvider (service.name = ``service_name``).

    ``otlp_endpoint`` (OTEL_EXPORTER_OTLP_ENDPOINT) adds a batching OTLP/HTTP
    exporter. ``exporter`` adds another one (tests and benchmarks pass an
    InMemorySpanExporter); it is wrapped in a SimpleSpanProcessor, so spans
    are visible as soon as they end, unless ``batch`` asks for batching.
    """
    resource = Resource.create({SERVICE_NAME: service_name})
    provider = TracerProvider(resource=resource)
    exporters: list[SpanExporter] = []
    processors: list[SpanProcessor] = []
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter(endpoint=traces_endpoint(otlp_endpoint)))
        processors.append(BatchSpanProcessor(exporters[-1]))
    if exporter is not None:
        exporters.append(exporter)
        processors.append(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    for processor in processors:
        provider.add_span_processor(processor)
    if set_global:
        _install_global(provider)
    return Telemetry(provider, tuple(exporters), tuple(processors))


def _install_global(provider: TracerProvider) -> None:
    # the API allows one global provider per process and only logs when a
    # second one is refused; say plainly what happened instead
    current = trace.get_tracer_provider()
    if isinstance(current, trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    elif current is not provider:
        log.warning("a global TracerProvider is already installed; keeping it")


@dataclass(eq=False)
class Telemetry:
    """The provider, the library's tracer, and what was instrumented with them."""

    provider: TracerProvider
    #: where spans go, in the order of ``processors`` (empty: nowhere)
    exporters: tuple[SpanExporter, ...] = ()
    processors: tuple[SpanProcessor, ...] = ()
    tracer: Tracer = field(init=False)
    _engines: weakref.WeakKeyDictionary[Engine, Any] = field(
        init=False, default_factory=weakref.WeakKeyDictionary
    )
    _clients: weakref.WeakSet[Any] = field(init=False, default_factory=weakref.WeakSet)
    _apps: weakref.WeakSet[FastAPI] = field(init=False, default_factory=weakref.WeakSet)
    _shut_down: bool = field(init=False, default=False)

    #: which Telemetry each process-wide instrumentor currently reports to; the
    #: instrumentors patch classes, so there can be only one per process
    _global_owners: ClassVar[dict[type[_Instrumentor], Telemetry]] = {}

    def __post_init__(self) -> None:
        self.tracer = self.provider.get_tracer(TRACER_NAME)

    # -- process-wide instrumentors -------------------------------------

    def _own_global(self, instrumentor: _Instrumentor) -> None:
        """Instrument with this provider; a no-op when already done by this Telemetry."""
        kind = type(instrumentor)
        instrumented = bool(instrumentor.is_instrumented_by_opentelemetry)
        if instrumented and Telemetry._global_owners.get(kind) is self:
            return
        if instrumented:
            # patched for another provider (an earlier test's): re-bind to ours
            instrumentor.uninstrument()
        instrumentor.instrument(tracer_provider=self.provider)
        Telemetry._global_owners[kind] = self

    def _release_globals(self) -> None:
        """Uninstrument every process-wide instrumentor this Telemetry owns."""
        for kind, owner in list(Telemetry._global_owners.items()):
            if owner is not self:
                continue
            del Telemetry._global_owners[kind]
            instrumentor = kind()
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()

    # -- instrumentations ------------------------------------------------

    def instrument_redis(self, client: redis.Redis | aioredis.Redis | None = None) -> None:
        """Trace Redis commands: every client (default) or just ``client``.

        Use one or the other: a client instrumented both ways reports twice.
        """
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        if client is None:
            self._own_global(RedisInstrumentor())
        elif not getattr(client, "_is_instrumented_by_opentelemetry", False):
            RedisInstrumentor.instrument_client(client, tracer_provider=self.provider)
            self._clients.add(client)

    def instrument_httpx(self, client: httpx.Client | httpx.AsyncClient | None = None) -> None:
        """Trace outgoing httpx requests: every client (default) or just ``client``."""
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        if client is None:
            self._own_global(HTTPXClientInstrumentor())
        elif not getattr(client, "_is_instrumented_by_opentelemetry", False):
            HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)
            self._clients.add(client)

    def instrument_engine(self, engine: Engine) -> None:
        """Trace the statements ``engine`` runs (one span per cursor execution).

        EngineTracer is what ``SQLAlchemyInstrumentor().instrument(engine=...)``
        builds; used directly because that instrumentor is a process-wide
        singleton that also patches ``create_engine`` and refuses a second
        engine once instrumented.
        """
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

        if engine in self._engines:
            return
        meter = metrics.get_meter(__name__)
        usage = meter.create_up_down_counter(
            "db.client.connections.usage", unit="connections", description="Pool connections."
        )
        tracer = self.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
        # EngineTracer has no annotations; its signature is (tracer, engine, usage)
        self._engines[engine] = EngineTracer(tracer, engine, usage)  # type: ignore[no-untyped-call]

    def instrument_app(self, app: FastAPI, excluded_urls: str = DEFAULT_EXCLUDED_URLS) -> None:
        """Trace requests served by ``app`` (probes and scrapes excluded)."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        if getattr(app, "_is_instrumented_by_opentelemetry", False):
            return
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=self.provider, excluded_urls=excluded_urls
        )
        self._apps.add(app)

    def uninstrument(self) -> None:
        """Undo every instrumentation this Telemetry made (tests; shutdown)."""
        self._release_globals()
        for engine in list(self._engines):
            _remove_engine_listeners(engine)
        self._engines.clear()
        for client in list(self._clients):
            _uninstrument_client(client)
        self._clients.clear()
        if self._apps:
            from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

            for app in list(self._apps):
                FastAPIInstrumentor.uninstrument_app(app)
            self._apps.clear()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Export what is buffered (bounded by ``timeout`` seconds), then stop.

        Instrumentations are removed first: they would otherwise keep making
        spans for a provider that no longer exports them. Safe to call twice.
        """
        if self._shut_down:
            return
        self._shut_down = True
        self.uninstrument()
        self.provider.force_flush(timeout_millis=max(1, int(timeout * 1000)))
        self.provider.shutdown()


def _uninstrument_client(client: Any) -> None:
    if not getattr(client, "_is_instrumented_by_opentelemetry", False):
        return
    # a client of a library that was never imported cannot be here: import what it is
    if type(client).__module__.startswith("httpx"):
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor.uninstrument_client(client)
    else:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor.uninstrument_client(client)


def _remove_engine_listeners(engine: Engine) -> None:
    """Remove the listeners EngineTracer put on ``engine`` and only those.

    EngineTracer records them in a class-level list but can only remove all
    of them at once, which would strip other Telemetry objects' engines too.
    """
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from sqlalchemy import event

    registered: list[tuple[Any, str, Any]] = EngineTracer._remove_event_listener_params
    for entry in list(registered):
        target_ref, identifier, func = entry
        if target_ref() is engine:
            if event.contains(engine, identifier, func):
                event.remove(engine, identifier, func)
            registered.remove(entry)
