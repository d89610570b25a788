"""Safe trimming: drop old entries, but never one some consumer group has not acknowledged.

The work is done by :class:`tributary.retention.streams.Trimmer` (the retention pass
uses it with each stream's catalog policy); :func:`safe_trim` is the one-call form.
"""

from __future__ import annotations

from redis.asyncio import Redis

from tributary.retention.policy import StreamRetention
from tributary.retention.streams import Trimmer, acknowledged_floor

__all__ = ["TRIM_PAGE", "acknowledged_floor", "safe_trim"]

#: entries one slice of a trim removes at most
TRIM_PAGE = 1000


async def safe_trim(
    redis: Redis, key: str, *, maxlen: int | None = None, max_age_ms: int | None = None
) -> int:
    """Trim ``key`` to at most ``maxlen`` entries, none older than ``max_age_ms``, without
    dropping an entry some group has not acknowledged; returns how many were removed.

    O(entries removed): the age cut is an id from the clock; the length cut is found
    below the groups' floor a slice of :data:`TRIM_PAGE` entries at a time, inside Redis.
    """
    policy = StreamRetention(None if max_age_ms is None else max_age_ms / 1000, maxlen)
    floor = await acknowledged_floor(redis, key)
    return await Trimmer(redis, slice_entries=TRIM_PAGE).apply(key, policy, floor)
