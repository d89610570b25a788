"""W3C trace-context across stream entries, and the messaging spans of DESIGN.md section 5.

Producer spans (``send <stream>``, PRODUCER) write their context into the
entry's ``traceparent``/``tracestate``; consumer spans (``process <stream>``,
CONSUMER) continue it. Parsing the header is done here directly rather than
through the global propagator: it is on the hot path of every event.
"""

from __future__ import annotations

import functools
import re

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
    Tracer,
    TraceState,
)
from opentelemetry.util.types import AttributeValue

from tributary.events import Event

MESSAGING_SYSTEM = "redis"
_INVALID_TRACE = "0" * 32
_INVALID_SPAN = "0" * 16
#: immutable, so one serves every context without a tracestate
_EMPTY_TRACE_STATE = TraceState()
#: version-trace_id-parent_id-flags, lowercase hex (W3C Trace Context)
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TRACE_FLAGS = {f"{i:02x}": TraceFlags(i) for i in range(256)}


def format_traceparent(ctx: SpanContext) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def parse_traceparent(header: str | None, tracestate: str | None = None) -> SpanContext | None:
    """SpanContext of a ``traceparent`` header, or None when absent or invalid."""
    match = _TRACEPARENT.fullmatch(header) if header else None
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version == "ff" or trace_id == _INVALID_TRACE or span_id == _INVALID_SPAN:
        return None
    try:
        state = TraceState.from_header([tracestate]) if tracestate else _EMPTY_TRACE_STATE
    except ValueError:
        return None
    return SpanContext(int(trace_id, 16), int(span_id, 16), True, _TRACE_FLAGS[flags], state)


#: distinct producer contexts :func:`remote_parent` keeps parsed
REMOTE_PARENT_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=REMOTE_PARENT_CACHE_SIZE)
def remote_parent(header: str | None, tracestate: str | None = None) -> SpanContext | None:
    """:func:`parse_traceparent`, parsed once per distinct pair (a bounded cache; a
    SpanContext is immutable): a consumer sees the same producer context over and over
    when events were published together (a batch, an outbox page), and parsing it
    cost more than the rest of a consumer span."""
    return parse_traceparent(header, tracestate)


def inject_current(event: Event, span: Span | None = None) -> None:
    """Write the context of ``span`` (default: the current span) into the event."""
    ctx = (span or trace.get_current_span()).get_span_context()
    if ctx.is_valid:
        event.traceparent = format_traceparent(ctx)
        state = ctx.trace_state.to_header() if ctx.trace_state else ""
        event.tracestate = state or None


def context_of(event: Event) -> Context | None:
    """The parent context carried by an event (None: start a new trace)."""
    span_ctx = remote_parent(event.traceparent, event.tracestate)
    if span_ctx is None:
        return None
    return trace.set_span_in_context(NonRecordingSpan(span_ctx))


def start_producer_span(tracer: Tracer, stream: str, event: Event) -> Span:
    """A ``send <stream>`` span whose context is injected into ``event``; end it after XADD."""
    span = tracer.start_span(
        f"send {stream}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.destination.name": stream,
            "messaging.operation.type": "send",
            "messaging.message.id": event.id,
            "cloudevents.event_type": event.type,
        },
    )
    inject_current(event, span)
    return span


def consumer_attributes(
    stream: str, group: str, message_id: str, event_type: str
) -> dict[str, AttributeValue]:
    """The attributes of a ``process <stream>`` span for one event."""
    return {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.destination.name": stream,
        "messaging.consumer.group.name": group,
        "messaging.operation.type": "process",
        "messaging.message.id": message_id,
        "cloudevents.event_type": event_type,
    }


def start_consumer_span(tracer: Tracer, stream: str, group: str, event: Event) -> Span:
    """A ``process <stream>`` span continuing the producer's trace."""
    return tracer.start_span(
        f"process {stream}",
        context=context_of(event),
        kind=SpanKind.CONSUMER,
        attributes=consumer_attributes(stream, group, event.id, event.type),
    )
