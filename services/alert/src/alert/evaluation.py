"""The alert state machine of one (rule, subject): pure functions over :class:`State`.

inactive -> pending (condition true, ``for`` not yet over) -> firing -> resolved
(= inactive again). Two kinds of input move it:

- :func:`apply_sample`: a sample at time ``t`` (streaming evaluation). Samples
  not newer than the last one seen are ignored (out of order).
- :func:`advance`: time alone (the tick, at the clock's ``now``): a pending
  ``for`` that ran out fires, a ``keep_firing_for`` that ran out resolves, a
  silent no-data subject fires. ``State.due_at`` says when that is next due.

Before a sample is applied, the state is advanced to the sample's time, so the
outcome does not depend on whether the tick happened to run in between.
Transitions carry the time they happened at (e.g. ``pending_since + for``), not
the time they were noticed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from alert.rules import Rule
from tributary.events import new_event_id

INACTIVE = "inactive"
PENDING = "pending"
FIRING = "firing"

TransitionKind = Literal["pending", "triggered", "resolved"]


@dataclass(slots=True)
class State:
    rule_id: int
    subject: str
    status: str = INACTIVE
    pending_since: datetime | None = None
    clear_since: datetime | None = None
    last_value: float | None = None
    last_sample_at: datetime | None = None
    #: trend window: [epoch seconds, value] pairs, oldest first
    window: list[list[float]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    event_id: str | None = None
    due_at: datetime | None = None

    @property
    def key(self) -> tuple[int, str]:
        return self.rule_id, self.subject


@dataclass(frozen=True, slots=True)
class Transition:
    kind: TransitionKind
    rule: Rule
    subject: str
    at: datetime
    value: float | None
    labels: dict[str, str]
    event_id: str | None
    reason: str


def _fire(rule: Rule, state: State, at: datetime, reason: str) -> Transition:
    state.status, state.pending_since, state.clear_since, state.due_at = FIRING, None, None, None
    state.event_id = new_event_id()
    return Transition(
        "triggered", rule, state.subject, at, state.last_value, state.labels, state.event_id, reason
    )


def _resolve(rule: Rule, state: State, at: datetime, reason: str) -> Transition:
    event_id = state.event_id
    state.status, state.pending_since, state.clear_since, state.due_at = INACTIVE, None, None, None
    state.event_id = None
    return Transition(
        "resolved", rule, state.subject, at, state.last_value, state.labels, event_id, reason
    )


def _is_due(due: datetime | None, now: datetime, strict: bool) -> bool:
    if due is None:
        return False
    return due < now if strict else due <= now


def advance(rule: Rule, state: State, now: datetime, *, strict: bool = False) -> list[Transition]:
    """Apply the time-based transition due at or before ``now`` (before it, if ``strict``)."""
    due = state.due_at
    if due is None or not _is_due(due, now, strict):
        return []
    if rule.kind == "no_data":
        state.due_at = None
        if state.status == FIRING:
            return []
        seconds = rule.spec.no_data_seconds
        return [_fire(rule, state, due, f"no data for {seconds:g}s")]
    if state.status == PENDING:
        return [_fire(rule, state, due, f"condition held for {rule.spec.for_seconds:g}s")]
    if state.status == FIRING and state.clear_since is not None:
        keep = rule.spec.keep_firing_for_seconds
        return [_resolve(rule, state, due, f"condition clear for {keep:g}s")]
    state.due_at = None  # nothing is due in this state
    return []


def apply_sample(
    rule: Rule,
    state: State,
    at: datetime,
    value: float,
    labels: dict[str, str],
    max_points: int = 1000,
) -> list[Transition] | None:
    """Evaluate one sample; None when it is out of order (not newer than the last)."""
    if state.last_sample_at is not None and at <= state.last_sample_at:
        return None
    out = advance(rule, state, at, strict=True)
    state.last_sample_at, state.labels = at, labels
    if rule.kind == "no_data":
        state.last_value = value
        return out + _data_seen(rule, state, at)
    observed = observe(rule, state, at, value, max_points)
    if observed is None:
        return out
    state.last_value = observed
    return out + step(rule, state, at, observed)


def _data_seen(rule: Rule, state: State, at: datetime) -> list[Transition]:
    assert rule.spec.no_data_seconds is not None
    state.due_at = at + timedelta(seconds=rule.spec.no_data_seconds)
    if state.status == FIRING:
        resolved = _resolve(rule, state, at, "data received")
        state.due_at = at + timedelta(seconds=rule.spec.no_data_seconds)
        return [resolved]
    return []


def observe(rule: Rule, state: State, at: datetime, value: float, max_points: int) -> float | None:
    """The value the rule compares: the sample itself or a trend over the window."""
    if rule.kind == "threshold":
        return value
    window = rule.spec.window_seconds
    assert window is not None
    epoch = at.timestamp()
    points = state.window
    points.append([epoch, value])
    start = epoch - window
    drop = 0
    while drop < len(points) and points[drop][0] < start:
        drop += 1
    drop = max(drop, len(points) - max_points)
    if drop:
        del points[:drop]
    if rule.kind == "moving_average":
        return sum(p[1] for p in points) / len(points)
    first, last = points[0], points[-1]
    elapsed = last[0] - first[0]
    if elapsed <= 0:
        return None  # one point (or one instant): no slope yet
    return (last[1] - first[1]) / elapsed * rule.spec.rate_unit_seconds


def step(rule: Rule, state: State, at: datetime, value: float) -> list[Transition]:
    """The condition-driven transition for an observed value at ``at``."""
    if state.status == INACTIVE:
        return _from_inactive(rule, state, at, value)
    if state.status == PENDING:
        return _from_pending(rule, state, at, value)
    return _from_firing(rule, state, at, value)


def _from_inactive(rule: Rule, state: State, at: datetime, value: float) -> list[Transition]:
    if not rule.is_active(value):
        return []
    hold = rule.spec.for_seconds
    if hold <= 0:
        return [_fire(rule, state, at, "condition met")]
    state.status, state.pending_since = PENDING, at
    state.due_at = at + timedelta(seconds=hold)
    return [Transition("pending", rule, state.subject, at, value, state.labels, None, "pending")]


def _from_pending(rule: Rule, state: State, at: datetime, value: float) -> list[Transition]:
    if not rule.is_active(value):
        state.status, state.pending_since, state.due_at = INACTIVE, None, None
        return []
    assert state.pending_since is not None
    due = state.pending_since + timedelta(seconds=rule.spec.for_seconds)
    if at >= due:
        return [_fire(rule, state, due, f"condition held for {rule.spec.for_seconds:g}s")]
    return []


def _from_firing(rule: Rule, state: State, at: datetime, value: float) -> list[Transition]:
    if not rule.is_recovered(value):
        state.clear_since, state.due_at = None, None
        return []
    keep = rule.spec.keep_firing_for_seconds
    if keep <= 0:
        return [_resolve(rule, state, at, "condition clear")]
    if state.clear_since is None:
        state.clear_since, state.due_at = at, at + timedelta(seconds=keep)
        return []
    due = state.clear_since + timedelta(seconds=keep)
    if at >= due:
        return [_resolve(rule, state, due, f"condition clear for {keep:g}s")]
    return []
