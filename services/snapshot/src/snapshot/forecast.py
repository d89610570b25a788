"""Time to quota on a ROLLING 30-day limit.

A key's limit applies to its usage over the last 30 days, S(t). Projected
hour by hour:

    S(t + h) = S(t) + r * h - A(h)

where ``r`` is the expected usage per hour (the higher of the key's last-24h
and last-7d averages: warn early rather than late) and ``A(h)`` the usage
that leaves the window during those ``h`` hours: the traffic of
``(t - 30d, t - 30d + h]``, known from our hourly rollups. Usage in the window
that predates our tracking (``window_epoch``) is spread evenly over the time
it has left. The key reaches its limit at the first crossing (interpolated
within the hour); none within the search span means it never does at the
current rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from snapshot.config import OUTLINE_WINDOW_DAYS
from snapshot.deltas import aged_out_estimate
from snapshot.maintenance import ROLLED_UNTIL, floor_hour
from snapshot.repository import get_cursor

WINDOW = timedelta(days=OUTLINE_WINDOW_DAYS)
#: the furthest a forecast looks ahead, in hours (after 30 days the window is all new)
MAX_HOURS = OUTLINE_WINDOW_DAYS * 24


def hours_to_limit(
    used: float, limit: float, rate: float, ageing: Sequence[float], max_hours: int = MAX_HOURS
) -> float | None:
    """Hours until S reaches ``limit`` (0 if it already has), None if not within max_hours."""
    if used >= limit:
        return 0.0
    level = float(used)
    for hour in range(max_hours):
        aged = ageing[hour] if hour < len(ageing) else 0.0
        following = level + rate - aged
        if following >= limit:
            return hour + (limit - level) / (following - level)
        level = following
    return None


def usage_rate(used_24h: int, used_7d: int, tracked_hours: float) -> float:
    """Expected bytes per hour: the higher of the 24h and 7d averages over tracked time."""
    hours = max(tracked_hours, 1.0)
    return max(used_24h / min(hours, 24.0), used_7d / min(hours, 168.0))


def ageing_series(
    hourly: Sequence[tuple[datetime, int]],
    now: datetime,
    epoch: datetime,
    untracked: float,
    hours: int = MAX_HOURS,
) -> list[float]:
    """Bytes leaving the window in each of the next ``hours`` hours."""
    start = now - WINDOW
    by_hour = dict(hourly)
    series = []
    for i in range(hours):
        lo = max(start + timedelta(hours=i), epoch)
        hi = start + timedelta(hours=i + 1)
        if hi <= lo:
            series.append(0.0)
            continue
        # only the (at most two) buckets around this hour can overlap it
        first = floor_hour(lo - timedelta(microseconds=1))
        near = [(h, by_hour[h]) for h in (first, first + timedelta(hours=1)) if h in by_hour]
        series.append(float(aged_out_estimate(near, lo, hi)))
    # what we never saw happened before the epoch and is gone by epoch + 30 days
    remaining = (epoch + WINDOW - now).total_seconds() / 3600
    if untracked > 0 and remaining > 0:
        spread = math.ceil(min(remaining, hours))
        for i in range(spread):
            series[i] += untracked / spread
    return series


@dataclass(frozen=True)
class Forecast:
    server_id: str
    key_id: str
    key_name: str | None
    used_bytes: int
    limit_bytes: int | None
    rate_bytes_per_hour: float
    hours_to_limit: float | None
    predicted_limit_at: datetime | None
    reached: bool
    ageing_next_24h: float

    @property
    def state(self) -> str:
        if self.reached:
            return "reached"
        return "approaching" if self.hours_to_limit is not None else "ok"


_KEY = (
    "SELECT a.id, a.server_id, a.key_id, a.name, a.first_seen_at, a.window_epoch, "
    "a.last_reading, a.used_24h, a.used_7d, a.forecast_state, "
    "coalesce(a.data_limit, s.access_key_data_limit) AS limit_bytes "
    "FROM access_keys a JOIN servers s ON s.id = a.server_id "
)


def forecast_key(session: Session, key: Any, now: datetime, max_hours: int = MAX_HOURS) -> Forecast:
    """The forecast of one key row (columns of ``_KEY``)."""
    used = int(key.last_reading or 0)
    tracked_hours = (now - key.first_seen_at).total_seconds() / 3600
    rate = usage_rate(key.used_24h, key.used_7d, tracked_hours)
    rows = session.execute(
        sa.text(
            "SELECT hour, bytes FROM usage_hourly WHERE key_ref = :ref AND hour >= :lo "
            "AND hour < :hi"
        ),
        {"ref": key.id, "lo": floor_hour(now - WINDOW) - timedelta(hours=1), "hi": now},
    ).all()
    hourly = [(r.hour, int(r.bytes)) for r in rows]
    # nothing rolled up yet: every delta is still raw
    rolled = get_cursor(session, ROLLED_UNTIL) or now - 2 * WINDOW
    recent = session.execute(
        sa.text(
            "SELECT coalesce(sum(delta_bytes), 0) FROM snapshots WHERE key_ref = :ref "
            "AND collected_at > :rolled"
        ),
        {"ref": key.id, "rolled": rolled},
    ).scalar_one()
    epoch = max(key.window_epoch, now - WINDOW)
    tracked = sum(b for h, b in hourly if h >= floor_hour(epoch)) + int(recent)
    untracked = max(0.0, used - tracked) if key.window_epoch > now - WINDOW else 0.0
    ageing = ageing_series(hourly, now, key.window_epoch, untracked, max_hours)
    limit = key.limit_bytes
    hours = hours_to_limit(used, limit, rate, ageing, max_hours) if limit else None
    return Forecast(
        key.server_id,
        key.key_id,
        key.name,
        used,
        limit,
        rate,
        hours,
        now + timedelta(hours=hours) if hours is not None else None,
        bool(limit) and used >= limit,
        sum(ageing[:24]),
    )


def find_key(session: Session, server: str, key_id: str) -> Any:
    return session.execute(
        sa.text(
            _KEY + "WHERE (s.id = :server OR s.name = :server) AND a.key_id = :key "
            "AND a.deleted_at IS NULL"
        ),
        {"server": server, "key": key_id},
    ).first()


def forecast_candidates(session: Session, now: datetime, horizon_hours: float) -> list[Any]:
    """Keys that may reach their limit within the horizon, or whose state may change."""
    return list(
        session.execute(
            sa.text(
                _KEY + "WHERE a.deleted_at IS NULL AND a.last_reading IS NOT NULL AND "
                "coalesce(a.data_limit, s.access_key_data_limit) IS NOT NULL AND s.active AND "
                "(a.forecast_state <> 'ok' OR a.last_reading + :horizon * greatest("
                "a.used_24h / least(greatest(extract(epoch FROM :now - a.first_seen_at) / 3600, "
                "1), 24), a.used_7d / least(greatest(extract(epoch FROM :now - a.first_seen_at) "
                "/ 3600, 1), 168)) >= coalesce(a.data_limit, s.access_key_data_limit))"
            ),
            {"now": now, "horizon": horizon_hours},
        )
    )
