"""The tick: time-based transitions nobody's sample will trigger, on the lease holder.

Each round, in its own transaction: states whose ``due_at`` passed (a ``for``
that ran out, a ``keep_firing_for`` that ran out, a no-data subject), then
open events due a repeat notification or an escalation. Rows a stream batch
holds are skipped and picked up by the next tick.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from alert.clock import Clock
from alert.emit import Emitter, enqueue
from alert.evaluation import Transition, advance
from alert.index import RuleCache
from alert.models import alert_events
from alert.state_store import delete_states, lock_due, save_states

log = logging.getLogger(__name__)

#: rows handled per transaction of a tick
DEFAULT_TICK_BATCH = 1000


@dataclass
class TickOutcome:
    due: int = 0
    transitions: list[Transition] = field(default_factory=list)
    repeats: int = 0
    escalations: int = 0
    notifications: int = 0
    orphans: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for t in self.transitions if t.kind == kind)

    def summary(self) -> dict[str, Any]:
        return {
            "due": self.due,
            "triggered": self.count("triggered"),
            "resolved": self.count("resolved"),
            "repeats": self.repeats,
            "escalations": self.escalations,
            "notifications": self.notifications,
            "orphaned_states": self.orphans,
        }


class Ticker:
    def __init__(
        self, cache: RuleCache, emitter: Emitter, clock: Clock, batch: int = DEFAULT_TICK_BATCH
    ) -> None:
        self.cache = cache
        self.emitter = emitter
        self.clock = clock
        self.batch = batch

    def advance_due(
        self, session: Session, now: datetime, outcome: TickOutcome, *, emit: bool = True
    ) -> int:
        """One round of due states; returns how many were handled."""
        index = self.cache.refresh(session)
        states = lock_due(session, now, self.batch)
        outcome.due += len(states)
        orphans = [s.key for s in states if index.get(s.rule_id) is None]
        live = [s for s in states if index.get(s.rule_id) is not None]
        transitions: list[Transition] = []
        for state in live:
            rule = index.get(state.rule_id)
            assert rule is not None
            transitions.extend(advance(rule, state, now))
        save_states(session, live)
        if orphans:  # rule deleted or disabled: its open events were resolved then
            delete_states(session, orphans)
            outcome.orphans += len(orphans)
        outcome.transitions.extend(transitions)
        if emit:
            emitted = self.emitter.emit(session, transitions)
            outcome.notifications += emitted.notifications
        return len(states)

    def repeat_and_escalate(self, session: Session, now: datetime, outcome: TickOutcome) -> int:
        index = self.cache.refresh(session)
        c = alert_events.c
        due = session.execute(
            sa.select(c.id, c.rule_id, c.next_repeat_at, c.escalate_at, c.escalated_at)
            .where(
                c.resolved_at.is_(None),
                sa.or_(
                    c.next_repeat_at <= now,
                    sa.and_(c.escalated_at.is_(None), c.escalate_at <= now),
                ),
            )
            .limit(self.batch)
            .with_for_update(skip_locked=True)
        ).all()
        wanted: list[tuple[str, str, str]] = []
        for row in due:
            rule = index.get(row.rule_id)
            values: dict[str, Any] = {}
            if row.escalated_at is None and row.escalate_at is not None and row.escalate_at <= now:
                esc = rule.spec.escalation if rule else None
                if esc is not None:
                    wanted.append((row.id, esc.receiver, "escalation"))
                    outcome.escalations += 1
                values["escalated_at"] = now
            if row.next_repeat_at is not None and row.next_repeat_at <= now:
                interval = rule.spec.repeat_interval_seconds if rule else None
                if rule is not None and interval:
                    escalated = row.escalated_at is not None
                    wanted.extend((row.id, n, "repeat") for n in rule.receiver_names(escalated))
                    outcome.repeats += 1
                values["next_repeat_at"] = now + timedelta(seconds=interval) if interval else None
            session.execute(sa.update(alert_events).where(c.id == row.id).values(**values))
        outcome.notifications += enqueue(session, wanted, now)
        return len(due)

    def tick(self, sessions: sessionmaker[Session]) -> TickOutcome:
        """Run rounds until nothing is due (each round commits on its own)."""
        started = time.perf_counter()
        now = self.clock()
        outcome = TickOutcome()
        for round_ in (self.advance_due, self.repeat_and_escalate):
            while True:
                with sessions.begin() as session:
                    handled = round_(session, now, outcome)
                if handled < self.batch:
                    break
        summary = outcome.summary()
        summary["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
        level = (
            logging.INFO if outcome.due or outcome.repeats or outcome.escalations else logging.DEBUG
        )
        log.log(level, "tick: %s", summary, extra={"tick": summary})
        return outcome
