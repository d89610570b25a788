"""Redis Sentinel (REDIS_SENTINELS): the one client factory asks the sentinels for the
master and follows a failover, against a real master, replica and sentinel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from tributary.config import ServiceSettings, load_settings, parse_addresses
from tributary.errors import ConfigError
from tributary.redis_client import RedisTarget, connect
from tributary_testing.sentinel import MASTER_NAME, SentinelGroup

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    with SentinelGroup() as sentinels:
        yield sentinels


def target(group: SentinelGroup) -> RedisTarget:
    settings = ServiceSettings.model_validate({
        "REDIS_SENTINELS": f"127.0.0.1:{group.sentinel_port}",
        "REDIS_SENTINEL_MASTER": MASTER_NAME,
        "REDIS_URL": "redis://ignored:1/2",
    })  # fmt: skip
    return RedisTarget.of(settings)


async def _write_until_it_works(client: aioredis.Redis, key: str, value: str) -> int:
    """Write after a failover: a connection to the old master fails once (READONLY or
    reset), the next one asks the sentinel again. The attempts it took."""
    deadline = time.monotonic() + 30
    attempts = 0
    while True:
        attempts += 1
        try:
            await client.set(key, value)
            return attempts
        except (aioredis.ConnectionError, aioredis.ReadOnlyError, aioredis.TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def test_the_client_writes_to_the_master_and_follows_a_failover(group: SentinelGroup) -> None:
    async def before() -> None:
        client = connect(target(group))
        await client.set("k", "before")
        await client.xadd("events", {"n": "1"})
        assert await client.get("k") == "before"  # decoded replies, as from REDIS_URL
        await client.aclose()

    asyncio.run(before())
    first = group.master_port()
    direct = group.client(first)
    direct.select(2)
    assert direct.get("k") == "before"
    direct.close()

    async def across() -> int:
        client = connect(target(group))
        await client.set("k", "still the old master")
        await asyncio.to_thread(group.failover)
        attempts = await _write_until_it_works(client, "k", "after")
        await client.xadd("events", {"n": "2"})
        assert await client.xlen("events") == 2  # the replica had the first entry
        await client.aclose()
        return attempts

    attempts = asyncio.run(across())
    second = group.master_port()
    assert second != first
    promoted = group.client(second)
    promoted.select(2)
    assert promoted.get("k") == "after"
    promoted.close()
    assert attempts <= 3


def test_the_database_number_comes_from_redis_url(group: SentinelGroup) -> None:
    async def go() -> None:
        client = connect(target(group))
        await client.set("in-db-2", "yes")
        await client.aclose()

    asyncio.run(go())
    direct = group.client(group.master_port())
    direct.select(2)
    assert direct.get("in-db-2") == "yes"
    direct.close()


@pytest.mark.parametrize("value", ["127.0.0.1", "h:0", "h:99999", "h:x", ":6379"])
def test_bad_sentinel_addresses_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("REDIS_SENTINELS", value)
    with pytest.raises(ConfigError, match="REDIS_SENTINELS"):
        load_settings(ServiceSettings)


def test_addresses_parse() -> None:
    assert parse_addresses("a:1, b:26379,,[::1]:5") == (("a", 1), ("b", 26379), ("::1", 5))
    assert parse_addresses("") == ()
