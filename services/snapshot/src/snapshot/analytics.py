"""Read queries behind the analytics API.

Top consumers read the maintained window totals (one row per key, no scan of
history); the summary reads per-server counters. Both stay fast whatever the
amount of history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from snapshot import repository as repo
from snapshot.servers import public_view

PERIODS = {"24h": "used_24h", "7d": "used_7d", "30d": "used_30d"}


def top_consumers(
    session: Session, period: str, limit: int, server: str | None = None
) -> list[dict[str, Any]]:
    column = PERIODS[period]
    where = "a.deleted_at IS NULL AND s.active"
    params: dict[str, Any] = {"limit": limit}
    if server is not None:
        where += " AND (s.id = :server OR s.name = :server)"
        params["server"] = server
    rows = session.execute(
        sa.text(
            f"SELECT s.id AS server_id, s.name AS server_name, a.key_id, a.name AS key_name, "
            f"a.{column} AS bytes, a.last_reading AS window_30d_bytes, "
            "coalesce(a.data_limit, s.access_key_data_limit) AS limit_bytes "
            f"FROM access_keys a JOIN servers s ON s.id = a.server_id WHERE {where} "
            f"ORDER BY a.{column} DESC, a.id LIMIT :limit"
        ),
        params,
    )
    return [dict(r._mapping) | {"period": period} for r in rows]


def anomalies(session: Session, active_only: bool, limit: int) -> list[dict[str, Any]]:
    where = "WHERE e.ended_at IS NULL" if active_only else ""
    rows = session.execute(
        sa.text(
            "SELECT s.id AS server_id, s.name AS server_name, a.key_id, a.name AS key_name, "
            "e.started_at, e.ended_at, e.observed_bytes, e.baseline_bytes, e.score, e.ratio, "
            "e.peak_score, e.window_seconds, e.event_id "
            "FROM anomaly_episodes e JOIN access_keys a ON a.id = e.key_ref "
            f"JOIN servers s ON s.id = a.server_id {where} "
            "ORDER BY e.started_at DESC, e.id DESC LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [dict(r._mapping) | {"active": r.ended_at is None} for r in rows]


def summary(session: Session, now: datetime) -> dict[str, Any]:
    rows = repo.list_servers(session, include_inactive=True)
    active = [r for r in rows if r.active]
    backing_off = [r for r in active if r.backoff_until is not None and r.backoff_until > now]
    counts = session.execute(
        sa.text(
            "SELECT count(*) FILTER (WHERE deleted_at IS NULL) AS keys, "
            "count(*) FILTER (WHERE drift_checked_at IS NOT NULL AND drift_bytes <> 0) "
            "AS drifting, "
            "(SELECT count(*) FROM anomaly_episodes WHERE ended_at IS NULL) AS open_anomalies "
            "FROM access_keys"
        )
    ).one()
    return {
        "snapshot_count": sum(int(r.snapshot_count) for r in rows),
        "servers_active": len(active),
        "servers_in_backoff": [
            {
                "id": r.id,
                "name": r.name,
                "endpoint": r.endpoint,
                "backoff_until": r.backoff_until,
                "consecutive_failures": r.consecutive_failures,
                "last_error_kind": r.last_error_kind,
                "last_error": r.last_error,
            }
            for r in backing_off
        ],
        "keys_tracked": int(counts.keys),
        "keys_with_drift": int(counts.drifting),
        "open_anomalies": int(counts.open_anomalies),
        "rolled_up_until": repo.get_cursor(session, "rolled_until"),
        "servers": [
            {
                k: v
                for k, v in public_view(r, now).items()
                if k
                in (
                    "id",
                    "name",
                    "endpoint",
                    "active",
                    "last_success_at",
                    "last_attempt_at",
                    "last_error_kind",
                    "in_backoff",
                    "snapshot_count",
                    "key_count",
                )
            }
            for r in rows
        ],
    }
