"""Leader lease against a real Redis: exclusion, handover, prompt loss detection, metrics."""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tributary.errors import LeaseLost
from tributary.leases import SAFETY_MARGIN_FRACTION, Lease, run_as_leader
from tributary.metrics import Metrics
from tributary.streams.names import Keys


def now() -> float:
    return asyncio.get_running_loop().time()


async def eventually(predicate: Callable[[], bool], within: float, what: str = "") -> float:
    """Poll until ``predicate`` holds; the seconds it took. Fails after ``within`` seconds."""
    start = now()
    while not predicate():
        if now() - start > within:
            pytest.fail(f"not within {within}s: {what}")
        await asyncio.sleep(0.005)
    return now() - start


class FlakyRedis(aioredis.Redis):
    """A client whose every command fails while ``broken``: a replica cut off from Redis."""

    broken = False

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if self.broken:
            raise RedisConnectionError("injected: Redis unreachable")
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


@pytest.fixture
async def flaky_clients(redis_url: str) -> AsyncIterator[list[FlakyRedis]]:
    clients = [
        cast(FlakyRedis, FlakyRedis.from_url(redis_url, decode_responses=True)) for _ in range(2)
    ]
    yield clients
    for client in clients:
        client.broken = False
        await client.aclose()


async def stop_loops(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)


def forever_job(started: asyncio.Event, cancelled: asyncio.Event) -> Callable[[], Awaitable[None]]:
    async def job() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    return job


async def test_acquire_excludes_others_until_released(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    first = Lease(redis_client, keys, "sched", ttl=1)
    second = Lease(redis_client, keys, "sched", ttl=1)
    async with first, second:
        assert await first.acquire()
        assert 0 < await redis_client.pttl(first.key) <= 1000
        assert not await second.acquire()
        assert (first.held, second.held) == (True, False)
        with pytest.raises(LeaseLost):
            second.check()

        await second.release()  # a non-holder giving it back changes nothing
        assert await redis_client.exists(first.key)

        await first.release()
        assert not first.held
        assert not await redis_client.exists(first.key)
        assert await second.acquire()


async def test_release_deletes_only_its_own_token(redis_client: aioredis.Redis, keys: Keys) -> None:
    lease = Lease(redis_client, keys, "sched", ttl=5)
    assert await lease.acquire()
    await redis_client.set(lease.key, "someone-else")  # expired and taken meanwhile
    await lease.release()
    assert await redis_client.get(lease.key) == "someone-else"


async def test_renewal_keeps_the_lease_past_its_ttl(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    ttl = 0.3
    async with Lease(redis_client, keys, "sched", ttl=ttl) as lease:
        assert await lease.acquire()
        token = await redis_client.get(lease.key)
        until = now() + 4 * ttl
        await eventually(lambda: now() > until or not lease.held, within=6 * ttl)
        assert lease.held
        assert not lease.lost.is_set()
        assert await redis_client.get(lease.key) == token


async def test_two_loops_never_lead_at_the_same_time(
    flaky_clients: list[FlakyRedis], keys: Keys
) -> None:
    ttl = 0.5
    leases = [Lease(client, keys, "tick", ttl=ttl) for client in flaky_clients]
    active: list[int] = []
    runs: list[tuple[float, float, int]] = []

    def job_of(replica: int) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            active.append(replica)
            assert len(active) == 1, f"two leaders at once: {active}"
            start = now()
            try:
                await asyncio.sleep(0.05)  # the work; often cut short by a lost lease
            finally:
                active.remove(replica)
                runs.append((start, now(), replica))

        return job

    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run_as_leader(lease, 0.02, job_of(i), stop))
        for i, lease in enumerate(leases)
    ]
    try:
        for _ in range(4):  # cut the leader off from Redis: the other must take over
            await eventually(lambda: any(lease.held for lease in leases), within=3 * ttl)
            leader = next(i for i, lease in enumerate(leases) if lease.held)
            flaky_clients[leader].broken = True
            await eventually(lambda: leases[1 - leader].held, within=3 * ttl, what="handover")  # noqa: B023
            flaky_clients[leader].broken = False
    finally:
        await stop_loops(stop, tasks)

    runs.sort()
    for (_, end, _), (start, _, _) in itertools.pairwise(runs):
        assert start >= end, "two job runs overlapped"
    leaders = [replica for _, _, replica in runs]
    handovers = sum(a != b for a, b in itertools.pairwise(leaders))
    assert handovers >= 4
    assert not any(lease.held for lease in leases)
    assert not await flaky_clients[0].exists(leases[0].key), "stop releases the lease"


HOLDER = """
import asyncio, sys
import redis.asyncio as aioredis
from tributary.leases import Lease
from tributary.streams.names import Keys

async def main() -> None:
    client = aioredis.Redis.from_url(sys.argv[1], decode_responses=True)
    lease = Lease(client, Keys(sys.argv[2]), "sched", ttl=float(sys.argv[3]))
    assert await lease.acquire()
    print("held", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_standby_takes_over_within_the_ttl_when_the_holder_dies(
    redis_client: aioredis.Redis, redis_url: str, keys: Keys
) -> None:
    ttl = 1.0
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        redis_url,
        keys.prefix,
        str(ttl),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), timeout=30) == b"held\n"
        standby = Lease(redis_client, keys, "sched", ttl=ttl)
        started, cancelled, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            run_as_leader(standby, 0.05, forever_job(started, cancelled), stop, grace=0.1)
        )
        alive_until = now() + 2 * ttl  # the live holder keeps renewing; the standby waits
        await eventually(lambda: now() > alive_until or standby.held, within=3 * ttl)
        assert not standby.held

        remaining = await redis_client.pttl(standby.key) / 1000
        holder.kill()  # SIGKILL: no release, no goodbye
        killed_at = now()
        await holder.wait()
        await eventually(started.is_set, within=2 * ttl, what="takeover")
        took = now() - killed_at
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
    await stop_loops(stop, [task])
    assert cancelled.is_set(), "a job still running after the grace is cancelled"
    assert remaining - 0.05 <= took <= ttl + ttl / 3 + 0.2, (remaining, took)


async def test_holder_learns_promptly_that_its_lease_was_taken(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    ttl = 0.6
    lease = Lease(redis_client, keys, "sched", ttl=ttl)
    started, cancelled, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_as_leader(lease, 0.05, forever_job(started, cancelled), stop, grace=0.1)
    )
    try:
        await eventually(started.is_set, within=2, what="first run")
        await redis_client.set(lease.key, "intruder", px=60_000)
        took = await eventually(cancelled.is_set, within=ttl, what="job cancelled")
        assert took <= ttl / 3 + 0.15
        assert lease.lost.is_set()
        assert not lease.held
    finally:
        await stop_loops(stop, [task])
    assert await redis_client.get(lease.key) == "intruder"


async def test_wait_lost_returns_when_the_key_is_deleted(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    ttl = 0.6
    async with Lease(redis_client, keys, "sched", ttl=ttl) as lease:
        assert await lease.acquire()
        await redis_client.delete(lease.key)
        await asyncio.wait_for(lease.wait_lost(), timeout=ttl / 3 + 0.15)
        assert not lease.held


async def test_cut_off_holder_gives_up_before_the_key_expires(
    flaky_clients: list[FlakyRedis], redis_client: aioredis.Redis, keys: Keys
) -> None:
    ttl = 0.5
    async with Lease(flaky_clients[0], keys, "sched", ttl=ttl) as lease:
        assert await lease.acquire()
        acquired = now()
        flaky_clients[0].broken = True
        await asyncio.wait_for(lease.wait_lost(), timeout=2 * ttl)
        assert now() - acquired <= ttl * (1 - SAFETY_MARGIN_FRACTION) + 0.05
        assert await redis_client.pttl(lease.key) > 0, "lost only after the key expired"
        flaky_clients[0].broken = False


async def test_job_failures_are_logged_and_the_loop_goes_on(
    redis_client: aioredis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0
    again = asyncio.Event()

    async def job() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        again.set()

    stop = asyncio.Event()
    task = asyncio.create_task(
        run_as_leader(Lease(redis_client, keys, "s", ttl=1), 0.05, job, stop)
    )
    try:
        await eventually(again.is_set, within=2, what="second run")
    finally:
        await stop_loops(stop, [task])
    assert "leader job failed" in caplog.text
    assert "boom" in caplog.text


async def test_stop_lets_the_running_job_finish_then_releases(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    stop, finished = asyncio.Event(), asyncio.Event()
    runs = 0

    async def job() -> None:
        nonlocal runs
        runs += 1
        await stop.wait()
        await asyncio.sleep(0.05)  # still finishing its work after stop was set
        finished.set()

    lease = Lease(redis_client, keys, "sched", ttl=1)
    task = asyncio.create_task(run_as_leader(lease, 10, job, stop, grace=2))
    await eventually(lambda: runs == 1, within=2, what="first run, at once")
    await stop_loops(stop, [task])
    assert finished.is_set()
    assert runs == 1
    assert not lease.held
    assert not await redis_client.exists(lease.key)


async def test_held_gauge_follows_the_lease(redis_client: aioredis.Redis, keys: Keys) -> None:
    metrics = Metrics()

    def gauge() -> float | None:
        return metrics.registry.get_sample_value("tributary_lease_held", {"lease": "sched"})

    lease = Lease(redis_client, keys, "sched", ttl=0.6, metrics=metrics)
    assert gauge() == 0
    assert await lease.acquire()
    assert gauge() == 1
    await lease.release()
    assert gauge() == 0

    assert await lease.acquire()
    assert gauge() == 1
    await redis_client.delete(lease.key)
    await asyncio.wait_for(lease.wait_lost(), timeout=1)
    assert gauge() == 0
    await lease.release()
