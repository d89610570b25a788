"""The key guarantees of one run, against the real Redis and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from aggregation import repository as repo
from aggregation.aggregator import BUSY
from aggregation.keys import KeyFormat
from aggregation.reader import Batch
from aggregation.tracking import track_usage

from .conftest import DAY, AppFactory, counters, outbox_events, redis_values, rows_of

pytestmark = pytest.mark.asyncio

SAMPLE = {(f"m{m}", metric): m * 100 + i for m in range(5) for i, metric in
          enumerate(["api_calls", "emails", "sms"])}  # fmt: skip


@pytest.mark.parametrize("method", ["unnest", "copy"])
async def test_rerunning_a_date_gives_identical_rows(
    make_app: AppFactory, redis_client: aioredis.Redis, key_format: KeyFormat, method: str
) -> None:
    await counters(redis_client, key_format, SAMPLE)
    res, app = await make_app(write_method=method)
    results = [await app.aggregator.aggregate(DAY) for _ in range(3)]
    assert rows_of(res.engine) == SAMPLE
    assert [r.status for r in results] == ["succeeded"] * 3
    assert [r.keys_read for r in results] == [len(SAMPLE)] * 3
    assert [r.rows_written for r in results] == [len(SAMPLE)] * 3
    # only the first run changed anything; the others found every value already there
    assert [r.rows_changed for r in results] == [len(SAMPLE), 0, 0]
    assert len(outbox_events(res.engine)) == len(SAMPLE)


async def test_increments_during_a_run_are_captured_by_the_next_run(
    make_app: AppFactory, redis_client: aioredis.Redis, key_format: KeyFormat
) -> None:
    values = {(f"m{n:03d}", "calls"): n for n in range(60)}
    await counters(redis_client, key_format, values)
    batches = 0

    async def increment_everything(batch: Batch) -> None:
        # after the first batch is read (not yet written), every counter moves on:
        # some of them were read before, the others will be read after
        nonlocal batches
        batches += 1
        if batches == 1:
            for merchant, metric in values:
                await redis_client.incrby(key_format.counter(merchant, DAY, metric), 7)

    res, app = await make_app(after_read=increment_everything, batch_size=20, scan_count=20)
    first = await app.aggregator.aggregate(DAY)
    assert first.status == "succeeded"
    stored = rows_of(res.engine)
    moved = {k: v + 7 for k, v in values.items()}
    assert all(stored[k] in (values[k], moved[k]) for k in values)
    assert sum(stored[k] == values[k] for k in values) == 20, "the first batch kept its values"
    await app.aggregator.aggregate(DAY)
    assert rows_of(res.engine) == moved == await redis_values(redis_client, key_format)
    third = await app.aggregator.aggregate(DAY)
    assert rows_of(res.engine) == moved
    assert third.rows_changed == 0


async def test_a_merchant_run_writes_only_that_merchant(
    make_app: AppFactory, redis_client: aioredis.Redis, key_format: KeyFormat
) -> None:
    await counters(redis_client, key_format, SAMPLE)
    await counters(redis_client, key_format, SAMPLE, DAY + timedelta(days=1))
    # a look-alike: its name starts like m1's but it is another merchant
    await counters(redis_client, key_format, {("m1x", "api_calls"): 5})
    res, app = await make_app()
    result = await app.aggregator.aggregate(DAY, "m1")
    assert rows_of(res.engine) == {k: v for k, v in SAMPLE.items() if k[0] == "m1"}
    assert rows_of(res.engine, DAY + timedelta(days=1)) == {}
    assert result.keys_read == 3
    with res.sessions() as session:
        assert repo.get_day(session, DAY) is None, "a merchant run is not the date's run"


async def test_malformed_keys_are_recorded_and_skipped(
    make_app: AppFactory, redis_client: aioredis.Redis, key_format: KeyFormat
) -> None:
    await counters(redis_client, key_format, SAMPLE)
    p, index = key_format.counter_prefix, key_format.index(DAY)
    bad = {
        f"{p}x:notadate:q": "1",  # a buggy writer put it in the date's index
        f"{p}m1:{DAY}:words": "abc",
        f"{p}m2:{DAY}:floats": "1.5",
        f"{p}m3:{DAY}:huge": "99999999999999999999",
        f"{p}a:b:{DAY}:q": "4",
        f"{p}m4:{DAY}:": "4",
    }
    for key, value in bad.items():
        await redis_client.set(key, value)
    await redis_client.sadd(index, f"{p}x:notadate:q", key_format.counter("m0", DAY, "sms"))
    await redis_client.set(f"{p}m0:{DAY - timedelta(days=1)}:calls", "3")
    await redis_client.sadd(index, f"{p}m0:{DAY - timedelta(days=1)}:calls")
    # bytes that are not UTF-8, and a NUL, in merchant ids
    await redis_client.set(f"{p}caf\udce9:{DAY}:q".encode("utf-8", "surrogateescape"), "2")
    await redis_client.set(f"{p}nul\x00:{DAY}:q", "2")

    res, app = await make_app()
    result = await app.aggregator.aggregate(DAY)

    assert rows_of(res.engine) == SAMPLE
    assert result.status == "partial"
    assert result.errors == len(bad) + 3
    with res.sessions() as session:
        recorded = {m.key: m.reason for m in repo.list_run_errors(session, result.run_id or 0)}
        day = repo.get_day(session, DAY)
    assert recorded[f"{p}x:notadate:q"] == "key: 'notadate' is not a YYYY-MM-DD date"
    assert recorded[f"{p}m1:{DAY}:words"] == "value is not an integer"
    assert recorded[f"{p}m3:{DAY}:huge"] == "value does not fit a 64-bit integer"
    assert "expected usage:{merchantId}:{date}:{metricType}" in recorded[f"{p}a:b:{DAY}:q"]
    assert recorded[f"{p}m4:{DAY}:"] == "metric is empty"
    assert recorded[f"{p}m0:{DAY - timedelta(days=1)}:calls"].startswith("key belongs to")
    # stored printable: undecodable bytes and NUL as escapes
    assert "invalid UTF-8" in recorded[f"{p}caf\\xe9:{DAY}:q"]
    assert "invalid UTF-8" in recorded[f"{p}nul\\x00:{DAY}:q"]
    assert result.keys_read == len(SAMPLE) + len(bad) + 3
    assert day is not None
    assert day.errors == result.errors
    assert day.next_retry_at is not None


async def test_indexed_and_foreign_counters_are_each_read_once(
    make_app: AppFactory, redis_client: aioredis.Redis, key_format: KeyFormat
) -> None:
    for n in range(30):
        await track_usage(redis_client, f"m{n}", "calls", n + 1, DAY, prefix=key_format.prefix)
    await counters(redis_client, key_format, {("foreign", "calls"): 99})
    res, app = await make_app(batch_size=7, scan_count=10)
    result = await app.aggregator.aggregate(DAY)
    expected = {(f"m{n}", "calls"): n + 1 for n in range(30)} | {("foreign", "calls"): 99}
    assert rows_of(res.engine) == expected
    assert result.keys_read == 31, "keys in the index are not read again by the scan"

    _, index_only = await make_app(discovery="index")
    await redis_client.set(key_format.counter("foreign", DAY, "calls"), 100)
    await index_only.aggregator.aggregate(DAY)
    assert rows_of(res.engine)[("foreign", "calls")] == 99, "index-only runs do not scan"


async def test_rows_stay_when_their_counters_expire(
    make_app: AppFactory, redis_client: aioredis.Redis, key_format: KeyFormat
) -> None:
    await counters(redis_client, key_format, SAMPLE)
    res, app = await make_app()
    await app.aggregator.aggregate(DAY)
    await redis_client.delete(*[key_format.counter(m, DAY, k) for m, k in SAMPLE])
    again = await app.aggregator.aggregate(DAY)
    assert again.status == "succeeded"
    assert again.keys_read == 0
    assert rows_of(res.engine) == SAMPLE, "a missing counter is not a zero"


async def test_a_date_being_aggregated_elsewhere_is_busy(
    make_app: AppFactory, redis_client: aioredis.Redis, key_format: KeyFormat
) -> None:
    await counters(redis_client, key_format, SAMPLE)
    res, app = await make_app()
    with res.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as other:
        assert repo.try_lock_date(other, DAY)
        result = await app.aggregator.aggregate(DAY)
        assert result.status == BUSY
        assert result.run_id is None
        assert (await app.aggregator.aggregate(DAY + timedelta(days=1))).status == "succeeded"
        repo.unlock_date(other, DAY)
    assert rows_of(res.engine) == {}
    assert (await app.aggregator.aggregate(DAY)).status == "succeeded"
    assert rows_of(res.engine) == SAMPLE


async def test_a_run_left_running_by_a_dead_process_is_marked_failed(
    make_app: AppFactory, redis_client: aioredis.Redis, key_format: KeyFormat
) -> None:
    res, app = await make_app()
    with res.sessions.begin() as session:
        dead = repo.start_run(session, DAY, None, "schedule", app.aggregator._clock())
    result = await app.aggregator.aggregate(DAY)
    with res.sessions() as session:
        stale = repo.get_run(session, dead)
        latest = repo.get_run(session, result.run_id or 0)
    assert stale is not None
    assert stale.status == "failed"
    assert stale.error == repo.ABANDONED
    assert latest is not None
    assert latest.status == "succeeded"


async def test_duplicate_keys_in_one_batch_are_merged(
    make_app: AppFactory, redis_client: aioredis.Redis, key_format: KeyFormat
) -> None:
    # the same keys in the index and (through SSCAN repeating members) twice in a batch
    await counters(redis_client, key_format, SAMPLE)
    res, app = await make_app(write_method="unnest")
    names = [key_format.counter(m, DAY, k) for m, k in SAMPLE] * 2
    reader = app.aggregator._reader

    async def twice(day: object, merchant: object = None) -> object:
        yield names

    reader._discover = twice  # type: ignore[method-assign, assignment]
    result = await app.aggregator.aggregate(DAY)
    assert result.status == "succeeded"
    assert result.keys_read == 2 * len(SAMPLE)
    assert result.rows_written == len(SAMPLE)
    assert rows_of(res.engine) == SAMPLE


async def test_a_failing_run_is_recorded_as_failed_and_retried(
    make_app: AppFactory, redis_client: aioredis.Redis, key_format: KeyFormat
) -> None:
    await counters(redis_client, key_format, SAMPLE)
    res, app = await make_app(retry_base_seconds=60)
    with res.engine.begin() as conn:  # a column the upsert needs is gone
        conn.execute(sa.text("ALTER TABLE merchant_usage RENAME COLUMN run_id TO gone"))
    result = await app.aggregator.aggregate(DAY)
    assert result.status == "failed"
    assert result.error
    assert "run_id" in result.error
    with res.sessions() as session:
        day = repo.get_day(session, DAY)
    assert day is not None
    assert day.last_status == "failed"
    assert day.retry_attempts == 1
    assert day.next_retry_at == app.aggregator._clock() + timedelta(seconds=60)
    assert day.aggregated_at is None
    assert not day.final
