"""Writing one batch of counters: an overwrite upsert plus ``usage.aggregated`` events.

One statement per batch does everything in the database, in the caller's
transaction. The rows arrive as arrays (``unnest``) or through ``COPY`` into
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

Then, for each row written, an outbox row carrying a ``usage.aggregated``
event is inserted, with the previous value.

The lookup and the writes see the same snapshot, and the date's advisory
lock keeps other runs out, so the previous value is exact. The one race
left is inside a run: two batches written at the same time that both hold
a key (SSCAN may return a member twice). Then the plain ``INSERT`` of the
second fails on the primary key once the first commits, and the second is
written again with the upsert (a new statement, a new snapshot): it sees
the first batch's row, so an unchanged value is not published twice.

Events are built in SQL rather than with :func:`tributary.outbox.add` because
a first run of a busy day changes every row: a million events made one by one
in Python would cost more than the whole aggregation. The row has exactly the
layout :func:`tributary.events.encode` gives (tests decode the published
entries with the catalog's registry, and compare ``data`` with the catalog
model's JSON): a UUIDv7 id (:func:`_uuid7_ids`), ``time`` of the batch, and
the ``traceparent`` of the batch's ``send usage.aggregated`` span. The text
around the per-row values is made in Python once per batch
(:class:`_EventText`), so that each row costs one ``concat()`` of a few
pieces: the outbox row is the widest thing a first run writes, and building
it was a good part of its cost. For the same reason names are escaped for
JSON in SQL only in the rare batch that has a name needing it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from itertools import chain
from typing import Any

import psycopg
from opentelemetry.trace import SpanKind, Tracer
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aggregation.config import WriteMethod
from tributary import catalog
from tributary.events import SPEC_VERSION, utc_now_rfc3339
from tributary.tracing import MESSAGING_SYSTEM, format_traceparent

EVENT_TYPE = "usage.aggregated"
STREAM = catalog.USAGE_AGGREGATED

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

# A name inside ``data``, which is itself a JSON string in the flat hash: a JSON string
# (to_json escapes it) escaped again. Most batches need no escaping at all (see
# _EventText.of): their names go in as they are, between quotes the pieces carry.
_ESCAPED_NAME = "replace(replace(to_json({0})::text, '\\', '\\\\'), '\"', '\\\"')"
_PLAIN_NAME = "{0}"
# The outbox row's ``fields``: the batch's pieces (_EventText) around each row's values.
_FIELDS = (
    "concat(%(head)s::text, c.id, %(before_merchant)s::text, {merchant}, "
    "%(before_metric)s::text, {metric}, %(before_value)s::text, c.metric_value, "
    "%(before_previous)s::text, coalesce(c.previous::text, 'null'), %(tail)s::text)"
)

# The outbox rows of {rows} (merchant_id, metric, metric_value, previous).
_EVENTS = """
events AS (
    INSERT INTO outbox (stream, event_id, fields, created_at)
    SELECT %(stream)s, c.id, {fields}, %(now)s
    FROM (
        -- UUIDv7s: the batch's milliseconds and random bits, then a counter from a
        -- random start (RFC 9562, 6.2); 12 hex digits, the start leaves room for the count
        SELECT *, %(id_head)s::text || to_hex(%(id_start)s::bigint + row_number() OVER ()) AS id
        FROM {rows} WHERE %(publish)s
    ) AS c
)"""

# -> (rows inserted, rows inserted or updated)
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
),{events}
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM changed)
"""

# -> (rows inserted, rows inserted); fails on the primary key if a row exists. The rows
# are read where they are each time (a CTE would copy them once more).
_INSERT = """
WITH inserted AS (
    INSERT INTO merchant_usage (merchant_id, usage_date, metric, metric_value, updated_at, run_id)
    SELECT merchant_id, %(date)s::date, metric, metric_value, %(now)s, %(run_id)s
    FROM ({source}) AS i
),{events}
SELECT count(*), count(*) FROM ({source}) AS i
"""


def _statement(new: bool, copy: bool, escape: bool) -> str:
    """The statement for a batch of only new rows (or not), staged with COPY (or arrays),
    with names that need escaping (or not)."""
    source = _FROM_STAGE if copy else _FROM_ARRAYS
    name = _ESCAPED_NAME if escape else _PLAIN_NAME
    fields = _FIELDS.format(merchant=name.format("c.merchant_id"), metric=name.format("c.metric"))
    rows = f"(SELECT *, NULL::bigint AS previous FROM ({source}) AS i) AS i" if new else "changed"
    events = _EVENTS.format(fields=fields, rows=rows)
    return (_INSERT if new else _UPSERT).format(source=source, events=events)


#: (only new rows, COPY staging, names need escaping) -> the statement
_STATEMENTS = {
    (new, copy, escape): _statement(new, copy, escape)
    for new in (False, True)
    for copy in (False, True)
    for escape in (False, True)
}
#: characters JSON escapes (the rest of a name is copied as it is)
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')
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


def _escaped(text: str) -> str:
    """``text`` as it reads inside a JSON string (without the quotes)."""
    return json.dumps(text)[1:-1]


def _uuid7_ids() -> tuple[str, int]:
    """The first 24 characters of a batch's UUIDv7s and where their last 12 start counting.

    48 bits of Unix milliseconds, version 7, 12 random bits, the variant and 14
    random bits; then 48 bits counting up from a random start in [2**44, 2**44 +
    2**47): 12 hex digits for any batch (fewer than 2**20 rows).
    """
    ms = f"{time.time_ns() // 1_000_000 & (1 << 48) - 1:012x}"
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68 & 0xFFF
    rand_b = 0x8000 | rand >> 54 & 0x3FFF  # RFC 9562 variant (0b10), 14 random bits
    start = 1 << 44 | rand & (1 << 47) - 1
    return f"{ms[:8]}-{ms[8:]}-7{rand_a:03x}-{rand_b:04x}-", start


@dataclass(frozen=True, slots=True)
class _EventText:
    """The text of a batch's outbox ``fields`` around each row's id and values."""

    #: every event id of the batch starts so, and ends in 12 hex digits counting from
    #: id_start
    id_head: str
    id_start: int
    head: str
    before_merchant: str
    before_metric: str
    before_value: str
    before_previous: str
    tail: str

    @classmethod
    def of(
        cls, envelope: dict[str, str], day: date, final: bool, *, plain_names: bool
    ) -> _EventText:
        """``envelope``: the attributes every event of the batch shares (no id, no data).

        ``plain_names``: the batch's names need no escaping, the pieces quote them.
        """
        id_head, id_start = _uuid7_ids()
        quote = '"' if plain_names else ""
        return cls(
            id_head=id_head,
            id_start=id_start,
            head=json.dumps(envelope, separators=(",", ":"))[:-1] + ',"id":"',
            before_merchant='","data":"' + _escaped('{"merchant_id":' + quote),
            before_metric=_escaped(f'{quote},"date":"{day.isoformat()}","metric":{quote}'),
            before_value=_escaped(quote + ',"value":'),
            before_previous=_escaped(',"previous":'),
            tail=_escaped(f',"final":{"true" if final else "false"}}}') + '"}',
        )


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
        params: dict[str, Any] = {
            "date": target.day,
            "now": now,
            "run_id": target.run_id,
            "publish": target.publish,
            "stream": STREAM,
        }
        copy = self.uses_copy(len(rows))
        if copy:
            self._stage(conn, rows)
        else:
            params["merchants"] = [merchant for merchant, _ in rows]
            params["metrics"] = [metric for _, metric in rows]
            params["values"] = list(rows.values())
        escape = _NEEDS_ESCAPE.search("".join(chain.from_iterable(rows))) is not None
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
            text = _EventText.of(
                self._envelope(span.get_span_context()),
                target.day,
                target.final,
                plain_names=not escape,
            )
            params.update(asdict(text))
            counts = self._insert_new(conn, params, copy, escape) if target.hint.new_rows else None
            if counts is None:
                counts = self._upsert(conn, params, copy, escape)
            inserted, changed = counts
            target.hint.new_rows = inserted == len(rows)
            events = changed if target.publish else 0
            span.set_attribute("messaging.batch.message_count", events)
        finally:
            span.end()
        return WriteResult(written=len(rows), changed=changed, events=events)

    @staticmethod
    def _insert_new(
        conn: Connection, params: dict[str, Any], copy: bool, escape: bool
    ) -> tuple[int, int] | None:
        """The batch as rows the date does not have; None (and nothing written) if it has one."""
        try:
            with conn.begin_nested():
                inserted, changed = conn.exec_driver_sql(
                    _STATEMENTS[(True, copy, escape)], params
                ).one()
        except DBAPIError as exc:
            if not _row_exists(exc):
                raise
            return None
        return int(inserted), int(changed)

    @staticmethod
    def _upsert(
        conn: Connection, params: dict[str, Any], copy: bool, escape: bool
    ) -> tuple[int, int]:
        sql = _STATEMENTS[(False, copy, escape)]
        for attempt in range(1, _INSERT_RACES + 1):
            try:
                with conn.begin_nested():
                    inserted, changed = conn.exec_driver_sql(sql, params).one()
                return int(inserted), int(changed)
            except DBAPIError as exc:
                # another batch inserted one of the rows since this statement's snapshot
                if attempt == _INSERT_RACES or not _row_exists(exc):
                    raise
        raise AssertionError("unreachable")

    def _envelope(self, span_context: Any) -> dict[str, str]:
        """The event attributes a batch shares."""
        fields = {
            "type": EVENT_TYPE,
            "source": self._source,
            "time": utc_now_rfc3339(),
            "specversion": SPEC_VERSION,
            "v": self._version,
        }
        if span_context.is_valid:
            fields["traceparent"] = format_traceparent(span_context)
        return fields

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
