"""What follows a transition, in the evaluation's transaction: the ``alert_events`` row,
the ``alerts`` stream event (through the outbox) and the notifications to send.

Trigger and resolve rows are written with a fixed number of statements per
batch whatever its size. An alert that triggers and resolves within one batch
is inserted already resolved; both stream events still go out, in order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.trace import Tracer
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from alert.clock import Clock
from alert.evaluation import Transition
from alert.models import alert_events, notifications, receivers
from alert.rules import Rule
from tributary import catalog, outbox
from tributary.events import Event, Registry, make_event
from tributary.tracing import format_traceparent

SOURCE = "alert"
_PLACEHOLDER = re.compile(r"\{\{\s*([a-zA-Z_][\w.]*)\s*\}\}")


def fingerprint(rule_id: int, subject: str) -> str:
    """Stable id of an alert's identity (rule, subject), as Alertmanager's label hash."""
    return hashlib.sha256(f"{rule_id}\x00{subject}".encode()).hexdigest()[:16]


def alert_labels(rule: Rule, subject: str, sample_labels: Mapping[str, str]) -> dict[str, str]:
    labels = dict(sample_labels)
    labels.update(rule.spec.labels)
    labels.update(
        alertname=rule.name,
        rule_id=str(rule.id),
        severity=rule.spec.severity,
        subject=subject,
        source=rule.source,
        metric=rule.spec.metric,
    )
    return labels


def render(template: str, values: Mapping[str, Any]) -> str:
    """``{{ value }}``, ``{{ subject }}``, ``{{ labels.device_id }}``...; unknown names stay."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        found: Any = values
        for part in name.split("."):
            if not isinstance(found, Mapping) or part not in found:
                return match.group(0)
            found = found[part]
        return f"{found:g}" if isinstance(found, float) else str(found)

    return _PLACEHOLDER.sub(one, template)


def annotations_for(rule: Rule, t: Transition, labels: Mapping[str, str]) -> dict[str, str]:
    values = {
        "value": t.value,
        "threshold": rule.spec.threshold,
        "subject": t.subject,
        "labels": labels,
        "reason": t.reason,
    }
    result = {k: render(v, values) for k, v in rule.spec.annotations.items()}
    result.setdefault("summary", f"{rule.name} on {t.subject}: {t.reason}")
    return result


def current_traceparent() -> tuple[str | None, str | None]:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    state = ctx.trace_state.to_header() if ctx.trace_state else ""
    return format_traceparent(ctx), state or None


@dataclass
class EmitResult:
    triggered: int = 0
    resolved: int = 0
    notifications: int = 0
    events: list[Event] = field(default_factory=list)
    #: ids of new events not inserted: their (rule, subject) already had an open one
    lost: set[str] = field(default_factory=set)

    def merge(self, other: EmitResult) -> None:
        self.triggered += other.triggered
        self.resolved += other.resolved
        self.notifications += other.notifications
        self.events.extend(other.events)
        self.lost |= other.lost


class Emitter:
    def __init__(self, tracer: Tracer | None, registry: Registry, clock: Clock) -> None:
        self.tracer = tracer
        self.registry = registry
        self.clock = clock

    def emit(self, session: Session, transitions: Sequence[Transition]) -> EmitResult:
        """Write events, outbox rows and notifications for ``transitions`` (in order)."""
        result = EmitResult()
        fired = [t for t in transitions if t.kind == "triggered"]
        closed = [t for t in transitions if t.kind == "resolved"]
        if not fired and not closed:
            return result
        now = self.clock()
        rows = {t.event_id: self._event_row(t, now) for t in fired if t.event_id}
        later: list[Transition] = []
        for t in closed:
            row = rows.get(t.event_id or "")
            if row is not None:
                _close(row, t)
            else:
                later.append(t)
        inserted = _insert_events(session, list(rows.values()))
        result.lost = set(rows) - inserted
        updated = _close_events(session, later)
        stored = {**{k: v for k, v in rows.items() if k in inserted}, **updated}
        changes: list[tuple[Transition, dict[str, Any]]] = [
            (t, stored[t.event_id])
            for t in transitions
            if t.kind != "pending" and t.event_id in stored
        ]
        self._publish(session, changes, result)
        result.notifications = self._notify(session, changes, now)
        return result

    def _event_row(self, t: Transition, now: datetime) -> dict[str, Any]:
        rule, spec = t.rule, t.rule.spec
        labels = alert_labels(rule, t.subject, t.labels)
        repeat = spec.repeat_interval_seconds
        esc = spec.escalation
        return {
            "id": t.event_id,
            "rule_id": rule.id,
            "subject": t.subject,
            "fingerprint": fingerprint(rule.id, t.subject),
            "status": "firing",
            "severity": spec.severity,
            "metric": spec.metric,
            "operator": spec.operator,
            "threshold_value": spec.threshold,
            "current_value": t.value,
            "triggered_at": t.at,
            "resolved_at": None,
            "resolution_value": None,
            "labels": labels,
            "annotations": annotations_for(rule, t, labels),
            "metadata": {"reason": t.reason, "kind": spec.kind, "rule_name": rule.name},
            "next_repeat_at": t.at + timedelta(seconds=repeat) if repeat else None,
            "escalate_at": t.at + timedelta(seconds=esc.after_seconds) if esc else None,
            "escalated_at": None,
            "created_at": now,
        }

    def _publish(
        self,
        session: Session,
        changes: Sequence[tuple[Transition, dict[str, Any]]],
        result: EmitResult,
    ) -> None:
        items: list[tuple[str, Event]] = []
        for t, row in changes:
            firing = t.kind == "triggered"
            payload = catalog.AlertChanged(
                status="firing" if firing else "resolved",
                rule_id=str(row["rule_id"]),
                rule_name=t.rule.name,
                subject=row["subject"],
                severity=row["severity"],
                labels=row["labels"],
                annotations=row["annotations"],
                value=t.value,
                threshold=row["threshold_value"],
                starts_at=row["triggered_at"],
                ends_at=None if firing else t.at,
                fingerprint=row["fingerprint"],
                event_id=row["id"],
            )
            event_type = "alert.triggered" if firing else "alert.resolved"
            items.append((catalog.ALERTS, make_event(event_type, payload, SOURCE, self.registry)))
            if firing:
                result.triggered += 1
            else:
                result.resolved += 1
        outbox.add_many(session, items, self.tracer)
        result.events.extend(e for _, e in items)

    def _notify(
        self,
        session: Session,
        changes: Sequence[tuple[Transition, dict[str, Any]]],
        now: datetime,
    ) -> int:
        wanted: list[tuple[str, str, str]] = []  # (event id, receiver name, kind)
        for t, row in changes:
            kind = "firing" if t.kind == "triggered" else "resolved"
            escalated = row.get("escalated_at") is not None
            wanted.extend((row["id"], name, kind) for name in t.rule.receiver_names(escalated))
        return enqueue(session, wanted, now)


def _close(row: dict[str, Any], t: Transition) -> None:
    row.update(
        status="resolved",
        resolved_at=t.at,
        resolution_value=t.value,
        next_repeat_at=None,
        escalate_at=None,
    )
    row["metadata"] = {**row["metadata"], "resolve_reason": t.reason}


def _insert_events(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert; an open event of the same (rule, subject) already there wins (no duplicate)."""
    if not rows:
        return set()
    # executemany: one cached statement (batched into VALUES pages by SQLAlchemy)
    stmt = postgresql.insert(alert_events).on_conflict_do_nothing().returning(alert_events.c.id)
    return set(session.execute(stmt, rows).scalars())


def _close_events(session: Session, closed: Sequence[Transition]) -> dict[str, dict[str, Any]]:
    """Resolve events opened by earlier batches; returns the rows that were still open."""
    if not closed:
        return {}
    by_id = {t.event_id: t for t in closed if t.event_id}
    c = alert_events.c
    open_rows = session.execute(
        sa.select(alert_events).where(c.id.in_(list(by_id)), c.resolved_at.is_(None))
    ).mappings()
    result: dict[str, dict[str, Any]] = {}
    params: list[dict[str, Any]] = []
    for found in open_rows:
        row = dict(found)
        _close(row, by_id[row["id"]])
        result[row["id"]] = row
        params.append(
            {
                "b_id": row["id"],
                "b_at": row["resolved_at"],
                "b_value": row["resolution_value"],
                "b_meta": row["metadata"],
            }
        )
    if params:
        stmt = (
            sa.update(alert_events)
            .where(c.id == sa.bindparam("b_id"))
            .values(
                status="resolved",
                resolved_at=sa.bindparam("b_at"),
                resolution_value=sa.bindparam("b_value"),
                metadata=sa.bindparam("b_meta", type_=postgresql.JSONB),
                next_repeat_at=None,
                escalate_at=None,
            )
        )
        session.connection().execute(stmt, params)
    return result


def enqueue(session: Session, wanted: Iterable[tuple[str, str, str]], now: datetime) -> int:
    """Queue notifications (event id, receiver name, kind); unknown receivers are skipped."""
    wanted = list(wanted)
    if not wanted:
        return 0
    names = sorted({name for _, name, _ in wanted})
    found = session.execute(
        sa.select(receivers.c.name, receivers.c.id).where(receivers.c.name.in_(names))
    )
    ids = {row.name: row.id for row in found}
    traceparent, tracestate = current_traceparent()
    rows = [
        {
            "event_id": event_id,
            "receiver_id": ids[name],
            "kind": kind,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "traceparent": traceparent,
            "tracestate": tracestate,
            "created_at": now,
        }
        for event_id, name, kind in wanted
        if name in ids
    ]
    if rows:
        session.execute(sa.insert(notifications), rows)
    return len(rows)
