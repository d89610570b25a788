"""Aggregation throughput: one date of usage counters from Redis into PostgreSQL.

BENCH_KEYS counters (default 1,000,000) across BENCH_MERCHANTS merchants
(default 10,000) are written to Redis for one date, the way track_usage
writes them (counter + per-date index), then aggregated by the service's own
wiring (open_resources + assemble, default settings: index+scan discovery,
COPY staging, two writers, usage.aggregated events through the outbox). The
floor is a plain binary COPY of the same rows into a table of the same shape
(same primary key), measured in the same run.

Prints one JSON object per measurement; the last line is the summary:
{"keys": ..., "seconds": ..., "keys_per_s": ..., "copy_rows_per_s": ...}
Env: REDIS_URL, DATABASE_URL (defaults: the local services), BENCH_KEYS,
BENCH_MERCHANTS, and any AGGREGATION_* setting.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import redis
import sqlalchemy as sa

from aggregation.config import AggregationSettings
from aggregation.keys import KeyFormat
from aggregation.service import SERVICE, assemble
from tributary.db import make_engine
from tributary.service import close_resources, migrate, open_resources

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
KEYS = int(os.environ.get("BENCH_KEYS", "1000000"))
MERCHANTS = int(os.environ.get("BENCH_MERCHANTS", "10000"))
DAY = date(2025, 3, 10)
PIPELINE = 10_000


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def counters() -> list[tuple[str, str, int]]:
    """(merchant, metric, value): KEYS counters spread evenly over MERCHANTS merchants."""
    per_merchant = max(1, KEYS // MERCHANTS)
    return [(f"merchant-{n % MERCHANTS:05d}", f"metric-{n // MERCHANTS:03d}", n * 7 % 100_003)
            for n in range(min(KEYS, per_merchant * MERCHANTS))]  # fmt: skip


def populate(client: redis.Redis, keys: KeyFormat, rows: list[tuple[str, str, int]]) -> None:
    index = keys.index(DAY)
    for start in range(0, len(rows), PIPELINE):
        pipe = client.pipeline(transaction=False)
        names = [keys.counter(m, DAY, k) for m, k, _ in rows[start : start + PIPELINE]]
        pipe.mset({name: value for name, (_, _, value) in
                   zip(names, rows[start : start + PIPELINE], strict=True)})  # fmt: skip
        pipe.sadd(index, *names)
        pipe.execute()


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


def copy_floor(schema: str, rows: list[tuple[str, str, int]]) -> float:
    """Seconds for a plain binary COPY of ``rows`` into a table shaped like merchant_usage."""
    url = sa.make_url(DATABASE_URL).set(drivername="postgresql")
    now = datetime.now(UTC)
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        conn.execute(f'CREATE TABLE "{schema}".copy_floor (LIKE "{schema}".merchant_usage '
                     "INCLUDING ALL)")  # fmt: skip
        conn.commit()
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(
                f'COPY "{schema}".copy_floor (merchant_id, usage_date, metric, metric_value, '
                "updated_at) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["text", "date", "text", "int8", "timestamptz"])
            for merchant, metric, value in rows:
                copy.write_row((merchant, DAY, metric, value, now))
        conn.commit()
        return time.perf_counter() - started


async def aggregate(schema: str, prefix: str) -> list[dict[str, Any]]:
    settings = AggregationSettings(
        redis_url=REDIS_URL,
        database_url=DATABASE_URL,
        stream_prefix=prefix,
        log_level="WARNING",
        db_schema=schema,
    )
    service = SERVICE.configured(settings)
    res = await open_resources(service, settings)
    measured = []
    try:
        migrate(service, res.engine)
        app = assemble(res)
        try:
            for label in ("first run", "re-run, nothing changed"):
                started = time.perf_counter()
                result = await app.aggregator.aggregate(DAY)
                seconds = time.perf_counter() - started
                assert result.status == "succeeded", result
                measured.append({"run": label, "keys": result.keys_read,
                                 "rows_changed": result.rows_changed, "events": result.events,
                                 "seconds": round(seconds, 2),
                                 "keys_per_s": round(result.keys_read / seconds)})  # fmt: skip
        finally:
            await app.aclose()
    finally:
        await close_resources(res)
    return measured


def main() -> None:
    schema, prefix = f"bench_agg_{uuid.uuid4().hex[:8]}", f"bench:{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(REDIS_URL)
    admin = make_engine(DATABASE_URL, pool_size=1)
    rows = counters()
    try:
        started = time.perf_counter()
        populate(client, KeyFormat(prefix), rows)
        emit(step="populate redis", keys=len(rows), seconds=round(time.perf_counter() - started, 2))
        runs = asyncio.run(aggregate(schema, prefix))
        for run in runs:
            emit(step="aggregate", **run)
        copy_seconds = copy_floor(schema, rows)
        copy_rate = len(rows) / copy_seconds
        emit(step="plain COPY (floor)", rows=len(rows), seconds=round(copy_seconds, 2),
             rows_per_s=round(copy_rate))  # fmt: skip
        first = runs[0]
        emit(keys=first["keys"], seconds=first["seconds"], keys_per_s=first["keys_per_s"],
             copy_rows_per_s=round(copy_rate),
             share_of_copy=round(first["keys_per_s"] / copy_rate, 2))  # fmt: skip
    finally:
        delete_prefix(client, prefix)
        client.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
