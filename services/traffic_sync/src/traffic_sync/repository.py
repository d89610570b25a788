"""Queries on traffic_sync's tables, for MySQL/MariaDB and PostgreSQL alike.

The batch upsert is one multi-row ``INSERT ... ON DUPLICATE KEY UPDATE``
(MySQL) or ``INSERT ... ON CONFLICT DO UPDATE`` (PostgreSQL) per chunk of
nodes, written as driver SQL: SQLAlchemy's multi-values compilation costs more
than the database for thousands of rows. The counters are integers, written
into the statement; the one timestamp is a named parameter, escaped once (a
parameter per value had the driver escape every node's in Python).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from traffic_sync.batch import Batch, NodeDelta, RejectedNode
from traffic_sync.models import flush_ledger, node_traffic, rejects

#: nodes per upsert statement
DEFAULT_CHUNK = 1000

_COLUMNS = "node_id, upload_bytes, download_bytes, traffic_used_bytes, updated_at"
_MYSQL_UPDATE = (
    " ON DUPLICATE KEY UPDATE"
    " upload_bytes = upload_bytes + VALUES(upload_bytes),"
    " download_bytes = download_bytes + VALUES(download_bytes),"
    " traffic_used_bytes = traffic_used_bytes + VALUES(traffic_used_bytes),"
    " updated_at = VALUES(updated_at)"
)
_POSTGRES_UPDATE = (
    " ON CONFLICT (node_id) DO UPDATE SET"
    " upload_bytes = node_traffic.upload_bytes + EXCLUDED.upload_bytes,"
    " download_bytes = node_traffic.download_bytes + EXCLUDED.download_bytes,"
    " traffic_used_bytes = node_traffic.traffic_used_bytes + EXCLUDED.traffic_used_bytes,"
    " updated_at = EXCLUDED.updated_at"
)
_TOTAL_COLUMNS = "node_id, upload_bytes, download_bytes, traffic_used_bytes, traffic_limit_bytes"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """MySQL DATETIME comes back naive; every time this service stores is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class NodeTotals(NamedTuple):
    """A node's counters right after a batch was applied, with the batch's delta (a
    tuple: a flush makes one per node)."""

    node_id: int
    upload_delta: int
    download_delta: int
    upload_total: int
    download_total: int
    traffic_used_total: int
    traffic_limit: int | None


@dataclass(frozen=True, slots=True)
class NodeTraffic:
    node_id: int
    upload_bytes: int
    download_bytes: int
    traffic_used_bytes: int
    traffic_limit_bytes: int | None
    updated_at: datetime


def _is_mysql(conn: Connection) -> bool:
    return conn.dialect.name in ("mysql", "mariadb")


def read_committed(session: Session) -> None:
    """Run the session's transaction, not yet started, at READ COMMITTED: on MySQL no
    gap locks between concurrent batches and the outbox relay.

    One statement for this transaction only; the ``isolation_level`` execution
    option sets the connection's level and sets it back on release, four round
    trips a batch.
    """
    session.connection().exec_driver_sql("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")


# -- the ledger -------------------------------------------------------------------------


def claim_batch(session: Session, batch: Batch, now: datetime) -> bool:
    """Insert the batch's ledger row; False if the batch was applied already.

    The first statement of the apply transaction: a concurrent apply of the
    same batch waits here for the first one's outcome, then finds the row.
    """
    values = {
        "batch_id": batch.batch_id,
        "applied_at": now,
        "nodes": len(batch.deltas),
        "upload_bytes": batch.upload_bytes,
        "download_bytes": batch.download_bytes,
        "rejected": len(batch.rejects),
    }
    if _is_mysql(session.connection()):
        stmt = mysql.insert(flush_ledger).values(values).prefix_with("IGNORE")
        return cast("sa.CursorResult[Any]", session.execute(stmt)).rowcount == 1
    # psycopg reports no row count here (-1): ask for the inserted row instead
    claimed = (
        postgresql.insert(flush_ledger)
        .values(values)
        .on_conflict_do_nothing()
        .returning(flush_ledger.c.batch_id)
    )
    return session.execute(claimed).first() is not None


# -- node counters ----------------------------------------------------------------------


def _returns_from_upsert(conn: Connection) -> bool:
    """Read the new totals back in the upsert itself: on PostgreSQL (psycopg parses rows
    in C). MySQL cannot; MariaDB can, but pymysql parses a row per node in Python (a
    third of a flush's time), so MySQL and MariaDB read them as one text instead
    (:func:`_select_totals`)."""
    return not _is_mysql(conn)


class _Columns(NamedTuple):
    """A chunk of deltas as columns, each value an int (what goes into SQL text is
    decimal digits, whatever the caller passed)."""

    node_ids: list[int]
    uploads: list[int]
    downloads: list[int]

    @classmethod
    def of(cls, chunk: Sequence[NodeDelta]) -> _Columns:
        node_ids, uploads, downloads = zip(*chunk, strict=True)
        return cls(list(map(int, node_ids)), list(map(int, uploads)), list(map(int, downloads)))


_VALUES_ROW = "({},{},{},{},%(now)s)".format


def _upsert_chunk(
    conn: Connection, cols: _Columns, now: datetime, returning: bool
) -> list[tuple[int, int, int, int, int | None]]:
    used = map(operator.add, cols.uploads, cols.downloads)
    values = ",".join(map(_VALUES_ROW, cols.node_ids, cols.uploads, cols.downloads, used))
    tail = _MYSQL_UPDATE if _is_mysql(conn) else _POSTGRES_UPDATE
    if returning:
        tail += f" RETURNING {_TOTAL_COLUMNS}"
    sql = f"INSERT INTO node_traffic ({_COLUMNS}) VALUES {values}{tail}"
    result = conn.exec_driver_sql(sql, {"now": now})
    return [tuple(row) for row in result] if returning else []


#: GROUP_CONCAT text per node: five numbers of up to 20 characters and their separators
_TEXT_PER_NODE = 5 * 21
_NO_LIMIT = "-"


def _select_totals_sql(conn: Connection, ids: str, nodes: int) -> str:
    """One SELECT that returns the nodes' totals as one row of text, ordered by node id,
    with room for all of them whatever the server's ``group_concat_max_len`` (MariaDB
    and MySQL spell the per-statement setting differently)."""
    concat = (
        "GROUP_CONCAT(node_id, ' ', upload_bytes, ' ', download_bytes, ' ', traffic_used_bytes,"
        f" ' ', IFNULL(traffic_limit_bytes, '{_NO_LIMIT}') ORDER BY node_id SEPARATOR ' ')"
    )
    where = f"FROM node_traffic WHERE node_id IN ({ids})"
    room = max(1024, nodes * _TEXT_PER_NODE)
    if getattr(conn.dialect, "is_mariadb", False):
        return f"SET STATEMENT group_concat_max_len = {room} FOR SELECT {concat} {where}"
    return f"SELECT /*+ SET_VAR(group_concat_max_len = {room}) */ {concat} {where}"


def _select_totals(
    conn: Connection, chunk: Sequence[NodeDelta], cols: _Columns
) -> list[NodeTotals]:
    """The new totals of the chunk's nodes (rows this transaction has just written and
    holds locked), by node id."""
    ids = ",".join(map(str, cols.node_ids))  # ints: safe to inline, cheaper than N binds
    text = conn.exec_driver_sql(_select_totals_sql(conn, ids, len(chunk))).scalar()
    fields = text.split(" ") if isinstance(text, str) else []
    node_ids = list(map(int, fields[0::5]))
    if node_ids != cols.node_ids:
        # a server that ignored the length setting (cut the text short), or a chunk
        # not in node id order: a row per node
        rows = conn.exec_driver_sql(
            f"SELECT {_TOTAL_COLUMNS} FROM node_traffic WHERE node_id IN ({ids})"
        )
        return _with_deltas(chunk, [tuple(row) for row in rows])
    limits = [None if n == _NO_LIMIT else int(n) for n in fields[4::5]]
    return list(
        map(
            NodeTotals,
            node_ids,
            cols.uploads,
            cols.downloads,
            map(int, fields[1::5]),
            map(int, fields[2::5]),
            map(int, fields[3::5]),
            limits,
        )
    )


def _with_deltas(
    chunk: Sequence[NodeDelta], rows: Sequence[tuple[int, int, int, int, int | None]]
) -> list[NodeTotals]:
    by_id = {d.node_id: d for d in chunk}
    totals = [
        NodeTotals(node_id, by_id[node_id].upload, by_id[node_id].download, up, down, used, limit)
        for node_id, up, down, used, limit in rows
    ]
    totals.sort(key=lambda t: t.node_id)
    return totals


def add_traffic(
    session: Session,
    deltas: Sequence[NodeDelta],
    now: datetime,
    *,
    chunk: int = DEFAULT_CHUNK,
    with_totals: bool = True,
    returning: bool | None = None,
) -> list[NodeTotals]:
    """Add the deltas to the nodes' counters (creating rows), one statement per chunk;
    returns the new totals when ``with_totals`` (read back in the same statement on
    PostgreSQL, by one SELECT of the locked rows on MySQL/MariaDB; ``returning`` forces
    one way). ``deltas`` are ordered by node id, one per node (as in a
    :class:`~traffic_sync.batch.Batch`), and so are the totals."""
    conn = session.connection()
    if returning is None:
        returning = _returns_from_upsert(conn)
    returning = returning and with_totals
    totals: list[NodeTotals] = []
    for start in range(0, len(deltas), chunk):
        part = deltas[start : start + chunk]
        cols = _Columns.of(part)
        rows = _upsert_chunk(conn, cols, now, returning)
        if returning:
            totals += _with_deltas(part, rows)
        elif with_totals:
            totals += _select_totals(conn, part, cols)
    return totals


def add_rejects(
    session: Session, batch_id: str, rejected: Sequence[RejectedNode], now: datetime
) -> None:
    if not rejected:
        return
    rows = [
        {
            "batch_id": batch_id,
            "node_key": r.node_key,
            "reason": r.reason,
            "detail": r.detail[:255],
            "raw": r.raw,
            "created_at": now,
        }
        for r in rejected
    ]
    session.execute(sa.insert(rejects), rows)


# -- reads and the API ------------------------------------------------------------------


def get_node(session: Session, node_id: int) -> NodeTraffic | None:
    row = session.execute(sa.select(node_traffic).where(node_traffic.c.node_id == node_id)).first()
    if row is None:
        return None
    return NodeTraffic(
        node_id=row.node_id,
        upload_bytes=row.upload_bytes,
        download_bytes=row.download_bytes,
        traffic_used_bytes=row.traffic_used_bytes,
        traffic_limit_bytes=row.traffic_limit_bytes,
        updated_at=as_utc(row.updated_at),
    )


def set_limit(session: Session, node_id: int, limit: int | None, now: datetime) -> None:
    """Set (or clear) a node's limit, creating its row with zero counters if needed."""
    values = {"node_id": node_id, "traffic_limit_bytes": limit, "updated_at": now}
    conn = session.connection()
    if _is_mysql(conn):
        stmt: sa.Executable = (
            mysql.insert(node_traffic)
            .values(values)
            .on_duplicate_key_update(traffic_limit_bytes=limit, updated_at=now)
        )
    else:
        insert = postgresql.insert(node_traffic).values(values)
        stmt = insert.on_conflict_do_update(
            index_elements=[node_traffic.c.node_id],
            set_={"traffic_limit_bytes": limit, "updated_at": now},
        )
    session.execute(stmt)


@dataclass(frozen=True, slots=True)
class LedgerSummary:
    batches: int
    nodes: int
    rejected: int
    last_applied_at: datetime | None


def ledger_summary(session: Session) -> LedgerSummary:
    row = session.execute(
        sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(flush_ledger.c.nodes), 0),
            sa.func.coalesce(sa.func.sum(flush_ledger.c.rejected), 0),
            sa.func.max(flush_ledger.c.applied_at),
        )
    ).one()
    last = as_utc(row[3]) if row[3] is not None else None
    return LedgerSummary(int(row[0]), int(row[1]), int(row[2]), last)


def recent_rejects(session: Session, limit: int = 20) -> list[dict[str, object]]:
    stmt = (
        sa.select(
            rejects.c.batch_id,
            rejects.c.node_key,
            rejects.c.reason,
            rejects.c.detail,
            rejects.c.created_at,
        )
        .order_by(rejects.c.id.desc())
        .limit(limit)
    )
    return [
        {
            "batch_id": r.batch_id,
            "node": r.node_key,
            "reason": r.reason,
            "detail": r.detail,
            "at": as_utc(r.created_at).isoformat(),
        }
        for r in session.execute(stmt)
    ]
