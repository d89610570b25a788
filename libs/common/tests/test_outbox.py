"""Outbox and relay, on PostgreSQL and MySQL/MariaDB, with real Redis."""

from __future__ import annotations

import asyncio
import base64
import json
import zlib
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tributary import outbox
from tributary.db import make_engine, make_sessionmaker
from tributary.events import Event, decode, encode
from tributary.keys import Keys
from tributary.metrics import Metrics
from tributary.outbox import ENTRY, LEGACY, PAGE, RENDERED, OutboxRelay, OutboxRow, outbox_table
from tributary.streams import client
from tributary.streams.dlq import DeadLetters
from tributary.tracing import parse_traceparent
from tributary_testing.waiting import await_until

FLUSHED = "traffic.flushed"
AGGREGATED = "usage.aggregated"

metadata = sa.MetaData()
table = outbox_table(metadata)


@pytest.fixture(params=["postgresql", "mysql"])
def db_url(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """(URL, schema) of a throwaway PostgreSQL schema or MySQL database."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url"), request.getfixturevalue("pg_schema")
    return request.getfixturevalue("mysql_database_url"), None


@pytest.fixture
def engine(db_url: tuple[str, str | None]) -> Iterator[Engine]:
    eng = make_engine(db_url[0], schema=db_url[1])
    metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sm(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def make_relay(redis_client: aioredis.Redis, keys: Keys) -> Iterator[Callable[..., OutboxRelay]]:
    made: list[OutboxRelay] = []

    def make(target: Engine | sessionmaker[Session], **kwargs: object) -> OutboxRelay:
        cls = kwargs.pop("cls", OutboxRelay)
        kwargs.setdefault("renderers", RENDERERS)
        assert isinstance(cls, type)
        relay: OutboxRelay = cls(target, redis_client, keys, **kwargs)
        made.append(relay)
        return relay

    yield make
    for relay in made:
        relay.close()


def event(n: int, event_id: str | None = None) -> Event:
    made = Event(type=FLUSHED, data={"node": f"n{n}", "total": n}, source="traffic_sync")
    if event_id is not None:
        made.id = event_id
    return made


async def entries(redis_client: aioredis.Redis, keys: Keys, stream: str) -> list[dict[str, str]]:
    found = await redis_client.xrange(keys.stream(stream))
    return [cast("dict[str, str]", fields) for _, fields in found or []]


@pytest.fixture
def published(
    redis_client: aioredis.Redis, keys: Keys
) -> Callable[[], Awaitable[list[dict[str, str]]]]:
    """What the relays have XADDed to FLUSHED so far."""
    return lambda: entries(redis_client, keys, FLUSHED)


def unpublished(engine: Engine) -> int:
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(table.c.published_at.is_(None))
        return int(conn.execute(query).scalar_one())


def backlog(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("tributary_outbox_backlog", {"schema": "traffic"})


async def test_rolled_back_add_publishes_nothing(
    sm: sessionmaker[Session],
    make_relay: Callable[..., OutboxRelay],
    redis_client: aioredis.Redis,
    keys: Keys,
) -> None:
    with sm() as session, session.begin():
        outbox.add(session, FLUSHED, event(1))
        session.rollback()
    relay = make_relay(sm)
    assert await relay.relay_once() == 0
    assert await redis_client.exists(keys.stream(FLUSHED)) == 0


async def test_committed_events_are_published_in_order(
    engine: Engine,
    sm: sessionmaker[Session],
    make_relay: Callable[..., OutboxRelay],
    redis_client: aioredis.Redis,
    keys: Keys,
) -> None:
    flushed = [event(n) for n in range(5)]
    aggregated = [
        Event(type=AGGREGATED, data={"merchant": "m", "value": n}, source="aggregation")
        for n in range(3)
    ]
    with sm.begin() as session:
        for n in range(5):
            outbox.add(session, FLUSHED, flushed[n])
            if n < 3:
                outbox.add(session, AGGREGATED, aggregated[n])
    relay = make_relay(engine)
    assert await relay.relay_once() == 8
    assert [decode(f) for f in await entries(redis_client, keys, FLUSHED)] == flushed
    assert [decode(f) for f in await entries(redis_client, keys, AGGREGATED)] == aggregated
    assert unpublished(engine) == 0
    assert await relay.relay_once() == 0
    assert len(await entries(redis_client, keys, FLUSHED)) == 5


async def test_add_many_and_batches_keep_the_order(
    engine: Engine,
    sm: sessionmaker[Session],
    make_relay: Callable[..., OutboxRelay],
    redis_client: aioredis.Redis,
    keys: Keys,
) -> None:
    events = [event(n) for n in range(7)]
    with sm.begin() as session:
        outbox.add_many(session, [(FLUSHED, e) for e in events])
    metrics = Metrics()
    relay = make_relay(sm, batch_size=3, metrics=metrics, schema_label="traffic")
    assert await relay.relay_once() == 3
    assert backlog(metrics) == 4
    assert [await relay.relay_once(), await relay.relay_once()] == [3, 1]
    assert backlog(metrics) == 0
    assert (
        metrics.registry.get_sample_value("tributary_events_published_total", {"stream": FLUSHED})
        == 7
    )
    published = [decode(f).id for f in await entries(redis_client, keys, FLUSHED)]
    assert published == [e.id for e in events]


def rows_of(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def stored_columns(engine: Engine) -> list[sa.Row[Any]]:
    """format, fields and page of every row, in id order."""
    columns = (table.c.format, table.c.fields, table.c.page)
    with engine.connect() as conn:
        return list(conn.execute(sa.select(*columns).order_by(table.c.id)))


def insert_row(session: Session, **columns: object) -> None:
    """A row written by hand (no format given: the default, as an older version writes)."""
    row = {"stream": FLUSHED, "event_id": "x", "created_at": datetime.now(UTC)} | columns
    session.execute(sa.insert(table).values(**row))


async def test_pages_go_out_whole_in_order_among_single_rows(
    engine: Engine,
    sm: sessionmaker[Session],
    make_relay: Callable[..., OutboxRelay],
    redis_client: aioredis.Redis,
    keys: Keys,
) -> None:
    before, page, after = event(-1), [event(n) for n in range(2500)], event(-2)
    with sm.begin() as session:
        outbox.add(session, FLUSHED, before)
        outbox.add_page(session, FLUSHED, page)  # 1,000 + 1,000 + 500
        outbox.add(session, FLUSHED, after)
    assert rows_of(engine) == 5
    stored = stored_columns(engine)
    # pages are stored compressed as bytes, single entries as JSON text; read_page shows pages
    assert [r.format for r in stored] == [ENTRY, PAGE, PAGE, PAGE, ENTRY]
    assert [(r.fields is None, r.page is None) for r in stored] == [(False, True)] + [
        (True, False)
    ] * 3 + [(False, True)]
    assert [len(json.loads(outbox.read_page(r.page))) for r in stored[1:4]] == [1000, 1000, 500]
    assert json.loads(stored[0].fields)["id"] == before.id
    metrics = Metrics()
    relay = make_relay(sm, batch_size=1000, metrics=metrics, schema_label="traffic")
    published = []
    while n := await relay.relay_once():
        published.append(n)
    # the first cycle took 1,000 rows (all 5): then the relay takes about 1 page a cycle
    assert sum(published) == 2502
    assert [decode(f).id for f in await entries(redis_client, keys, FLUSHED)] == [
        e.id for e in [before, *page, after]
    ]
    assert unpublished(engine) == 0
    assert (
        metrics.registry.get_sample_value("tributary_events_published_total", {"stream": FLUSHED})
        == 2502
    )


async def test_the_relay_takes_fewer_rows_while_they_are_pages(
    sm: sessionmaker[Session], make_relay: Callable[..., OutboxRelay]
) -> None:
    with sm.begin() as session:
        for start in range(0, 4000, 1000):
            outbox.add_page(session, FLUSHED, [event(n) for n in range(start, start + 1000)])
        outbox.add_many(session, [(FLUSHED, event(n)) for n in range(10)])
    relay = make_relay(sm, batch_size=2000)
    # the first cycle selects up to 2,000 rows but decodes them only until it holds
    # 2,000 entries (two pages); then it takes 2 rows a cycle, until single rows come
    assert [await relay.relay_once() for _ in range(5)] == [2000, 2000, 2, 8, 0]
    with sm.begin() as session:
        for start in range(0, 5000, 1000):
            outbox.add_page(session, FLUSHED, [event(n) for n in range(start, start + 1000)])
    assert [await relay.relay_once() for _ in range(4)] == [2000, 2000, 1000, 0]
    # single rows again: the limit grows back to batch_size
    with sm.begin() as session:
        outbox.add_many(session, [(FLUSHED, event(n)) for n in range(30)])
    assert [await relay.relay_once() for _ in range(3)] == [2, 28, 0]


@pytest.mark.parametrize(
    "stored",
    [
        {"format": PAGE, "page": zlib.compress(b"[]")},
        {"fields": "[]"},  # as the versions before the format column wrote it
    ],
)
async def test_an_empty_page_is_marked_published_and_the_relay_goes_on(
    engine: Engine, sm: sessionmaker[Session], make_relay: Callable[..., OutboxRelay],
    stored: dict[str, Any],
) -> None:  # fmt: skip
    with sm.begin() as session:
        insert_row(session, **stored)
        outbox.add(session, FLUSHED, event(1))
    relay = make_relay(sm, batch_size=1)
    assert [await relay.relay_once(), await relay.relay_once()] == [1, 1]
    assert unpublished(engine) == 0


def compressed(value: object) -> bytes:
    return zlib.compress(json.dumps(value).encode())


def legacy_page(value: object) -> str:
    """A page's ``fields`` as the versions before the format column wrote them."""
    return "zlib:" + base64.b64encode(compressed(value)).decode()


@pytest.mark.parametrize(
    "stored",
    [
        # rows as the versions before the format column wrote them (format legacy)
        {"fields": "[1, 2]"},  # neither an entry nor a page of entries
        {"fields": "{not json"},
        {"fields": "zlib:%%%"},  # a compressed page that is not base64 of zlib
        {"fields": '{"id": "x", "data": {"nested": 1}}'},  # not a flat hash of strings
        {"fields": "[{}]"},  # an empty entry (XADD needs a field)
        {"fields": '"text"'},
        {"fields": '{"$render": 7, "args": {}}'},
        {"fields": legacy_page({"id": "x", "n": 1})},  # a compressed object, no renderer
        # rows with a format
        {"format": ENTRY, "fields": "[1, 2]"},  # an array is not an entry
        {"format": ENTRY, "fields": "{not json"},
        {"format": ENTRY, "fields": '{"id": "x", "data": {"nested": 1}}'},
        {"format": ENTRY, "fields": '"text"'},
        {"format": ENTRY},  # no fields at all
        {"format": PAGE, "page": b"%%%"},  # page bytes that are not zlib
        {"format": PAGE, "page": compressed({"id": "x"})},  # not an array
        {"format": PAGE, "page": compressed([{}])},
        {"format": PAGE, "page": compressed([{"id": 1}])},
        {"format": PAGE, "page": zlib.compress(b"[{not json")},
        {"format": PAGE},  # no page at all
        {"format": RENDERED, "page": compressed({"$render": 7, "args": {}})},
        {"format": RENDERED, "page": compressed([{"id": "x"}])},  # names no renderer
        {"format": RENDERED, "page": b"%%%"},
    ],
)
async def test_a_row_no_relay_can_publish_is_dead_lettered_and_the_relay_goes_on(
    engine: Engine, sm: sessionmaker[Session], make_relay: Callable[..., OutboxRelay],
    published: Published, redis_client: aioredis.Redis, keys: Keys, stored: dict[str, Any],
) -> None:  # fmt: skip
    """A poison row must not stop every later event: it goes to <stream>.dlq with the
    reason and what it stores (its text as it is, its page bytes as base64), and the
    rows after it are published."""
    with sm.begin() as session:
        insert_row(session, **stored)
        outbox.add(session, FLUSHED, after := event(1))
    metrics = Metrics()
    relay = make_relay(sm, metrics=metrics)
    assert await relay.relay_once() == 2
    assert [decode(f).id for f in await published()] == [after.id]
    assert unpublished(engine) == 0
    [letter] = await DeadLetters(redis_client, FLUSHED, keys).page()
    assert letter.error.startswith("outbox row ")
    assert letter.group == outbox.RELAY_GROUP
    assert letter.original_id.startswith("outbox:")
    assert letter.fields == {}  # nothing a replay could put back
    [(_, letter_fields)] = await client.entries(redis_client, keys.dlq(FLUSHED))
    assert letter_fields["dlq.outbox_format"] == stored.get("format", LEGACY)
    assert letter_fields.get("dlq.outbox_fields") == stored.get("fields")
    page = stored.get("page")
    assert letter_fields.get("dlq.outbox_page") == (page and base64.b64encode(page).decode())
    labels = {"stream": FLUSHED, "group": outbox.RELAY_GROUP}
    assert metrics.registry.get_sample_value("tributary_events_dead_lettered_total", labels) == 1
    assert await DeadLetters(redis_client, FLUSHED, keys).replay() == 0


def _render_counts(args: dict[str, object]) -> list[dict[str, str]]:
    """A page renderer for the tests: events of FLUSHED with totals ``first`` .. + n."""
    first, n = args["first"], args["n"]
    if not isinstance(first, int) or not isinstance(n, int):
        raise ValueError("first and n must be integers")
    made = [event(total, f"{args['prefix']}-{total}") for total in range(first, first + n)]
    for e in made:
        e.time = "2026-12-04T00:00:00.000Z"  # a renderer makes the same entries every time
    return [encode(e) for e in made]


COUNTS = "tests/counts/1"
#: what the tests' relays are given (make_relay)
RENDERERS: outbox.Renderers = {COUNTS: _render_counts}


Published = Callable[[], Awaitable[list[dict[str, str]]]]


async def test_rendered_pages_go_out_as_their_renderer_makes_them_in_order(
    engine: Engine, sm: sessionmaker[Session], make_relay: Callable[..., OutboxRelay],
    published: Published,
) -> None:  # fmt: skip
    before, after = event(-1), event(-2)
    pages = [("p-0", {"prefix": "p", "first": 0, "n": 1000}),
             ("p-1000", {"prefix": "p", "first": 1000, "n": 500})]  # fmt: skip
    with sm.begin() as session:
        outbox.add(session, FLUSHED, before)
        assert outbox.add_rendered_pages(session, FLUSHED, COUNTS, pages) == 2
        outbox.add(session, FLUSHED, after)
    stored = stored_columns(engine)
    # a rendered page stores its renderer and arguments, compressed: not the events
    assert [r.format for r in stored] == [ENTRY, RENDERED, RENDERED, ENTRY]
    assert stored[1].fields is None
    assert json.loads(outbox.read_page(stored[1].page)) == {"$render": COUNTS, "args": pages[0][1]}
    assert len(stored[1].page) < 200
    relay = make_relay(sm, batch_size=1000)
    while await relay.relay_once():
        pass
    events = [decode(f) for f in await published()]
    assert [e.id for e in events] == [before.id, *(f"p-{n}" for n in range(1500)), after.id]
    assert events[1500].data == {"node": "n1499", "total": 1499}
    assert unpublished(engine) == 0


def set_first_row(engine: Engine, **columns: object) -> int:
    """Overwrite columns of the table's first row; returns its id."""
    with engine.begin() as conn:
        first_id = int(conn.execute(sa.select(sa.func.min(table.c.id))).scalar_one())
        conn.execute(sa.update(table).where(table.c.id == first_id).values(**columns))
    return first_id


@pytest.mark.parametrize(
    ("columns", "missing"),
    [
        # another version's page
        ({"page": compressed({"$render": "tests/counts/2", "args": {}})},
         "no page renderer 'tests/counts/2' in this process"),
        # the same, written before the format column
        ({"format": LEGACY, "page": None,
          "fields": legacy_page({"$render": "tests/counts/2", "args": {}})},
         "no page renderer 'tests/counts/2' in this process"),
        # a format a newer version writes
        ({"format": "columns"}, "format 'columns' is unknown here"),
    ],
)  # fmt: skip
async def test_a_row_this_process_cannot_read_stops_the_relay_and_waits(
    engine: Engine, sm: sessionmaker[Session], make_relay: Callable[..., OutboxRelay],
    published: Published, columns: dict[str, object], missing: str,
) -> None:  # fmt: skip
    """A renderer or a format this process lacks (another version's row): the cycle
    fails naming the row, nothing of it or after it is published or lost."""
    with sm.begin() as session:
        outbox.add_rendered_pages(session, FLUSHED, COUNTS, [("a", {"prefix": "a", "first": 0,
                                                                     "n": 2})])  # fmt: skip
        outbox.add(session, FLUSHED, event(7))
    first_id = set_first_row(engine, **columns)
    relay = make_relay(sm)
    with pytest.raises(ValueError, match=f"outbox row {first_id}: {missing}"):
        await relay.relay_once()
    assert unpublished(engine) == 2
    assert await published() == []


async def test_a_relay_not_given_a_renderer_stops_at_its_pages(
    engine: Engine, sm: sessionmaker[Session], make_relay: Callable[..., OutboxRelay],
    published: Published,
) -> None:  # fmt: skip
    """Names are not looked up when pages are written: the relay that lacks the
    renderer stops at them, and one given it publishes them."""
    with sm.begin() as session:
        outbox.add_rendered_pages(session, FLUSHED, "nobody", [("x", {})])
        with pytest.raises(ValueError, match="needs its renderer's name"):
            outbox.add_rendered_pages(session, FLUSHED, "", [("x", {})])
    with pytest.raises(ValueError, match="no page renderer 'nobody' in this process"):
        await make_relay(sm).relay_once()
    assert unpublished(engine) == 1
    nobody = {"nobody": lambda args: [{"id": "n-1", "args": json.dumps(args)}]}
    assert await make_relay(sm, renderers=nobody).relay_once() == 1
    assert await published() == [{"id": "n-1", "args": "{}"}]


async def test_a_rendered_page_its_renderer_refuses_is_dead_lettered(
    engine: Engine, sm: sessionmaker[Session], make_relay: Callable[..., OutboxRelay],
    published: Published, redis_client: aioredis.Redis, keys: Keys,
) -> None:  # fmt: skip
    """Arguments the renderer refuses can never be rendered by anyone: a dead letter
    naming the row and the refusal; the rows after it go out."""
    with sm.begin() as session:
        outbox.add_rendered_pages(session, FLUSHED, COUNTS, [("a", {"prefix": "a", "first": 0,
                                                                     "n": 2})])  # fmt: skip
        outbox.add(session, FLUSHED, after := event(7))
    refused = {"$render": COUNTS, "args": {"prefix": "a", "first": "0", "n": 2}}
    first_id = set_first_row(engine, page=compressed(refused))
    assert await make_relay(sm).relay_once() == 2
    assert [decode(f).id for f in await published()] == [after.id]
    [letter] = await DeadLetters(redis_client, FLUSHED, keys).page()
    refusal = f"outbox row {first_id}: renderer '{COUNTS}' refused the page: ValueError: first"
    assert letter.error.startswith(refusal)
    assert unpublished(engine) == 0


async def test_rows_written_before_the_format_column_are_published_as_then(
    engine: Engine, sm: sessionmaker[Session], make_relay: Callable[..., OutboxRelay],
    published: Published,
) -> None:  # fmt: skip
    """An older replica still writing during a rolling upgrade: its rows get the
    ``legacy`` default, and go out in order with the others, with their ids."""
    entry, page = event(1), [event(n) for n in range(2, 5)]
    rendered = {"$render": COUNTS, "args": {"prefix": "r", "first": 0, "n": 2}}
    with sm.begin() as session:
        insert_row(session, fields=json.dumps(encode(entry)))
        outbox.add(session, FLUSHED, first_new := event(0))
        insert_row(session, fields=legacy_page([encode(e) for e in page]))
        insert_row(session, fields=legacy_page(rendered))
    assert [r.format for r in stored_columns(engine)] == [LEGACY, ENTRY, LEGACY, LEGACY]
    assert await make_relay(sm).relay_once() == 7
    ids = [decode(f).id for f in await published()]
    assert ids == [entry.id, first_new.id, *(e.id for e in page), "r-0", "r-1"]
    assert unpublished(engine) == 0


async def test_crash_between_commit_and_publish_still_publishes(
    db_url: tuple[str, str | None],
    engine: Engine,
    make_relay: Callable[..., OutboxRelay],
    redis_client: aioredis.Redis,
    keys: Keys,
) -> None:
    events = [event(n) for n in range(3)]
    with make_sessionmaker(engine).begin() as session:
        outbox.add_many(session, [(FLUSHED, e) for e in events])
    engine.dispose()  # the process that committed dies before any relay ran

    restarted = make_engine(db_url[0], schema=db_url[1])
    try:
        assert await make_relay(restarted).relay_once() == 3
    finally:
        restarted.dispose()
    assert [decode(f) for f in await entries(redis_client, keys, FLUSHED)] == events


class CrashAfterXadd(OutboxRelay):
    """Dies once between the XADDs and the commit that marks them published."""

    crashed = False

    def _mark_published(self, session: Session, rows: list[OutboxRow]) -> None:
        if not self.crashed:
            self.crashed = True
            raise ConnectionError("simulated crash after XADD")
        super()._mark_published(session, rows)


async def test_crash_after_xadd_before_marking_publishes_again(
    engine: Engine,
    sm: sessionmaker[Session],
    make_relay: Callable[..., OutboxRelay],
    redis_client: aioredis.Redis,
    keys: Keys,
) -> None:
    """At-least-once: the batch goes out twice with the same event ids; consumers dedupe."""
    events = [event(n) for n in range(3)]
    with sm.begin() as session:
        outbox.add_many(session, [(FLUSHED, e) for e in events])
    relay = make_relay(sm, cls=CrashAfterXadd)
    with pytest.raises(ConnectionError):
        await relay.relay_once()
    assert len(await entries(redis_client, keys, FLUSHED)) == 3
    assert unpublished(engine) == 3  # the marking rolled back with the crash

    assert await relay.relay_once() == 3
    ids = [decode(f).id for f in await entries(redis_client, keys, FLUSHED)]
    assert ids == [e.id for e in events] * 2
    assert unpublished(engine) == 0


async def test_a_rendered_page_published_twice_is_the_same_entries(
    engine: Engine, sm: sessionmaker[Session], make_relay: Callable[..., OutboxRelay],
    published: Published,
) -> None:  # fmt: skip
    with sm.begin() as session:
        outbox.add_rendered_pages(session, FLUSHED, COUNTS, [("r-0", {"prefix": "r", "first": 0,
                                                                       "n": 3})])  # fmt: skip
    relay = make_relay(sm, cls=CrashAfterXadd)
    with pytest.raises(ConnectionError):
        await relay.relay_once()
    assert unpublished(engine) == 1
    assert await relay.relay_once() == 3
    first, again = (await published())[:3], (await published())[3:]
    assert first == again
    assert [f["id"] for f in first] == ["r-0", "r-1", "r-2"]
    assert unpublished(engine) == 0


async def test_traceparent_of_the_span_active_at_add_is_carried(
    sm: sessionmaker[Session],
    make_relay: Callable[..., OutboxRelay],
    redis_client: aioredis.Redis,
    keys: Keys,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("handle reading") as parent, sm.begin() as session:
        outbox.add(session, FLUSHED, event(1), tracer=tracer)
    await make_relay(sm).relay_once()

    (fields,) = await entries(redis_client, keys, FLUSHED)
    carried = parse_traceparent(fields["traceparent"])
    assert carried is not None
    (send,) = [s for s in exporter.get_finished_spans() if s.name == f"send {FLUSHED}"]
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None
    assert send.parent.span_id == parent.get_span_context().span_id
    assert carried.trace_id == parent.get_span_context().trace_id
    assert carried.span_id == send.context.span_id
    provider.shutdown()


async def test_run_publishes_on_wake_and_stops_promptly(
    sm: sessionmaker[Session],
    make_relay: Callable[..., OutboxRelay],
    redis_client: aioredis.Redis,
    keys: Keys,
) -> None:
    relay = make_relay(sm)
    stop = asyncio.Event()
    # idle far longer than the test's deadlines: only wake() can explain a publish
    task = asyncio.create_task(relay.run(stop, idle_interval_s=3600))

    async def published(n: int) -> bool:
        return len(await entries(redis_client, keys, FLUSHED)) == n

    with sm.begin() as session:
        outbox.add(session, FLUSHED, event(1))
    relay.wake()
    await await_until(lambda: published(1), task, what="published on wake")

    with sm.begin() as session:
        outbox.add(session, FLUSHED, event(2))
    await asyncio.to_thread(relay.wake)  # e.g. from a handler's worker thread
    await await_until(lambda: published(2), task, what="published on wake from a thread")

    stop.set()
    await asyncio.wait_for(task, timeout=10)


async def test_run_flushes_on_stop(
    sm: sessionmaker[Session],
    make_relay: Callable[..., OutboxRelay],
    redis_client: aioredis.Redis,
    keys: Keys,
) -> None:
    stop = asyncio.Event()
    stop.set()
    with sm.begin() as session:
        outbox.add(session, FLUSHED, event(1))
    await asyncio.wait_for(make_relay(sm).run(stop), timeout=10)
    assert len(await entries(redis_client, keys, FLUSHED)) == 1


async def test_run_survives_a_failing_cycle(
    sm: sessionmaker[Session],
    make_relay: Callable[..., OutboxRelay],
    redis_client: aioredis.Redis,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with sm.begin() as session:
        outbox.add(session, FLUSHED, event(1))
    relay = make_relay(sm, cls=CrashAfterXadd)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop, idle_interval_s=0.01))

    async def marked() -> bool:
        return await relay.backlog() == 0

    await await_until(marked, task, what="backlog empty")
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    assert "outbox relay cycle failed" in caplog.text
    assert len(await entries(redis_client, keys, FLUSHED)) == 2  # once before the crash


async def test_two_relays_take_turns_and_keep_the_order(
    engine: Engine,
    sm: sessionmaker[Session],
    make_relay: Callable[..., OutboxRelay],
    redis_client: aioredis.Redis,
    keys: Keys,
) -> None:
    events = [event(n) for n in range(200)]
    with sm.begin() as session:
        outbox.add_many(session, [(FLUSHED, e) for e in events])
    relays = [make_relay(engine, batch_size=15), make_relay(engine, batch_size=15)]

    async def drain(relay: OutboxRelay) -> None:
        while await relay.relay_once():
            pass

    await asyncio.wait_for(asyncio.gather(*(drain(r) for r in relays)), timeout=60)
    published = [decode(f).id for f in await entries(redis_client, keys, FLUSHED)]
    assert published == [e.id for e in events]  # each once (no crash), in order
    assert unpublished(engine) == 0


def add_with_short_lock_wait(sm: sessionmaker[Session]) -> None:
    with sm() as session, session.begin():
        if session.connection().dialect.name == "postgresql":
            session.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
        else:
            session.execute(sa.text("SET SESSION innodb_lock_wait_timeout = 2"))
        outbox.add(session, FLUSHED, event(99))


class AddsWhilePublishing(OutboxRelay):
    """Commits a new outbox row while its own batch is locked and being sent."""

    async def _publish(self, rows: list[OutboxRow]) -> None:
        await asyncio.to_thread(add_with_short_lock_wait, self._sessionmaker)
        await super()._publish(rows)


async def test_adding_is_not_blocked_while_a_relay_holds_its_batch(
    engine: Engine, sm: sessionmaker[Session], make_relay: Callable[..., OutboxRelay]
) -> None:
    """Producers must not wait for the relay's XADDs (MySQL's gap locks under REPEATABLE READ
    would make them: the relay reads at READ COMMITTED)."""
    with sm.begin() as session:
        outbox.add(session, FLUSHED, event(1))
    relay = make_relay(sm, cls=AddsWhilePublishing)
    assert await relay.relay_once() == 1  # would raise a lock wait timeout otherwise
    assert unpublished(engine) == 1


async def test_purge_published_deletes_old_published_rows_only(
    engine: Engine, sm: sessionmaker[Session], make_relay: Callable[..., OutboxRelay]
) -> None:
    with sm.begin() as session:
        outbox.add_many(session, [(FLUSHED, event(n)) for n in range(3)])
    relay = make_relay(sm, batch_size=2)
    await relay.relay_once()
    with sm.begin() as session:
        session.execute(
            sa.update(table)
            .where(table.c.published_at.is_not(None))
            .values(published_at=datetime.now(UTC) - timedelta(days=10))
        )
    assert await relay.purge_published(timedelta(days=30)) == 0
    assert await relay.purge_published(timedelta(days=7)) == 2
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 1


def test_add_refuses_names_that_do_not_fit(sm: sessionmaker[Session]) -> None:
    with sm() as session, session.begin():
        with pytest.raises(ValueError, match="stream name"):
            outbox.add(session, "s" * 201, event(1))
        with pytest.raises(ValueError, match="event id"):
            outbox.add(session, FLUSHED, event(1, event_id="x" * 65))
