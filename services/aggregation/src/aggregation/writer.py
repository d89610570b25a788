"""Writing one batch of counters: an overwrite upsert plus ``usage.aggregated`` events.

One statement per batch does everything in the database, in one transaction:

1. the rows arrive as arrays (``unnest``) or through ``COPY`` into a temporary
   staging table (faster for big batches);
2. ``INSERT ... ON CONFLICT DO UPDATE SET metric_value = EXCLUDED.metric_value``
   writes the absolute value read from Redis, so repeating a run never adds
   anything twice; rows whose value did not change are not touched at all,
   which keeps hourly re-runs cheap;
3. for each row the upsert changed, an outbox row carrying a
   ``usage.aggregated`` event is inserted, with the previous value.

Before the upsert every row's stored value is looked up by primary key, and
unchanged rows are dropped there: ``ON CONFLICT DO UPDATE ... WHERE`` alone
would still lock (and so write) every conflicting row, which made re-runs
of an unchanged day cost nearly as much as the first run. The lookup and the
upsert see the same snapshot, and the date's advisory lock keeps other runs
out, so the previous value is exact; the upsert's own ``WHERE`` stays as the
guard it is.

Events are built in SQL rather than with :func:`tributary.outbox.add` because
a first run of a busy day changes every row: a million events made one by one
in Python would cost more than the whole aggregation. The row has exactly the
layout :func:`tributary.events.encode` gives (tests decode the published
entries with the catalog's registry): a UUIDv7 id made from
``clock_timestamp()`` and ``gen_random_uuid()``, ``time`` of the batch, and the
``traceparent`` of the batch's ``send usage.aggregated`` span.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from opentelemetry.trace import SpanKind, Tracer
from sqlalchemy.engine import Connection

from aggregation.config import WriteMethod
from tributary import catalog
from tributary.events import SPEC_VERSION, utc_now_rfc3339
from tributary.tracing import MESSAGING_SYSTEM, format_traceparent

EVENT_TYPE = "usage.aggregated"
STREAM = catalog.USAGE_AGGREGATED

#: (merchant_id, metric) -> value, for one date
Rows = Mapping[tuple[str, str], int]

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

# A UUIDv7: 48 bits of Unix milliseconds over a random (v4) UUID, version bits set to 7.
_UUID7 = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing "
    "substring(int8send((extract(epoch from clock_timestamp()) * 1000)::bigint) from 3) "
    "from 1 for 6), 52, 1), 53, 1), 'hex')::uuid::text"
)
# The payload, as UsageAggregated.model_dump_json() would write it (key order aside).
_DATA = (
    "'{\"merchant_id\":' || to_json(c.merchant_id)::text"
    ' || \',"date":"\' || %(date_text)s || \'","metric":\' || to_json(c.metric)::text'
    " || ',\"value\":' || c.metric_value"
    " || ',\"previous\":' || coalesce(c.previous::text, 'null')"
    " || ',\"final\":' || %(final)s || '}'"
)
# The envelope: %(envelope)s holds the attributes every event of the batch shares.
_FIELDS = (
    '%(envelope)s || \',"id":"\' || c.id || \'","data":\' || to_json(' + _DATA + ")::text || '}'"
)

_UPSERT = """
WITH input AS ({source}),
compared AS (
    -- the stored value of each row, looked up by primary key (a scalar subquery is never
    -- turned into a join, so this stays an index probe per row however big the table);
    -- rows whose value is unchanged go no further: not even a row lock
    SELECT i.merchant_id, i.metric, i.metric_value,
        (SELECT o.metric_value FROM merchant_usage AS o
         WHERE o.merchant_id = i.merchant_id AND o.usage_date = %(date)s::date
           AND o.metric = i.metric) AS previous
    FROM input AS i
),
changed AS (
    INSERT INTO merchant_usage AS u
        (merchant_id, usage_date, metric, metric_value, updated_at, run_id)
    SELECT merchant_id, %(date)s::date, metric, metric_value, %(now)s, %(run_id)s
    FROM compared WHERE previous IS DISTINCT FROM metric_value
    ON CONFLICT (merchant_id, usage_date, metric) DO UPDATE
        SET metric_value = EXCLUDED.metric_value,
            updated_at = EXCLUDED.updated_at,
            run_id = EXCLUDED.run_id
        WHERE u.metric_value IS DISTINCT FROM EXCLUDED.metric_value
    RETURNING merchant_id, metric, metric_value
),
events AS (
    INSERT INTO outbox (stream, event_id, fields, created_at)
    SELECT %(stream)s, c.id, {fields}, %(now)s
    FROM (
        SELECT ch.merchant_id, ch.metric, ch.metric_value, cmp.previous, {uuid7} AS id
        FROM changed AS ch JOIN compared AS cmp USING (merchant_id, metric)
        WHERE %(publish)s
    ) AS c
    RETURNING 1
)
SELECT (SELECT count(*) FROM changed), (SELECT count(*) FROM events)
"""

_SQL_FROM_ARRAYS = _UPSERT.format(source=_FROM_ARRAYS, fields=_FIELDS, uuid7=_UUID7)
_SQL_FROM_STAGE = _UPSERT.format(source=_FROM_STAGE, fields=_FIELDS, uuid7=_UUID7)


@dataclass(frozen=True, slots=True)
class BatchTarget:
    """Where a batch goes: its run, its date, and what its events say."""

    run_id: int
    day: date
    final: bool = False
    publish: bool = True


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
            "date_text": target.day.isoformat(),
            "now": now,
            "run_id": target.run_id,
            "publish": target.publish,
            "final": "true" if target.final else "false",
            "stream": STREAM,
        }
        if self.uses_copy(len(rows)):
            self._stage(conn, rows)
            sql = _SQL_FROM_STAGE
        else:
            params["merchants"] = [merchant for merchant, _ in rows]
            params["metrics"] = [metric for _, metric in rows]
            params["values"] = list(rows.values())
            sql = _SQL_FROM_ARRAYS
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
            params["envelope"] = self._envelope(span.get_span_context())
            changed, events = conn.exec_driver_sql(sql, params).one()
            span.set_attribute("messaging.batch.message_count", int(events))
        finally:
            span.end()
        return WriteResult(written=len(rows), changed=int(changed), events=int(events))

    def _envelope(self, span_context: Any) -> str:
        """The event attributes a batch shares, as the start of a JSON object."""
        fields = {
            "type": EVENT_TYPE,
            "source": self._source,
            "time": utc_now_rfc3339(),
            "specversion": SPEC_VERSION,
            "v": self._version,
        }
        if span_context.is_valid:
            fields["traceparent"] = format_traceparent(span_context)
        return json.dumps(fields, separators=(",", ":"))[:-1]

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
