"""The relay: publishes committed outbox rows to their streams, oldest first.

Order: rows go out in ``id`` order, so one transaction's events (and the
events of transactions that committed one after the other) reach a stream
in the order they were added. Two transactions committing at the same
moment have no order between them; the row of the one that commits later
may go out later even with the lower id.

Delivery is at-least-once. The relay XADDs a batch and then marks it
published in the transaction that selected it; a crash (or a failed commit)
between the two publishes the batch again, with the same event ids, and
consumers drop the duplicates through their inbox. A page is published whole
or not at all, and a rendered page's entries are fixed at commit (its
renderer is a pure function of the row), so a page published twice is
published the same.

A row whose events this process cannot make but another might (a rendered
page whose renderer it was not given, a format it does not know: a replica of
a newer version may be about to publish it) stops the relay at that row with
an error naming both: its events are not dropped, and the rows after it wait,
so a stream's order holds. A row that no process can ever publish (unreadable
JSON or bytes, entries that are not flat string hashes, arguments its
renderer refuses) does not stop the relay: it goes to ``<stream>.dlq`` as a
dead letter with the reason, the row id and what the row stores
(:func:`dead_letter`), is marked published, and is counted in
``tributary_events_dead_lettered`` (group ``outbox-relay``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import ParamSpec, TypeVar

import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tributary.backoff import compute_backoff
from tributary.db import make_sessionmaker
from tributary.keys import Keys
from tributary.metrics import Metrics
from tributary.outbox.entries import OutboxRow, read_row
from tributary.outbox.pages import Renderers
from tributary.outbox.table import OUTBOX, count_unpublished, purge_published
from tributary.streams import client
from tributary.streams.dlq import dead_letter_fields

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000
#: longest pause between attempts while the database or Redis keeps failing, in seconds
MAX_ERROR_BACKOFF = 30.0
#: while the relay is behind, the backlog gauge is recounted at most this often, in seconds
BACKLOG_RECOUNT_SECONDS = 5.0
#: the group name an outbox row's dead letter carries (no consumer group read it)
RELAY_GROUP = "outbox-relay"

T = TypeVar("T")
P = ParamSpec("P")


def dead_letter(row: OutboxRow) -> dict[str, str]:
    """The DLQ entry of a row that can never be published: no fields a replay could put
    back, the reason, and what the row stores (``dlq.outbox_format``; its text in
    ``dlq.outbox_fields``, its page bytes as base64 in ``dlq.outbox_page``)."""
    fields = dead_letter_fields(
        {},
        error=row.problem or "unreadable outbox row",
        deliveries=1,
        stream=row.stream,
        group=RELAY_GROUP,
        consumer=RELAY_GROUP,
        entry_id=f"outbox:{row.id}",
    )
    fields["dlq.outbox_format"] = row.format
    if row.fields is not None:
        fields["dlq.outbox_fields"] = row.fields
    if row.page is not None:
        fields["dlq.outbox_page"] = base64.b64encode(row.page).decode("ascii")
    return fields


class OutboxRelay:
    """Publishes committed outbox rows to their streams, oldest first.

    Run one per service process (:meth:`run`), or call :meth:`relay_once`
    from a ``once`` cycle. Several relays on the same table are safe: they
    take turns (see :meth:`_lock_batch`). ``renderers`` are the service's page
    renderers, by the name its rendered pages are stored under
    (:func:`tributary.outbox.add_rendered_pages`).
    """

    def __init__(
        self,
        engine_or_sessionmaker: Engine | sessionmaker[Session],
        redis: Redis,
        keys: Keys,
        metrics: Metrics | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        schema_label: str = "",
        renderers: Renderers | None = None,
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
        self.renderers = dict(renderers or {})
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
            sa.select(OUTBOX.c.id, OUTBOX.c.stream, OUTBOX.c.format, OUTBOX.c.fields, OUTBOX.c.page)
            .where(OUTBOX.c.published_at.is_(None))
            .order_by(OUTBOX.c.id)
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
            rows.append(read_row(*row, self.renderers))
            entries += len(rows[-1].entries)
        return rows

    async def _publish(self, rows: list[OutboxRow]) -> None:
        """XADD the batch in one round trip, in id order (a pipeline keeps the order)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for row in rows:
                if row.problem is not None:
                    log.error(
                        "outbox row %d cannot be published; dead-lettered: %s", row.id, row.problem
                    )
                    client.add(pipe, self._keys.dlq(row.stream), dead_letter(row))
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
            sa.update(OUTBOX)
            .where(OUTBOX.c.id.in_([row.id for row in rows]))
            .values(published_at=datetime.now(UTC))
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

    async def run(self, stop: asyncio.Event, idle_interval_s: float = 0.5) -> None:
        """Relay until ``stop`` is set, then publish one last batch.

        Back to back while there is work; when a cycle finds nothing it waits
        ``idle_interval_s`` (or until :meth:`wake`). Failures (database or Redis
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
                delay = compute_backoff(failures, base=idle_interval_s * 2, cap=MAX_ERROR_BACKOFF)
                await self._pause(stop, delay)
                continue
            if published == 0:
                await self._pause(stop, idle_interval_s)
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
