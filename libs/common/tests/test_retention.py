"""Retention (tributary.retention): streams trimmed to their catalog policies without
dropping an unacknowledged entry, inbox and outbox purged in batches, the figures on
/metrics, a lagging group warned about, the ``retention`` verb, the lease holder only."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tributary import catalog
from tributary.config import load_settings
from tributary.db import make_sessionmaker
from tributary.errors import ConfigError
from tributary.inbox import inbox_table, process_once
from tributary.keys import Keys
from tributary.metrics import Metrics
from tributary.outbox import outbox_table
from tributary.retention.policy import StreamRetention
from tributary.retention.streams import group_floors
from tributary.retention.sweep import RetentionOptions, RetentionSweep, StreamTarget
from tributary.retention.tables import TableRetention
from tributary.streams import client
from tributary.streams.ids import next_id
from tributary_testing.sample_service import SampleSettings

HOUR_MS = 3_600_000


async def no_sleep(seconds: float) -> None:
    return None


def sweep(
    redis: aioredis.Redis,
    engine: Engine,
    streams: list[StreamTarget],
    metrics: Metrics | None = None,
    **options: object,
) -> RetentionSweep:
    return RetentionSweep(
        redis,
        engine,
        metrics,
        streams,
        options=RetentionOptions(**options),  # type: ignore[arg-type]
        sleep=no_sleep,
    )


async def add_at(redis: aioredis.Redis, key: str, ms: int, n: int) -> list[str]:
    """``n`` entries with ids at the time ``ms`` (as if written then)."""
    ids = [f"{ms}-{seq}" for seq in range(n)]
    async with redis.pipeline(transaction=False) as pipe:
        for entry_id in ids:
            pipe.xadd(key, {"n": entry_id}, id=entry_id)
        await pipe.execute()
    return ids


async def ids_of(redis: aioredis.Redis, key: str) -> list[str]:
    return [entry_id for entry_id, _ in await client.entries(redis, key)]


def gauge(metrics: Metrics, sample: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(sample, labels)
    return 0.0 if value is None else value


# -- streams ------------------------------------------------------------------------


def test_every_stream_of_the_catalog_has_a_policy_and_a_trimming_service() -> None:
    written = {stream for stream, _ in catalog.EVENT_TYPES.values()}
    assert written == set(catalog.STREAMS)
    services = {"snapshot", "gmail_fetch", "traffic_sync", "alert", "aggregation"}
    for spec in catalog.STREAMS.values():
        assert spec.trimmed_by in services
        assert spec.retention.max_age_s is not None  # every stream ages out
    assert catalog.DLQ_RETENTION.max_age_s
    assert catalog.DLQ_RETENTION.max_len


@pytest.mark.parametrize("stream", [*catalog.STREAMS, "traffic.flushed.dlq"])
async def test_a_pass_removes_acknowledged_entries_past_the_age_and_never_an_unacknowledged_one(
    redis_client: aioredis.Redis, keys: Keys, pg_engine: Engine, stream: str
) -> None:
    policy = catalog.STREAMS[stream].retention if stream in catalog.STREAMS else None
    policy = policy or catalog.DLQ_RETENTION
    assert policy.max_age_s is not None
    key = keys.stream(stream)
    past = int(time.time() * 1000) - int(policy.max_age_s * 1000) - HOUR_MS
    old = await add_at(redis_client, key, past, 5)
    young = [str(await redis_client.xadd(key, {"n": "young"})) for _ in range(3)]
    # the group read everything and acked all but old[3]
    await redis_client.xgroup_create(key, "g", id="0")
    await redis_client.xreadgroup("g", "c", {key: ">"}, count=100)
    await redis_client.xack(key, "g", *old[:3], old[4], *young)
    metrics = Metrics()
    retention = sweep(redis_client, pg_engine, [StreamTarget(stream, key, policy)], metrics)

    report = await retention.run_pass()
    assert await ids_of(redis_client, key) == [*old[3:], *young]  # old[3] holds old[4] back
    assert report.streams[0].removed == 3
    assert report.streams[0].held_back == 1  # the group's backlog: one pending entry
    assert gauge(metrics, "tributary_stream_length", stream=stream) == 5
    assert gauge(metrics, "tributary_stream_oldest_entry_age_seconds", stream=stream) > 3600
    removed = {"store": "stream", "name": stream}
    assert gauge(metrics, "tributary_retention_removed_total", **removed) == 3

    await redis_client.xack(key, "g", old[3])
    await retention.run_pass()
    assert await ids_of(redis_client, key) == young  # young entries stay, acked or not
    assert gauge(metrics, "tributary_retention_removed_total", **removed) == 5
    assert gauge(metrics, "tributary_stream_held_back_entries", stream=stream) == 0


async def test_a_stream_without_groups_is_trimmed_by_age_and_a_dlq_by_length_too(
    redis_client: aioredis.Redis, keys: Keys, pg_engine: Engine
) -> None:
    now = int(time.time() * 1000)
    events, dlq = keys.stream(catalog.GMAIL_JOB_EVENTS), keys.dlq(catalog.GMAIL_JOBS)
    await add_at(redis_client, events, now - 4 * 24 * HOUR_MS, 300)  # past 3 days
    kept = await add_at(redis_client, events, now - HOUR_MS, 2)
    await add_at(redis_client, dlq, now - 8 * 24 * HOUR_MS, 2)  # past 7 days
    dead = await add_at(redis_client, dlq, now - HOUR_MS, 30)
    targets = [
        StreamTarget("gmail.job-events", events, StreamRetention(3 * 86400)),
        StreamTarget("gmail.jobs.dlq", dlq, StreamRetention(7 * 86400, 20)),
    ]
    report = await sweep(redis_client, pg_engine, targets, slice_entries=100).run_pass()
    assert await ids_of(redis_client, events) == kept
    assert await ids_of(redis_client, dlq) == dead[-20:]
    assert [s.removed for s in report.streams] == [300, 12]


async def test_a_lagging_group_is_warned_about_and_trimmed_past_only_when_allowed(
    redis_client: aioredis.Redis,
    keys: Keys,
    pg_engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = keys.stream(catalog.TRAFFIC_FLUSHED)
    await redis_client.xgroup_create(key, "alert", id="$", mkstream=True)
    # the group stopped acking: everything written since waits for it, 50 entries of it
    # past the 6 hours
    await add_at(redis_client, key, int(time.time() * 1000) - 7 * HOUR_MS, 50)
    await redis_client.xadd(key, {"n": "young"})
    target = StreamTarget(
        "traffic.flushed", key, catalog.STREAMS[key[len(keys.prefix) :]].retention
    )
    metrics = Metrics()
    lagging = {"stream": "traffic.flushed", "group": "alert"}
    with caplog.at_level(logging.WARNING, logger="tributary.retention.sweep"):
        report = await sweep(
            redis_client, pg_engine, [target], metrics, lag_warn_entries=10
        ).run_pass()
    assert report.streams[0].removed == 0
    assert await redis_client.xlen(key) == 51
    assert report.streams[0].held_back == 51
    assert report.streams[0].lagging_group == "alert"
    assert gauge(metrics, "tributary_retention_lagging_group", **lagging) == 1
    assert gauge(metrics, "tributary_stream_held_back_entries", stream="traffic.flushed") == 51
    assert "group alert holds back 51 entries of traffic.flushed" in caplog.text

    allowed = sweep(
        redis_client, pg_engine, [target], metrics, lag_warn_entries=10, trim_past_lagging=True
    )
    report = await allowed.run_pass()
    assert report.streams[0].dropped == 50
    assert await redis_client.xlen(key) == 1
    dropped = "tributary_retention_dropped_unacknowledged_total"
    assert gauge(metrics, dropped, stream="traffic.flushed") == 50
    assert gauge(metrics, "tributary_retention_lagging_group", **lagging) == 0


def test_stream_retention_is_overridden_by_a_setting_and_bad_values_are_refused() -> None:
    settings = load_settings(SampleSettings, stream_retention="traffic.flushed=2h/1000,dlq=6d/5")
    options = RetentionOptions.of(settings)
    assert options.inbox_age == timedelta(days=7)
    from tributary.retention.sweep import stream_targets

    targets = {
        t.stream: t.policy
        for t in stream_targets("traffic_sync", [], Keys(), settings.stream_retention)
    }
    assert targets["traffic.flushed"] == StreamRetention(7200, 1000)
    assert targets["traffic.flushed.dlq"] == StreamRetention(6 * 86400, 5)
    for bad, said in [
        ("traffic.flushd=2h", "unknown stream 'traffic.flushd'"),
        ("alerts=2 weeks", "bad age"),
        ("alerts=2h/many", "bad length"),
        ("dlq=30d", "must cover the DLQ age (30d)"),
    ]:
        with pytest.raises(ConfigError, match=r"STREAM_RETENTION|INBOX_RETENTION_HOURS") as err:
            load_settings(SampleSettings, stream_retention=bad)
        assert said in str(err.value)


# -- tables -------------------------------------------------------------------------


@pytest.fixture
def tables(database: tuple[Engine, str | None]) -> Iterator[Engine]:
    engine, _ = database
    metadata = sa.MetaData()
    inbox_table(metadata)
    outbox_table(metadata)
    sa.Table(
        "effects",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False),
    )
    metadata.create_all(engine)
    yield engine
    metadata.drop_all(engine)


def _rows(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


async def test_inbox_and_outbox_rows_past_their_age_go_in_batches_and_younger_ones_stay(
    tables: Engine, redis_client: aioredis.Redis
) -> None:
    engine, now = tables, datetime.now(UTC)
    old, young = now - timedelta(days=8), now - timedelta(days=6)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO inbox (consumer_group, event_id, processed_at) VALUES (:g, :e, :t)"
            ),
            [{"g": "g", "e": f"old-{i}", "t": old} for i in range(250)]
            + [{"g": "g", "e": "young", "t": young}],
        )
        conn.execute(
            sa.text(
                "INSERT INTO outbox (stream, event_id, format, fields, created_at, published_at) "
                "VALUES ('s', :e, 'entry', '{}', :t, :p)"
            ),
            [
                {"e": "published-long-ago", "t": old, "p": now - timedelta(days=2)},
                {"e": "published-now", "t": old, "p": now},
                {"e": "never-published", "t": old, "p": None},
            ],
        )
    metrics = Metrics()
    retention = sweep(redis_client, engine, [], metrics, batch_rows=100)
    report = await retention.run_pass()

    assert {t.table: t.removed for t in report.tables} == {"inbox": 250, "outbox": 1}
    assert _rows(engine, "SELECT count(*) FROM inbox") == 1
    with engine.connect() as conn:
        left = conn.execute(sa.text("SELECT event_id FROM outbox ORDER BY id")).scalars().all()
    assert left == ["published-now", "never-published"]
    assert gauge(metrics, "tributary_retention_removed_total", store="table", name="inbox") == 250
    assert gauge(metrics, "tributary_table_rows", table="inbox") >= 0
    age = gauge(metrics, "tributary_table_oldest_row_age_seconds", table="inbox")
    assert 5.9 * 86400 < age < 6.1 * 86400

    # an event younger than the inbox's age, redelivered: still no second effect
    def effect(session: Session, new_ids: set[str]) -> None:
        for event_id in new_ids:
            session.execute(sa.text("INSERT INTO effects (event_id) VALUES (:e)"), {"e": event_id})

    assert process_once(make_sessionmaker(engine), "g", ["young"], effect) == set()
    assert _rows(engine, "SELECT count(*) FROM effects") == 0


async def test_a_registered_table_is_purged_by_its_own_age_and_condition(
    tables: Engine, redis_client: aioredis.Redis
) -> None:
    engine, now = tables, datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO inbox (consumer_group, event_id, processed_at) VALUES (:g, :e, :t)"
            ),
            [
                {"g": "done", "e": "a", "t": now - timedelta(hours=3)},
                {"g": "open", "e": "b", "t": now - timedelta(hours=3)},
            ],
        )
    # the inbox, as a stand-in for a service's own table: rows of group "done" after 1 h
    done = TableRetention(
        "inbox", "processed_at", timedelta(hours=1), where="consumer_group = 'done'"
    )
    retention = RetentionSweep(redis_client, engine, None, [], [done], sleep=no_sleep)
    retention._tables = [done]  # the registered table alone
    await retention.run_pass()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT event_id FROM inbox")).scalars().all() == ["b"]


async def test_a_purge_hook_replaces_the_delete_and_a_clock_the_system_time(
    tables: Engine, redis_client: aioredis.Redis
) -> None:
    """A partitioned table drops partitions instead (snapshot); a service on a clock of
    its own has its table's cut computed from that clock."""
    engine, system_now = tables, datetime.now(UTC)
    service_now = system_now + timedelta(days=10)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO inbox (consumer_group, event_id, processed_at) VALUES ('g', 'a', :t)"
            ),
            {"t": system_now},
        )
    calls: list[tuple[datetime, int]] = []

    def purge(engine: Engine, cut: datetime, batch_rows: int) -> int:
        calls.append((cut, batch_rows))
        return 7

    policy = TableRetention(
        "inbox", "processed_at", timedelta(days=1), purge=purge, clock=lambda: service_now
    )
    retention = RetentionSweep(
        redis_client, engine, None, [], [policy], RetentionOptions(batch_rows=123), sleep=no_sleep
    )
    retention._tables = [policy]
    report = await retention.run_pass()
    assert calls == [(service_now - timedelta(days=1), 123)]
    assert report.tables[0].removed == 7
    assert report.tables[0].oldest_age_s == pytest.approx(10 * 86_400, abs=60)
    with engine.connect() as conn:  # the hook removed nothing: the row is still there
        assert conn.execute(sa.text("SELECT count(*) FROM inbox")).scalar_one() == 1


async def test_a_stream_nobody_wrote_yet_is_passed_over(
    redis_client: aioredis.Redis, keys: Keys, pg_engine: Engine
) -> None:
    target = StreamTarget("alerts", keys.stream("alerts"), catalog.STREAMS["alerts"].retention)
    report = await sweep(redis_client, pg_engine, [target]).run_pass()
    assert (report.streams[0].length, report.streams[0].removed) == (0, 0)
    assert await redis_client.exists(target.key) == 0


async def test_a_group_that_acks_between_the_info_and_the_pending_summary_has_a_floor(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    """XINFO GROUPS says an entry is pending, the consumer acks it, XPENDING then finds
    none (min None): the floor is the entry after the last delivered one (the soak hit
    ``int('None')`` here)."""
    key = keys.stream("alerts")
    ids = await add_at(redis_client, key, int(time.time() * 1000), 3)
    await redis_client.xgroup_create(key, "g", id="0")
    await redis_client.xreadgroup("g", "c", {key: ">"}, count=3)

    class AcksInBetween(aioredis.Redis):
        async def xinfo_groups(self, name: str) -> Any:  # type: ignore[override]
            groups = await super().xinfo_groups(name)
            await super().xack(name, "g", *ids)
            return groups

    racing = AcksInBetween(connection_pool=redis_client.connection_pool)
    floors = await group_floors(racing, key)
    assert [(f.group, f.floor) for f in floors] == [("g", next_id(ids[-1]))]
