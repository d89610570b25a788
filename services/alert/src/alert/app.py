"""The service's parts wired together: evaluation, tick, notifier, and what they share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from alert.clock import Clock
from alert.config import AlertSettings
from alert.engine import BatchOutcome, Evaluator
from alert.index import RuleCache
from alert.metrics import AlertMetrics
from alert.notify.notifier import Notifier
from alert.samples import Sample
from alert.scheduler import Ticker, TickOutcome
from tributary.egress import EgressPolicy
from tributary.events import Registry
from tributary.inbox import aprocess_once
from tributary.outbox import OutboxRelay
from tributary.streams.producer import Producer
from tributary.streams.runner import StreamRunner

log = logging.getLogger(__name__)


def partition(
    event_ids: Sequence[str], samples: Sequence[Sample], parts: int
) -> list[tuple[list[str], list[Sample]]]:
    """Split a batch by subject; events that are no sample go with the first part."""
    if parts <= 1 or len(samples) < 2 * parts:
        return [(list(event_ids), list(samples))]
    split: list[tuple[list[str], list[Sample]]] = [([], []) for _ in range(parts)]
    placed: set[str] = set()
    for sample in samples:
        ids, part = split[hash(sample.subject) % parts]
        ids.append(sample.event_id)
        part.append(sample)
        placed.add(sample.event_id)
    split[0][0].extend(i for i in event_ids if i not in placed)
    return [p for p in split if p[0]]


@dataclass
class AlertApp:
    settings: AlertSettings
    group: str
    sessions: sessionmaker[Session]
    clock: Clock
    registry: Registry
    cache: RuleCache
    evaluator: Evaluator
    ticker: Ticker
    notifier: Notifier
    metrics: AlertMetrics
    relay: OutboxRelay
    producer: Producer
    #: what receivers' URLs may reach (checked when saved, and by the notifier's client)
    egress: EgressPolicy
    runners: dict[str, StreamRunner] = field(default_factory=dict)

    async def process(
        self, source: str, event_ids: Sequence[str], samples: Sequence[Sample]
    ) -> BatchOutcome:
        """Evaluate one batch exactly once (inbox), then wake the relay and the notifier.

        The batch is split by subject into ``eval_parallelism`` transactions run side
        by side: they touch disjoint state rows, and while one waits for PostgreSQL
        another evaluates. A subject's samples stay together, in order. If one part
        fails the whole batch is redelivered; the parts that committed are then
        skipped by the inbox.
        """
        parts = partition(event_ids, samples, self.settings.eval_parallelism)
        results = await asyncio.gather(*(self._process_part(ids, part) for ids, part in parts))
        outcome = BatchOutcome()
        for result in results:
            outcome.merge(result)
        self._count(source, len(event_ids), outcome)
        emitted = outcome.emitted
        self._wake(emitted.triggered + emitted.resolved, emitted.notifications)
        return outcome

    async def _process_part(self, event_ids: list[str], samples: list[Sample]) -> BatchOutcome:
        outcomes: list[BatchOutcome] = []

        def work(session: Session, new_ids: set[str]) -> None:
            fresh = [s for s in samples if s.event_id in new_ids]
            outcomes[:] = [self.evaluator.evaluate(session, fresh)]

        new_ids = await aprocess_once(self.sessions, self.group, event_ids, work)
        outcome = outcomes[0] if outcomes else BatchOutcome()
        outcome.duplicates = len(set(event_ids)) - len(new_ids)
        return outcome

    def _count(self, source: str, received: int, outcome: BatchOutcome) -> None:
        m = self.metrics
        m.samples.labels(source).inc(received)
        if outcome.duplicates:
            m.samples_skipped.labels(source, "duplicate").inc(outcome.duplicates)
        if outcome.out_of_order:
            m.samples_skipped.labels(source, "out_of_order").inc(outcome.out_of_order)
        if outcome.future:
            m.samples_skipped.labels(source, "future").inc(outcome.future)
        m.evaluations.labels(source).inc(outcome.evaluations)
        for kind in ("pending", "triggered", "resolved"):
            if n := outcome.count(kind):
                m.transitions.labels(kind).inc(n)

    def _wake(self, events: int, notifications: int) -> None:
        if events:
            self.relay.wake()
        if notifications:
            self.notifier.wake()

    async def tick(self) -> None:
        """The leader's periodic job."""
        await self.run_tick()

    async def run_tick(self) -> TickOutcome:
        """One tick (tests call it directly, with their clock)."""
        with self.metrics.tick_seconds.time():
            outcome = await asyncio.to_thread(self.ticker.tick, self.sessions)
        for kind in ("triggered", "resolved"):
            if n := outcome.count(kind):
                self.metrics.transitions.labels(kind).inc(n)
        self._wake(len(outcome.transitions), outcome.notifications)
        return outcome
