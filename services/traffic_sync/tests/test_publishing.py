"""traffic.flushed outbox pages, rendered by the relay: the entries encode() gives."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pydantic
import pytest
import sqlalchemy as sa
from opentelemetry import context, trace
from opentelemetry.trace import SpanContext, TraceFlags, Tracer, TraceState
from sqlalchemy.engine import Engine

from traffic_sync.publishing import (
    EVENT_TYPE,
    FlushedTemplate,
    Shared,
    flushed_pages,
    queue_flushed,
    render_page,
)
from traffic_sync.repository import NodeTotals
from traffic_sync.service import SERVICE
from tributary import catalog
from tributary.db import make_sessionmaker
from tributary.events import encode, make_event, new_event_id, new_event_ids
from tributary.outbox import RENDERED, stored_rows

BIG = 2**63 - 1
TOTALS = [
    NodeTotals(1, 10, 20, 10, 20, 30, None),
    NodeTotals(7, 0, 5, 100, 205, 305, 1000),
    NodeTotals(BIG, BIG, 0, BIG, 0, BIG, -1),
]
#: what the JSON and SQL escaping must get through: quotes, backslashes, percent, non-ASCII
ODD_SOURCE = 'it\'s \\ a "source" at 100%s ünï'
ODD_TRACESTATE = 'vendor=it\'s \\ "odd" %s'
TRACEPARENT = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"


def reference(
    t: NodeTotals, batch_id: str, event_id: str, **attributes: str | None
) -> list[tuple[str, str]]:
    """The entry of the event as encode() makes it (as pairs: the order counts too)."""
    payload = catalog.TrafficFlushed(
        node_id=str(t.node_id), upload_delta=t.upload_delta, download_delta=t.download_delta,
        upload_total=t.upload_total, download_total=t.download_total,
        traffic_used_total=t.traffic_used_total, traffic_limit=t.traffic_limit, batch_id=batch_id,
    )  # fmt: skip
    source = attributes.pop("source") or ""
    event = make_event(
        EVENT_TYPE, payload, source, catalog.default_registry(), id=event_id, **attributes
    )
    return list(encode(event).items())


@pytest.mark.parametrize(
    ("source", "traceparent", "tracestate"),
    [
        ("traffic_sync", None, None),
        ("traffic_sync", TRACEPARENT, None),
        (ODD_SOURCE, TRACEPARENT, ODD_TRACESTATE),
    ],
)
def test_rendered_entries_are_the_encoded_event(
    source: str, traceparent: str | None, tracestate: str | None
) -> None:
    batch_id = new_event_id()
    time = "2025-01-02T03:04:05.678Z"
    template = FlushedTemplate(Shared(batch_id, source, "1", time, traceparent, tracestate))
    for t in TOTALS:
        event_id = new_event_id()
        expected = reference(
            t, batch_id, event_id, source=source, time=time, traceparent=traceparent,
            tracestate=tracestate,
        )  # fmt: skip
        (entry,) = template.entries([event_id], [[value] for value in t])
        assert list(entry.items()) == expected


def test_event_ids_are_fresh_uuid7s() -> None:
    before = uuid.UUID(new_event_id())
    ids = new_event_ids(2000)
    after = uuid.UUID(new_event_id())
    assert len(set(ids)) == len(ids)
    for text in ids:
        value = uuid.UUID(text)
        assert str(value) == text
        assert (value.version, value.variant) == (7, uuid.RFC_4122)
        # the same 48-bit millisecond clock as new_event_id's
        assert before.int >> 80 <= value.int >> 80 <= after.int >> 80


@pytest.fixture
def parent_with_tracestate() -> Iterator[None]:
    """A current span context whose trace state the batch's send span inherits."""
    parent = SpanContext(
        trace_id=0x1234, span_id=0x5678, is_remote=True, trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", ODD_TRACESTATE.removeprefix("vendor="))]),
    )  # fmt: skip
    token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(parent)))
    yield
    context.detach(token)


def queue_and_read(engine: Engine, tracer: Tracer, sql_mode: str | None = None) -> None:
    """Queue TOTALS' events, read the rows back, compare them with add_many's."""
    batch_id = new_event_id()
    with make_sessionmaker(engine).begin() as session:
        if sql_mode is not None:
            session.execute(sa.text(f"SET SESSION sql_mode = CONCAT(@@sql_mode, ',{sql_mode}')"))
        queued = queue_flushed(
            session, TOTALS, batch_id, source=ODD_SOURCE, registry=catalog.default_registry(),
            tracer=tracer, chunk=2,
        )  # fmt: skip
    assert queued == len(TOTALS)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT event_id, format FROM outbox ORDER BY id")).all()
        rows = stored_rows(conn, SERVICE.renderers)
    # pages of two (chunk=2): a row per page, named by its first event, rendered by the
    # renderer the service gives its relay
    assert [r.stream for r in rows] == [catalog.TRAFFIC_FLUSHED] * 2
    assert [r.problem for r in rows] == [None, None]
    entries = [entry for r in rows for entry in r.entries]
    assert [(r.event_id, r.format) for r in stored] == [(entries[0]["id"], RENDERED),
                                                        (entries[2]["id"], RENDERED)]  # fmt: skip
    assert len({e["id"] for e in entries}) == len(TOTALS)
    assert entries[0]["tracestate"] == ODD_TRACESTATE
    # byte for byte and in encode()'s order: the entries of the events, TOTALS' order
    for fields, t in zip(entries, TOTALS, strict=True):
        assert list(fields.items()) == reference(
            t, batch_id, fields["id"], source=ODD_SOURCE, time=fields["time"],
            traceparent=fields["traceparent"], tracestate=fields["tracestate"],
        )  # fmt: skip


@pytest.mark.parametrize("sql_mode", [None, "NO_BACKSLASH_ESCAPES"])
@pytest.mark.usefixtures("parent_with_tracestate")
def test_pages_read_back_unchanged_on_mysql(
    mysql_engine: Engine, tracer: Tracer, sql_mode: str | None
) -> None:
    queue_and_read(mysql_engine, tracer, sql_mode)


@pytest.mark.usefixtures("parent_with_tracestate")
def test_pages_read_back_unchanged_on_postgresql(pg_traffic_engine: Engine, tracer: Tracer) -> None:
    queue_and_read(pg_traffic_engine, tracer)


def test_a_payload_the_catalog_refuses_fails_the_batch(
    mysql_engine: Engine, tracer: Tracer
) -> None:
    negative = NodeTotals(3, 1, 1, -5, 2, 1, None)  # a counter someone set below zero
    with make_sessionmaker(mysql_engine)() as session, pytest.raises(pydantic.ValidationError):
        queue_flushed(
            session, [TOTALS[0], negative], new_event_id(), source="traffic_sync",
            registry=catalog.default_registry(), tracer=tracer,
        )  # fmt: skip


def test_a_page_stores_numbers_and_its_ids_as_a_block() -> None:
    pages = flushed_pages(TOTALS, Shared(new_event_id(), "traffic_sync", "1", "t"), chunk=2)
    assert [len(render_page(args)) for _, args in pages] == [2, 1]
    (first_id, first), (second_id, second) = pages
    prefix, start, count = first["ids"]
    assert (count, second["ids"]) == (2, [prefix, start + 2, 1])
    assert [first_id, second_id] == [render_page(page)[0]["id"] for page in (first, second)]
    assert first["columns"] == [[1, 7], [10, 0], [20, 5], [10, 100], [20, 205], [30, 305],
                                [None, 1000]]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ids": ["not-a-uuid-", 0, 2]}, "not the prefix of a UUIDv7"),
        ({"ids": None}, "cannot unpack"),
        ({"columns": [[1, 2]] * 6}, "6 columns"),
        ({"columns": [[1, 2]] * 7}, "other lengths"),
        ({"columns": [["1; DROP"], [1], [1], [1], [1], [1], [None]]}, "invalid literal"),
        (
            {"shared": {"batch_id": "b", "source": None, "version": "1", "time": "t"}},
            "must be text",
        ),
        (
            {
                "shared": {
                    "batch_id": "b",
                    "source": "s",
                    "version": "1",
                    "time": "t",
                    "traceparent": 5,
                }
            },
            "must be text",
        ),
        (
            {"shared": {"batch_id": "b", "source": "s", "version": "1", "time": "t", "x": 1}},
            "unexpected keyword",
        ),
    ],
)
def test_render_page_refuses_arguments_it_did_not_make(
    change: dict[str, object], message: str
) -> None:
    ((_, args),) = flushed_pages(TOTALS[:1], Shared(new_event_id(), "traffic_sync", "1", "t"))
    with pytest.raises((ValueError, TypeError), match=message):
        render_page(args | change)


def test_pages_over_the_relays_limit_are_refused_when_written_and_when_read() -> None:
    shared = Shared(new_event_id(), "traffic_sync", "1", "t")
    with pytest.raises(ValueError, match=r"chunk must be 1\.\.1000"):
        flushed_pages(TOTALS, shared, chunk=1001)
    ((_, args),) = flushed_pages(TOTALS[:1], shared)
    prefix, start, _ = args["ids"]
    with pytest.raises(ValueError, match="a page of 1001 events"):
        render_page(args | {"ids": [prefix, start, 1001]})
