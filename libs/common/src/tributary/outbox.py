"""The transactional outbox and its relay (DESIGN.md section 3).

An event that follows a database write is not XADDed by the handler: it is
written to the ``outbox`` table in the same transaction as the write
(:func:`add`), and :class:`OutboxRelay` publishes committed rows to their
streams afterwards. A crash between the commit and the XADD loses nothing:
the rows are still there for the next relay.

Order: rows go out in ``id`` order, so one transaction's events (and the
events of transactions that committed one after the other) reach a stream
in the order they were added. Two transactions committing at the same
moment have no order between them; the row of the one that commits later
may go out later even with the lower id.

Delivery is at-least-once. The relay XADDs a batch and then marks it
published in the transaction that selected it; a crash (or a failed commit)
between the two publishes the batch again, with the same event ids, and
consumers drop the duplicates through their inbox.

Pages: a producer that queues many events of one stream at once (a flush of
100,000 nodes) writes them as pages (:func:`add_page`): one row holding a
JSON array of up to :data:`MAX_PAGE_EVENTS` encoded events, published in
array order, instead of a row (two index entries, a few hundred bytes of row
overhead) per event. The array is stored zlib-compressed (level 1, base64,
behind :data:`PAGE_PREFIX`): events of one batch repeat their envelope, so a
page shrinks about eightfold, and the bytes, not the rows, were what the
database spent its time on (:func:`read_fields` gives the JSON back, for
inspection). Everything above holds per page: a page is published whole or
not at all, in id order with the other rows, and a crash before it is marked
publishes it again with the same event ids.

Rendered pages: a producer whose events of one stream differ only in a few
numbers (a flush's ``traffic.flushed`` per node) need not write the events at
all. :func:`add_rendered_pages` stores, per page, the name of a renderer and
its arguments (the numbers, the event ids as a block, the shared envelope);
the relay calls the renderer, registered in its process with
:func:`register_renderer`, to make the entries it XADDs. The entries are
fixed at commit (a renderer is a pure function of its arguments, ids
included), so a page published twice is published the same; what the writing
transaction saves is rendering, compressing and storing every event. A row
whose renderer this process does not know stops the relay at that row with
an error naming both (a replica of a newer version, which knows it, may be
about to publish it): its events are not dropped, and the rows after it
wait, so a stream's order holds.

A row that no process can ever publish (unreadable text, entries that are
not flat string hashes, arguments its renderer refuses) does not stop the
relay: it goes to ``<stream>.dlq`` as a dead letter with the reason, the row
id and the row's stored text (``dlq.outbox_fields``), is marked published,
and is counted in ``tributary_events_dead_lettered`` (group ``outbox-relay``).

Like the inbox, the table is schema-free and each service adds it to its own
metadata and migrations with :func:`outbox_table`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, ParamSpec, TypeVar, cast

import sqlalchemy as sa
from opentelemetry.trace import Tracer
from redis.asyncio import Redis
from sqlalchemy import MetaData, Table
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tributary.backoff import compute_backoff
from tributary.db import make_sessionmaker
from tributary.events import Event, encode
from tributary.metrics import Metrics
from tributary.streams import client
from tributary.streams.dlq import dead_letter_fields
from tributary.streams.names import Keys
from tributary.tracing import start_producer_span

log = logging.getLogger(__name__)

TABLE_NAME = "outbox"
STREAM_MAX_LENGTH = 200
EVENT_ID_MAX_LENGTH = 64
DEFAULT_BATCH_SIZE = 1000
#: most events one page row holds (1,000 events of ~450 bytes are ~0.5 MB of JSON)
MAX_PAGE_EVENTS = 1000
#: what a compressed page's ``fields`` start with (then base64 of zlib-compressed JSON)
PAGE_PREFIX = "zlib:"
#: zlib level of pages: 1 compresses a 0.5 MB page ~8x in ~2 ms; 6 gains 20% for 3x the time
PAGE_COMPRESSION_LEVEL = 1
#: the key of a rendered page's JSON object naming its renderer (no envelope field has it)
RENDER_KEY = "$render"
#: makes a rendered page's entries from its stored arguments (raises ValueError if it cannot)
PageRenderer = Callable[[Any], list[dict[str, str]]]
_RENDERERS: dict[str, PageRenderer] = {}
#: longest pause between attempts while the database or Redis keeps failing, in seconds
MAX_ERROR_BACKOFF = 30.0
#: while the relay is behind, the backlog gauge is recounted at most this often, in seconds
BACKLOG_RECOUNT_SECONDS = 5.0

T = TypeVar("T")
P = ParamSpec("P")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def outbox_table(metadata: MetaData) -> Table:
    """The ``outbox`` table in ``metadata``: one row per event waiting to be (or already) sent."""
    return Table(
        TABLE_NAME,
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("stream", sa.String(STREAM_MAX_LENGTH), nullable=False),
        sa.Column("event_id", sa.String(EVENT_ID_MAX_LENGTH), nullable=False),
        # the encoded flat hash as JSON; MySQL's TEXT stops at 64 KiB, too little for
        # a large payload, so MEDIUMTEXT (16 MiB) there
        sa.Column("fields", sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=_utcnow),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        # serves the relay (published_at IS NULL, in id order) and the purge (by age)
        sa.Index("ix_outbox_published_at_id", "published_at", "id"),
    )


# The statements below only need the table's shape; the schema comes from the connection.
_OUTBOX = outbox_table(MetaData())


def _check_stream(stream: str) -> None:
    if not stream or len(stream) > STREAM_MAX_LENGTH:
        raise ValueError(f"stream name must be 1..{STREAM_MAX_LENGTH} characters: {stream!r}")


def _check_event_id(event_id: str) -> None:
    if not event_id or len(event_id) > EVENT_ID_MAX_LENGTH:
        raise ValueError(f"event id must be 1..{EVENT_ID_MAX_LENGTH} characters: {event_id!r}")


def _row(stream: str, event: Event, tracer: Tracer | None) -> dict[str, Any]:
    _check_stream(stream)
    _check_event_id(event.id)
    if tracer is not None:
        # The send span belongs to the transaction that decides to emit the event (that
        # is what the trace should show as its cause), not to the relay that copies the
        # row later; it only needs to exist long enough to give the entry its context.
        start_producer_span(tracer, stream, event).end()
    return {
        "stream": stream,
        "event_id": event.id,
        "fields": json.dumps(encode(event), separators=(",", ":")),
        "created_at": _utcnow(),
    }


def add(session: Session, stream: str, event: Event, tracer: Tracer | None = None) -> None:
    """Queue ``event`` for ``stream`` (a logical name, no prefix) in the caller's transaction.

    Nothing is sent unless and until the caller commits. With a ``tracer``, a
    ``send <stream>`` producer span is started under the current span and
    its context written into the event's ``traceparent``.
    """
    session.execute(sa.insert(_OUTBOX).values(_row(stream, event, tracer)))


def add_many(
    session: Session, items: Iterable[tuple[str, Event]], tracer: Tracer | None = None
) -> None:
    """:func:`add` for many ``(stream, event)`` pairs, in one round trip."""
    rows = [_row(stream, event, tracer) for stream, event in items]
    if rows:
        session.execute(sa.insert(_OUTBOX), rows)


def page_text(encoded: Sequence[str]) -> str:
    """The JSON of a page: events already encoded as JSON objects (the text
    ``json.dumps(encode(event))`` gives), as one JSON array."""
    return "[" + ",".join(encoded) + "]"


def _compressed(text: str) -> str:
    packed = zlib.compress(text.encode(), PAGE_COMPRESSION_LEVEL)
    return PAGE_PREFIX + base64.b64encode(packed).decode("ascii")


def read_fields(text: str) -> str:
    """The JSON of an outbox row's ``fields``: an entry's object, a page's array or a
    rendered page's object (its renderer's name and arguments)."""
    if text.startswith(PAGE_PREFIX):
        return zlib.decompress(base64.b64decode(text[len(PAGE_PREFIX) :])).decode()
    return text


def add_encoded_pages(
    session: Session,
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
    now = _utcnow()
    rows = []
    for start in range(0, len(encoded), page_size):
        _check_event_id(event_ids[start])
        rows.append({
            "stream": stream,
            "event_id": event_ids[start],
            "fields": _compressed(page_text(encoded[start : start + page_size])),
            "created_at": now,
        })  # fmt: skip
    if rows:
        session.execute(sa.insert(_OUTBOX), rows)
    return len(rows)


def register_renderer(name: str, renderer: PageRenderer) -> None:
    """Make ``renderer`` the one that renders pages stored under ``name`` (in this
    process: the relay and :func:`add_rendered_pages` look it up here)."""
    known = _RENDERERS.get(name)
    if known is not None and known is not renderer:
        raise ValueError(f"page renderer {name!r} is already registered to {known}")
    _RENDERERS[name] = renderer


def add_rendered_pages(
    session: Session, stream: str, renderer: str, pages: Sequence[tuple[str, Any]]
) -> int:
    """Queue pages whose entries ``renderer`` makes at publish time, in the caller's
    transaction: ``pages`` holds, per page, its first event's id and the renderer's
    JSON-serialisable arguments. A renderer must make the same entries from the same
    arguments every time and at most :data:`MAX_PAGE_EVENTS` of them. Returns the rows
    written."""
    _check_stream(stream)
    if renderer not in _RENDERERS:
        raise ValueError(f"no page renderer {renderer!r} is registered")
    now = _utcnow()
    rows = []
    for first_event_id, args in pages:
        _check_event_id(first_event_id)
        text = json.dumps({RENDER_KEY: renderer, "args": args}, separators=(",", ":"))
        rows.append({
            "stream": stream, "event_id": first_event_id, "fields": _compressed(text),
            "created_at": now,
        })  # fmt: skip
    if rows:
        session.execute(sa.insert(_OUTBOX), rows)
    return len(rows)


def add_page(
    session: Session, stream: str, events: Sequence[Event], tracer: Tracer | None = None
) -> None:
    """Queue many events of one ``stream`` in the caller's transaction, as page rows.

    The events reach the stream in this order, each with its own id; with a
    ``tracer``, each gets a ``send <stream>`` span as with :func:`add` (a producer
    sending thousands at once may rather share one span: set ``traceparent`` on
    the events and pass no tracer)."""
    encoded = [_row(stream, e, tracer)["fields"] for e in events]
    add_encoded_pages(session, stream, [e.id for e in events], encoded)


def purge_published(session: Session, older_than: timedelta, now: datetime | None = None) -> int:
    """Delete rows published more than ``older_than`` ago; returns how many."""
    cutoff = (now or _utcnow()) - older_than
    stmt = sa.delete(_OUTBOX).where(_OUTBOX.c.published_at < cutoff)
    return int(cast("sa.CursorResult[Any]", session.execute(stmt)).rowcount)


def count_unpublished(session: Session) -> int:
    """Rows not yet published (a page counts once, whatever its events)."""
    stmt = sa.select(sa.func.count()).select_from(_OUTBOX).where(_OUTBOX.c.published_at.is_(None))
    return int(session.execute(stmt).scalar_one())


#: the group name an outbox row's dead letter carries (no consumer group read it)
RELAY_GROUP = "outbox-relay"


class UnknownRenderer(ValueError):
    """A rendered page names a renderer this process does not have."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    stream: str
    #: the entries to XADD, in order: one, or a page's
    entries: list[dict[str, str]]
    #: why the row can never be published (then ``entries`` is empty): it is dead-lettered
    problem: str | None = None
    #: the row's stored ``fields``, kept for the dead letter of a row with a problem
    stored: str = ""

    def dead_letter(self) -> dict[str, str]:
        fields = dead_letter_fields(
            {},
            error=self.problem or "unreadable outbox row",
            deliveries=1,
            stream=self.stream,
            group=RELAY_GROUP,
            consumer=RELAY_GROUP,
            entry_id=f"outbox:{self.id}",
        )
        fields["dlq.outbox_fields"] = self.stored
        return fields


def row_entries(row_id: int, text: str) -> list[dict[str, str]]:
    """The entries the relay XADDs for an outbox row (its id and stored ``fields``): one,
    a page's, or a rendered page's; ValueError (naming the row) if it cannot make them."""
    try:
        fields = json.loads(read_fields(text))
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"outbox row {row_id}: fields are not readable: {exc}") from None
    if isinstance(fields, dict) and RENDER_KEY in fields:
        entries = _rendered(row_id, fields)
    elif isinstance(fields, dict):
        entries = [fields]
    elif isinstance(fields, list):
        entries = fields
    else:
        raise ValueError(f"outbox row {row_id}: fields are neither an entry nor a page")
    for entry in entries:
        if not (
            isinstance(entry, dict)
            and entry
            and all(isinstance(k, str) and isinstance(v, str) for k, v in entry.items())
        ):
            raise ValueError(f"outbox row {row_id}: an entry is not a flat hash of strings")
    return entries


def _read_row(row_id: int, stream: str, stored: str) -> OutboxRow:
    """The row as the relay publishes it, or with the problem that makes it a dead letter
    (a renderer this process lacks is not such a problem: it raises)."""
    try:
        return OutboxRow(row_id, stream, row_entries(row_id, stored))
    except UnknownRenderer:
        raise
    except ValueError as exc:
        return OutboxRow(row_id, stream, [], problem=str(exc), stored=stored)


def _rendered(row_id: int, page: dict[str, Any]) -> list[dict[str, str]]:
    name = page[RENDER_KEY]
    renderer = _RENDERERS.get(name) if isinstance(name, str) else None
    if renderer is None:
        if isinstance(name, str):
            raise UnknownRenderer(f"outbox row {row_id}: no page renderer {name!r} in this process")
        raise ValueError(f"outbox row {row_id}: the renderer's name is not a string")
    try:
        entries = renderer(page.get("args"))
    except Exception as exc:  # whatever a bad row makes it raise: name the row
        problem = f"renderer {name!r} refused the page: {type(exc).__name__}: {exc}"
        raise ValueError(f"outbox row {row_id}: {problem}") from None
    if len(entries) > MAX_PAGE_EVENTS:
        raise ValueError(f"outbox row {row_id}: renderer {name!r} made {len(entries)} entries")
    return entries


class OutboxRelay:
    """Publishes committed outbox rows to their streams, oldest first.

    Run one per service process (:meth:`run`), or call :meth:`relay_once`
    from a ``once`` cycle. Several relays on the same table are safe: they
    take turns (see :meth:`_lock_batch`).
    """

    def __init__(
        self,
        engine_or_sessionmaker: Engine | sessionmaker[Session],
        redis: Redis,
        keys: Keys,
        metrics: Metrics | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        schema_label: str = "",
    ) -> None:
        if isinstance(engine_or_sessionmaker, Engine):
            engine_or_sessionmaker = make_sessionmaker(engine_or_sessionmaker)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._sessionmaker = engine_or_sessionmaker
        self._redis = redis
        self._keys = keys
        self._metrics = metrics
        self.batch_size = batch_size
        self.schema_label = schema_label
        # A relay cycle keeps one transaction open across the await of the XADDs. All of
        # its database calls go to this single thread, so a cycle cancelled while a call is
        # still running cannot have its session closed under it from another thread: the
        # close queues up behind the running call.
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-relay")
        # one cycle at a time: a second cycle of the same relay would wait in the database
        # for the first one's row locks while holding the only database thread
        self._cycle = asyncio.Lock()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_backlog_count = 0.0
        # rows a cycle takes: batch_size while rows are single events, fewer while they
        # are pages, so that a cycle publishes about batch_size entries either way
        self._row_limit = batch_size

    async def _db(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._db_thread, partial(fn, *args, **kwargs)
        )

    async def relay_once(self) -> int:
        """Publish about ``batch_size`` entries (whole rows, in id order); returns how
        many entries were published."""
        async with self._cycle:
            session = self._sessionmaker()
            limit = self._row_limit
            try:
                rows = await self._db(self._lock_batch, session, limit)
                if rows:
                    await self._publish(rows)
                    await self._db(self._mark_published, session, rows)
            except BaseException:
                # rolls back, after any call still in flight (not at all once closed)
                with suppress(RuntimeError):
                    self._db_thread.submit(session.close)
                raise
            await self._db(session.close)
        # an empty page ("[]") counts as one: 0 means that no row was there
        entries = sum(max(1, len(row.entries)) for row in rows)
        if rows:
            per_row = entries / len(rows)
            self._row_limit = max(1, min(self.batch_size, round(self.batch_size / per_row)))
        if self._metrics is not None and self._backlog_due(caught_up=len(rows) < limit):
            await self.backlog()
        return entries

    def _backlog_due(self, *, caught_up: bool) -> bool:
        """Count the backlog when caught up, and only now and then while behind:
        ``count(*)`` over a large backlog after every batch halved the relay's rate."""
        now = time.monotonic()
        if caught_up or now >= self._next_backlog_count:
            self._next_backlog_count = now + BACKLOG_RECOUNT_SECONDS
            return True
        return False

    def _lock_batch(self, session: Session, limit: int) -> list[OutboxRow]:
        """Select and lock the oldest ``limit`` unpublished rows.

        Plain ``FOR UPDATE``, not ``SKIP LOCKED``: a second relay waits for the
        first one's batch to be published and committed, then finds those rows
        published and takes the next ones. With ``SKIP LOCKED`` it would jump
        ahead and could XADD later events of a stream before earlier ones.

        READ COMMITTED: on MySQL/MariaDB the default REPEATABLE READ would also
        gap-lock the end of the index range, making every transaction that adds
        to the outbox wait for the relay's XADDs. (It is PostgreSQL's default.)
        """
        session.connection(execution_options={"isolation_level": "READ COMMITTED"})
        stmt = (
            sa.select(_OUTBOX.c.id, _OUTBOX.c.stream, _OUTBOX.c.fields)
            .where(_OUTBOX.c.published_at.is_(None))
            .order_by(_OUTBOX.c.id)
            .limit(limit)
            .with_for_update()
        )
        # Rows are decoded in order until the cycle holds batch_size entries: the limit
        # adapts to pages only after a cycle has seen them, and a first cycle of 1,000
        # pages decoded whole would hold a million entries. Rows selected but not taken
        # stay unpublished (a prefix is taken, so the order holds).
        rows: list[OutboxRow] = []
        entries = 0
        for row in session.execute(stmt):
            if entries >= self.batch_size:
                break
            rows.append(_read_row(row.id, row.stream, row.fields))
            entries += len(rows[-1].entries)
        return rows

    async def _publish(self, rows: list[OutboxRow]) -> None:
        """XADD the batch in one round trip, in id order (a pipeline keeps the order)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for row in rows:
                if row.problem is not None:
                    log.error("outbox row %d cannot be published; dead-lettered: %s",
                              row.id, row.problem)  # fmt: skip
                    client.add(pipe, self._keys.dlq(row.stream), row.dead_letter())
                    continue
                stream = self._keys.stream(row.stream)
                for entry in row.entries:
                    pipe.xadd(stream, entry)  # type: ignore[arg-type]
            await pipe.execute()
        if self._metrics is not None:
            for row in rows:
                if row.problem is not None:
                    self._metrics.dead_lettered.labels(row.stream, RELAY_GROUP).inc()
            counts: Counter[str] = Counter()
            for row in rows:
                counts[row.stream] += len(row.entries)
            for stream, n in counts.items():
                self._metrics.published.labels(stream).inc(n)

    def _mark_published(self, session: Session, rows: list[OutboxRow]) -> None:
        """Mark the batch published and commit, releasing the row locks.

        If this fails after the XADDs, the rows stay unpublished and are sent
        again by the next cycle: at-least-once, deduplicated by event id.
        """
        session.execute(
            sa.update(_OUTBOX)
            .where(_OUTBOX.c.id.in_([row.id for row in rows]))
            .values(published_at=_utcnow())
        )
        session.commit()

    def _count(self) -> int:
        with self._sessionmaker() as session:
            return count_unpublished(session)

    async def backlog(self) -> int:
        """Rows not yet published (also sets the ``outbox_backlog`` gauge)."""
        count: int = await asyncio.to_thread(self._count)
        if self._metrics is not None:
            self._metrics.outbox_backlog.labels(self.schema_label).set(count)
        return count

    def _purge(self, older_than: timedelta) -> int:
        with self._sessionmaker.begin() as session:
            return purge_published(session, older_than)

    async def purge_published(self, older_than: timedelta) -> int:
        """Delete rows published more than ``older_than`` ago; returns how many."""
        deleted: int = await asyncio.to_thread(self._purge, older_than)
        return deleted

    def wake(self) -> None:
        """Publish promptly: call after committing outbox rows. Safe from any thread."""
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        """Sleep up to ``seconds``, ending early on ``stop`` or :meth:`wake`."""
        waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def run(self, stop: asyncio.Event, idle_interval: float = 0.5) -> None:
        """Relay until ``stop`` is set, then publish one last batch.

        Back to back while there is work; when a cycle finds nothing it waits
        ``idle_interval`` (or until :meth:`wake`). Failures (database or Redis
        down) are logged and retried with a growing pause; they never end the
        loop.
        """
        self._loop = asyncio.get_running_loop()
        failures = 0
        while not stop.is_set():
            self._wake.clear()  # a wake() during the cycle below is kept for the pause after
            try:
                published = await self.relay_once()
                failures = 0
            except Exception:
                failures += 1
                log.exception("outbox relay cycle failed (%d in a row)", failures)
                delay = compute_backoff(failures, base=idle_interval * 2, cap=MAX_ERROR_BACKOFF)
                await self._pause(stop, delay)
                continue
            if published == 0:
                await self._pause(stop, idle_interval)
        await self._final_batch()

    async def _final_batch(self) -> None:
        """On shutdown, send what was committed just before it (best effort: rows are safe)."""
        try:
            await self.relay_once()
        except Exception:
            log.warning("outbox relay could not flush on shutdown", exc_info=True)

    def close(self) -> None:
        """Let the database thread end once its queued work is done."""
        self._db_thread.shutdown(wait=False)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
