"""Writing one batch of counters: an overwrite upsert plus ``usage.aggregated`` events.

One statement per batch writes the rows, in the caller's transaction. The
rows arrive as arrays (``unnest``) or through ``COPY`` into
a temporary staging table (faster for big batches); then either

* **the upsert** (:data:`_UPSERT`): every row's stored value is looked up by
  primary key, and rows whose value did not change go no further (not even a
  row lock), which keeps hourly re-runs cheap; rows the date does not have
  yet are written with a plain ``INSERT``, rows whose value changed with
  ``INSERT ... ON CONFLICT DO UPDATE SET metric_value =
  EXCLUDED.metric_value``: the absolute value read from Redis, so repeating
  a run never adds anything twice; or
* **the insert** (:data:`_INSERT`), for a batch of rows the date does not
  have yet, as on a first run: a plain ``INSERT`` of every row, no lookup.
  It is tried while the run's batches keep being new (:class:`RunHint`), in a
  savepoint: a row the date has after all fails it on the primary key, and
  the batch is written again with the upsert. On a first run the lookup is a
  quarter of the database's work, and a failed try costs a re-run little: it
  stops at the first row it finds.

Then, for the rows written, ``usage.aggregated`` events with the previous
value are queued in the outbox in the same transaction, as rendered pages
(:mod:`aggregation.publishing`): a page per 1,000 rows holding their values,
the relay makes the events. The rows a batch wrote and their previous
values come back from the statement (the upsert returns them); a batch of
only new rows wrote them all, with no previous value.

The lookup and the writes see the same snapshot, and the date's advisory
lock keeps other runs out, so the previous value is exact. The one race
left is inside a run: two batches written at the same time that both hold
a key (SSCAN may return a member twice). Then the plain ``INSERT`` of the
second fails on the primary key once the first commits, and the second is
written again with the upsert (a new statement, a new snapshot): it sees
the first batch's row, so an unchanged value is not published twice.

Events are pages rather than an :func:`tributary.outbox.add` call per event
because a first run of a busy day changes every row: a million events made
one by one in Python, or a million outbox rows, would cost more than the
whole aggregation. Each batch has one ``send usage.aggregated`` producer
span whose context all its events carry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import psycopg
from opentelemetry.trace import SpanKind, Tracer
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aggregation.config import WriteMethod
from aggregation.publishing import EVENT_TYPE, STREAM, Columns, Shared, queue_usage_aggregated
from tributary.events import utc_now_rfc3339
from tributary.tracing import MESSAGING_SYSTEM, format_traceparent

#: (merchant_id, metric) -> value, for one date
Rows = Mapping[tuple[str, str], int]

_PRIMARY_KEY = "pk_merchant_usage"
_UNIQUE_VIOLATION = "23505"

_STAGE = "usage_stage"
_CREATE_STAGE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} "
    "(merchant_id text NOT NULL, metric text NOT NULL, metric_value bigint NOT NULL) "
    "ON COMMIT DELETE ROWS"
)
_FROM_ARRAYS = (
    "SELECT * FROM unnest(%(merchants)s::text[], %(metrics)s::text[], %(values)s::bigint[])"
    " AS t(merchant_id, metric, metric_value)"
)
_FROM_STAGE = f"SELECT merchant_id, metric, metric_value FROM {_STAGE}"

# -> (rows inserted, rows inserted or updated), or with {changed_rows} the rows inserted
# or updated (merchant_id, metric, metric_value, previous: NULL for an inserted row)
_UPSERT = """
WITH input AS ({source}),
compared AS (
    -- the stored value of each row, looked up by primary key (a scalar subquery is never
    -- turned into a join, so this stays an index probe per row however big the table)
    SELECT i.merchant_id, i.metric, i.metric_value,
        (SELECT o.metric_value FROM merchant_usage AS o
         WHERE o.merchant_id = i.merchant_id AND o.usage_date = %(date)s::date
           AND o.metric = i.metric) AS previous
    FROM input AS i
),
inserted AS (
    INSERT INTO merchant_usage (merchant_id, usage_date, metric, metric_value, updated_at, run_id)
    SELECT merchant_id, %(date)s::date, metric, metric_value, %(now)s, %(run_id)s
    FROM compared WHERE previous IS NULL
    RETURNING merchant_id, metric, metric_value, NULL::bigint AS previous
),
updated AS (
    INSERT INTO merchant_usage AS u
        (merchant_id, usage_date, metric, metric_value, updated_at, run_id)
    SELECT merchant_id, %(date)s::date, metric, metric_value, %(now)s, %(run_id)s
    FROM compared WHERE previous <> metric_value
    ON CONFLICT (merchant_id, usage_date, metric) DO UPDATE
        SET metric_value = EXCLUDED.metric_value,
            updated_at = EXCLUDED.updated_at,
            run_id = EXCLUDED.run_id
        WHERE u.metric_value IS DISTINCT FROM EXCLUDED.metric_value
    RETURNING merchant_id, metric, metric_value
),
changed AS (
    SELECT * FROM inserted
    UNION ALL
    SELECT u.merchant_id, u.metric, u.metric_value, cmp.previous
    FROM updated AS u JOIN compared AS cmp USING (merchant_id, metric)
)
{result}
"""
_COUNTS = "SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM changed)"
_CHANGED_ROWS = "SELECT merchant_id, metric, metric_value, previous FROM changed"

# Fails on the primary key if a row exists; its row count is the rows inserted.
_INSERT = """
INSERT INTO merchant_usage (merchant_id, usage_date, metric, metric_value, updated_at, run_id)
SELECT merchant_id, %(date)s::date, metric, metric_value, %(now)s, %(run_id)s
FROM ({source}) AS i
"""

#: (only new rows, COPY staging, the changed rows wanted back) -> the statement
_STATEMENTS = {
    (new, copy, rows): (
        _INSERT.format(source=_FROM_STAGE if copy else _FROM_ARRAYS)
        if new
        else _UPSERT.format(
            source=_FROM_STAGE if copy else _FROM_ARRAYS,
            result=_CHANGED_ROWS if rows else _COUNTS,
        )
    )
    for new in (False, True)
    for copy in (False, True)
    for rows in (False, True)
}
#: statements of one batch that lose the race to insert a row to another batch
_INSERT_RACES = 3


def _row_exists(exc: BaseException) -> bool:
    """True when a plain ``INSERT`` failed on a row the date has (or another batch of the
    run has just committed)."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    if not isinstance(orig, psycopg.Error) or orig.sqlstate != _UNIQUE_VIOLATION:
        return False
    return orig.diag.constraint_name == _PRIMARY_KEY


@dataclass(slots=True)
class RunHint:
    """What a run's batches have found so far (its writers share it; a hint, no more)."""

    #: the last batch written had only rows the date did not have: try the next as such
    new_rows: bool = True


@dataclass(frozen=True, slots=True)
class BatchTarget:
    """Where a batch goes: its run, its date, and what its events say."""

    run_id: int
    day: date
    final: bool = False
    publish: bool = True
    hint: RunHint = field(default_factory=RunHint)


@dataclass(frozen=True, slots=True)
class WriteResult:
    written: int = 0
    changed: int = 0
    events: int = 0


@dataclass(frozen=True, slots=True)
class _Written:
    """What a statement did: rows inserted, rows inserted or updated, and those rows as
    columns (when asked for)."""

    inserted: int
    changed: int
    columns: Columns | None = None


class UsageWriter:
    """Upserts batches of one date's counters on a caller's connection (and transaction)."""

    def __init__(
        self,
        tracer: Tracer,
        source: str,
        method: WriteMethod = "auto",
        copy_threshold: int = 2_000,
        event_version: str = "1",
    ) -> None:
        self._tracer = tracer
        self._source = source
        self._method = method
        self._copy_threshold = copy_threshold
        self._version = event_version

    def uses_copy(self, size: int) -> bool:
        return self._method == "copy" or (self._method == "auto" and size >= self._copy_threshold)

    def upsert(
        self, conn: Connection, target: BatchTarget, rows: Rows, now: datetime
    ) -> WriteResult:
        """Write ``rows`` (already merged: one value per merchant and metric)."""
        if not rows:
            return WriteResult()
        params: dict[str, Any] = {"date": target.day, "now": now, "run_id": target.run_id}
        copy = self.uses_copy(len(rows))
        if copy:
            self._stage(conn, rows)
        else:
            params["merchants"] = [merchant for merchant, _ in rows]
            params["metrics"] = [metric for _, metric in rows]
            params["values"] = list(rows.values())
        span = self._tracer.start_span(
            f"send {STREAM}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.destination.name": STREAM,
                "messaging.operation.type": "send",
                "cloudevents.event_type": EVENT_TYPE,
            },
        )
        try:
            shared = self._shared(span.get_span_context(), target)
            written = self._insert_new(conn, params, copy) if target.hint.new_rows else None
            if written is None:
                written = self._upsert(conn, params, copy, target.publish)
            target.hint.new_rows = written.inserted == len(rows)
            events = 0
            if target.publish and written.changed:
                events = queue_usage_aggregated(conn, shared, written.columns or _columns(rows))
            span.set_attribute("messaging.batch.message_count", events)
        finally:
            span.end()
        return WriteResult(written=len(rows), changed=written.changed, events=events)

    @staticmethod
    def _insert_new(conn: Connection, params: dict[str, Any], copy: bool) -> _Written | None:
        """The batch as rows the date does not have; None (and nothing written) if it has one."""
        try:
            with conn.begin_nested():
                inserted = conn.exec_driver_sql(_STATEMENTS[(True, copy, False)], params).rowcount
        except DBAPIError as exc:
            if not _row_exists(exc):
                raise
            return None
        return _Written(inserted, inserted)

    @staticmethod
    def _upsert(conn: Connection, params: dict[str, Any], copy: bool, publish: bool) -> _Written:
        sql = _STATEMENTS[(False, copy, publish)]
        for attempt in range(1, _INSERT_RACES + 1):
            try:
                with conn.begin_nested():
                    result = conn.exec_driver_sql(sql, params)
                    if not publish:
                        inserted, changed = result.one()
                        return _Written(int(inserted), int(changed))
                    changed_rows = result.all()
                    columns: Columns = (
                        [row[0] for row in changed_rows],
                        [row[1] for row in changed_rows],
                        [row[2] for row in changed_rows],
                        [row[3] for row in changed_rows],
                    )
                    # an inserted row has no previous value
                    return _Written(columns[3].count(None), len(changed_rows), columns)
            except DBAPIError as exc:
                # another batch inserted one of the rows since this statement's snapshot
                if attempt == _INSERT_RACES or not _row_exists(exc):
                    raise
        raise AssertionError("unreachable")

    def _shared(self, span_context: Any, target: BatchTarget) -> Shared:
        """What the events of a batch share."""
        traceparent = format_traceparent(span_context) if span_context.is_valid else None
        return Shared(
            self._source,
            self._version,
            utc_now_rfc3339(),
            target.day.isoformat(),
            target.final,
            traceparent,
        )

    @staticmethod
    def _stage(conn: Connection, rows: Rows) -> None:
        """COPY (binary) the batch into the session's temporary staging table."""
        conn.exec_driver_sql(_CREATE_STAGE)
        raw: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
        with (
            raw.cursor() as cur,
            cur.copy(
                f"COPY {_STAGE} (merchant_id, metric, metric_value) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["text", "text", "int8"])
            for (merchant, metric), value in rows.items():
                copy.write_row((merchant, metric, value))


def _columns(rows: Rows) -> Columns:
    """The rows of a batch of only new rows, as the columns of their events."""
    merchants: Sequence[str] = [merchant for merchant, _ in rows]
    return merchants, [metric for _, metric in rows], list(rows.values()), [None] * len(rows)
