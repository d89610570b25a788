"""Leader-only upkeep: hourly rollups, ageing of the window totals, partitions made ahead,
drift check; and what retention keeps of the domain's tables.

Retention (:func:`retention`) is the library's pass (:mod:`tributary.retention`), like
the inbox's and outbox's: raw snapshots for ``SNAPSHOT_RAW_RETENTION_DAYS``, never past
what is rolled up, by dropping whole daily partitions (:mod:`snapshot.partitions`);
hourly rollups for ``SNAPSHOT_ROLLUP_RETENTION_DAYS`` in batched deletes. Both go by the
service's clock.

Window totals. ``access_keys.used_{24h,7d,30d}`` hold the summed deltas of
each window so that top-consumer queries read one row per key. A collection
adds its deltas to all three; this job subtracts, per window, the hourly
buckets that left it (cursor ``aged:<window>``, an hour boundary: the totals
cover deltas collected after it). Both are plain additions, so concurrent
collections and ageing commute. :func:`rebuild_totals` recomputes them from
history (after an import, or to repair).

Rollups. Bucket ``h`` of ``usage_hourly`` sums the deltas collected in
``(h, h + 1h]``. A bucket is rolled up once its end is older than a grace
period longer than any collection takes (cursor ``rolled_until``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from snapshot import partitions
from snapshot import repository as repo
from snapshot.config import OUTLINE_WINDOW_DAYS, SnapshotSettings
from snapshot.instruments import SnapshotMetrics
from tributary.retention.tables import TableRetention

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: rollup waits this long after a bucket ends, so collections in flight land first
DEFAULT_ROLLUP_GRACE = timedelta(minutes=5)
WINDOWS: dict[str, timedelta] = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=OUTLINE_WINDOW_DAYS),
}
ROLLED_UNTIL = "rolled_until"


def floor_hour(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return at.replace(minute=0, second=0, microsecond=0)


_ROLLUP = sa.text(
    "INSERT INTO usage_hourly (key_ref, hour, bytes, samples, max_reading) "
    "SELECT key_ref, date_trunc('hour', collected_at - interval '1 microsecond', 'UTC'), "
    "sum(delta_bytes), count(*), max(reading_bytes) FROM snapshots "
    "WHERE collected_at > :lo AND collected_at <= :hi GROUP BY 1, 2 "
    "ON CONFLICT (key_ref, hour) DO UPDATE SET bytes = excluded.bytes, "
    "samples = excluded.samples, max_reading = excluded.max_reading"
)


def roll_up(session: Session, now: datetime, grace: timedelta = DEFAULT_ROLLUP_GRACE) -> int:
    """Roll up every complete bucket not rolled up yet; returns bucket rows written."""
    until = floor_hour(now - grace)
    start = repo.get_cursor(session, ROLLED_UNTIL, lock=True)
    if start is None:
        first = session.execute(sa.text("SELECT min(collected_at) FROM snapshots")).scalar()
        start = floor_hour(first - timedelta(microseconds=1)) if first else until
    if start >= until:
        if repo.get_cursor(session, ROLLED_UNTIL) is None:
            repo.set_cursor(session, ROLLED_UNTIL, until)
        return 0
    result = cast("sa.CursorResult[Any]", session.execute(_ROLLUP, {"lo": start, "hi": until}))
    repo.set_cursor(session, ROLLED_UNTIL, until)
    return int(result.rowcount)


def age_totals(session: Session, now: datetime) -> dict[str, int]:
    """Subtract from each window total the buckets that left it; returns keys touched."""
    rolled = repo.get_cursor(session, ROLLED_UNTIL)
    touched = {}
    for name, width in WINDOWS.items():
        cursor_name = f"aged:{name}"
        target = floor_hour(now - width)
        if rolled is not None:
            target = min(target, rolled)
        current = repo.get_cursor(session, cursor_name, lock=True)
        if current is None:
            repo.set_cursor(session, cursor_name, target)
            continue
        if target <= current:
            continue
        column = f"used_{name}"
        result = session.execute(
            sa.text(
                f"UPDATE access_keys a SET {column} = a.{column} - s.b FROM "
                "(SELECT key_ref, sum(bytes) AS b FROM usage_hourly "
                "WHERE hour >= :lo AND hour < :hi GROUP BY key_ref) s WHERE a.id = s.key_ref"
            ),
            {"lo": current, "hi": target},
        )
        touched[name] = int(cast("sa.CursorResult[Any]", result).rowcount)
        repo.set_cursor(session, cursor_name, target)
    return touched


def rebuild_totals(session: Session, now: datetime) -> None:
    """Recompute every window total from the hourly rollups and the raw tail."""
    roll_up(session, now)
    rolled = repo.get_cursor(session, ROLLED_UNTIL) or floor_hour(now)
    sets = []
    params: dict[str, Any] = {"rolled": rolled}
    for name, width in WINDOWS.items():
        cut = min(floor_hour(now - width), rolled)
        params[f"cut_{name}"] = cut
        sets.append(
            f"used_{name} = coalesce((SELECT sum(bytes) FROM usage_hourly h WHERE "
            f"h.key_ref = a.id AND h.hour >= :cut_{name} AND h.hour < :rolled), 0) "
            "+ coalesce((SELECT sum(delta_bytes) FROM snapshots s WHERE s.key_ref = a.id "
            "AND s.collected_at > :rolled), 0)"
        )
        repo.set_cursor(session, f"aged:{name}", cut)
    session.execute(sa.text(f"UPDATE access_keys a SET {', '.join(sets)}"), params)


def check_drift(session: Session, now: datetime, settings: SnapshotSettings) -> list[Any]:
    """Compare each fully tracked key's summed deltas with its 30-day value.

    Fully tracked: its window epoch is more than 30 days old, or nothing
    untracked is left in its window (everything in it went through our
    deltas). Returns the keys drifting beyond tolerance.
    """
    cut = now - WINDOWS["30d"]
    session.execute(
        sa.text(
            "UPDATE access_keys SET drift_bytes = used_30d - last_reading, drift_checked_at = :now "
            "WHERE deleted_at IS NULL AND last_reading IS NOT NULL AND (window_epoch <= :cut "
            "OR (untracked_bytes = 0))"
        ),
        {"now": now, "cut": cut},
    )
    rows = session.execute(
        sa.text(
            "SELECT server_id, key_id, used_30d, last_reading, drift_bytes FROM access_keys "
            "WHERE drift_checked_at = :now AND abs(drift_bytes) > "
            "greatest(:tol_bytes, :tol_ratio * last_reading) ORDER BY abs(drift_bytes) DESC"
        ),
        {
            "now": now,
            "tol_bytes": settings.drift_tolerance_bytes,
            "tol_ratio": settings.drift_tolerance_ratio,
        },
    )
    return list(rows)


def retention(settings: SnapshotSettings, clock: Clock) -> list[TableRetention]:
    """Raw snapshots (partitions dropped, never past the rollups) and hourly rollups."""

    def rolled_up(conn: Connection, now: datetime) -> datetime:
        with Session(bind=conn) as session:
            rolled = repo.get_cursor(session, ROLLED_UNTIL)
        return now - timedelta(days=OUTLINE_WINDOW_DAYS + 1) if rolled is None else rolled

    raw = timedelta(days=settings.raw_retention_days)
    return [
        TableRetention(
            partitions.TABLE, "collected_at", raw, cut_hook=rolled_up,
            purge=partitions.drop_expired, clock=clock,
        ),
        TableRetention(
            "usage_hourly", "hour", timedelta(days=settings.rollup_retention_days), clock=clock
        ),
    ]  # fmt: skip


class Maintenance:
    """The periodic job: partitions ahead, rollups, window ageing (and drift when due)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: SnapshotSettings,
        metrics: SnapshotMetrics,
        clock: Clock,
    ) -> None:
        self.sessions, self.settings, self.metrics, self.clock = sessions, settings, metrics, clock

    def run_once(self) -> None:
        now = self.clock()
        with self.sessions.begin() as session:
            created = partitions.ensure_ahead(session.connection(), now)
        if created:
            log.info("snapshots partitions created: %s", ", ".join(created))
        with self.sessions.begin() as session:
            roll_up(session, now)
        with self.sessions.begin() as session:
            age_totals(session, now)

    def drift_once(self) -> list[Any]:
        now = self.clock()
        with self.sessions.begin() as session:
            drifting = check_drift(session, now, self.settings)
        self.metrics.drift_keys.set(len(drifting))
        if drifting:
            sample = ", ".join(
                f"{r.server_id}/{r.key_id}: {r.drift_bytes:+d} B" for r in drifting[:5]
            )
            log.warning("%d key(s) drift from their 30-day value: %s", len(drifting), sample)
        return drifting
