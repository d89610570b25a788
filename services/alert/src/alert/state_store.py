"""Persisted evaluation state: lock, load and save :class:`State` rows in a batch.

Rows are locked (``FOR UPDATE``, in key order so concurrent batches cannot
deadlock on each other) for the whole evaluation transaction: two replicas
evaluating samples of the same (rule, subject) take turns, and the tick skips
rows a batch holds (``SKIP LOCKED``) and finds them again on its next round.

The batch statements pass their keys and values as arrays (``unnest``): the SQL
text stays the same whatever the batch size, so neither SQLAlchemy nor
PostgreSQL compiles or plans a statement with thousands of parameters per batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from alert.evaluation import INACTIVE, State
from alert.models import rule_state

Key = tuple[int, str]
_C = rule_state.c
_COLUMNS = (
    "rule_id",
    "subject",
    "status",
    "pending_since",
    "clear_since",
    "last_value",
    "last_sample_at",
    "points",
    "labels",
    "event_id",
    "due_at",
)
_TYPES = (
    "bigint",
    "text",
    "text",
    "timestamptz",
    "timestamptz",
    "float8",
    "timestamptz",
    "jsonb",
    "jsonb",
    "text",
    "timestamptz",
)
#: labels are not read back for a batch: every sample brings its own (see save_states)
_SELECT = ", ".join("NULL::jsonb AS labels" if c == "labels" else f"s.{c}" for c in _COLUMNS)
_KEYS = "unnest(CAST(:rule_ids AS bigint[]), CAST(:subjects AS text[])) AS k(rule_id, subject)"

_LOCK = sa.text(
    f"SELECT {_SELECT} FROM rule_state s JOIN {_KEYS} USING (rule_id, subject) "
    "ORDER BY s.rule_id, s.subject FOR UPDATE OF s"
)
_CREATE = sa.text(
    f"INSERT INTO rule_state (rule_id, subject, status) SELECT k.rule_id, k.subject, "
    f"'inactive' FROM {_KEYS} ON CONFLICT DO NOTHING"
)
_SAVE = sa.text(
    f"INSERT INTO rule_state ({', '.join(_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"CAST(:{c} AS {t}[])" for c, t in zip(_COLUMNS, _TYPES, strict=True))
    + ") ON CONFLICT (rule_id, subject) DO UPDATE SET "
    + ", ".join(
        f"{c} = COALESCE(EXCLUDED.{c}, rule_state.{c})" if c == "labels" else f"{c} = EXCLUDED.{c}"
        for c in _COLUMNS[2:]
    )
)
_DELETE = sa.text(
    f"DELETE FROM rule_state s USING {_KEYS} WHERE s.rule_id = k.rule_id AND s.subject = k.subject"
)


def _state(row: Any) -> State:
    # positional: rows come in _COLUMNS order (the table's own order, too)
    rule_id, subject, status, pending, clear, value, last_at, points, labels, event_id, due = row
    return State(
        rule_id,
        subject,
        status,
        pending,
        clear,
        value,
        last_at,
        points or [],
        labels or {},
        event_id,
        due,
    )


def _key_params(keys: Sequence[Key]) -> dict[str, list[Any]]:
    return {"rule_ids": [k[0] for k in keys], "subjects": [k[1] for k in keys]}


def _select_locked(session: Session, keys: Sequence[Key]) -> dict[Key, State]:
    found: dict[Key, State] = {}
    for row in session.execute(_LOCK, _key_params(keys)):
        state = _state(row)
        found[state.key] = state
    return found


def lock_states(session: Session, keys: Iterable[Key]) -> dict[Key, State]:
    """The states of ``keys``, locked; missing ones are created (inactive) and locked."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    found = _select_locked(session, wanted)
    missing = [k for k in wanted if k not in found]
    if missing:
        session.execute(_CREATE, _key_params(missing))
        # created by us or, a moment earlier, by a concurrent batch: lock them either way
        found.update(_select_locked(session, missing))
    return found


def save_states(session: Session, states: Iterable[State]) -> int:
    columns: dict[str, list[Any]] = {c: [] for c in _COLUMNS}
    count = 0
    for s in states:
        count += 1
        columns["rule_id"].append(s.rule_id)
        columns["subject"].append(s.subject)
        columns["status"].append(s.status)
        columns["pending_since"].append(s.pending_since)
        columns["clear_since"].append(s.clear_since)
        columns["last_value"].append(s.last_value)
        columns["last_sample_at"].append(s.last_sample_at)
        columns["points"].append(json.dumps(s.window) if s.window else None)
        columns["labels"].append(_labels(s))
        columns["event_id"].append(s.event_id)
        columns["due_at"].append(s.due_at)
    if count:
        session.execute(_SAVE, columns)
    return count


def _labels(state: State) -> str | None:
    """Labels are read back only by the tick and rule changes, i.e. for states that are
    pending, firing or waiting for no-data; None keeps the stored ones (cheaper)."""
    if not state.labels or (state.status == INACTIVE and state.due_at is None):
        return None
    return json.dumps(state.labels, separators=(",", ":"))


def lock_due(session: Session, now: datetime, limit: int) -> list[State]:
    """States with a time-based transition due by ``now``, oldest first, skipping locked ones."""
    stmt = (
        sa.select(rule_state)
        .where(_C.due_at.is_not(None), _C.due_at <= now)
        .order_by(_C.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [_state(row) for row in session.execute(stmt)]


def delete_states(session: Session, keys: Sequence[Key]) -> None:
    if keys:
        session.execute(_DELETE, _key_params(keys))


def states_of_rule(session: Session, rule_id: int) -> list[State]:
    stmt = sa.select(rule_state).where(_C.rule_id == rule_id).order_by(_C.subject)
    return [_state(row) for row in session.execute(stmt.with_for_update())]
