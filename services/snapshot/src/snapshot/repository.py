"""Queries on servers, keys and snapshots (sync SQLAlchemy; callers run them in threads).

Bulk writes go through ``unnest`` of arrays: one statement per server and
collection whatever its number of keys.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic_core import to_json
from sqlalchemy.orm import Session

from snapshot.config import OUTLINE_WINDOW_DAYS
from snapshot.deltas import KeyDelta, KeyState
from snapshot.models import access_keys, cursors, servers
from snapshot.outline import Reading

ServerRow = sa.Row[Any]
#: the rolling window of Outline's /metrics/transfer
WINDOW = timedelta(days=OUTLINE_WINDOW_DAYS)


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


# The ageing test is made here: timestamps are the dearest values to fetch (psycopg builds
# each one in the session's time zone), and most keys have nothing ageing out.
_KEY_STATES = sa.text(
    "SELECT server_id, id, key_id, deleted_at IS NOT NULL, last_reading, "
    "CASE WHEN deleted_at IS NULL AND window_epoch < :hi AND last_reading_at < :now "
    "THEN greatest(last_reading_at - :window, window_epoch) END, untracked_bytes "
    "FROM access_keys WHERE server_id = ANY(CAST(:ids AS text[]))"
)


def key_states(
    session: Session, server_ids: list[str], now: datetime
) -> dict[str, dict[str, KeyState]]:
    """The keys of each server (by key id), as the deltas of a reading at ``now`` need
    them; one query."""
    found: dict[str, dict[str, KeyState]] = {sid: {} for sid in server_ids}
    if not server_ids:
        return found
    params = {"ids": list(found), "now": now, "hi": now - WINDOW, "window": WINDOW}
    for sid, ref, key_id, deleted, reading, ageing, untracked in session.execute(
        _KEY_STATES, params
    ).all():  # all(): one fetchall rather than a fetch per row
        found[sid][key_id] = KeyState(ref, key_id, deleted, reading, ageing, untracked)
    return found


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


# Rows travel as one JSON document: much cheaper to build than one array per column (and
# pydantic-core's encoder takes a third of the time of the json module's).
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

# One statement (one round trip) for the bulk of several servers' collections: the keys'
# new state, the snapshots and each server's state. Data-modifying CTEs always run to
# completion.
_WRITE_COLLECTIONS = sa.text(
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
    "snapshot_count = snapshot_count + w.n, key_count = w.n, "
    "last_tick = coalesce(w.tick, last_tick), "
    "interval_metrics = coalesce(w.iv, interval_metrics), "
    "outline_server_id = CASE WHEN w.info THEN w.oid ELSE outline_server_id END, "
    "outline_name = CASE WHEN w.info THEN w.oname ELSE outline_name END, "
    "access_key_data_limit = CASE WHEN w.info THEN w.dl ELSE access_key_data_limit END, "
    "info_fetched_at = CASE WHEN w.info THEN :now ELSE info_fetched_at END "
    "FROM json_to_recordset(CAST(:servers AS json)) AS w(id text, n integer, "
    "tick timestamptz, iv boolean, info boolean, oid text, oname text, dl bigint) "
    "WHERE servers.id = w.id"
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
    rows = to_json([{"k": d.key_id, "u": d.untracked} for d in fresh]).decode()
    created = session.execute(
        _INSERT_KEYS, {"server_id": write.server_id, "now": write.now, "rows": rows}
    )
    return {key_id: ref for ref, key_id in created}


def _key_rows(session: Session, write: CollectionWrite) -> list[dict[str, Any]]:
    """The rows of one collection's keys (created, brought back or marked deleted first)."""
    refs = _create_keys(session, write)
    recreated = [d for d in write.deltas if d.recreated and d.ref is not None]
    if recreated:
        session.execute(
            _RECREATE_KEYS,
            {"now": write.now, "refs": [d.ref for d in recreated]},
        )
    if write.deleted_refs:
        session.execute(
            sa.update(access_keys)
            .where(access_keys.c.id.in_(write.deleted_refs))
            .values(deleted_at=write.now)
        )
    meta = {k.id: k for k in write.reading.keys}
    rows = []
    for d in write.deltas:
        key = meta[d.key_id]
        rows.append(
            {
                "i": d.ref if d.ref is not None else refs[d.key_id],
                "n": key.name,
                "l": key.data_limit,
                "r": d.reading,
                "d": d.delta,
                "o": d.dropped,
                "s": d.source,
                "x": d.epoch_reset,
                "u": d.untracked,
            }
        )
    return rows


def save_collections(session: Session, writes: list[CollectionWrite]) -> list[int]:
    """Write collections of different servers made at the same instant: their keys,
    snapshots and server states, in one statement (plus a few for keys that appeared,
    came back or went). Returns the snapshots written for each."""
    if not writes:
        return []
    now = writes[0].now
    if any(w.now != now for w in writes) or len({w.server_id for w in writes}) < len(writes):
        raise ValueError("one write per server, all at the same instant")
    rows: list[dict[str, Any]] = []
    states: list[dict[str, Any]] = []
    for write in writes:
        keys = _key_rows(session, write)
        rows.extend(keys)
        info = write.reading.server
        states.append(
            {
                "id": write.server_id,
                "n": len(keys),
                "tick": write.tick,
                "iv": write.reading.interval_supported,
                "info": info is not None,
                "oid": info.server_id if info else None,
                "oname": info.name[:200] if info and info.name else None,
                "dl": info.data_limit if info else None,
            }
        )
    session.execute(
        _WRITE_COLLECTIONS,
        {"rows": to_json(rows).decode(), "servers": to_json(states).decode(), "now": now},
    )
    return [state["n"] for state in states]


_LOCK_SERVERS = sa.text(
    "SELECT id, last_success_at, consecutive_failures, "
    "set_config('synchronous_commit', 'off', true) "
    "FROM servers WHERE id = ANY(CAST(:ids AS text[])) ORDER BY id FOR UPDATE"
)


def lock_servers(session: Session, ids: list[str]) -> dict[str, ServerRow]:
    """Lock servers' rows for writing collections (in id order, so that concurrent
    writers cannot deadlock), and skip waiting for the WAL flush.

    Losing the last commits in a database crash only loses those collections: the next
    tick reads the servers again and its deltas cover the gap.
    """
    if not ids:
        return {}
    return {r.id: r for r in session.execute(_LOCK_SERVERS, {"ids": sorted(ids)})}


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
