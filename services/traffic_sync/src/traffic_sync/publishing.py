"""``traffic.flushed`` events of an applied batch, queued in the outbox.

One event per flushed node. The batch's events share one PRODUCER span
(``send traffic.flushed`` with ``messaging.batch.message_count``), as the
OTel messaging conventions describe a batch send: one span per node would
cost more than the database work for large flushes.

The events are not written into the outbox one by one: the batch's
transaction stores rendered pages (:func:`tributary.outbox.add_rendered_pages`),
each holding, for up to 1,000 nodes, the seven numbers of each node (as
columns), the block of their event ids and what the events share (source,
time, batch id, trace context, schema version). The relay makes the entries
from that with :func:`render_page`, which the service gives its relay under
the name :data:`RENDERER` (:data:`RENDERERS`, in ``SERVICE``). Rendering
100,000 events of ~450 bytes, compressing and storing them took the flush
about as much CPU as the rest of its Python work; a page of numbers is a
quarter of the stored bytes (9 KB for 1,000 nodes, against 35 KB). The
entries are byte for byte what :func:`tributary.events.encode` gives for the
event (a test compares them): what the page's events share (:class:`Shared`)
is encoded once (:class:`FlushedTemplate`), a node only adds its event id and
its numbers. A node whose numbers the catalog model would refuse goes through
the model at queue time, which raises as before: the relay never meets a
payload the catalog refuses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from opentelemetry.trace import SpanKind, Tracer
from sqlalchemy.orm import Session

from traffic_sync.repository import NodeTotals
from tributary import catalog, outbox
from tributary.events import SPEC_VERSION, Registry, utc_now_rfc3339
from tributary.tracing import MESSAGING_SYSTEM, format_traceparent

EVENT_TYPE = "traffic.flushed"
STREAM = catalog.TRAFFIC_FLUSHED
#: events per outbox page row
DEFAULT_CHUNK = outbox.MAX_PAGE_EVENTS
#: the outbox page renderer of traffic.flushed pages (its name changes with their format)
RENDERER = "traffic_sync/traffic.flushed/1"


@dataclass(frozen=True, slots=True)
class Shared:
    """What the events of a batch share besides their type."""

    batch_id: str
    source: str
    version: str
    time: str
    traceparent: str | None = None
    tracestate: str | None = None

    def __post_init__(self) -> None:
        # a page read back from the outbox is checked here before anything is rendered
        text = (self.batch_id, self.source, self.version, self.time)
        trace = (self.traceparent, self.tracestate)
        if not all(isinstance(v, str) for v in text) or not all(
            v is None or isinstance(v, str) for v in trace
        ):
            raise ValueError("the batch id, source, version, time and trace context must be text")


class FlushedTemplate:
    """The stream entries of one page's ``traffic.flushed`` events.

    ``entries`` gives what :func:`tributary.events.encode` gives for each event:
    the envelope's fields in its order, ``data`` as
    :meth:`catalog.TrafficFlushed.model_dump_json` writes it. The per-node parts
    are decimal digits, ``null`` and UUIDs.
    """

    def __init__(self, shared: Shared) -> None:
        self.envelope = {
            "type": EVENT_TYPE,
            "source": shared.source,
            "time": shared.time,
            "specversion": SPEC_VERSION,
            "v": shared.version,
        }
        self.trace = {"traceparent": shared.traceparent} if shared.traceparent else {}
        if shared.tracestate:
            self.trace["tracestate"] = shared.tracestate
        #: the payload's text around the node's numbers (NodeTotals order), the limit
        self._data = (
            '{"node_id":"',
            '","upload_delta":',
            ',"download_delta":',
            ',"upload_total":',
            ',"download_total":',
            ',"traffic_used_total":',
            ',"traffic_limit":',
            f',"batch_id":{json.dumps(shared.batch_id)}}}',
        )

    def entries(
        self, event_ids: Sequence[str], columns: Sequence[Sequence[int | None]]
    ) -> list[dict[str, str]]:
        """The events of the nodes in ``columns`` (NodeTotals' seven fields, each a
        column), with ``event_ids`` in order."""
        if len(columns) != len(NodeTotals._fields):
            raise ValueError(f"{len(columns)} columns, not {len(NodeTotals._fields)}")
        *counters, limit = columns
        if any(len(c) != len(event_ids) for c in columns):
            raise ValueError(f"{len(event_ids)} event ids for columns of other lengths")
        # int(): what goes into the text is decimal digits, whatever the caller passed
        limits = ["null" if x is None else int(x) for x in limit]
        numbers = [map(int, c) for c in counters]  # type: ignore[arg-type]
        a, b, c, d, e, f, g, h = self._data
        head, tail = self.envelope, self.trace
        # one comprehension building each entry in one step (no call per event)
        return [
            {
                "id": i,
                **head,
                "data": f"{a}{n}{b}{ud}{c}{dd}{d}{ut}{e}{dt}{f}{us}{g}{lim}{h}",
                **tail,
            }
            for i, n, ud, dd, ut, dt, us, lim in zip(event_ids, *numbers, limits, strict=True)
        ]


def check_payload(t: NodeTotals, batch_id: str) -> None:
    """Validate by the catalog model the rare node the template cannot vouch for: the
    model refuses negative counters (raises pydantic's ValidationError)."""
    if (
        min(
            t.upload_delta, t.download_delta, t.upload_total, t.download_total, t.traffic_used_total
        )
        >= 0
    ):
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


def flushed_pages(
    totals: Sequence[NodeTotals], shared: Shared, chunk: int = DEFAULT_CHUNK
) -> list[tuple[str, dict[str, Any]]]:
    """The rendered pages (first event id, :func:`render_page`'s arguments) of the
    batch's events, ``chunk`` nodes a page, with fresh event ids."""
    if not 1 <= chunk <= outbox.MAX_PAGE_EVENTS:
        # the relay refuses bigger pages: a row it cannot publish would be dead-lettered
        raise ValueError(f"chunk must be 1..{outbox.MAX_PAGE_EVENTS}, not {chunk}")
    columns = [list(column) for column in zip(*totals, strict=True)]
    return outbox.columnar_pages(columns, asdict(shared), chunk)


def render_page(args: Any) -> list[dict[str, str]]:
    """The entries of a page :func:`flushed_pages` made (the relay's renderer)."""
    ids = outbox.page_event_ids(args)
    return FlushedTemplate(Shared(**args["shared"])).entries(ids, args["columns"])


#: the service's page renderers (``Service(renderers=...)`` gives them to its relay)
RENDERERS: outbox.Renderers = {RENDERER: render_page}


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
        shared = Shared(
            batch_id,
            source,
            registry.version_for(EVENT_TYPE),
            utc_now_rfc3339(),
            traceparent,
            tracestate,
        )
        pages = flushed_pages(totals, shared, chunk)
        outbox.add_rendered_pages(session, STREAM, RENDERER, pages)
    return len(totals)
