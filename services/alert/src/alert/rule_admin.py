"""Rule changes and their consequences, in one transaction each.

Disabling or deleting a rule, or changing what it matches (source, metric,
path, kind, matchers, window), retires it: its open alerts resolve (with
events and notifications as usual) and its evaluation state is dropped.
Other edits (threshold, durations, receivers...) keep the state; the next
sample or tick evaluates with the new definition.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from alert import repository
from alert.emit import Emitter
from alert.evaluation import FIRING, State, Transition
from alert.rules import Rule, RuleSpec, rule_from_row
from alert.state_store import delete_states, states_of_rule

#: fields whose change makes the old state meaningless
IDENTITY_FIELDS = ("source", "metric", "path", "kind", "matchers", "window_seconds")


def _retire(session: Session, rule: Rule, emitter: Emitter, now: datetime, reason: str) -> int:
    states = states_of_rule(session, rule.id)
    transitions = [_resolution(rule, s, now, reason) for s in states if s.status == FIRING]
    emitter.emit(session, [t for t in transitions if t.event_id])
    delete_states(session, [s.key for s in states])
    return len(transitions)


def _resolution(rule: Rule, state: State, now: datetime, reason: str) -> Transition:
    return Transition(
        "resolved", rule, state.subject, now, state.last_value, state.labels, state.event_id, reason
    )


def _stored(row: Any) -> Rule:
    return rule_from_row(row.id, row.revision, row.spec)


def update(session: Session, rule_id: int, spec: RuleSpec, emitter: Emitter, now: datetime) -> bool:
    old_row = repository.get_rule(session, rule_id, lock=True)
    if old_row is None:
        return False
    old = _stored(old_row)
    changed = any(getattr(old.spec, f) != getattr(spec, f) for f in IDENTITY_FIELDS)
    if old.spec.enabled and (not spec.enabled or changed):
        _retire(session, old, emitter, now, "rule disabled" if not spec.enabled else "rule changed")
    return repository.update_rule(session, rule_id, spec, now)


def delete(session: Session, rule_id: int, emitter: Emitter, now: datetime) -> bool:
    old_row = repository.get_rule(session, rule_id, lock=True)
    if old_row is None:
        return False
    _retire(session, _stored(old_row), emitter, now, "rule deleted")
    return repository.delete_rule(session, rule_id, now)
