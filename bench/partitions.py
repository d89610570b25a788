"""A day of snapshot's raw snapshots removed two ways: batched DELETEs from a plain table
(what the library does for an unpartitioned table) against dropping the day's partition
(what snapshot's retention does since ``snapshots`` is partitioned by day).

Both tables are made by snapshot's migrations in a throwaway schema: ``snapshots`` as it
is, and ``snapshots_plain``, a plain copy with the same indexes. The same day of rows
(``BENCH_PARTITION_ROWS``, default 1,000,000, spread over 10,000 keys) goes into each,
then:
- ``delete_s``: ``delete_batch`` of ``RETENTION_BATCH_ROWS`` (5,000) rows at a time until
  the day is gone, as a pass at full speed does;
- ``drop_s``: ``partitions.drop_expired`` (the servers' counts lowered, one read of the
  partition, then DROP TABLE).
Prints one JSON object. Env: DATABASE_URL, BENCH_PARTITION_ROWS.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from snapshot import partitions
from snapshot.service import SERVICE
from tributary.db import ensure_schema, make_engine
from tributary.migrate import run_migrations
from tributary.retention.tables import TableRetention, delete_batch

DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
ROWS = int(os.environ.get("BENCH_PARTITION_ROWS", "1000000"))
KEYS = 10_000
BATCH_ROWS = 5000
_FILL = (
    "INSERT INTO {table} (key_ref, collected_at, reading_bytes, delta_bytes, source) "
    "SELECT k.id, :day + make_interval(secs => (n % 86000)), n, 1, 'interval' "
    "FROM generate_series(0, :rows - 1) n "
    "JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS i FROM access_keys) k "
    "ON k.i = n % :keys"
)


def fill(engine: sa.Engine, day: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO servers (id, name, api_url_encrypted, api_url_sha256, endpoint, "
            "cert_sha256, created_at, snapshot_count) "
            "VALUES ('bench', 'bench', 'x', 'h', 'e', 'c', :day, :rows)"
        ), {"day": day, "rows": ROWS})  # fmt: skip
        conn.execute(sa.text(
            "INSERT INTO access_keys (server_id, key_id, first_seen_at, last_seen_at, "
            "window_epoch) SELECT 'bench', k::text, :day, :day, :day "
            "FROM generate_series(1, :keys) k"
        ), {"day": day, "keys": KEYS})  # fmt: skip
        partitions.create_days(conn, [day.date()])
        conn.execute(sa.text("CREATE TABLE snapshots_plain (LIKE snapshots INCLUDING ALL)"))
        for table in ("snapshots", "snapshots_plain"):
            conn.execute(
                sa.text(_FILL.format(table=table)), {"day": day, "rows": ROWS, "keys": KEYS}
            )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(sa.text("VACUUM ANALYZE snapshots_plain"))
        conn.execute(sa.text("VACUUM ANALYZE snapshots"))


def main() -> None:
    schema = f"bench_partitions_{uuid.uuid4().hex[:8]}"
    admin = make_engine(DATABASE_URL)
    ensure_schema(admin, schema)
    engine = make_engine(DATABASE_URL, schema=schema)
    try:
        assert SERVICE.migrations is not None
        run_migrations(engine, SERVICE.migrations, schema, SERVICE.version_table)
        day = datetime.combine(
            datetime.now(UTC).date() - timedelta(days=40), datetime.min.time(), UTC
        )
        started = time.monotonic()
        fill(engine, day)
        fill_s = time.monotonic() - started
        cut = day + timedelta(days=1)
        plain = TableRetention("snapshots_plain", "collected_at", timedelta(days=30))
        started, deleted = time.monotonic(), 0
        while True:
            n = delete_batch(engine, plain, cut, BATCH_ROWS)
            deleted += n
            if n < BATCH_ROWS:
                break
        delete_s = time.monotonic() - started
        started = time.monotonic()
        dropped = partitions.drop_expired(engine, cut, BATCH_ROWS)
        drop_s = time.monotonic() - started
        print(json.dumps({
            "rows": ROWS, "fill_s": round(fill_s, 1),
            "deleted": deleted, "delete_s": round(delete_s, 2),
            "delete_s_per_million": round(delete_s / deleted * 1e6, 2),
            "dropped": dropped, "drop_s": round(drop_s, 3),
            "drop_s_per_million": round(drop_s / dropped * 1e6, 3),
        }))  # fmt: skip
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
