"""Collect Outline servers: read their API, derive deltas, write them exactly once.

The HTTP reads happen outside any transaction. The writes (keys, snapshots,
server state, or the failure and its backoff) commit in one transaction with
the inbox rows of the work items, under locks on the servers' rows; a reading
overtaken by a concurrent collection of the same server is dropped rather
than turned into a wrong delta. Finished reads are written in groups: one
transaction (and one thread hop) for whatever finished while the previous
group was being written, so the per-transaction costs are paid once per group
rather than once per server.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from opentelemetry.trace import Tracer
from sqlalchemy.orm import Session, sessionmaker

from snapshot import partitions
from snapshot import repository as repo
from snapshot.config import OUTLINE_WINDOW_DAYS, SnapshotSettings
from snapshot.credentials import ApiUrl, SecretBox, SecretUnavailable
from snapshot.deltas import KeyState, aged_out_estimate, compute_deltas
from snapshot.instruments import SnapshotMetrics
from snapshot.outline import MAX_INTERVAL_SECONDS, OutlineClients, Reading
from snapshot.pinning import CollectError
from tributary.backoff import compute_backoff
from tributary.errors import one_line
from tributary.events import new_event_id
from tributary.inbox import process_once
from tributary.logs import redact
from tributary.outage import is_dependency_outage
from tributary.tasks import cancel_and_wait

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
WINDOW = timedelta(days=OUTLINE_WINDOW_DAYS)
#: one server's reads together take at most this many request timeouts
READ_DEADLINE_FACTOR = 2
#: /server (name, server-wide data limit) is read again after this long
SERVER_INFO_TTL = timedelta(hours=1)
#: most servers whose results one database transaction writes
WRITE_BATCH = 64


@dataclass(frozen=True)
class Outcome:
    status: str  # collected | failed | skipped
    reason: str = ""
    snapshots: int = 0
    backoff_until: datetime | None = None
    drops: int = 0
    #: keys whose delta came from the window although an interval answer was there, by why
    fallbacks: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """One collection to make: a server, the tick it belongs to (None: on demand)."""

    server_id: str
    tick: datetime | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class _Plan:
    server_id: str
    endpoint: str
    pin: str
    token: str
    since: int | None
    base: datetime | None  # last_success_at the reading builds on
    with_info: bool  # /server is due (name, default data limit)


@dataclass(frozen=True)
class _Read:
    """What a server answered (or why it did not), waiting to be written."""

    plan: _Plan
    tick: datetime | None
    event_id: str
    reading: Reading | None = None
    error: CollectError | None = None


WriteBatch = Callable[[list[_Read]], list[Outcome]]


class NotWritten(RuntimeError):
    """The writer stopped (or broke) before writing a read: nothing of it is stored."""


class _Writer:
    """Writes finished reads in groups: whatever piled up while the last group was written.

    A group holds each server once (a second read of the same server waits for the next
    group, so that the reads of one server are written in order). A group whose
    transaction fails is written again server by server, so that one server's bad data
    cannot hold the others back; an error that remains is raised to that server's caller.
    """

    def __init__(self, write: WriteBatch, size: int) -> None:
        self._write, self._size = write, size
        self._pending: collections.deque[tuple[_Read, asyncio.Future[Outcome]]] = (
            collections.deque()
        )
        self._ready = asyncio.Event()
        self._stopped = False

    async def submit(self, read: _Read) -> Outcome:
        if self._stopped:
            raise NotWritten("the collection was not written: the writer stopped")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending.append((read, future))
        self._ready.set()
        return await future

    async def run(self) -> None:
        try:
            while True:
                await self._next_group()
        finally:
            # only if something unforeseen broke the loop (or it is cancelled): nobody
            # may wait for ever on a read that will not be written
            self._stopped = True
            while self._pending:
                _, future = self._pending.popleft()
                if not future.done():
                    future.set_exception(NotWritten("the collection was not written"))

    async def _next_group(self) -> None:
        while not self._pending:
            self._ready.clear()
            await self._ready.wait()
        group: list[tuple[_Read, asyncio.Future[Outcome]]] = []
        servers: set[str] = set()
        while self._pending and len(group) < self._size:
            if self._pending[0][0].plan.server_id in servers:
                break
            group.append(self._pending.popleft())
            servers.add(group[-1][0].plan.server_id)
        try:
            await self._flush(group)
        finally:
            for _, future in group:  # only if something unforeseen broke the flush
                if not future.done():
                    future.set_exception(NotWritten("the collection was not written"))

    async def _flush(self, group: list[tuple[_Read, asyncio.Future[Outcome]]]) -> None:
        try:
            outcomes = await asyncio.to_thread(self._write, [read for read, _ in group])
        except Exception as exc:
            if len(group) > 1:
                log.warning(
                    "writing %d collections together failed (%s); writing them one by one",
                    len(group),
                    redact(str(exc)),
                )
                for item in group:
                    await self._flush([item])
                return
            if not group[0][1].done():
                group[0][1].set_exception(exc)
            return
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)


def refused_data(exc: BaseException) -> bool:
    """Whether a failed write was the server's data's fault (a value out of range, a
    string the database refuses, a bug on an odd answer) rather than the database being
    away or a transaction losing a race (a deadlock: the same write may pass next time)."""
    if is_dependency_outage(exc) or isinstance(exc, NotWritten | asyncio.CancelledError):
        return False
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None) or ""
    return not sqlstate.startswith("40")  # transaction rollback: deadlock, serialization


def aged_out_for(session: Session, states: Iterable[KeyState], now: datetime) -> dict[int, int]:
    """Tracked traffic of each key that left the 30-day window since its last reading."""
    spans = {s.ref: s.ageing_from for s in states if s.ageing_from is not None}
    if not spans:
        return {}
    hi = now - WINDOW
    hourly = repo.hourly_usage(session, list(spans), min(spans.values()), hi)
    return {ref: aged_out_estimate(hourly.get(ref, []), lo, hi) for ref, lo in spans.items()}


class Collector:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clients: OutlineClients,
        box: SecretBox,
        settings: SnapshotSettings,
        metrics: SnapshotMetrics,
        tracer: Tracer,
        *,
        clock: Clock,
        rng: random.Random | None = None,
        group: str = "snapshot",
    ) -> None:
        self.sessions, self.clients, self.box = sessions, clients, box
        self.settings, self.metrics, self.tracer = settings, metrics, tracer
        self.clock, self.rng, self.group = clock, rng or random.Random(), group

    async def collect(
        self, server_id: str, *, tick: datetime | None = None, event_id: str | None = None
    ) -> Outcome:
        """Collect ``server_id`` once (``tick`` None: on demand, backoff ignored)."""
        outcomes = await self.collect_many([Request(server_id, tick, event_id)])
        return outcomes[0]

    async def collect_many(self, requests: list[Request]) -> list[Outcome]:
        """Collect several servers concurrently; their rows are read in one query, their
        results written in a few transactions."""
        now = self.clock()
        plans = await asyncio.to_thread(self._plans, requests, now)
        limit = asyncio.Semaphore(self.settings.collect_concurrency)
        writer = _Writer(functools.partial(self._write, now=now), WRITE_BATCH)

        async def one(request: Request, plan: _Plan | Outcome) -> Outcome:
            if isinstance(plan, Outcome):
                self.metrics.collections.labels("skipped", plan.reason).inc()
                return plan
            return await self._collect(plan, request, now, limit, writer)

        writing = asyncio.create_task(writer.run(), name="snapshot-writer")
        try:
            results = await asyncio.gather(
                *(one(r, p) for r, p in zip(requests, plans, strict=True)),
                return_exceptions=True,
            )
        finally:
            await cancel_and_wait(writing)
        for result in results:
            if isinstance(result, BaseException):
                raise result  # the others finished: a redelivery skips them
        return [r for r in results if isinstance(r, Outcome)]

    async def _collect(
        self,
        plan: _Plan,
        request: Request,
        now: datetime,
        limit: asyncio.Semaphore,
        writer: _Writer,
    ) -> Outcome:
        started = time.perf_counter()
        event_id = request.event_id or new_event_id()
        attributes = {"outline.server.id": plan.server_id, "server.address": plan.endpoint}
        with self.tracer.start_as_current_span("collect outline server", attributes=attributes):
            async with limit:  # bounds the servers being read, not those waiting for a write
                try:
                    read = _Read(plan, request.tick, event_id, await self._read(plan, now))
                except CollectError as exc:
                    read = _Read(plan, request.tick, event_id, error=exc)
                except Exception as exc:  # a bug on an odd answer: this server's failure
                    log.exception("reading server %s failed", plan.server_id)
                    error = CollectError("protocol", f"unreadable answer: {type(exc).__name__}")
                    read = _Read(plan, request.tick, event_id, error=error)
            outcome = await self._write_contained(writer, read)
        if read.error is not None and outcome.status == "failed":
            log.warning(
                "collection of server %s (%s) failed: %s; backing off until %s",
                plan.server_id,
                plan.endpoint,
                redact(str(read.error)),
                outcome.backoff_until,
            )
        if outcome.status == "collected":
            self.metrics.snapshots.inc(outcome.snapshots)
            self.metrics.drops.inc(outcome.drops)
            assert read.reading is not None
            self._count_quirks(read.reading, outcome.fallbacks)
        self.metrics.collections.labels(outcome.status, outcome.reason).inc()
        self.metrics.collect_seconds.observe(time.perf_counter() - started)
        return outcome

    async def _write_contained(self, writer: _Writer, read: _Read) -> Outcome:
        """Write ``read``; when this server's data cannot be written (a value the database
        refuses, a bug on an odd answer), record that as its failed collection instead,
        with its backoff, so that it fails this server's work item only."""
        try:
            return await writer.submit(read)
        except Exception as exc:
            if not refused_data(exc):
                raise  # the database is away: the work item is tried again
            log.exception("writing the collection of server %s failed", read.plan.server_id)
            error = CollectError("data", f"not stored: {one_line(exc, limit=200)}")
            return await writer.submit(dataclasses.replace(read, reading=None, error=error))

    # -- steps ------------------------------------------------------------------------------

    def _plans(self, requests: list[Request], now: datetime) -> list[_Plan | Outcome]:
        with self.sessions() as session:
            rows = {r.id: r for r in repo.find_servers(session, [q.server_id for q in requests])}
        return [self._plan(rows.get(q.server_id), q.tick, now) for q in requests]

    def _plan(self, row: Any, tick: datetime | None, now: datetime) -> _Plan | Outcome:
        if row is None:
            return Outcome("skipped", "unknown")
        if not row.active:
            return Outcome("skipped", "inactive")
        if tick is not None:
            if row.backoff_until is not None and row.backoff_until > now:
                return Outcome("skipped", "backoff", backoff_until=row.backoff_until)
            if row.last_tick is not None and row.last_tick >= tick:
                return Outcome("skipped", "duplicate")
            if now - tick > timedelta(seconds=2 * self.settings.collect_interval_seconds):
                return Outcome("skipped", "stale")
        info_due = row.info_fetched_at is None or now - row.info_fetched_at >= SERVER_INFO_TTL
        return _Plan(
            row.id,
            row.endpoint,
            row.cert_sha256,
            row.api_url_encrypted,
            self._since(row.interval_metrics, row.last_success_at, now, info_due),
            row.last_success_at,
            info_due,
        )

    def _since(
        self, supported: bool | None, last: datetime | None, now: datetime, recheck: bool
    ) -> int | None:
        """Seconds to ask the interval endpoint for; a server without it is asked again
        whenever its /server info is due (hourly), in case it was upgraded."""
        if not self.settings.use_interval_metrics or last is None:
            return None
        if supported is False and not recheck:
            return None
        seconds = math.ceil((now - last).total_seconds())
        return seconds if 0 < seconds <= MAX_INTERVAL_SECONDS else None

    async def _read(self, plan: _Plan, now: datetime) -> Reading:
        try:
            url: ApiUrl = self.box.decrypt(plan.token)
        except SecretUnavailable as exc:
            raise CollectError("secret", str(exc)) from None
        try:
            async with asyncio.timeout(self.settings.http_timeout_seconds * READ_DEADLINE_FACTOR):
                return await self.clients.fetch(
                    plan.server_id, url, plan.pin, plan.since, now, with_info=plan.with_info
                )
        except TimeoutError:
            raise CollectError("timeout", "server did not answer in time") from None

    def _write(self, reads: list[_Read], *, now: datetime) -> list[Outcome]:
        """Write a group of reads in one transaction (in a thread): each work item once."""
        outcomes: list[Outcome] = []
        # the day's partition first, in a transaction of its own: creating one takes an
        # exclusive lock on snapshots, never to be waited for while holding servers' rows
        with self.sessions.begin() as session:
            partitions.cover(session.connection(), [now])

        def write(session: Session, new_ids: set[str]) -> None:
            outcomes[:] = self._write_new(session, reads, set(new_ids), now)

        if not process_once(self.sessions, self.group, [r.event_id for r in reads], write):
            return [Outcome("skipped", "redelivered")] * len(reads)
        return outcomes

    def _write_new(
        self, session: Session, reads: list[_Read], new_ids: set[str], now: datetime
    ) -> list[Outcome]:
        """Write the reads of a group (each server at most once) whose work items are new."""
        rows = repo.lock_servers(session, [r.plan.server_id for r in reads])
        outcomes: dict[int, Outcome] = {}
        failed: list[tuple[int, _Read, CollectError]] = []
        saves: list[tuple[int, _Read, Reading]] = []
        for i, read in enumerate(reads):
            row = rows.get(read.plan.server_id)
            if read.event_id not in new_ids:
                outcomes[i] = Outcome("skipped", "redelivered")
            elif read.error is not None:
                if row is None:  # deleted meanwhile: nothing to record
                    outcomes[i] = Outcome("failed", read.error.kind)
                else:
                    failed.append((i, read, read.error))
            elif row is None or row.last_success_at != read.plan.base:
                outcomes[i] = Outcome("skipped", "superseded")
            else:
                assert read.reading is not None
                saves.append((i, read, read.reading))
        for i, read, error in failed:
            outcomes[i] = self._record_failure(session, read, error, rows, now)
        if saves:
            saved = self._save(session, saves, now)
            outcomes.update(zip((i for i, _, _ in saves), saved, strict=True))
        return [outcomes[i] for i in range(len(reads))]

    def _record_failure(
        self,
        session: Session,
        read: _Read,
        error: CollectError,
        rows: dict[str, repo.ServerRow],
        now: datetime,
    ) -> Outcome:
        delay = compute_backoff(
            rows[read.plan.server_id].consecutive_failures + 1,
            base=self.settings.backoff_base_seconds,
            cap=self.settings.backoff_max_seconds,
            rng=self.rng.random,
        )
        until = now + timedelta(seconds=delay)
        repo.record_failure(
            session,
            read.plan.server_id,
            kind=error.kind,
            message=redact(str(error)),
            now=now,
            backoff_until=until,
        )
        return Outcome("failed", error.kind, backoff_until=until)

    def _count_quirks(self, reading: Reading, fallbacks: dict[str, int]) -> None:
        """What a stored reading held that the service worked around (metrics)."""
        for reason, n in fallbacks.items():
            self.metrics.interval_fallbacks.labels(reason).inc(n)
        clamped = reading.clamped
        if reading.interval is not None:
            clamped += reading.interval.clamped
            self.metrics.interval_unmatched.inc(reading.interval.unmatched_entries)
        self.metrics.clamped_counts.inc(clamped)

    def _save(
        self, session: Session, saves: list[tuple[int, _Read, Reading]], now: datetime
    ) -> list[Outcome]:
        """Deltas of every server's reading against its keys' state, written together."""
        states = repo.key_states(session, [read.plan.server_id for _, read, _ in saves], now)
        aged = aged_out_for(session, (s for keys in states.values() for s in keys.values()), now)
        writes, drops, fallbacks = [], [], []
        for _, read, reading in saves:
            sid = read.plan.server_id
            deltas = compute_deltas(
                reading, states[sid], aged, first_collection=read.plan.base is None
            )
            writes.append(
                repo.CollectionWrite(sid, now, read.tick, reading, deltas.keys, deltas.deleted_refs)
            )
            drops.append(sum(1 for d in deltas.keys if d.epoch_reset))
            fallbacks.append(
                dict(collections.Counter(d.fallback for d in deltas.keys if d.fallback))
            )
        snapshots = repo.save_collections(session, writes)
        outcomes = []
        for (_, _, reading), n, dropped, fell in zip(
            saves, snapshots, drops, fallbacks, strict=True
        ):
            reason = "interval" if reading.interval is not None else "window"
            outcomes.append(
                Outcome("collected", reason, snapshots=n, drops=dropped, fallbacks=fell)
            )
        return outcomes
