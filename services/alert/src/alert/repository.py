"""Queries of the configuration tables and of events (API and CLI)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from alert.models import (
    alert_events,
    delivery_attempts,
    maintenance_windows,
    notifications,
    receivers,
    rules,
    rules_meta,
    silences,
)
from alert.rules import RuleSpec
from tributary.retention.tables import TableRetention


def resolved_retention(max_age: timedelta) -> TableRetention:
    """Resolved alert events triggered more than ``max_age`` ago (found through the
    ``triggered_at`` index); an open alert is never deleted, however old."""
    return TableRetention(
        alert_events.name, "triggered_at", max_age, where="resolved_at IS NOT NULL"
    )


def notification_retention(max_age: timedelta) -> list[TableRetention]:
    """Finished notifications (not ``pending``) created more than ``max_age`` ago, and
    delivery attempts started that long ago: a pending one is never deleted."""
    return [
        TableRetention(notifications.name, "created_at", max_age, where="status <> 'pending'"),
        TableRetention(delivery_attempts.name, "started_at", max_age),
    ]


# -- rules --------------------------------------------------------------------------------


def bump_rules_version(session: Session) -> int:
    """Next rules version; the row lock orders rule changes by commit (see index.py)."""
    stmt = (
        postgresql.insert(rules_meta)
        .values(id=1, version=1)
        .on_conflict_do_update(
            index_elements=[rules_meta.c.id], set_={"version": rules_meta.c.version + 1}
        )
        .returning(rules_meta.c.version)
    )
    return int(session.execute(stmt).scalar_one())


def _rule_values(spec: RuleSpec, revision: int, now: datetime) -> dict[str, Any]:
    return {
        "name": spec.name,
        "source": spec.source,
        "metric": spec.metric,
        "kind": spec.kind,
        "enabled": spec.enabled,
        "spec": spec.model_dump(mode="json"),
        "revision": revision,
        "updated_at": now,
    }


def insert_rules(session: Session, specs: Sequence[RuleSpec], now: datetime) -> list[int]:
    """Insert rules with one version bump (the API adds one, the benchmark thousands)."""
    if not specs:
        return []
    revision = bump_rules_version(session)
    rows = [{**_rule_values(s, revision, now), "created_at": now} for s in specs]
    result = session.execute(
        sa.insert(rules).returning(rules.c.id, sort_by_parameter_order=True), rows
    )
    return [int(i) for i in result.scalars()]


def update_rule(session: Session, rule_id: int, spec: RuleSpec, now: datetime) -> bool:
    revision = bump_rules_version(session)
    found = session.execute(
        sa.update(rules)
        .where(rules.c.id == rule_id, rules.c.deleted_at.is_(None))
        .values(**_rule_values(spec, revision, now))
        .returning(rules.c.id)
    ).first()
    return found is not None


def delete_rule(session: Session, rule_id: int, now: datetime) -> bool:
    """Soft delete: events keep pointing at the rule; the index drops it."""
    revision = bump_rules_version(session)
    found = session.execute(
        sa.update(rules)
        .where(rules.c.id == rule_id, rules.c.deleted_at.is_(None))
        .values(deleted_at=now, enabled=False, revision=revision, updated_at=now)
        .returning(rules.c.id)
    ).first()
    return found is not None


def get_rule(session: Session, rule_id: int, *, lock: bool = False) -> Any:
    stmt = sa.select(rules).where(rules.c.id == rule_id, rules.c.deleted_at.is_(None))
    return session.execute(stmt.with_for_update() if lock else stmt).first()


def list_rules(
    session: Session,
    source: str | None = None,
    enabled: bool | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Any]:
    stmt = sa.select(rules).where(rules.c.deleted_at.is_(None))
    if source is not None:
        stmt = stmt.where(rules.c.source == source)
    if enabled is not None:
        stmt = stmt.where(rules.c.enabled == enabled)
    return list(session.execute(stmt.order_by(rules.c.id).limit(limit).offset(offset)))


# -- receivers ----------------------------------------------------------------------------


def missing_receivers(session: Session, names: Sequence[str]) -> list[str]:
    if not names:
        return []
    known = set(
        session.execute(sa.select(receivers.c.name).where(receivers.c.name.in_(names))).scalars()
    )
    return sorted(set(names) - known)


def list_receivers(session: Session) -> list[Any]:
    return list(session.execute(sa.select(receivers).order_by(receivers.c.id)))


def get_receiver(session: Session, receiver_id: int) -> Any:
    return session.execute(sa.select(receivers).where(receivers.c.id == receiver_id)).first()


def save_receiver(
    session: Session, row: Mapping[str, Any], now: datetime, receiver_id: int | None = None
) -> Any:
    """Insert (no ``receiver_id``) or replace a receiver from its column values; the row, or
    None when ``receiver_id`` names none."""
    values = {**row, "updated_at": now}
    if receiver_id is None:
        return session.execute(
            sa.insert(receivers).values(**values, created_at=now).returning(receivers)
        ).first()
    return session.execute(
        sa.update(receivers)
        .where(receivers.c.id == receiver_id)
        .values(**values)
        .returning(receivers)
    ).first()


def delete_receiver(session: Session, receiver_id: int) -> tuple[bool, list[int]]:
    """(whether it exists, ids of live rules using it); deleted only when none does."""
    row = session.execute(sa.select(receivers.c.name).where(receivers.c.id == receiver_id)).first()
    if row is None:
        return False, []
    users = receiver_in_use(session, row.name)
    if not users:
        session.execute(sa.delete(receivers).where(receivers.c.id == receiver_id))
    return True, users


def receiver_in_use(session: Session, name: str) -> list[int]:
    """Ids of live rules naming receiver ``name`` (directly or as escalation)."""
    spec = rules.c.spec
    stmt = sa.select(rules.c.id).where(
        rules.c.deleted_at.is_(None),
        sa.or_(
            spec["receivers"].op("@>")(sa.cast([name], postgresql.JSONB)),
            spec["escalation"]["receiver"].astext == name,
        ),
    )
    return list(session.execute(stmt.limit(20)).scalars())


# -- silences and maintenance windows -----------------------------------------------------


def insert_silence(session: Session, row: Mapping[str, Any], now: datetime) -> Any:
    """A silence from its column values; it starts now unless ``starts_at`` says when."""
    values = {"starts_at": now, **{k: v for k, v in row.items() if v is not None}}
    values["created_at"] = now
    return session.execute(sa.insert(silences).values(**values).returning(silences)).first()


def get_silence(session: Session, silence_id: int) -> Any:
    return session.execute(sa.select(silences).where(silences.c.id == silence_id)).first()


def list_silences(session: Session, active_at: datetime | None) -> list[Any]:
    stmt = sa.select(silences).order_by(silences.c.id)
    if active_at is not None:
        stmt = stmt.where(silences.c.starts_at <= active_at, silences.c.ends_at > active_at)
    return list(session.execute(stmt.limit(1000)))


def expire_silence(session: Session, silence_id: int, now: datetime) -> Any:
    c = silences.c
    stmt = (
        sa.update(silences)
        .where(c.id == silence_id)
        .values(ends_at=sa.func.least(c.ends_at, now), starts_at=sa.func.least(c.starts_at, now))
        .returning(silences)
    )
    return session.execute(stmt).first()


def list_windows(session: Session) -> list[Any]:
    table = maintenance_windows
    return list(session.execute(sa.select(table).order_by(table.c.id)))


def get_window(session: Session, window_id: int) -> Any:
    table = maintenance_windows
    return session.execute(sa.select(table).where(table.c.id == window_id)).first()


def delete_window(session: Session, window_id: int) -> bool:
    table = maintenance_windows
    stmt = sa.delete(table).where(table.c.id == window_id).returning(table.c.id)
    return session.execute(stmt).first() is not None


def save_window(
    session: Session, row: Mapping[str, Any], now: datetime, window_id: int | None = None
) -> Any:
    """Insert (no ``window_id``) or replace a maintenance window from its column values."""
    values = {**row, "updated_at": now}
    table = maintenance_windows
    if window_id is None:
        return session.execute(
            sa.insert(table).values(**values, created_at=now).returning(table)
        ).first()
    return session.execute(
        sa.update(table).where(table.c.id == window_id).values(**values).returning(table)
    ).first()


# -- events -------------------------------------------------------------------------------


def list_events(
    session: Session,
    *,
    open_only: bool | None = None,
    subject: str | None = None,
    rule_id: int | None = None,
    limit: int = 100,
) -> list[Any]:
    c = alert_events.c
    stmt = sa.select(alert_events)
    if open_only is True:
        stmt = stmt.where(c.resolved_at.is_(None))
    elif open_only is False:
        stmt = stmt.where(c.resolved_at.is_not(None))
    if subject is not None:
        stmt = stmt.where(c.subject == subject)
    if rule_id is not None:
        stmt = stmt.where(c.rule_id == rule_id)
    return list(session.execute(stmt.order_by(c.triggered_at.desc(), c.id).limit(limit)))


def event_detail(session: Session, event_id: str) -> tuple[Any, list[Any], list[Any]] | None:
    event = session.execute(sa.select(alert_events).where(alert_events.c.id == event_id)).first()
    if event is None:
        return None
    sent = list(
        session.execute(
            sa.select(notifications)
            .where(notifications.c.event_id == event_id)
            .order_by(notifications.c.id)
        )
    )
    tries = (
        list(
            session.execute(
                sa.select(delivery_attempts)
                .where(delivery_attempts.c.notification_id.in_([n.id for n in sent]))
                .order_by(delivery_attempts.c.id)
            )
        )
        if sent
        else []
    )
    return event, sent, tries
