"""The inbox: exactly-once effects from at-least-once delivery (DESIGN.md section 3).

A consumer group records every event id it has processed in the ``inbox``
table, in the same transaction as the handler's own writes. A redelivered
event finds its row already there and is skipped; a handler that fails rolls
its inbox row back with everything else, so the retry processes it again.

The table is defined without a schema: the engine's search path (PostgreSQL)
or the URL's database (MySQL/MariaDB) decides where it lives, so each service
adds it to its own metadata and migrations with :func:`inbox_table`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import MetaData, Table
from sqlalchemy.orm import Session, sessionmaker

from tributary.db import is_retryable_conflict
from tributary.errors import TributaryError

log = logging.getLogger(__name__)

TABLE_NAME = "inbox"
GROUP_MAX_LENGTH = 200
EVENT_ID_MAX_LENGTH = 64
#: how many times :func:`process_once` runs a transaction that lost a race (deadlock...)
DEFAULT_ATTEMPTS = 3

#: a handler run by :func:`process_once`: gets the open session and the ids that are new
Handler = Callable[[Session, set[str]], object]


class ClaimConflict(TributaryError):
    """The claim could not tell its own inbox rows from a concurrent claimer's.

    Only raised on MySQL/MariaDB below REPEATABLE READ, and only when another
    transaction claimed some of the same ids at the same moment. Nothing has
    been processed twice: roll back and run the transaction again (the retry
    sees the other claim as committed). :func:`process_once` does so itself.
    """


def _utcnow() -> datetime:
    return datetime.now(UTC)


def inbox_table(metadata: MetaData) -> Table:
    """The ``inbox`` table in ``metadata``: one row per (consumer group, processed event id)."""
    return Table(
        TABLE_NAME,
        metadata,
        sa.Column("consumer_group", sa.String(GROUP_MAX_LENGTH), primary_key=True),
        sa.Column("event_id", sa.String(EVENT_ID_MAX_LENGTH), primary_key=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, default=_utcnow),
        # purge_processed() deletes by age
        sa.Index("ix_inbox_processed_at", "processed_at"),
    )


# The statements below only need the table's shape; the schema comes from the connection.
_INBOX = inbox_table(MetaData())


def _checked_ids(group: str, event_ids: Iterable[str]) -> list[str]:
    """Unique ids, sorted, after checking they fit their columns.

    MySQL's ``INSERT IGNORE`` would silently truncate an over-long value into
    some other event's key, so lengths are checked here on every dialect.
    Sorting makes concurrent claimers lock the same keys in the same order,
    which keeps them from deadlocking on each other.
    """
    if not group or len(group) > GROUP_MAX_LENGTH:
        raise ValueError(f"consumer group must be 1..{GROUP_MAX_LENGTH} characters: {group!r}")
    ids = sorted(set(event_ids))
    for event_id in ids:
        if not event_id or len(event_id) > EVENT_ID_MAX_LENGTH:
            raise ValueError(f"event id must be 1..{EVENT_ID_MAX_LENGTH} characters: {event_id!r}")
    return ids


def _rows(group: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    now = _utcnow()
    return [{"consumer_group": group, "event_id": i, "processed_at": now} for i in ids]


def claim_events(session: Session, group: str, event_ids: Sequence[str]) -> set[str]:
    """Record ``event_ids`` as processed by ``group``; returns the ones not recorded before.

    Runs inside the caller's transaction: the claim only becomes final when
    the caller commits, together with the effects of processing the events.
    A concurrent transaction claiming the same id waits for this one's
    outcome; exactly one of them gets the id.
    """
    ids = _checked_ids(group, event_ids)
    if not ids:
        return set()
    dialect = session.connection().dialect.name
    if dialect == "postgresql":
        return _claim_postgres(session, group, ids)
    if dialect in ("mysql", "mariadb"):
        return _claim_mysql(session, group, ids)
    raise NotImplementedError(f"inbox claims are not implemented for {dialect}")


#: one statement text for any batch size: a multi-row VALUES is recompiled per batch,
#: which cost as much as the rest of a 500-event batch
_CLAIM_POSTGRES = sa.text(
    "INSERT INTO inbox (consumer_group, event_id, processed_at) "
    "SELECT :group, e, :now FROM unnest(CAST(:ids AS text[])) AS e "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)


def _claim_postgres(session: Session, group: str, ids: list[str]) -> set[str]:
    # ON CONFLICT DO NOTHING waits for a concurrent uncommitted insert of the
    # same key and skips the row if that transaction commits (inserts it if
    # it rolls back), so RETURNING lists exactly the rows this one inserted.
    params = {"group": group, "ids": ids, "now": _utcnow()}
    return set(session.execute(_CLAIM_POSTGRES, params).scalars())


def _present(session: Session, group: str, ids: Sequence[str]) -> set[str]:
    stmt = sa.select(_INBOX.c.event_id).where(
        _INBOX.c.consumer_group == group, _INBOX.c.event_id.in_(ids)
    )
    return set(session.execute(stmt).scalars())


def _claim_mysql(session: Session, group: str, ids: list[str]) -> set[str]:
    """MySQL has no RETURNING, and INSERT IGNORE only reports how many rows it inserted.

    1. A plain (consistent, non-locking) SELECT of the ids already claimed.
       Under InnoDB's default REPEATABLE READ this also fixes the
       transaction's read view, if no earlier read did.
    2. ``INSERT IGNORE`` of the others, one statement. A row a concurrent
       transaction inserted but has not committed makes it wait; once that
       one commits the row is a duplicate and is skipped.
    3. If the insert count equals the number tried (the usual case), they
       are all ours. Otherwise a concurrent claimer committed some of them
       after our read view was taken: a consistent read now shows our own
       inserts but not rows committed after the view, and step 1 left out
       everything visible in the view, so it returns exactly our rows.

    Step 3 is only sound under REPEATABLE READ (under READ COMMITTED the
    read would show the other claimer's rows as if they were ours), so a
    lower level raises :class:`ClaimConflict` instead of guessing; the
    transaction rolls back having processed nothing and is run again.
    """
    existing = _present(session, group, ids)
    candidates = [i for i in ids if i not in existing]
    if not candidates:
        return set()
    stmt = sa.insert(_INBOX).prefix_with("IGNORE").values(_rows(group, candidates))
    result = cast("sa.CursorResult[Any]", session.execute(stmt))
    if result.rowcount == len(candidates):
        return set(candidates)
    level = session.connection().get_isolation_level()
    if level != "REPEATABLE READ":
        raise ClaimConflict(
            f"concurrent claim of the same events under {level}; run the transaction again"
        )
    return _present(session, group, candidates)


def _process(
    sessionmaker: sessionmaker[Session], group: str, event_ids: Sequence[str], fn: Handler
) -> set[str]:
    with sessionmaker() as session, session.begin():
        new_ids = claim_events(session, group, event_ids)
        if new_ids:
            fn(session, new_ids)
    return new_ids


def _worth_retrying(exc: Exception) -> bool:
    return isinstance(exc, ClaimConflict) or is_retryable_conflict(exc)


def process_once(
    sessionmaker: sessionmaker[Session],
    group: str,
    event_ids: Sequence[str],
    fn: Handler,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
) -> set[str]:
    """Run ``fn(session, new_ids)`` for the ids ``group`` has not processed yet, exactly once.

    The inbox rows and whatever ``fn`` writes through ``session`` commit in
    one transaction: if ``fn`` raises, nothing is recorded and a redelivery
    processes the events again. ``fn`` is not called when every id was
    processed before. Returns the new ids (empty: all were duplicates).

    A transaction that loses a race with a concurrent one (deadlock victim,
    serialization failure, :class:`ClaimConflict`) was undone entirely, so
    it is run again, up to ``attempts`` times in all. ``fn`` must therefore
    keep its effects inside the transaction.
    """
    attempt = 1
    while True:
        try:
            return _process(sessionmaker, group, event_ids, fn)
        except Exception as exc:
            if attempt >= attempts or not _worth_retrying(exc):
                raise
            log.info("inbox transaction of %s lost a race (%s), running it again", group, exc)
            attempt += 1


async def aprocess_once(
    sessionmaker: sessionmaker[Session],
    group: str,
    event_ids: Sequence[str],
    fn: Handler,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
) -> set[str]:
    """:func:`process_once` from async code: the blocking database work runs in a thread.

    ``asyncio.to_thread`` copies the context, so the caller's current span
    (and any SQLAlchemy instrumentation under it) follows into the thread.
    """
    return await asyncio.to_thread(
        process_once, sessionmaker, group, event_ids, fn, attempts=attempts
    )


def purge_processed(
    session: Session, older_than: timedelta, group: str | None = None, now: datetime | None = None
) -> int:
    """Delete inbox rows older than ``older_than`` (of one ``group``, or all); returns how many.

    Choose ``older_than`` well beyond the longest time an event can still be
    redelivered (stream retention, DLQ replays): after its row is gone, a
    redelivered event would be processed again.
    """
    cutoff = (now or _utcnow()) - older_than
    stmt = sa.delete(_INBOX).where(_INBOX.c.processed_at < cutoff)
    if group is not None:
        stmt = stmt.where(_INBOX.c.consumer_group == group)
    result = cast("sa.CursorResult[Any]", session.execute(stmt))
    return int(result.rowcount)
