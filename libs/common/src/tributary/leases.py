"""Leader lease in Redis, so that periodic jobs run on one replica only (DESIGN.md section 3).

Every replica runs the same scheduler code; :func:`run_as_leader` makes only the
lease holder run the job. The lease is a key set with ``NX PX`` to a random
token, kept alive by a compare-and-extend script and given back by a
compare-and-delete script, so one holder can never extend or delete another's
lease. The holder also keeps a local deadline that ends a safety margin
*before* the key can expire in Redis: it stops believing it leads (and cancels
its job) before anyone else can acquire, even when Redis is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tributary.errors import LeaseLost
from tributary.keys import Keys
from tributary.metrics import Metrics
from tributary.tasks import cancel_and_wait

log = logging.getLogger(__name__)

#: lease time to live, in seconds: how long a dead holder blocks the others
DEFAULT_LEASE_TTL_SECONDS = 10.0
#: share of the ttl by which the local deadline precedes the key's expiry (clock drift, latency)
SAFETY_MARGIN_FRACTION = 0.1
#: seconds a running job may take to finish once ``stop`` is set, before it is cancelled
DEFAULT_JOB_GRACE_SECONDS = 5.0

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_FAILURES = (RedisError, OSError, TimeoutError)


class Lease:
    """One replica's claim on a named lease; ``lost`` is set as soon as the claim ends."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        name: str,
        ttl_s: float = DEFAULT_LEASE_TTL_SECONDS,
        metrics: Metrics | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"lease ttl_s must be positive, got {ttl_s}")
        self.name, self.key, self.ttl_s = name, keys.lease(name), ttl_s
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._valid_for = ttl_s * (1 - SAFETY_MARGIN_FRACTION)
        self._redis, self._metrics = redis, metrics
        self._renew_script = redis.register_script(_RENEW)
        self._release_script = redis.register_script(_RELEASE)
        self._token = ""
        self._deadline = 0.0
        self._renewer: asyncio.Task[None] | None = None
        self._held = False
        self.lost = asyncio.Event()
        self._set_gauge(0)  # standbys show 0, so the sum over replicas reads as "leaders"

    @property
    def held(self) -> bool:
        """True while this replica may act as leader (it turns False at the local deadline)."""
        return self._held

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it; start renewing it. True if held afterwards."""
        if self.held:
            return True
        token, started = secrets.token_hex(16), _now()
        if not await self._redis.set(self.key, token, nx=True, px=self._ttl_ms):
            return False
        self._token, self._deadline, self._held = token, started + self._valid_for, True
        self.lost.clear()
        self._set_gauge(1)
        self._renewer = asyncio.create_task(self._keep_renewed(), name=f"lease-renew:{self.name}")
        return True

    async def release(self) -> None:
        """Stop renewing and delete the key if still ours, so a standby need not wait the ttl."""
        await self._stop_renewer()
        if not self._held:
            return
        self._held = False
        self._set_gauge(0)
        try:
            await self._release_script(keys=[self.key], args=[self._token])
        except _FAILURES:
            log.warning("lease %s: release failed; it expires within %ss", self.name, self.ttl_s)

    async def wait_lost(self) -> None:
        """Return once the lease is lost (taken, expired, Redis unreachable past the deadline)."""
        await self.lost.wait()

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless held: call before a side effect only a leader may do."""
        if not self.held:
            raise LeaseLost(f"lease {self.name} is not held")

    async def __aenter__(self) -> Lease:
        """``async with lease:`` does not acquire; it makes sure the lease is released."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()

    async def _keep_renewed(self) -> None:
        while True:
            await asyncio.sleep(max(0.0, min(self.ttl_s / 3, self._deadline - _now())))
            if not await self._renew_once():
                self._mark_lost()
                return

    async def _renew_once(self) -> bool:
        """True while the lease is still ours: renewed, or a failed renewal within the deadline."""
        started = _now()
        if started >= self._deadline:
            return False
        try:
            async with asyncio.timeout(self._deadline - started):
                renewed = await self._renew_script(
                    keys=[self.key], args=[self._token, self._ttl_ms]
                )
        except _FAILURES as exc:
            log.warning("lease %s: renewal failed (%r)", self.name, exc)
            return _now() < self._deadline
        if not renewed:
            return False
        self._deadline = started + self._valid_for
        return True

    def _mark_lost(self) -> None:
        log.warning("lease %s lost", self.name)
        self._held = False
        self._set_gauge(0)
        self.lost.set()

    async def _stop_renewer(self) -> None:
        task, self._renewer = self._renewer, None
        if task is not None and task is not asyncio.current_task():
            await cancel_and_wait(task)

    def _set_gauge(self, value: int) -> None:
        if self._metrics is not None:
            self._metrics.lease_held.labels(self.name).set(value)


def _now() -> float:
    return asyncio.get_running_loop().time()


async def run_as_leader(
    lease: Lease,
    interval_s: float,
    job: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    *,
    grace_s: float = DEFAULT_JOB_GRACE_SECONDS,
) -> None:
    """Run ``job`` every ``interval_s`` while holding ``lease``, standing by otherwise.

    A job still running when the lease is lost is cancelled at once: another
    replica may already lead. One running when ``stop`` is set gets ``grace_s``
    seconds to finish, so shutdown stays bounded. The lease is released on the
    way out so a standby takes over without waiting for the ttl.
    """
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    try:
        while not stop.is_set():
            if await _try_acquire(lease):
                await _lead(lease, interval_s, job, stop, grace_s)
            else:
                await _wait_any(min(interval_s, lease.ttl_s / 3), stop)
    finally:
        await lease.release()


async def _try_acquire(lease: Lease) -> bool:
    try:
        return await lease.acquire()
    except _FAILURES as exc:
        log.warning("lease %s: acquire failed (%r)", lease.name, exc)
        return False


async def _lead(
    lease: Lease,
    interval_s: float,
    job: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    grace_s: float,
) -> None:
    while lease.held and not stop.is_set():
        due = _now() + interval_s
        if not await _run_job(lease, job, stop, grace_s):
            return
        await _wait_any(max(0.0, due - _now()), stop, lease.lost)


async def _run_job(
    lease: Lease, job: Callable[[], Awaitable[None]], stop: asyncio.Event, grace_s: float
) -> bool:
    """Run one job to its end; False if it had to be cancelled (lease lost, or grace over)."""
    task = asyncio.ensure_future(job())
    try:
        await _wait_any(None, lease.lost, stop, task=task)
        if stop.is_set() and not lease.lost.is_set():
            await _wait_any(grace_s, lease.lost, task=task)
    finally:
        if not task.done():
            await cancel_and_wait(task)
    return _outcome(lease, task)


def _outcome(lease: Lease, task: asyncio.Future[None]) -> bool:
    if task.cancelled():
        why = "lease lost" if lease.lost.is_set() else "stopping, grace over"
        log.warning("lease %s: job cancelled (%s)", lease.name, why)
        return False
    try:
        task.result()
    except Exception:
        log.exception("lease %s: leader job failed", lease.name)
    return True


async def _wait_any(
    seconds: float | None, *events: asyncio.Event, task: asyncio.Future[None] | None = None
) -> None:
    """Wait until one event is set, ``task`` is done, or ``seconds`` pass."""
    waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(event.wait()) for event in events}
    try:
        await asyncio.wait(
            waiters | ({task} if task is not None else set()),
            timeout=seconds,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for waiter in waiters:
            waiter.cancel()
