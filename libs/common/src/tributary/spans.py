"""The ``process <stream>`` span of each handled event, made at a fifth of the SDK's cost.

``Tracer.start_span`` of the OpenTelemetry SDK is general: it calls the
sampler, cleans every attribute value, builds locks and bounded lists, and
costs about 30 µs a span here. A no-op per-event handler costs about 16 µs
in all, so a consumer span made that way was two thirds of the runner's
time (docs/performance.md). The span of a handled event always has one
shape: a CONSUMER span named ``process <stream>``, child of the producer's
remote context, with six messaging attributes whose values are plain
strings. :class:`ConsumerSpans` builds exactly that span directly:

- sampling as a ParentBased sampler (the SDK default, and every
  ``parentbased_*`` value of OTEL_TRACES_SAMPLER) decides for a remote
  parent: follow its sampled flag; the random-trace-id flag is inherited;
- the parent's context parsed once per distinct ``traceparent``/``tracestate``
  (:func:`tributary.tracing.remote_parent`);
- the span id from ``random.getrandbits(64)``, as the SDK's RandomIdGenerator;
- attributes in a plain dict (a str/bool/int/float value needs no cleaning;
  anything else set later goes through ``BoundedAttributes``);
- the tracer's span processors get ``on_start`` and, at ``end()``, a
  ``ReadableSpan``, as they do from the SDK.

Everything else goes through ``tracer.start_span`` unchanged: a tracer that
is not the SDK's, another sampler, span limits set below the defaults, a
disabled tracer, an event without a valid ``traceparent``, and an SDK the
fast path has not been proven exact with: at the first use in a process,
:func:`fast_path_verified` builds a span both ways and compares their OTLP
bytes, so an SDK upgrade that changes what a span carries, or how its
tracer is built, turns the fast path off (with a warning) instead of
exporting different spans. The SDK's internal span metrics
(OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED) do not count spans made here.
``tests/test_spans.py`` compares every field too, and runs the proof
against the newest SDK release on PyPI.

Kept because it pays for cheap handlers: measured on this machine, a
per-event handler doing one Redis INCR ran 10.1-11.7k events/s with these
spans and 7.5k/s with the SDK's; a handler writing through the inbox (one
PostgreSQL transaction per event) 1.2-1.4k/s either way.
"""

from __future__ import annotations

import functools
import logging
import random
import traceback
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from time import time_ns
from typing import Any, cast

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.util import types

from tributary.events import Event
from tributary.tracing import consumer_attributes, remote_parent, start_consumer_span

log = logging.getLogger(__name__)

#: what ParentBased reports of itself when remote parents decide (the SDK's defaults)
_FOLLOWS_REMOTE_PARENT = (
    "remoteParentSampled:AlwaysOnSampler",
    "remoteParentNotSampled:AlwaysOffSampler",
)
#: fewest attributes per span the fast path fits in without dropping any
_MIN_ATTRIBUTE_LIMIT = 32
#: attribute values stored as they are (the rest are cleaned by BoundedAttributes)
_PLAIN_VALUES = frozenset({str, bool, int, float})
#: a child inherits SAMPLED (ParentBased follows the parent) and RANDOM_TRACE_ID
_INHERITED_FLAGS = TraceFlags.SAMPLED | 0x02
_FLAGS = tuple(TraceFlags(i) for i in range(4))
_UNSET = Status(StatusCode.UNSET)


class _Sink:
    """What a fast span needs of its tracer, looked up once."""

    __slots__ = ("enabled", "info", "limits", "max_attributes", "processor", "resource", "scope")

    def __init__(self, tracer: sdk_trace.Tracer) -> None:
        self.processor = tracer.span_processor
        self.resource = tracer.resource
        self.info = tracer.instrumentation_info
        self.scope = tracer._instrumentation_scope
        self.limits = tracer._span_limits
        self.max_attributes: int = self.limits.max_span_attributes or 0
        self.enabled: Callable[[], bool] = tracer._is_enabled

    @classmethod
    def of(cls, tracer: Tracer) -> _Sink | None:
        """The sink of an SDK tracer the fast path is exact for, with an SDK it was proven
        exact with (:func:`fast_path_verified`); None: use the SDK."""
        sink = cls.exact_for(tracer)
        return sink if sink is not None and fast_path_verified() else None

    @classmethod
    def exact_for(cls, tracer: Tracer) -> _Sink | None:
        """The sink of an SDK tracer whose sampler and limits the fast path copies."""
        if not isinstance(tracer, sdk_trace.Tracer):
            return None
        description = tracer.sampler.get_description()
        if not description.startswith("ParentBased{") or not all(
            part in description for part in _FOLLOWS_REMOTE_PARENT
        ):
            return None
        try:
            sink = cls(tracer)
        except AttributeError:  # an SDK whose tracer is built differently
            return None
        limits = sink.limits
        if (
            limits.max_span_attributes is None
            or limits.max_span_attributes < _MIN_ATTRIBUTE_LIMIT
            or limits.max_span_attribute_length is not None
        ):
            return None
        return sink


class ConsumerSpans:
    """Starts the CONSUMER span of each event one group handles from one stream."""

    def __init__(self, tracer: Tracer, stream: str, group: str) -> None:
        self._setup(tracer, stream, group, _Sink.of(tracer))

    @classmethod
    def _unverified(cls, tracer: Tracer, stream: str, group: str, sink: _Sink) -> ConsumerSpans:
        """Fast spans before the proof that they are exact: the proof's own."""
        spans = cls.__new__(cls)
        spans._setup(tracer, stream, group, sink)
        return spans

    def _setup(self, tracer: Tracer, stream: str, group: str, sink: _Sink | None) -> None:
        self.tracer = tracer
        self.stream = stream
        self.group = group
        self.name = f"process {stream}"
        self._sink = sink
        # a span's attributes start as a copy of this, its per-event keys already in place
        # so the copy is sized for them (and for the outcome the runner sets at the end)
        self._attributes = consumer_attributes(stream, group, "", "")

    @property
    def fast(self) -> bool:
        """Whether spans are built here (True) or by ``tracer.start_span``."""
        return self._sink is not None

    def start(self, event: Event) -> Span:
        sink = self._sink
        parent = (
            remote_parent(event.traceparent, event.tracestate)
            if sink is not None and sink.enabled()
            else None
        )
        if sink is None or parent is None:
            return start_consumer_span(self.tracer, self.stream, self.group, event)
        flags = parent.trace_flags
        context = SpanContext(
            parent.trace_id,
            random.getrandbits(64) or 1,  # 0 is the invalid span id
            False,
            _FLAGS[flags & _INHERITED_FLAGS],
            parent.trace_state,
        )
        if not flags & TraceFlags.SAMPLED:
            return NonRecordingSpan(context)
        attributes: dict[str, types.AttributeValue] = self._attributes.copy()
        attributes["messaging.message.id"] = event.id
        attributes["cloudevents.event_type"] = event.type
        span = FastSpan(self.name, context, parent, attributes, sink)
        sink.processor.on_start(span, parent_context=None)  # type: ignore[arg-type]
        return span


class FastSpan(Span, ReadableSpan):
    """A recording span that is its own ``ReadableSpan``, as the SDK's span is.

    It behaves as the SDK's span does for everything a handler may do with
    the current span: attributes, events, links, status, exceptions; after
    ``end()`` it refuses changes and goes to the span processors as it is.
    """

    # ReadableSpan's fields as slots: no instance dict, a smaller object to keep until export
    __slots__ = (
        "_attributes",
        "_context",
        "_end_time",
        "_events",
        "_instrumentation_info",
        "_instrumentation_scope",
        "_kind",
        "_links",
        "_name",
        "_parent",
        "_resource",
        "_sink",
        "_start_time",
        "_status",
    )

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext,
        attributes: dict[str, types.AttributeValue],
        sink: _Sink,
    ) -> None:
        # what ReadableSpan.__init__ sets, assigned directly (a keyword call costs more than a
        # no-op handler); tests/test_spans.py checks the exported span field by field
        self._name = name
        self._context = context
        self._kind = SpanKind.CONSUMER
        self._instrumentation_info = sink.info
        self._instrumentation_scope = sink.scope
        self._parent = parent
        self._start_time = time_ns()
        self._end_time: int | None = None
        self._attributes = attributes
        self._events: Sequence[SpanEvent] = ()  # most spans get none: a list on the first add
        self._links: Sequence[Link] = ()
        self._resource = sink.resource
        self._status = _UNSET
        self._sink = sink

    # -- what the API asks of a span ----------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self._context  # type: ignore[return-value]  # always set here

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if self._refused("set_attribute"):
            return
        attributes = cast(dict[str, types.AttributeValue], self._attributes)
        if key not in attributes and len(attributes) >= self._sink.max_attributes:
            return  # the SDK drops attributes past the limit, too
        if type(value) in _PLAIN_VALUES and type(key) is str and key:
            attributes[key] = value
            return
        # sequences, None, bad keys: cleaned (or refused with a warning) as the SDK does
        attributes.update(BoundedAttributes(attributes={key: value}))

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        limits = self._sink.limits
        if self._refused("add_event") or _full(self._events, limits.max_events):
            return
        bounded = _bounded(attributes, limits.max_event_attributes, limits)
        event = SpanEvent(name, bounded, time_ns() if timestamp is None else timestamp)
        self._events = [*self._events, event]

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        limits = self._sink.limits
        if self._refused("add_link") or context is None or not context.is_valid:
            return
        if not _full(self._links, limits.max_links):
            bounded = _bounded(attributes, limits.max_link_attributes, limits)
            self._links = [*self._links, Link(context, bounded)]

    def update_name(self, name: str) -> None:
        if not self._refused("update_name"):
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # as the SDK: OK is final, UNSET is never set
        if self._refused("set_status") or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        recorded: dict[str, Any] = {
            "exception.type": qualname if module in ("", "builtins") else f"{module}.{qualname}",
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            log.warning("Calling end() on an ended span.")
            return
        self._end_time = end_time if end_time is not None else time_ns()
        self._sink.processor.on_end(self)

    def _refused(self, what: str) -> bool:
        if self._end_time is None:
            return False
        log.warning("%s on an ended span", what)
        return True

    def __repr__(self) -> str:
        return f"FastSpan(name={self._name!r}, context={self._context})"


#: the producer context of the start-up probe (any valid one)
_PROBE_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@functools.cache
def fast_path_verified() -> bool:
    """Whether, with the SDK installed in this process, a span built here exports exactly
    what the SDK's own span exports. Proven once per process, the first time a tracer
    asks: one span each way for a probe event, each used as a handler may use it (an
    attribute, an event, an exception, a status), both encoded as OTLP sends them, the
    bytes compared (ids and times blanked). An SDK that changed what a span carries or
    how its tracer is built fails the proof: every span then goes through the SDK, and
    a warning says so once."""
    try:
        same = _probe()
    except Exception:
        log.warning("fast consumer spans disabled: the probe failed", exc_info=True)
        return False
    if not same:
        log.warning(
            "fast consumer spans disabled: opentelemetry-sdk %s exports them differently",
            _sdk_version(),
        )
    return same


def _probe() -> bool:
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider(resource=Resource.create({"service.name": "probe"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        tracer = provider.get_tracer("tributary.spans.probe", "1")
        sink = _Sink.exact_for(tracer)
        if sink is None:
            return False
        spans = ConsumerSpans._unverified(tracer, "probe", "probe", sink)
        event = Event(
            type="probe.happened",
            data={},
            source="probe",
            id="probe-1",
            traceparent=_PROBE_PARENT,
            tracestate="vendor=probe",
        )
        fast = spans.start(event)
        sdk = start_consumer_span(tracer, "probe", "probe", event)
        if not isinstance(fast, FastSpan):
            return False
        for span in (fast, sdk):
            span.set_attribute("tributary.outcome", "ack")
            span.add_event("probe", {"n": 1, "tags": ("a", "b")})
            span.record_exception(ValueError("probe"))
            span.set_status(Status(StatusCode.ERROR, "probe"))
            span.end()
        made, made_by_sdk = exporter.get_finished_spans()
        return comparable(made) == comparable(made_by_sdk)
    finally:
        provider.shutdown()


def comparable(span: ReadableSpan) -> bytes:
    """The span as OTLP encodes it, with what must differ (its id and times) blanked."""
    # the OTLP encoder (protobuf) is a start-up cost a worker that exports nothing skips
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    request = encode_spans([span])
    encoded = request.resource_spans[0].scope_spans[0].spans[0]
    encoded.span_id = b""
    encoded.start_time_unix_nano = encoded.end_time_unix_nano = 0
    for span_event in encoded.events:
        span_event.time_unix_nano = 0
    return bytes(request.SerializeToString())


def _sdk_version() -> str:
    try:
        return metadata.version("opentelemetry-sdk")
    except metadata.PackageNotFoundError:
        return "(unknown version)"


def _full(items: Sequence[object], limit: int | None) -> bool:
    return limit is not None and len(items) >= limit


def _bounded(
    attributes: types.Attributes, count: int | None, limits: SpanLimits
) -> BoundedAttributes:
    """Event and link attributes, limited and cleaned as the SDK does."""
    return BoundedAttributes(
        count, attributes, immutable=True, max_value_len=limits.max_attribute_length
    )


__all__ = ["ConsumerSpans", "FastSpan", "comparable", "fast_path_verified"]
