"""``traffic.flushed`` events of an applied batch, queued in the outbox.

One event per flushed node. The batch's events share one PRODUCER span
(``send traffic.flushed`` with ``messaging.batch.message_count``), as the
OTel messaging conventions describe a batch send: one span per node would
cost more than the database work for large flushes.

A flush queues an event per node, so the outbox rows are rendered here rather
than one :class:`~tributary.events.Event` at a time (a pydantic model, an
Event, ``encode`` and ``json.dumps`` per node cost several times the database
work). What is the same for the whole batch (type, source, time, batch id,
trace context, the JSON between the values) is encoded once into
:class:`FlushedTemplate`; a node only adds its event id and its numbers. The
events are byte for byte the ones ``encode`` gives (a test compares them), and
a node whose numbers the catalog model would refuse goes through the model,
which raises as before. They go into the outbox as pages
(:func:`tributary.outbox.add_encoded_pages`): a row per 1,000 events, not a
row (and two index entries) per node.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from opentelemetry.trace import SpanKind, Tracer
from sqlalchemy.orm import Session

from traffic_sync.repository import NodeTotals
from tributary import catalog, outbox
from tributary.events import Registry, new_event_ids, utc_now_rfc3339
from tributary.tracing import MESSAGING_SYSTEM, format_traceparent

EVENT_TYPE = "traffic.flushed"
STREAM = catalog.TRAFFIC_FLUSHED
#: events per outbox page row (about 0.5 MB)
DEFAULT_CHUNK = outbox.MAX_PAGE_EVENTS


def _in_json_string(text: str) -> str:
    """``text`` as it appears inside a JSON string (without the quotes)."""
    return json.dumps(text)[1:-1]


class FlushedTemplate:
    """The outbox ``fields`` of one batch's ``traffic.flushed`` events, as text.

    ``render`` gives what ``json.dumps(encode(event), separators=(",", ":"))``
    gives for the event: the envelope's fields in :func:`tributary.events.encode`'s
    order, ``data`` as :meth:`catalog.TrafficFlushed.model_dump_json` writes it.
    The per-node parts are decimal digits, ``null`` and UUIDs.
    """

    def __init__(
        self,
        batch_id: str,
        *,
        source: str,
        version: str,
        time: str,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> None:
        data = _in_json_string  # constant text of the payload, a JSON string in a JSON string
        dumps = json.dumps
        tail = '"'
        if traceparent:
            tail += f',"traceparent":{dumps(traceparent)}'
        if tracestate:
            tail += f',"tracestate":{dumps(tracestate)}'
        #: the text around the event id, the node's numbers (NodeTotals order), the limit
        self._parts = (
            '{"id":"',
            f'","type":{dumps(EVENT_TYPE)},"source":{dumps(source)},"time":{dumps(time)}'
            f',"specversion":"1.0","v":{dumps(version)},"data":"' + data('{"node_id":"'),
            data('","upload_delta":'),
            data(',"download_delta":'),
            data(',"upload_total":'),
            data(',"download_total":'),
            data(',"traffic_used_total":'),
            data(',"traffic_limit":'),
            data(f',"batch_id":{dumps(batch_id)}}}') + tail + "}",
        )

    def render_all(self, event_ids: Sequence[str], totals: Sequence[NodeTotals]) -> list[str]:
        """The events of ``totals``, one per node, with ``event_ids`` in order."""
        if len(event_ids) != len(totals):
            raise ValueError(f"{len(event_ids)} event ids for {len(totals)} nodes")
        if not totals:
            return []
        node, up_d, down_d, up_t, down_t, used, limit = zip(*totals, strict=True)
        # int(): what goes into the text is decimal digits, whatever the caller passed
        limits = ["null" if x is None else int(x) for x in limit]
        columns = [map(int, c) for c in (node, up_d, down_d, up_t, down_t, used)]
        a, b, c, d, e, f, g, h, end = self._parts
        # one comprehension building each event in one step (no call per event)
        return [
            f"{a}{i}{b}{n}{c}{ud}{d}{dd}{e}{ut}{f}{dt}{g}{us}{h}{lim}{end}"
            for i, n, ud, dd, ut, dt, us, lim in zip(event_ids, *columns, limits, strict=True)
        ]

    def render(self, event_id: str, t: NodeTotals) -> str:
        return self.render_all([event_id], [t])[0]


def check_payload(t: NodeTotals, batch_id: str) -> None:
    """Validate by the catalog model the rare node the template cannot vouch for: the
    model refuses negative counters (raises pydantic's ValidationError)."""
    if min(t.upload_delta, t.download_delta, t.upload_total, t.download_total,
           t.traffic_used_total) >= 0:  # fmt: skip
        return
    catalog.TrafficFlushed(
        node_id=str(t.node_id),
        upload_delta=t.upload_delta,
        download_delta=t.download_delta,
        upload_total=t.upload_total,
        download_total=t.download_total,
        traffic_used_total=t.traffic_used_total,
        traffic_limit=t.traffic_limit,
        batch_id=batch_id,
    )


def queue_flushed(
    session: Session,
    totals: Sequence[NodeTotals],
    batch_id: str,
    *,
    source: str,
    registry: Registry,
    tracer: Tracer,
    chunk: int = DEFAULT_CHUNK,
) -> int:
    """Add the batch's events to the outbox in the caller's transaction; returns how many."""
    if not totals:
        return 0
    # the counters (not the id or the limit) of every node at once: negative ones are rare
    if min(min(t[1:6]) for t in totals) < 0:
        for t in totals:
            check_payload(t, batch_id)
    with tracer.start_as_current_span(
        f"send {STREAM}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.destination.name": STREAM,
            "messaging.operation.type": "send",
            "messaging.batch.message_count": len(totals),
            "traffic_sync.batch_id": batch_id,
        },
    ) as span:
        traceparent = tracestate = None
        ctx = span.get_span_context()
        if ctx.is_valid:
            traceparent = format_traceparent(ctx)
            tracestate = (ctx.trace_state.to_header() if ctx.trace_state else None) or None
        template = FlushedTemplate(
            batch_id,
            source=source,
            version=registry.version_for(EVENT_TYPE),
            time=utc_now_rfc3339(),
            traceparent=traceparent,
            tracestate=tracestate,
        )
        ids = new_event_ids(len(totals))
        rendered = template.render_all(ids, totals)
        outbox.add_encoded_pages(session, STREAM, ids, rendered, page_size=chunk)
    return len(totals)
