"""Streaming evaluation: a batch of samples updates the state of the rules each matches.

One transaction per batch holds the inbox claim (re-delivered samples change
nothing), the locked states of the (rule, subject) pairs concerned, their new
values, and everything the transitions cause (events, outbox, notifications).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from alert.clock import Clock
from alert.emit import EmitResult, Emitter
from alert.evaluation import State, Transition, apply_sample
from alert.index import RuleCache, RuleIndex
from alert.models import alert_events
from alert.rules import Rule
from alert.samples import Sample
from alert.state_store import Key, lock_states, save_states

log = logging.getLogger(__name__)

Match = tuple[Rule, Sample, float]


@dataclass
class BatchOutcome:
    samples: int = 0
    duplicates: int = 0
    evaluations: int = 0
    out_of_order: int = 0
    future: int = 0
    transitions: list[Transition] = field(default_factory=list)
    emitted: EmitResult = field(default_factory=EmitResult)

    def merge(self, other: BatchOutcome) -> None:
        self.samples += other.samples
        self.duplicates += other.duplicates
        self.evaluations += other.evaluations
        self.out_of_order += other.out_of_order
        self.future += other.future
        self.transitions.extend(other.transitions)
        self.emitted.merge(other.emitted)

    def count(self, kind: str) -> int:
        return sum(1 for t in self.transitions if t.kind == kind)


class Evaluator:
    """Evaluates samples against the rule index; shared by handlers, dry runs and the bench."""

    def __init__(
        self,
        cache: RuleCache,
        emitter: Emitter,
        clock: Clock,
        *,
        max_clock_skew: float = 300.0,
        max_window_points: int = 1000,
    ) -> None:
        self.cache = cache
        self.emitter = emitter
        self.clock = clock
        self.max_clock_skew = timedelta(seconds=max_clock_skew)
        self.max_window_points = max_window_points

    def evaluate(
        self, session: Session, samples: Sequence[Sample], *, emit: bool = True
    ) -> BatchOutcome:
        """Evaluate ``samples`` in ``session``'s transaction (the caller commits)."""
        outcome = BatchOutcome(samples=len(samples))
        self.cache.refresh(session)
        version = self.cache.version
        latest = self.clock() + self.max_clock_skew
        timely = [s for s in samples if s.time <= latest]
        outcome.future = len(samples) - len(timely)
        matches: dict[Key, list[Match]] = defaultdict(list)
        for rule, sample, value in self.cache.matches(timely):
            matches[(rule.id, sample.subject)].append((rule, sample, value))
        if not matches:
            return outcome
        states = lock_states(session, matches)
        self.cache.refresh(session)
        if self.cache.version != version:
            # a rule changed while we waited for the state locks: use what is current now
            matches = _rematch(self.cache.index, matches)
        for key, items in matches.items():
            self._apply(states[key], items, outcome)
        save_states(session, (states[k] for k in matches))
        if emit:
            outcome.emitted = self.emitter.emit(session, outcome.transitions)
            self._adopt_conflicts(session, outcome, states)
        return outcome

    def _apply(self, state: State, items: list[Match], outcome: BatchOutcome) -> None:
        items.sort(key=lambda m: m[1].time)
        for rule, sample, value in items:
            outcome.evaluations += 1
            changes = apply_sample(
                rule, state, sample.time, value, sample.labels, self.max_window_points
            )
            if changes is None:
                outcome.out_of_order += 1
            else:
                outcome.transitions.extend(changes)

    def _adopt_conflicts(
        self, session: Session, outcome: BatchOutcome, states: dict[Key, State]
    ) -> None:
        """A state whose new event lost to an open one (state restored from an older
        backup, say) points at that open event instead: still one open event per key."""
        stale = [s for s in states.values() if s.event_id and s.event_id in outcome.emitted.lost]
        if not stale:
            return
        c = alert_events.c
        for state in stale:
            open_id = session.execute(
                sa.select(c.id).where(
                    c.rule_id == state.rule_id, c.subject == state.subject, c.resolved_at.is_(None)
                )
            ).scalar_one_or_none()
            log.warning(
                "rule %s subject %s already had open event %s",
                state.rule_id,
                state.subject,
                open_id,
            )
            state.event_id = open_id
        save_states(session, stale)


def _rematch(index: RuleIndex, matches: dict[Key, list[Match]]) -> dict[Key, list[Match]]:
    current: dict[Key, list[Match]] = {}
    for key, items in matches.items():
        rule = index.get(key[0])
        if rule is not None:
            current[key] = [(rule, sample, value) for _, sample, value in items]
    return current
