"""Rows past their age, deleted in bounded batches: the inbox, the outbox's published
rows, and every table a service registers (:class:`TableRetention`).

Each batch is one short transaction deleting at most ``batch_rows`` rows found through
the table's time index: on PostgreSQL by ``ctid`` from a ``LIMIT``ed sub-select, on
MySQL/MariaDB by ``ORDER BY <time> LIMIT`` (which locks only the rows it deletes). No
statement holds locks for long, and the pass pauses between batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tributary.inbox import TABLE_NAME as INBOX_TABLE
from tributary.outbox.table import TABLE_NAME as OUTBOX_TABLE

__all__ = [
    "INBOX_TABLE",
    "OUTBOX_TABLE",
    "Purge",
    "TableFigures",
    "TableRetention",
    "count_older",
    "delete_batch",
    "existing_tables",
    "inbox_retention",
    "measure",
    "outbox_retention",
]

#: lowers a table's cut given the database and the policy's own cut (e.g. never past what
#: is not rolled up yet); returns the cut to use
CutHook = Callable[[Connection, datetime], datetime]
#: removes a table's rows older than the cut its own way, in short transactions (e.g.
#: drops whole partitions), at most ``batch_rows`` rows per statement where it deletes
#: rows; returns the rows removed: ``purge(engine, cut, batch_rows)``
Purge = Callable[[Engine, datetime, int], int]
#: the time a table's rows are stamped with (a service with a clock of its own)
Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class TableRetention:
    """Rows of ``table`` whose ``column`` (a timestamp, indexed) is older than ``max_age``
    are deleted, if they also match ``where`` (constant SQL, e.g. ``status <> 'running'``).

    ``purge`` replaces the batched DELETE (a range-partitioned table drops partitions;
    the generic DELETE by ``ctid`` would be wrong there, ctids repeat across partitions);
    ``clock`` replaces the system clock for a table stamped by the service's own.
    """

    table: str
    column: str
    max_age: timedelta
    where: str = ""
    cut_hook: CutHook | None = None
    purge: Purge | None = None
    clock: Clock | None = None

    def __post_init__(self) -> None:
        if self.max_age <= timedelta(0):
            raise ValueError(f"{self.table}: a retention age must be positive")
        for name in (self.table, self.column):
            if not name.replace("_", "").isalnum():
                raise ValueError(f"not a plain SQL name: {name!r}")

    def now(self, system_now: datetime) -> datetime:
        return system_now if self.clock is None else self.clock()

    def cut(self, conn: Connection, now: datetime) -> datetime:
        cut = now - self.max_age
        return cut if self.cut_hook is None else min(cut, self.cut_hook(conn, now))

    def _condition(self) -> str:
        extra = f" AND ({self.where})" if self.where else ""
        return f"{self.column} < :cut{extra}"


def inbox_retention(max_age: timedelta) -> TableRetention:
    """Processed-event ids older than ``max_age`` (choose it beyond any redelivery)."""
    return TableRetention(INBOX_TABLE, "processed_at", max_age)


def outbox_retention(max_age: timedelta) -> TableRetention:
    """Outbox rows published more than ``max_age`` ago (unpublished ones never go)."""
    return TableRetention(OUTBOX_TABLE, "published_at", max_age)


@dataclass
class TableFigures:
    table: str
    max_age: timedelta
    #: the database's estimate (pg_class.reltuples, information_schema.tables.table_rows)
    rows: int = 0
    oldest_age_s: float | None = None
    removed: int = 0


def _is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def delete_batch(engine: Engine, policy: TableRetention, cut: datetime, batch_rows: int) -> int:
    """Delete at most ``batch_rows`` rows older than ``cut``, in one transaction."""
    t, cond = policy.table, policy._condition()
    with engine.begin() as conn:
        if _is_postgres(conn):
            sql = (
                f"DELETE FROM {t} WHERE ctid = ANY(ARRAY("
                f"SELECT ctid FROM {t} WHERE {cond} LIMIT :n))"
            )
        else:
            sql = f"DELETE FROM {t} WHERE {cond} ORDER BY {policy.column} LIMIT :n"
        result = conn.execute(sa.text(sql), {"cut": cut, "n": batch_rows})
        return int(cast("sa.CursorResult[Any]", result).rowcount)


def current_cut(engine: Engine, policy: TableRetention, now: datetime) -> datetime:
    with engine.connect() as conn:
        return policy.cut(conn, now)


def count_older(engine: Engine, policy: TableRetention, now: datetime) -> int:
    """Rows a pass would delete now (dry runs)."""
    with engine.connect() as conn:
        cut = policy.cut(conn, now)
        sql = f"SELECT count(*) FROM {policy.table} WHERE {policy._condition()}"
        return int(conn.execute(sa.text(sql), {"cut": cut}).scalar_one())


def _approximate_rows(conn: Connection, table: str) -> int:
    if _is_postgres(conn):
        # a partitioned table has no estimate of its own: the sum of its partitions'
        # (one never analysed counts 0 until it is)
        sql = (
            "SELECT CASE WHEN c.relkind = 'p' THEN (SELECT sum(greatest(p.reltuples, 0)) "
            "FROM pg_partition_tree(c.oid) t JOIN pg_class p ON p.oid = t.relid "
            "WHERE t.isleaf) ELSE c.reltuples END::bigint "
            "FROM pg_class c WHERE c.oid = to_regclass(:t)"
        )
    else:
        sql = (
            "SELECT table_rows FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = :t"
        )
    estimate = conn.execute(sa.text(sql), {"t": table}).scalar()
    if estimate is None or int(estimate) < 0:  # never analysed (a new table): count it
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    return int(estimate)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def measure(engine: Engine, policy: TableRetention, now: datetime) -> TableFigures:
    """The table's approximate row count and the age of its oldest row under the policy."""
    figures = TableFigures(policy.table, policy.max_age)
    with engine.connect() as conn:
        figures.rows = _approximate_rows(conn, policy.table)
        where = f" WHERE {policy.where}" if policy.where else ""
        oldest = conn.execute(
            sa.text(f"SELECT min({policy.column}) FROM {policy.table}{where}")
        ).scalar()
    if isinstance(oldest, datetime):
        figures.oldest_age_s = max(0.0, (now - _as_utc(oldest)).total_seconds())
    return figures


def existing_tables(engine: Engine, names: list[str]) -> list[str]:
    """Those of ``names`` that exist where the engine's connections look (search path or
    the URL's database)."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        return [name for name in names if inspector.has_table(name)]
