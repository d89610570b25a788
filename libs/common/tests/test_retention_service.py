"""The retention pass inside a service: the ``retention`` verb and its ``--dry-run``, and
only the lease holder trimming."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tributary.cli import main
from tributary.config import load_settings
from tributary.keys import Keys
from tributary.metrics import Metrics
from tributary.service import Components, Resources, _stop_all, _tasks, started
from tributary_testing.sample_service import SERVICE, STREAM, SampleSettings, metadata
from tributary_testing.waiting import await_until

DAY_MS = 86_400_000


@pytest.fixture
def sample_env(
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    postgres_url: str,
    pg_schema: str,
    pg_engine: Engine,
    keys: Keys,
) -> Keys:
    for name, value in {
        "REDIS_URL": redis_url,
        "DATABASE_URL": postgres_url,
        "DB_SCHEMA": pg_schema,
        "STREAM_PREFIX": keys.prefix,
        "HTTP_PORT": "0",
    }.items():
        monkeypatch.setenv(name, value)
    metadata.create_all(pg_engine)  # the sample service's inbox and effects
    return keys


async def add_old_dead_letters(redis: aioredis.Redis, keys: Keys, n: int, age_days: int) -> None:
    at = int(time.time() * 1000) - age_days * DAY_MS
    for seq in range(n):
        await redis.xadd(keys.dlq(STREAM), {"n": str(seq)}, id=f"{at}-{seq}")


def add_inbox_rows(engine: Engine, ages_days: list[int]) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO inbox (consumer_group, event_id, processed_at) VALUES (:g, :e, :t)"
            ),
            [
                {"g": "sample", "e": f"e{i}", "t": now - timedelta(days=age)}
                for i, age in enumerate(ages_days)
            ],
        )


def table_rows(out: str) -> dict[str, list[str]]:
    return {line.split()[1]: line.split() for line in out.splitlines()[1:]}


def test_the_retention_verb_shows_each_store_and_dry_run_removes_nothing(
    sample_env: Keys,
    redis_url: str,
    pg_engine: Engine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def setup() -> None:
        redis = aioredis.Redis.from_url(redis_url)
        try:
            await add_old_dead_letters(redis, sample_env, 3, age_days=8)
            await redis.xadd(sample_env.dlq(STREAM), {"n": "young"})
        finally:
            await redis.aclose()

    asyncio.run(setup())
    add_inbox_rows(pg_engine, [10, 9, 1])

    assert main(SERVICE, ["retention", "--dry-run"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:2] == ["store", "name"]
    assert header[-2:] == ["would", "remove"]
    rows = table_rows(out)
    assert rows[f"{STREAM}.dlq"][:4] == ["stream", f"{STREAM}.dlq", "7d/10000", "4"]
    assert rows[f"{STREAM}.dlq"][-1] == "3"
    assert rows["inbox"][:3] == ["table", "inbox", "7d"]
    assert rows["inbox"][-1] == "2"
    with pg_engine.connect() as conn:  # a dry run removes nothing
        assert conn.execute(sa.text("SELECT count(*) FROM inbox")).scalar_one() == 3

    assert main(SERVICE, ["retention"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[-1] == "removed"
    rows = table_rows(out)
    assert rows[f"{STREAM}.dlq"][3] == "1"  # what is left
    assert rows[f"{STREAM}.dlq"][-1] == "3"
    assert rows["inbox"][-1] == "2"
    with pg_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM inbox")).scalar_one() == 1


def last_pass(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("tributary_retention_last_pass_timestamp_seconds") or 0


async def test_only_the_lease_holder_runs_the_retention_pass(
    sample_env: Keys, redis_client: aioredis.Redis
) -> None:
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        replicas = []
        for name in ("replica-a", "replica-b"):
            settings = load_settings(
                SampleSettings, consumer_name=name, retention_interval_seconds=0.05
            )
            service = SERVICE.configured(settings)  # DB_SCHEMA: the test's own schema
            replicas.append(await stack.enter_async_context(started(service, settings)))
        tasks = [task for res, parts in replicas for task in _tasks(res, parts, stop)]
        try:
            await _two_rounds_removed_by_one(replicas, sample_env, redis_client)
        finally:
            stop.set()
            await _stop_all(tasks, 10)


async def _two_rounds_removed_by_one(
    replicas: list[tuple[Resources[Any], Components[Any]]],
    sample_env: Keys,
    redis_client: aioredis.Redis,
) -> None:
    for _ in range(2):  # two rounds of old dead letters, both removed by the leader
        await add_old_dead_letters(redis_client, sample_env, 5, age_days=8)

        async def removed() -> bool:
            return int(await redis_client.xlen(sample_env.dlq(STREAM))) == 0

        await await_until(removed, what="old dead letters removed")
    passes = [last_pass(res.metrics) for res, _ in replicas]
    assert sorted(p > 0 for p in passes) == [False, True], passes
    leader = passes.index(max(passes))
    held = [
        res.metrics.registry.get_sample_value("tributary_lease_held", {"lease": "sample:retention"})
        for res, _ in replicas
    ]
    assert held[leader] == 1
    assert held[1 - leader] == 0
