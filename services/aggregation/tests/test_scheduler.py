"""The schedule: today and yesterday every interval, finality after the grace period,
retries with backoff, and the switch that turns it off."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from aggregation import repository as repo
from aggregation.keys import KeyFormat
from aggregation.policy import RetryPolicy
from aggregation.service import build

from .conftest import AppFactory, Clock, counters, rows_of

pytestmark = pytest.mark.asyncio

TODAY = date(2025, 3, 10)
YESTERDAY = TODAY - timedelta(days=1)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


async def test_passes_cover_today_and_yesterday_until_yesterday_is_final(
    make_app: AppFactory, redis_client: aioredis.Redis, key_format: KeyFormat
) -> None:
    for day in (TODAY, YESTERDAY, TODAY - timedelta(days=2)):
        await counters(redis_client, key_format, {("m1", "calls"): day.day}, day)
    clock = Clock(at(TODAY, 1))
    res, app = await make_app(clock=clock, interval_seconds=3600)

    def day_state(day: date) -> repo.Day | None:
        with res.sessions() as session:
            return repo.get_day(session, day)

    first = await app.scheduler.tick()
    assert [(r.day, r.final) for r in first] == [(TODAY, False), (YESTERDAY, False)]
    assert rows_of(res.engine, TODAY - timedelta(days=2)) == {}, "older dates are not scheduled"

    clock.now = at(TODAY, 1, 30)
    assert await app.scheduler.tick() == [], "no pass before the interval is over"

    clock.now = at(TODAY, 2, 1)  # yesterday started 26 h ago: this run makes it final
    second = await app.scheduler.tick()
    assert [(r.day, r.final) for r in second] == [(TODAY, False), (YESTERDAY, True)]
    state = day_state(YESTERDAY)
    assert state is not None
    assert state.final
    assert state.finalized_at == clock.now

    clock.now = at(TODAY, 3, 5)
    assert [r.day for r in await app.scheduler.tick()] == [TODAY], "final dates are left alone"

    # the next day: yesterday is now TODAY, which becomes final at 02:00
    clock.now = at(TODAY + timedelta(days=1), 1)
    assert [r.day for r in await app.scheduler.tick()] == [TODAY + timedelta(days=1), TODAY]
    today_state = day_state(TODAY)
    assert today_state is not None
    assert not today_state.final


async def test_dates_left_unfinal_are_picked_up_within_the_lookback(
    make_app: AppFactory, redis_client: aioredis.Redis, key_format: KeyFormat
) -> None:
    old = TODAY - timedelta(days=4)
    await counters(redis_client, key_format, {("m1", "calls"): 3}, old)
    clock = Clock(at(old, 12))
    _, app = await make_app(clock=clock, lookback_days=7)
    await app.aggregator.aggregate(old)  # aggregated on the day itself: not final
    clock.now = at(TODAY, 12)
    ran = [(r.day, r.final) for r in await app.scheduler.tick()]
    assert ran == [(TODAY, False), (YESTERDAY, True), (old, True)]


async def test_partial_runs_are_retried_with_backoff(
    make_app: AppFactory, redis_client: aioredis.Redis, key_format: KeyFormat
) -> None:
    await counters(redis_client, key_format, {("m1", "calls"): 3}, TODAY)
    bad = key_format.counter("m1", TODAY, "broken")
    await redis_client.set(bad, "not a number")
    clock = Clock(at(TODAY, 12))
    policy = RetryPolicy(base_s=60, maximum_s=150, max_attempts=3)
    _, app = await make_app(
        clock=clock,
        interval_seconds=86_400,
        retry_base_seconds=policy.base_s,
        retry_max_seconds=policy.maximum_s,
        retry_max_attempts=policy.max_attempts,
    )
    first = await app.scheduler.tick()
    assert [(r.day, r.status) for r in first] == [(TODAY, "partial"), (YESTERDAY, "succeeded")]
    start = clock.now
    retries = []
    for seconds in (30, 60, 120, 150, 240, 300, 450, 600, 900):
        clock.now = start + timedelta(seconds=seconds)
        retries += [(seconds, r.day, r.status) for r in await app.scheduler.tick()]
    # due 60 s after the pass, then 120 s after that retry (at 180: run at the 240 tick),
    # then 150 s (capped) after it (390: run at 450); then the attempts are used up
    expected = [(60, TODAY, "partial"), (240, TODAY, "partial"), (450, TODAY, "partial")]
    assert retries == expected

    await redis_client.delete(bad)
    clock.now = start + timedelta(days=1, minutes=1)  # the next pass
    passed = {r.day: r.status for r in await app.scheduler.tick()}
    assert passed[TODAY] == "succeeded"
    with app.scheduler._sessions() as session:
        state = repo.get_day(session, TODAY)
    assert state is not None
    assert state.retry_attempts == 0
    assert state.next_retry_at is None


async def test_the_scheduler_is_leader_only_and_can_be_turned_off(
    make_app: AppFactory,
) -> None:
    res, _ = await make_app(interval_seconds=600, retry_base_seconds=30)
    parts = build(res)
    assert [(p.name, p.interval_s, p.leader_only) for p in parts.periodic] == [
        ("scheduler", 30, True)
    ]
    assert parts.uses_outbox
    for hook in parts.release:
        await hook()
    off, _ = await make_app(scheduler_enabled=False)
    assert build(off).periodic == []
