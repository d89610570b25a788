"""``traffic.flushed`` events of an applied batch, queued in the outbox.

One event per flushed node. The batch's events share one PRODUCER span
(``send traffic.flushed`` with ``messaging.batch.message_count``), as the
OTel messaging conventions describe a batch send: one span per node would
cost more than the database work for large flushes.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.trace import SpanKind, Tracer
from sqlalchemy.orm import Session

from traffic_sync.repository import NodeTotals
from tributary import catalog, outbox
from tributary.events import Event, Registry, make_event, utc_now_rfc3339
from tributary.tracing import MESSAGING_SYSTEM, format_traceparent

EVENT_TYPE = "traffic.flushed"
STREAM = catalog.TRAFFIC_FLUSHED


def flushed_events(
    totals: Sequence[NodeTotals], batch_id: str, source: str, registry: Registry
) -> list[Event]:
    when = utc_now_rfc3339()
    return [
        make_event(
            EVENT_TYPE,
            catalog.TrafficFlushed(
                node_id=str(t.node_id),
                upload_delta=t.upload_delta,
                download_delta=t.download_delta,
                upload_total=t.upload_total,
                download_total=t.download_total,
                traffic_used_total=t.traffic_used_total,
                traffic_limit=t.traffic_limit,
                batch_id=batch_id,
            ),
            source,
            registry,
            time=when,
        )
        for t in totals
    ]


def queue_flushed(
    session: Session,
    totals: Sequence[NodeTotals],
    batch_id: str,
    *,
    source: str,
    registry: Registry,
    tracer: Tracer,
) -> int:
    """Add the batch's events to the outbox in the caller's transaction; returns how many."""
    if not totals:
        return 0
    events = flushed_events(totals, batch_id, source, registry)
    with tracer.start_as_current_span(
        f"send {STREAM}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.destination.name": STREAM,
            "messaging.operation.type": "send",
            "messaging.batch.message_count": len(events),
            "traffic_sync.batch_id": batch_id,
        },
    ) as span:
        ctx = span.get_span_context()
        if ctx.is_valid:
            traceparent = format_traceparent(ctx)
            tracestate = ctx.trace_state.to_header() if ctx.trace_state else None
            for event in events:
                event.traceparent, event.tracestate = traceparent, tracestate or None
        outbox.add_many(session, [(STREAM, e) for e in events])
    return len(events)
