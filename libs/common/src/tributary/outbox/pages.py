"""Writing outbox rows, in the caller's transaction.

:func:`add` and :func:`add_many` queue single events (format ``entry``).
:func:`add_page` and :func:`add_encoded_pages` queue many events of one
stream as pages (format ``page``): a row holding up to 1,000 events, instead
of a row (two index entries, a few hundred bytes of row overhead) per event.
:func:`add_rendered_pages` goes further for events that differ only in a few
values: per page it stores the name of a renderer and its arguments (format
``rendered``), and the relay makes the entries; :func:`columnar_pages` makes
such pages from a batch's per-event values, with their event ids as a block.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from opentelemetry.trace import Tracer

from tributary.events import Event, EventIdBlock, encode, new_event_id_block
from tributary.outbox.table import (
    ENTRY,
    EVENT_ID_MAX_LENGTH,
    MAX_PAGE_EVENTS,
    OUTBOX,
    PAGE,
    RENDERED,
    STREAM_MAX_LENGTH,
    SessionOrConnection,
    utcnow,
)
from tributary.tracing import start_producer_span

#: zlib level of pages: 1 compresses a 0.5 MB page ~8x in ~2 ms; 6 gains 20% for 3x the time
PAGE_COMPRESSION_LEVEL = 1
#: the key of a rendered page's JSON object naming its renderer (no envelope field has it)
RENDER_KEY = "$render"
#: what a legacy row's ``fields`` start with when they hold a page (then base64 of its bytes)
LEGACY_PAGE_PREFIX = "zlib:"

#: makes a rendered page's entries from its stored arguments (raises ValueError if it cannot)
PageRenderer = Callable[[Any], list[dict[str, str]]]
#: the renderers a process has, by the name pages are stored under
Renderers = Mapping[str, PageRenderer]


def _check_stream(stream: str) -> None:
    if not stream or len(stream) > STREAM_MAX_LENGTH:
        raise ValueError(f"stream name must be 1..{STREAM_MAX_LENGTH} characters: {stream!r}")


def _check_event_id(event_id: str) -> None:
    if not event_id or len(event_id) > EVENT_ID_MAX_LENGTH:
        raise ValueError(f"event id must be 1..{EVENT_ID_MAX_LENGTH} characters: {event_id!r}")


def _encoded(stream: str, event: Event, tracer: Tracer | None) -> str:
    _check_stream(stream)
    _check_event_id(event.id)
    if tracer is not None:
        # The send span belongs to the transaction that decides to emit the event (that
        # is what the trace should show as its cause), not to the relay that copies the
        # row later; it only needs to exist long enough to give the entry its context.
        start_producer_span(tracer, stream, event).end()
    return json.dumps(encode(event), separators=(",", ":"))


def add(
    writer: SessionOrConnection, stream: str, event: Event, tracer: Tracer | None = None
) -> None:
    """Queue ``event`` for ``stream`` (a logical name, no prefix) in the caller's transaction.

    Nothing is sent unless and until the caller commits. With a ``tracer``, a
    ``send <stream>`` producer span is started under the current span and
    its context written into the event's ``traceparent``.
    """
    add_many(writer, [(stream, event)], tracer)


def add_many(
    writer: SessionOrConnection, items: Iterable[tuple[str, Event]], tracer: Tracer | None = None
) -> None:
    """:func:`add` for many ``(stream, event)`` pairs, in one round trip."""
    now = utcnow()
    rows = [
        {
            "stream": stream,
            "event_id": event.id,
            "format": ENTRY,
            "fields": _encoded(stream, event, tracer),
            "created_at": now,
        }
        for stream, event in items
    ]
    if rows:
        writer.execute(sa.insert(OUTBOX), rows)


def page_text(encoded: Sequence[str]) -> str:
    """The JSON of a page: events already encoded as JSON objects (the text
    ``json.dumps(encode(event))`` gives), as one JSON array."""
    return "[" + ",".join(encoded) + "]"


def compress_page(text: str) -> bytes:
    """A page's stored bytes (``page`` column) from its JSON."""
    return zlib.compress(text.encode(), PAGE_COMPRESSION_LEVEL)


def read_page(page: bytes) -> str:
    """The JSON of a row's ``page``: a page's array or a rendered page's object (its
    renderer's name and arguments). For inspection; zlib.error if it is not a page."""
    return zlib.decompress(page).decode()


def _insert_pages(
    writer: SessionOrConnection, stream: str, format_: str, pages: list[tuple[str, str]]
) -> int:
    """Write ``pages`` (first event id, JSON) of ``stream`` as rows of ``format_``."""
    now = utcnow()
    rows = []
    for first_event_id, text in pages:
        _check_event_id(first_event_id)
        rows.append(
            {
                "stream": stream,
                "event_id": first_event_id,
                "format": format_,
                "page": compress_page(text),
                "created_at": now,
            }
        )
    if rows:
        writer.execute(sa.insert(OUTBOX), rows)
    return len(rows)


def add_encoded_pages(
    writer: SessionOrConnection,
    stream: str,
    event_ids: Sequence[str],
    encoded: Sequence[str],
    page_size: int = MAX_PAGE_EVENTS,
) -> int:
    """Queue events already encoded (each the text ``json.dumps(encode(event))`` gives)
    as page rows of up to ``page_size`` events, in the caller's transaction; a row's
    ``event_id`` is its first event's. For producers that render their events' JSON
    themselves (a flush of many nodes); returns the rows written."""
    _check_stream(stream)
    if len(event_ids) != len(encoded):
        raise ValueError("one event id per encoded event")
    if not 1 <= page_size <= MAX_PAGE_EVENTS:
        raise ValueError(f"page_size must be 1..{MAX_PAGE_EVENTS}")
    pages = [
        (event_ids[start], page_text(encoded[start : start + page_size]))
        for start in range(0, len(encoded), page_size)
    ]
    return _insert_pages(writer, stream, PAGE, pages)


def add_page(
    writer: SessionOrConnection, stream: str, events: Sequence[Event], tracer: Tracer | None = None
) -> None:
    """Queue many events of one ``stream`` in the caller's transaction, as page rows.

    The events reach the stream in this order, each with its own id; with a
    ``tracer``, each gets a ``send <stream>`` span as with :func:`add` (a producer
    sending thousands at once may rather share one span: set ``traceparent`` on
    the events and pass no tracer)."""
    encoded = [_encoded(stream, e, tracer) for e in events]
    add_encoded_pages(writer, stream, [e.id for e in events], encoded)


def add_rendered_pages(
    writer: SessionOrConnection, stream: str, renderer: str, pages: Sequence[tuple[str, Any]]
) -> int:
    """Queue pages whose entries the renderer named ``renderer`` makes at publish time,
    in the caller's transaction: ``pages`` holds, per page, its first event's id and
    the renderer's JSON-serialisable arguments. Returns the rows written.

    A renderer must make the same entries from the same arguments every time and at
    most :data:`MAX_PAGE_EVENTS` of them. The name is not looked up here: the relay
    that publishes the rows must be given the renderer under it (the service declares
    it in its ``Service(renderers=...)``); a relay without it stops at the row."""
    _check_stream(stream)
    if not renderer:
        raise ValueError("a rendered page needs its renderer's name")
    texts = [
        (first_event_id, json.dumps({RENDER_KEY: renderer, "args": args}, separators=(",", ":")))
        for first_event_id, args in pages
    ]
    return _insert_pages(writer, stream, RENDERED, texts)


def columnar_pages(
    columns: Sequence[Sequence[Any]], shared: Any, page_size: int = MAX_PAGE_EVENTS
) -> list[tuple[str, dict[str, Any]]]:
    """Rendered pages of a batch of events given as ``columns`` (one sequence per
    per-event value, all of the batch's length), with a fresh block of event ids
    (:func:`tributary.events.new_event_id_block`): per page of ``page_size`` events,
    its first event's id and the arguments ``{"shared": shared, "ids": [prefix,
    start, count], "columns": the page's part of each column}``
    (:func:`page_event_ids` gives the ids back)."""
    if not 1 <= page_size <= MAX_PAGE_EVENTS:
        # the relay refuses bigger pages: a row it cannot publish would be dead-lettered
        raise ValueError(f"chunk must be 1..{MAX_PAGE_EVENTS}, not {page_size}")
    count = len(columns[0]) if columns else 0
    if any(len(column) != count for column in columns):
        raise ValueError("the columns have different lengths")
    if not count:
        return []
    block = new_event_id_block(count)
    pages = []
    for offset in range(0, count, page_size):
        ids = block.part(offset, min(page_size, count - offset))
        args = {
            "shared": shared,
            "ids": [ids.prefix, ids.start, ids.count],
            "columns": [column[offset : offset + page_size] for column in columns],
        }
        pages.append((ids.id_at(0), args))
    return pages


def page_event_ids(args: Any) -> list[str]:
    """The event ids of a page :func:`columnar_pages` made (from its arguments)."""
    prefix, start, count = args["ids"]
    if not isinstance(count, int) or count > MAX_PAGE_EVENTS:
        raise ValueError(f"a page of {count!r} events")  # before making that many ids
    return EventIdBlock(prefix, start, count).ids()
