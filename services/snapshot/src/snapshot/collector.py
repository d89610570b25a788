"""Collect one Outline server: read its API, derive deltas, write them exactly once.

The HTTP reads happen outside any transaction. The writes (keys, snapshots,
server state, or the failure and its backoff) commit in one transaction with
the inbox row of the work item, under a lock on the server's row; a reading
overtaken by a concurrent collection of the same server is dropped rather
than turned into a wrong delta.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from opentelemetry.trace import Tracer
from sqlalchemy.orm import Session, sessionmaker

from snapshot import repository as repo
from snapshot.config import OUTLINE_WINDOW_DAYS, SnapshotSettings
from snapshot.credentials import ApiUrl, SecretBox, SecretUnavailable
from snapshot.deltas import KeyState, aged_out_estimate, compute_deltas
from snapshot.instruments import SnapshotMetrics
from snapshot.outline import MAX_INTERVAL_SECONDS, OutlineClients, Reading
from snapshot.pinning import CollectError
from tributary.events import new_event_id
from tributary.inbox import aprocess_once
from tributary.logs import redact

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
WINDOW = timedelta(days=OUTLINE_WINDOW_DAYS)
#: one server's reads together take at most this many request timeouts
READ_DEADLINE_FACTOR = 2
#: /server (name, server-wide data limit) is read again after this long
SERVER_INFO_TTL = timedelta(hours=1)


@dataclass(frozen=True)
class Outcome:
    status: str  # collected | failed | skipped
    reason: str = ""
    snapshots: int = 0
    backoff_until: datetime | None = None


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


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: within [d/2, d], d = min(cap, base * 2^(n-1))."""
    ceiling = min(cap, base * 2 ** min(max(failures, 1) - 1, 30))
    return rng.uniform(ceiling / 2, ceiling)


def aged_out_for(session: Session, states: dict[str, KeyState], now: datetime) -> dict[int, int]:
    """Tracked traffic of each key that left the 30-day window since its last reading."""
    hi = now - WINDOW
    spans: dict[int, datetime] = {}
    for state in states.values():
        if state.deleted or state.last_reading_at is None:
            continue
        lo = max(state.last_reading_at - WINDOW, state.window_epoch)
        if lo < hi:
            spans[state.ref] = lo
    if not spans:
        return {}
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
        """Collect several servers concurrently; their rows are read in one query."""
        now = self.clock()
        plans = await asyncio.to_thread(self._plans, requests, now)
        limit = asyncio.Semaphore(self.settings.collect_concurrency)

        async def one(request: Request, plan: _Plan | Outcome) -> Outcome:
            if isinstance(plan, Outcome):
                self.metrics.collections.labels("skipped", plan.reason).inc()
                return plan
            async with limit:
                return await self._collect(plan, request, now)

        results = await asyncio.gather(
            *(one(r, p) for r, p in zip(requests, plans, strict=True)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result  # the others finished: a redelivery skips them
        return [r for r in results if isinstance(r, Outcome)]

    async def _collect(self, plan: _Plan, request: Request, now: datetime) -> Outcome:
        started = time.perf_counter()
        event_id = request.event_id or new_event_id()
        attributes = {"outline.server.id": plan.server_id, "server.address": plan.endpoint}
        with self.tracer.start_as_current_span("collect outline server", attributes=attributes):
            try:
                reading = await self._read(plan, now)
            except CollectError as exc:
                outcome = await self._fail(plan, exc.kind, str(exc), now, event_id)
            else:
                outcome = await self._save(plan, reading, request.tick, now, event_id)
        self.metrics.collections.labels(outcome.status, outcome.reason).inc()
        self.metrics.collect_seconds.observe(time.perf_counter() - started)
        return outcome

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
            row.id, row.endpoint, row.cert_sha256, row.api_url_encrypted,
            self._since(row.interval_metrics, row.last_success_at, now, info_due),
            row.last_success_at,
            info_due,
        )  # fmt: skip

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

    async def _fail(
        self, plan: _Plan, kind: str, message: str, now: datetime, event_id: str
    ) -> Outcome:
        message = redact(message)
        result: dict[str, datetime] = {}

        def write(session: Session, _: set[str]) -> None:
            row = repo.find_server(session, plan.server_id, lock=True)
            if row is None:
                return
            failures = row.consecutive_failures + 1
            delay = backoff_delay(
                failures, self.settings.backoff_base_seconds, self.settings.backoff_max_seconds,
                self.rng,
            )  # fmt: skip
            until = now + timedelta(seconds=delay)
            repo.record_failure(
                session, plan.server_id, kind=kind, message=message, now=now, backoff_until=until
            )
            result["until"] = until

        await aprocess_once(self.sessions, self.group, [event_id], write)
        log.warning(
            "collection of server %s (%s) failed: %s; backing off until %s",
            plan.server_id, plan.endpoint, message, result.get("until"),
        )  # fmt: skip
        return Outcome("failed", kind, backoff_until=result.get("until"))

    async def _save(
        self, plan: _Plan, reading: Reading, tick: datetime | None, now: datetime, event_id: str
    ) -> Outcome:
        result: dict[str, int] = {}

        def write(session: Session, _: set[str]) -> None:
            row = repo.lock_for_collection(session, plan.server_id)
            if row is None or row.last_success_at != plan.base:
                result["superseded"] = 1
                return
            states = repo.key_states(session, plan.server_id)
            aged = aged_out_for(session, states, now)
            deltas = compute_deltas(reading, states, aged, first_collection=plan.base is None)
            write_ = repo.CollectionWrite(
                plan.server_id, now, tick, reading, deltas.keys, deltas.deleted_refs
            )
            result["snapshots"] = repo.save_collection(session, write_)
            result["drops"] = sum(1 for d in deltas.keys if d.epoch_reset)

        new = await aprocess_once(self.sessions, self.group, [event_id], write)
        if not new:
            return Outcome("skipped", "redelivered")
        if result.get("superseded"):
            return Outcome("skipped", "superseded")
        self.metrics.snapshots.inc(result.get("snapshots", 0))
        self.metrics.drops.inc(result.get("drops", 0))
        return Outcome("collected", "interval" if reading.interval is not None else "window",
                       snapshots=result.get("snapshots", 0))  # fmt: skip
