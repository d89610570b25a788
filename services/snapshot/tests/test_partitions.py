"""``snapshots`` partitioned by day: writes across a day boundary, retention by dropping
partitions (through the library's pass) with the servers' counts and every query still
right, and the upgrade that turns the old table into the legacy partition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

from snapshot import analytics, partitions
from snapshot import repository as repo
from snapshot.maintenance import ROLLED_UNTIL, rebuild_totals
from snapshot.service import SERVICE
from tributary.migrate import alembic_config, run_migrations
from tributary.service import retention_sweep

from .harness import MB, Harness

HOUR = 3600.0


def partition_rows(harness: Harness) -> dict[str, int]:
    rows = harness.rows(
        "SELECT tableoid::regclass::text AS p, count(*) AS n FROM snapshots GROUP BY 1"
    )
    return {r.p.split(".")[-1]: r.n for r in rows}


def totals(harness: Harness) -> dict[str, tuple[int, int, int]]:
    with harness.res.sessions() as session:
        top = {p: analytics.top_consumers(session, p, 100) for p in analytics.PERIODS}
    return {
        r["key_id"]: tuple(next(x["bytes"] for x in top[p] if x["key_id"] == r["key_id"])
                           for p in analytics.PERIODS)
        for r in top["30d"]
    }  # fmt: skip


async def test_collections_across_a_day_boundary_land_in_two_partitions(
    harness: Harness,
) -> None:
    server = await harness.sim.add_server()
    server.create_key()
    server_id = harness.register(server)
    # START is a midnight: 23:30 the day before, then 00:30
    harness.advance(-HOUR / 2)
    await harness.collect(server_id)
    harness.advance(HOUR)
    server.add_traffic("0", MB)
    await harness.collect(server_id)
    day = harness.now().date()
    assert partition_rows(harness) == {
        partitions.partition_name(day - timedelta(days=1)): 1,
        partitions.partition_name(day): 1,
    }
    assert [r.delta_bytes for r in harness.deltas(server_id, "0")] == [0, MB]


async def test_the_lease_holder_makes_partitions_a_week_ahead(harness: Harness) -> None:
    harness.maintain()
    with harness.res.engine.connect() as conn:
        names = {p.name for p in partitions.partitions(conn)}
    today = harness.now().date()
    wanted = {partitions.partition_name(today + timedelta(days=n)) for n in range(8)}
    assert wanted <= names
    harness.maintain()  # again: nothing new, no error
    with harness.res.engine.connect() as conn:
        assert {p.name for p in partitions.partitions(conn)} == names


async def test_retention_drops_old_partitions_and_queries_stay_right(harness: Harness) -> None:
    server = await harness.sim.add_server()
    for _ in range(3):
        server.create_key()
    server_id = harness.register(server)
    days = 34
    for _ in range(days * 4):  # every 6 hours for 34 days
        for key in ("0", "1", "2"):
            server.add_traffic(key, (int(key) + 1) * MB)
        await harness.collect(server_id)
        harness.advance(6 * HOUR)
        if harness.now().hour == 0:
            harness.maintain()
    harness.advance(HOUR)
    harness.maintain()
    before = totals(harness)
    with harness.res.sessions() as session:
        summary_before = analytics.summary(session, harness.now())
    sweep = retention_sweep(harness.res, harness.parts)
    report = await sweep.run_pass()
    removed = {t.table: t.removed for t in report.tables}
    now = harness.now()
    cut = now - timedelta(days=harness.settings.raw_retention_days)
    left = harness.rows("SELECT count(*) AS n, min(collected_at) AS oldest FROM snapshots")[0]
    # whole days went: what is left starts at the first midnight after the cut
    first_kept = partitions.day_start(cut.date())
    assert left.oldest == first_kept
    assert removed["snapshots"] == days * 4 * 3 - left.n > 0
    with harness.res.engine.connect() as conn:
        assert all(p.upper is None or p.upper > cut for p in partitions.partitions(conn))
    # the queries: totals come from the window totals (unchanged) and agree with a
    # rebuild from the rollups and what raw rows are left; counts follow the drop
    assert totals(harness) == before
    assert before["2"][2] == 3 * before["0"][2] > 0
    with harness.res.sessions.begin() as session:
        rebuild_totals(session, now)
    assert totals(harness) == before
    with harness.res.sessions() as session:
        summary = analytics.summary(session, now)
    assert summary["snapshot_count"] == left.n == harness.server_row(server_id).snapshot_count
    assert summary_before["snapshot_count"] - summary["snapshot_count"] == removed["snapshots"]
    deltas = harness.deltas(server_id, "1")
    assert deltas[0].collected_at == left.oldest
    assert {d.delta_bytes for d in deltas} == {2 * MB}
    # a second pass has nothing to drop; rollups are kept (400 days)
    again = await sweep.run_pass()
    assert {t.table: t.removed for t in again.tables}["snapshots"] == 0
    assert harness.rows("SELECT count(*) AS n FROM usage_hourly")[0].n > left.n // 3


async def test_nothing_is_dropped_that_is_not_rolled_up(harness: Harness) -> None:
    server = await harness.sim.add_server()
    server.create_key()
    server_id = harness.register(server)
    for _ in range(3):
        await harness.collect(server_id)
        harness.advance(24 * HOUR)
    harness.advance(40 * 24 * HOUR)  # everything is past 30 days, nothing rolled up
    with harness.res.sessions.begin() as session:
        repo.set_cursor(session, ROLLED_UNTIL, datetime.fromtimestamp(0, UTC))
    report = await retention_sweep(harness.res, harness.parts).run_pass()
    assert {t.table: t.removed for t in report.tables}["snapshots"] == 0
    assert harness.rows("SELECT count(*) AS n FROM snapshots")[0].n == 3


# -- the upgrade ----------------------------------------------------------------------------


def _migrate_to(engine: Engine, schema: str, revision: str, direction: str = "upgrade") -> None:
    assert SERVICE.migrations is not None
    with engine.begin() as conn:
        config = alembic_config(SERVICE.migrations, conn, schema, SERVICE.version_table)
        getattr(command, direction)(config, revision)


@pytest.fixture
def old_layout(pg_engine: Engine, pg_schema: str) -> Engine:
    """The schema at 0002 (one plain snapshots table) with 30 days of rows in it."""
    _migrate_to(pg_engine, pg_schema, "0002")
    now = datetime.now(UTC)
    with pg_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO servers (id, name, api_url_encrypted, api_url_sha256, endpoint, "
                "cert_sha256, created_at) VALUES ('s1', 's1', 'x', 'h', 'e', 'c', :now)"
            ),
            {"now": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO access_keys (server_id, key_id, first_seen_at, last_seen_at, "
                "window_epoch) VALUES ('s1', '0', :now, :now, :now)"
            ),
            {"now": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO snapshots (key_ref, collected_at, reading_bytes, delta_bytes, source) "
                "SELECT (SELECT id FROM access_keys), :now - make_interval(hours => h), h, 1, "
                "'interval' FROM generate_series(0, 30 * 24 - 1) h"
            ),
            {"now": now},
        )
        conn.execute(sa.text("UPDATE servers SET snapshot_count = 720"))
    return pg_engine


def test_the_upgrade_keeps_every_row_in_the_legacy_partition(
    old_layout: Engine, pg_schema: str
) -> None:
    engine = old_layout
    before = _rows(engine)
    assert SERVICE.migrations is not None
    run_migrations(engine, SERVICE.migrations, pg_schema, SERVICE.version_table)
    assert _rows(engine) == before
    with engine.connect() as conn:
        found = partitions.partitions(conn)
    assert found[0].name == partitions.LEGACY
    assert found[0].lower is None
    assert len(found) == 9  # the legacy partition and eight days from tomorrow
    now = datetime.now(UTC)
    with engine.begin() as conn:  # ids go on; a row of tomorrow lands in its day
        partitions.cover(conn, [now + timedelta(days=1)])
        new_id = conn.execute(sa.text(
            "INSERT INTO snapshots (key_ref, collected_at, reading_bytes, delta_bytes, source) "
            "SELECT id, :at, 0, 0, 'new' FROM access_keys RETURNING id"
        ), {"at": now + timedelta(days=1)}).scalar_one()  # fmt: skip
    assert new_id > max(r[0] for r in before)
    # retention deletes the legacy partition's expired rows, counts follow
    removed = partitions.drop_expired(engine, now - timedelta(hours=239, minutes=30), 100)
    assert removed == 20 * 24
    with engine.connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM snapshots")).scalar_one()
        counted = conn.execute(sa.text("SELECT snapshot_count FROM servers")).scalar_one()
    assert left == 720 - removed + 1
    assert counted == 720 - removed
    # once everything in it is past the cut, it goes whole
    partitions.drop_expired(engine, partitions.day_start(now.date()) + timedelta(days=1), 100)
    with engine.connect() as conn:
        assert partitions.LEGACY not in {p.name for p in partitions.partitions(conn)}
    _migrate_to(engine, pg_schema, "0002", "downgrade")
    assert [r[0] for r in _rows(engine)] == [new_id]


def _rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT id, key_ref, collected_at, reading_bytes, delta_bytes, source "
            "FROM snapshots ORDER BY id"
        )))  # fmt: skip
