"""Leader lease against a real Redis: exclusion, handover, prompt loss detection, metrics.

What these tests prove about time is proved by order, not by a stopwatch: a
standby takes over with its first try after the dead holder's key expired, a
holder learns of a taken or deleted lease from its next renewal, a cut-off
holder gives up before its key can expire. Their deadlines (``await_until``)
only end a broken test; a loaded machine being slow does not fail them.
"""

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
from tributary.keys import Keys
from tributary.leases import SAFETY_MARGIN_FRACTION, Lease, run_as_leader
from tributary.metrics import Metrics
from tributary_testing.waiting import await_until

#: how often the tests look at a lease's state, in seconds
POLL = 0.005


def now() -> float:
    return asyncio.get_running_loop().time()


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    await await_until(predicate, what=what, poll=POLL)


class FlakyRedis(aioredis.Redis):
    """A client whose every command fails while ``broken``: a replica cut off from Redis.
    It records the answer to every EVALSHA (the lease's renewals and releases)."""

    broken = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scripts: list[tuple[str, Any]] = []

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if self.broken:
            raise RedisConnectionError("injected: Redis unreachable")
        result = await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        if args[0] == "EVALSHA":
            self.scripts.append((str(args[1]), result))
        return result

    def renewals(self, lease: Lease, since: int = 0) -> list[Any]:
        """The answers to ``lease``'s renewals from the ``since``-th script call on."""
        sha = lease._renew_script.sha
        return [result for called, result in self.scripts[since:] if called == sha]


async def just_renewed(client: FlakyRedis, lease: Lease) -> int:
    """Wait for the next successful renewal of ``lease``; the script calls until then."""
    since = len(client.scripts)
    await eventually(lambda: 1 in client.renewals(lease, since), "a renewal")
    return len(client.scripts)


#: how much sooner than its own deadline a holder learns from its next renewal, in
#: seconds, at least (it would be 0.9 ttl - ttl/3 with no load; a loaded machine's late
#: timers may eat the rest): what "promptly" means below
PROMPT_MARGIN = 0.3


class StampedEvent(asyncio.Event):
    """An event that notes the loop time it was set at (a lease's ``lost``)."""

    set_at: float | None = None

    def set(self) -> None:
        if self.set_at is None:
            self.set_at = now()
        super().set()


class TriedLease(Lease):
    """A lease that notes each acquire: the loop times it was sent and answered at, and
    whether it was taken."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tries: list[tuple[float, float, bool]] = []

    async def acquire(self) -> bool:
        sent = now()
        taken = await super().acquire()
        self.tries.append((sent, now(), taken))
        return taken


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
    first = Lease(redis_client, keys, "sched", ttl_s=1)
    second = Lease(redis_client, keys, "sched", ttl_s=1)
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
    lease = Lease(redis_client, keys, "sched", ttl_s=5)
    assert await lease.acquire()
    await redis_client.set(lease.key, "someone-else")  # expired and taken meanwhile
    await lease.release()
    assert await redis_client.get(lease.key) == "someone-else"


async def test_renewal_keeps_the_lease_past_its_ttl(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    # renewals every ttl/3; a renewal up to 0.6 ttl late still keeps the lease (a loop
    # stalled that long by a loaded machine must not fail the test)
    ttl = 1.0
    async with Lease(redis_client, keys, "sched", ttl_s=ttl) as lease:
        assert await lease.acquire()
        token = await redis_client.get(lease.key)
        until = now() + 3 * ttl
        await eventually(lambda: now() > until or not lease.held, "three ttls, or the lease lost")
        assert lease.held
        assert not lease.lost.is_set()
        assert await redis_client.get(lease.key) == token


async def test_two_loops_never_lead_at_the_same_time(
    flaky_clients: list[FlakyRedis], keys: Keys
) -> None:
    ttl = 0.5
    leases = [Lease(client, keys, "tick", ttl_s=ttl) for client in flaky_clients]
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
            await eventually(lambda: any(lease.held for lease in leases), "a leader")
            leader = next(i for i, lease in enumerate(leases) if lease.held)
            flaky_clients[leader].broken = True
            await eventually(lambda: leases[1 - leader].held, "handover")  # noqa: B023
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
from tributary.keys import Keys

async def main() -> None:
    client = aioredis.Redis.from_url(sys.argv[1], decode_responses=True)
    lease = Lease(client, Keys(sys.argv[2]), "sched", ttl_s=float(sys.argv[3]))
    assert await lease.acquire()
    print("held", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_standby_takes_over_at_its_first_try_after_the_dead_holders_key_expired(
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
        standby = TriedLease(redis_client, keys, "sched", ttl_s=ttl)
        started, cancelled, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            run_as_leader(standby, 0.05, forever_job(started, cancelled), stop, grace_s=0.1)
        )
        alive_until = now() + 2 * ttl  # the live holder keeps renewing; the standby waits
        await eventually(lambda: now() > alive_until or standby.held, "two ttls of standing by")
        assert not standby.held
        # the standby tries every min(interval, ttl/3): at least 6 times in two ttls
        assert len(standby.tries) >= 2 * ttl / (ttl / 3), standby.tries

        asked = now()
        remaining = await redis_client.pttl(standby.key) / 1000
        answered = now()
        holder.kill()  # SIGKILL: no release, no goodbye
        await holder.wait()
        # the key expires in [asked, answered] + remaining (pttl is in whole milliseconds)
        expired_by = answered + remaining + 0.001
        await eventually(started.is_set, "takeover")
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
    await stop_loops(stop, [task])
    assert cancelled.is_set(), "a job still running after the grace is cancelled"
    *_, (_, taken_at, taken) = standby.tries
    assert taken
    # not before the key expired ...
    assert taken_at >= asked + remaining - 0.05, (asked, remaining, taken_at)
    # ... and with the first try after it did: no try sent after the expiry was refused
    refused_late = [t for t in standby.tries if not t[2] and t[0] > expired_by]
    assert refused_late == [], (expired_by, standby.tries)


async def test_holder_learns_promptly_that_its_lease_was_taken(
    flaky_clients: list[FlakyRedis], redis_client: aioredis.Redis, keys: Keys
) -> None:
    # renewals every ttl/3 = 0.5 s; the holder's own deadline would end it at 0.9 ttl
    ttl = 1.5
    lease = Lease(flaky_clients[0], keys, "sched", ttl_s=ttl)
    started, cancelled, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_as_leader(lease, 0.05, forever_job(started, cancelled), stop, grace_s=0.1)
    )
    try:
        await eventually(started.is_set, "first run")
        since = await just_renewed(flaky_clients[0], lease)
        renewed_at = now()
        await redis_client.set(lease.key, "intruder", px=60_000)
        await eventually(cancelled.is_set, "job cancelled")
        # promptly: the next renewal was refused (0) and that ended it, not the deadline
        assert flaky_clients[0].renewals(lease, since) == [0]
        assert now() - renewed_at < ttl * (1 - SAFETY_MARGIN_FRACTION) - PROMPT_MARGIN
        assert lease.lost.is_set()
        assert not lease.held
    finally:
        await stop_loops(stop, [task])
    assert await redis_client.get(lease.key) == "intruder"


async def test_wait_lost_returns_when_the_key_is_deleted(
    flaky_clients: list[FlakyRedis], redis_client: aioredis.Redis, keys: Keys
) -> None:
    ttl = 1.5
    async with Lease(flaky_clients[0], keys, "sched", ttl_s=ttl) as lease:
        assert await lease.acquire()
        since = await just_renewed(flaky_clients[0], lease)
        renewed_at = now()
        await redis_client.delete(lease.key)
        await asyncio.wait_for(lease.wait_lost(), timeout=30)
        # promptly: the next renewal was refused (0) and that ended it, not the deadline
        assert flaky_clients[0].renewals(lease, since) == [0]
        assert now() - renewed_at < ttl * (1 - SAFETY_MARGIN_FRACTION) - PROMPT_MARGIN
        assert not lease.held


async def test_cut_off_holder_gives_up_before_the_key_expires(
    flaky_clients: list[FlakyRedis], redis_client: aioredis.Redis, keys: Keys
) -> None:
    # the holder's deadline is 0.9 ttl, 0.2 s before the key can expire: the margin a
    # late timer of a loaded machine has (the lease's own SAFETY_MARGIN_FRACTION)
    ttl = 2.0
    async with Lease(flaky_clients[0], keys, "sched", ttl_s=ttl) as lease:
        lease.lost = lost = StampedEvent()
        sent = now()
        assert await lease.acquire()  # Redis sets the key's ttl after ``sent``
        flaky_clients[0].broken = True
        await asyncio.wait_for(lease.wait_lost(), timeout=30)
        assert lost.set_at is not None
        assert lost.set_at < sent + ttl, "lost only after the key expired"
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
        run_as_leader(Lease(redis_client, keys, "s", ttl_s=1), 0.05, job, stop)
    )
    try:
        await eventually(again.is_set, "second run")
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

    lease = Lease(redis_client, keys, "sched", ttl_s=1)
    task = asyncio.create_task(run_as_leader(lease, 3600, job, stop, grace_s=2))
    await eventually(lambda: runs == 1, "first run, at once")
    await stop_loops(stop, [task])
    assert finished.is_set()
    assert runs == 1
    assert not lease.held
    assert not await redis_client.exists(lease.key)


async def test_held_gauge_follows_the_lease(redis_client: aioredis.Redis, keys: Keys) -> None:
    metrics = Metrics()

    def gauge() -> float | None:
        return metrics.registry.get_sample_value("tributary_lease_held", {"lease": "sched"})

    lease = Lease(redis_client, keys, "sched", ttl_s=0.6, metrics=metrics)
    assert gauge() == 0
    assert await lease.acquire()
    assert gauge() == 1
    await lease.release()
    assert gauge() == 0

    assert await lease.acquire()
    assert gauge() == 1
    await redis_client.delete(lease.key)
    await asyncio.wait_for(lease.wait_lost(), timeout=30)
    assert gauge() == 0
    await lease.release()
