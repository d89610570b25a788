"""``snapshots`` is range-partitioned by ``collected_at``, a partition per UTC day, so that
its retention drops whole partitions instead of deleting millions of rows.

- Partitions are named ``snapshots_pYYYYMMDD`` and cover ``[day, day + 1)``. The lease
  holder's maintenance creates them :data:`DEFAULT_DAYS_AHEAD` days ahead; a write for
  a day without one (a clock far off, a standby that outran the leader) creates its
  own first (:func:`cover`), so an insert never fails for want of a partition.
- ``snapshots_p_legacy`` is the table from before partitioning (revision 0004), attached
  as ``[MINVALUE, <the day after the upgrade>)``: its rows were never copied.
- :func:`drop_expired` is the retention's purge (:class:`~tributary.retention.tables.TableRetention`
  ``purge``): it drops every partition that ends at or before the cut, first taking its
  rows off ``servers.snapshot_count``. The legacy partition, which may span weeks, loses
  its expired rows in bounded batches until it can be dropped whole.

Rows are therefore kept at least the retention age and at most a day longer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

TABLE = "snapshots"
LEGACY = f"{TABLE}_p_legacy"
#: days of partitions the lease holder keeps ready ahead of the clock
DEFAULT_DAYS_AHEAD = 7
#: serialises partition DDL between replicas (pg_advisory_xact_lock key)
_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtext('snapshot:partitions'))")
_BOUND = re.compile(r"FROM \((MINVALUE|'[^']+')\) TO \((MAXVALUE|'[^']+')\)")
_PARTITIONS = sa.text(
    "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
    "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:parent)"
)


def partition_name(day: date) -> str:
    return f"{TABLE}_p{day:%Y%m%d}"


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    lower: datetime | None  # None: MINVALUE
    upper: datetime | None  # None: MAXVALUE

    def overlaps(self, lo: datetime, hi: datetime) -> bool:
        return (self.lower is None or self.lower < hi) and (self.upper is None or lo < self.upper)


def _bound(text: str) -> datetime | None:
    if text.endswith("VALUE"):
        return None
    return datetime.fromisoformat(text.strip("'")).astimezone(UTC)


def partitions(conn: Connection) -> list[Partition]:
    """The partitions of ``snapshots``, oldest first."""
    found = []
    for name, expr in conn.execute(_PARTITIONS, {"parent": TABLE}):
        match = _BOUND.search(expr or "")
        if match is None:  # a DEFAULT partition: none is ever made
            continue
        found.append(Partition(name, _bound(match.group(1)), _bound(match.group(2))))
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(found, key=lambda p: p.lower or oldest)


def create_days(conn: Connection, days: Iterable[date]) -> list[str]:
    """Create the partitions of ``days`` that no partition covers yet (under the
    partition lock, in the caller's transaction); the names created."""
    conn.execute(_LOCK)
    existing = partitions(conn)
    created = []
    for day in sorted(set(days)):
        lo, hi = day_start(day), day_start(day + timedelta(days=1))
        if any(p.overlaps(lo, hi) for p in existing):
            continue
        name = partition_name(day)
        conn.execute(
            sa.text(
                f"CREATE TABLE {name} PARTITION OF {TABLE} "
                f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
            )
        )
        existing.append(Partition(name, lo, hi))
        created.append(name)
    return created


def ensure_ahead(
    conn: Connection, now: datetime, days_ahead: int = DEFAULT_DAYS_AHEAD
) -> list[str]:
    """Partitions from today to ``days_ahead`` days after it (the lease holder's job)."""
    today = now.astimezone(UTC).date()
    return create_days(conn, (today + timedelta(days=n) for n in range(days_ahead + 1)))


def cover(conn: Connection, moments: Iterable[datetime]) -> None:
    """Make sure rows collected at ``moments`` have a partition to go to (writes call
    this first; the common case is one catalog lookup)."""
    days = {m.astimezone(UTC).date() for m in moments}
    names = [partition_name(d) for d in days]
    found = conn.execute(
        sa.text("SELECT count(to_regclass(n)) FROM unnest(CAST(:names AS text[])) n"),
        {"names": names},
    ).scalar_one()
    if found < len(names):
        create_days(conn, days)


# -- retention ----------------------------------------------------------------------------

#: rows per server of ``{source}`` (a partition, or the rows a statement deleted)
_COUNTS = (
    "SELECT k.server_id, count(*) AS n FROM {source} d JOIN access_keys k ON k.id = d.key_ref "
    "GROUP BY k.server_id"
)
_LOWER_COUNTS = "UPDATE servers s SET snapshot_count = greatest(0, s.snapshot_count - c.n) FROM "
_UNCOUNT_BY = sa.text(
    _LOWER_COUNTS + "unnest(CAST(:ids AS text[]), CAST(:ns AS bigint[])) AS c(server_id, n) "
    "WHERE s.id = c.server_id"
)
_DELETE_LEGACY = sa.text(
    f"WITH d AS (DELETE FROM {LEGACY} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {LEGACY} "
    "WHERE collected_at < :cut LIMIT :n)) RETURNING key_ref) "
    f"{_LOWER_COUNTS}({_COUNTS.format(source='d')}) c WHERE s.id = c.server_id RETURNING c.n"
)


def _drop(engine: Engine, partition: Partition) -> int:
    """Drop one partition, its rows first taken off the servers' counts; rows dropped.

    The counts are read first, with no lock held but the read's (nothing is written
    into a day that has passed); the transaction that lowers them and drops the
    partition then holds servers' rows and the exclusive lock on snapshots for
    milliseconds. It locks servers' rows before snapshots, as collections do."""
    with engine.connect() as conn:
        counts = list(conn.execute(sa.text(_COUNTS.format(source=partition.name))))
    with engine.begin() as conn:
        conn.execute(_LOCK)
        conn.execute(
            _UNCOUNT_BY,
            {"ids": [str(r[0]) for r in counts], "ns": [int(r[1]) for r in counts]},
        )
        conn.execute(sa.text(f"DROP TABLE {partition.name}"))
    return sum(int(r[1]) for r in counts)


def _delete_legacy(engine: Engine, cut: datetime, batch_rows: int) -> int:
    removed = 0
    while True:
        with engine.begin() as conn:
            result = cast("sa.CursorResult[Any]", conn.execute(
                _DELETE_LEGACY, {"cut": cut, "n": batch_rows}
            ))  # fmt: skip
            deleted = sum(int(r[0]) for r in result)
        removed += deleted
        if deleted < batch_rows:
            return removed


def drop_expired(engine: Engine, cut: datetime, batch_rows: int) -> int:
    """Drop every partition wholly older than ``cut``; delete the legacy partition's
    expired rows while it still holds younger ones. Returns the rows removed."""
    with engine.connect() as conn:
        existing = partitions(conn)
    removed = 0
    for partition in existing:
        if partition.upper is not None and partition.upper <= cut:
            removed += _drop(engine, partition)
        elif partition.name == LEGACY:
            removed += _delete_legacy(engine, cut, batch_rows)
    return removed
