"""Per-user Gmail quota: a token bucket in Redis, shared by every replica and job.

Gmail charges quota units per call (messages.get 5, messages.list 5,
history.list 2, getProfile 1) against a per-user limit. The bucket holds up
to a minute's worth of units and refills continuously. A caller takes its
units at once and, when that drives the bucket below zero, waits until the
debt is paid back: requests are served in the order they asked, and
concurrent jobs of one user share one budget whichever replica runs them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import cast

from redis.asyncio import Redis

from tributary.keys import Keys

#: quota units of each Gmail method (developers.google.com/gmail/api/reference/quota)
UNITS = {
    "messages.list": 5,
    "messages.get": 5,
    "history.list": 2,
    "users.getProfile": 1,
}

_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
  ts = now
end
tokens = tokens - cost
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(1000 * (capacity / rate + 60)))
if tokens >= 0 then return '0' end
return tostring(-tokens / rate)
"""

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class QuotaBucket:
    """``await bucket.take(user, units)`` returns once the user's quota allows the call."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        units_per_minute: int,
        *,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.capacity = float(units_per_minute)
        self.rate = units_per_minute / 60.0
        self._clock = clock
        self._sleep = sleep
        self._script = redis.register_script(_TAKE)

    def key(self, user_id: str) -> str:
        return self._keys.gmail_quota(user_id)

    async def take(self, user_id: str, units: int) -> float:
        """Take ``units`` (a call bigger than the bucket takes the whole bucket); returns the
        seconds waited."""
        cost = min(float(units), self.capacity)
        reply = await self._script(
            keys=[self.key(user_id)], args=[self.capacity, self.rate, self._clock(), cost]
        )
        wait = float(cast("str | bytes", reply))
        if wait > 0:
            await self._sleep(wait)
        return wait
