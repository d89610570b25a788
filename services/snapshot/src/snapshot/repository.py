"""Queries on servers, keys and snapshots (sync SQLAlchemy; callers run them in threads).

Bulk writes go through ``unnest`` of arrays: one statement per server and
collection whatever its number of keys.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from snapshot.deltas import KeyDelta, KeyState
from snapshot.models import access_keys, cursors, servers
from snapshot.outline import Reading

ServerRow = sa.Row[Any]


# -- servers --------------------------------------------------------------------------------


def find_server(session: Session, ref: str, *, lock: bool = False) -> ServerRow | None:
    """A server by id, or by name when no id matches."""
    stmt = sa.select(servers).where(servers.c.id == ref)
    if lock:
        stmt = stmt.with_for_update()
    row = session.execute(stmt).first()
    if row is None and not lock:
        row = session.execute(sa.select(servers).where(servers.c.name == ref)).first()
    return row


def find_servers(session: Session, ids: list[str]) -> list[ServerRow]:
    return list(session.execute(sa.select(servers).where(servers.c.id.in_(ids))))


def list_servers(session: Session, include_inactive: bool = False) -> list[ServerRow]:
    stmt = sa.select(servers).order_by(servers.c.created_at, servers.c.id)
    if not include_inactive:
        stmt = stmt.where(servers.c.active)
    return list(session.execute(stmt))


def server_exists_with_digest(session: Session, digest: str) -> ServerRow | None:
    return session.execute(sa.select(servers).where(servers.c.api_url_sha256 == digest)).first()


def tick_targets(session: Session, now: datetime) -> tuple[list[str], list[str]]:
    """(active servers to collect, active servers skipped because they are backing off)."""
    rows = session.execute(
        sa.select(servers.c.id, servers.c.backoff_until).where(servers.c.active)
    ).all()
    due = [r.id for r in rows if r.backoff_until is None or r.backoff_until <= now]
    waiting = [r.id for r in rows if r.backoff_until is not None and r.backoff_until > now]
    return due, waiting


def record_failure(
    session: Session,
    server_id: str,
    *,
    kind: str,
    message: str,
    now: datetime,
    backoff_until: datetime,
) -> None:
    session.execute(
        sa.update(servers)
        .where(servers.c.id == server_id)
        .values(
            last_attempt_at=now,
            last_error=message[:500],
            last_error_kind=kind,
            consecutive_failures=servers.c.consecutive_failures + 1,
            backoff_until=backoff_until,
        )
    )


# -- keys -----------------------------------------------------------------------------------


def key_states(session: Session, server_id: str) -> dict[str, KeyState]:
    rows = session.execute(
        sa.select(
            access_keys.c.id,
            access_keys.c.key_id,
            access_keys.c.deleted_at,
            access_keys.c.last_reading,
            access_keys.c.last_reading_at,
            access_keys.c.window_epoch,
            access_keys.c.untracked_bytes,
        ).where(access_keys.c.server_id == server_id)
    )
    return {
        r.key_id: KeyState(
            r.id,
            r.key_id,
            r.deleted_at is not None,
            r.last_reading,
            r.last_reading_at,
            r.window_epoch,
            r.untracked_bytes,
        )
        for r in rows
    }


def hourly_usage(
    session: Session, refs: list[int], lo: datetime, hi: datetime
) -> dict[int, list[tuple[datetime, int]]]:
    """Hourly buckets of ``refs`` overlapping (lo, hi]."""
    if not refs or hi <= lo:
        return {}
    rows = session.execute(
        sa.text(
            "SELECT key_ref, hour, bytes FROM usage_hourly "
            "WHERE key_ref = ANY(:refs) AND hour > :lo AND hour < :hi"
        ),
        {"refs": refs, "lo": lo - timedelta(hours=1), "hi": hi},
    )
    found: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    for ref, hour, nbytes in rows:
        found[ref].append((hour, nbytes))
    return found


# Rows travel as one JSON document: much cheaper to build than one array per column.
_INSERT_KEYS = sa.text(
    "INSERT INTO access_keys (server_id, key_id, first_seen_at, last_seen_at, window_epoch, "
    "untracked_bytes) SELECT :server_id, v.k, :now, :now, :now, v.u "
    "FROM json_to_recordset(CAST(:rows AS json)) AS v(k text, u bigint) "
    "RETURNING id, key_id"
)

_RECREATE_KEYS = sa.text(
    "UPDATE access_keys AS a SET incarnation = a.incarnation + 1, first_seen_at = :now, "
    "window_epoch = :now, deleted_at = NULL, "
    "forecast_state = 'ok', predicted_limit_at = NULL "
    "WHERE a.id = ANY(:refs)"
)

# One statement (one round trip) for the bulk of a collection: the keys' new state, the
# snapshots and the server's state. Data-modifying CTEs always run to completion.
_WRITE_COLLECTION = sa.text(
    "WITH v AS (SELECT * FROM json_to_recordset(CAST(:rows AS json)) AS v(i bigint, n text, "
    "l bigint, r bigint, d bigint, o bigint, s text, x boolean, u bigint)), "
    "k AS (UPDATE access_keys AS a SET name = v.n, data_limit = v.l, last_seen_at = :now, "
    "last_reading = v.r, last_reading_at = :now, "
    "used_24h = a.used_24h + v.d, used_7d = a.used_7d + v.d, used_30d = a.used_30d + v.d, "
    "window_epoch = CASE WHEN v.x THEN coalesce(a.last_reading_at, :now) "
    "ELSE a.window_epoch END, untracked_bytes = v.u FROM v WHERE a.id = v.i), "
    "s AS (INSERT INTO snapshots (key_ref, collected_at, reading_bytes, delta_bytes, "
    "dropped_bytes, source) SELECT v.i, :now, v.r, v.d, v.o, v.s FROM v) "
    "UPDATE servers SET last_attempt_at = :now, last_success_at = :now, last_error = NULL, "
    "last_error_kind = NULL, consecutive_failures = 0, backoff_until = NULL, "
    "snapshot_count = snapshot_count + :n, key_count = :n, "
    "last_tick = coalesce(CAST(:tick AS timestamptz), last_tick), "
    "interval_metrics = coalesce(CAST(:interval AS boolean), interval_metrics), "
    "outline_server_id = CASE WHEN :info THEN CAST(:outline_id AS text) "
    "ELSE outline_server_id END, "
    "outline_name = CASE WHEN :info THEN CAST(:outline_name AS text) ELSE outline_name END, "
    "access_key_data_limit = CASE WHEN :info THEN CAST(:data_limit AS bigint) "
    "ELSE access_key_data_limit END, "
    "info_fetched_at = CASE WHEN :info THEN :now ELSE info_fetched_at END "
    "WHERE id = :server_id"
)


@dataclass(frozen=True)
class CollectionWrite:
    server_id: str
    now: datetime
    tick: datetime | None
    reading: Reading
    deltas: list[KeyDelta]
    deleted_refs: list[int]


def _create_keys(session: Session, write: CollectionWrite) -> dict[str, int]:
    fresh = [d for d in write.deltas if d.ref is None]
    if not fresh:
        return {}
    rows = json.dumps([{"k": d.key_id, "u": d.untracked} for d in fresh])
    created = session.execute(
        _INSERT_KEYS, {"server_id": write.server_id, "now": write.now, "rows": rows}
    )
    return {key_id: ref for ref, key_id in created}


def save_collection(session: Session, write: CollectionWrite) -> int:
    """Write one collection's keys, snapshots and server state; returns snapshots written."""
    refs = _create_keys(session, write)
    recreated = [d for d in write.deltas if d.recreated and d.ref is not None]
    if recreated:
        session.execute(
            _RECREATE_KEYS,
            {"now": write.now, "refs": [d.ref for d in recreated]},
        )  # fmt: skip
    if write.deleted_refs:
        session.execute(
            sa.update(access_keys)
            .where(access_keys.c.id.in_(write.deleted_refs))
            .values(deleted_at=write.now)
        )
    meta = {k.id: k for k in write.reading.keys}
    all_refs = [d.ref if d.ref is not None else refs[d.key_id] for d in write.deltas]
    rows = [
        {"i": ref, "n": meta[d.key_id].name, "l": meta[d.key_id].data_limit, "r": d.reading,
         "d": d.delta, "o": d.dropped, "s": d.source, "x": d.epoch_reset, "u": d.untracked}
        for ref, d in zip(all_refs, write.deltas, strict=True)
    ]  # fmt: skip
    info = write.reading.server
    session.execute(
        _WRITE_COLLECTION,
        {
            "rows": json.dumps(rows),
            "now": write.now,
            "n": len(rows),
            "server_id": write.server_id,
            "tick": write.tick,
            "interval": write.reading.interval_supported,
            "info": info is not None,
            "outline_id": info.server_id if info else None,
            "outline_name": info.name[:200] if info and info.name else None,
            "data_limit": info.data_limit if info else None,
        },
    )
    return len(rows)


def lock_for_collection(session: Session, server_id: str) -> ServerRow | None:
    """Lock the server's row for writing a collection, and skip waiting for the WAL flush.

    Losing the last commits in a database crash only loses those collections: the next
    tick reads the servers again and its deltas cover the gap.
    """
    return session.execute(
        sa.text(
            "SELECT id, last_success_at, set_config('synchronous_commit', 'off', true) "
            "FROM servers WHERE id = :id FOR UPDATE"
        ),
        {"id": server_id},
    ).first()


# -- cursors --------------------------------------------------------------------------------


def get_cursor(session: Session, name: str, *, lock: bool = False) -> datetime | None:
    stmt = sa.select(cursors.c.at).where(cursors.c.name == name)
    if lock:
        stmt = stmt.with_for_update()
    return session.execute(stmt).scalar_one_or_none()


def set_cursor(session: Session, name: str, at: datetime) -> None:
    from sqlalchemy.dialects.postgresql import insert

    stmt = insert(cursors).values(name=name, at=at)
    session.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"at": at}))
