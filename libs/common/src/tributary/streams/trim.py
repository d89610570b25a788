"""Safe trimming: drop old entries, but never one some consumer group has not acknowledged.

Every group has a floor: its oldest pending entry, or, with nothing pending,
the entry after the last one delivered to it (everything up to that was
acked). ``XTRIM MINID`` to the lowest floor, or to the retention policy's
cut if that is lower, can only remove entries every group is done with.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from tributary.streams import client
from tributary.streams.ids import min_id, next_id, parse_id


async def acknowledged_floor(redis: Redis, key: str) -> str | None:
    """Lowest id some group still needs; None when the stream has no groups."""
    floor: str | None = None
    groups: list[dict[str, Any]] = await redis.xinfo_groups(key)
    for info in groups:
        if int(info["pending"]) > 0:
            summary = await redis.xpending(key, info["name"])
            group_floor = str(summary["min"])
        else:
            group_floor = next_id(str(info["last-delivered-id"]))
        floor = group_floor if floor is None else min_id(floor, group_floor)
    return floor


async def _policy_cut(
    redis: Redis, key: str, maxlen: int | None, max_age_ms: int | None
) -> str | None:
    """Lowest id the retention policy wants to keep (None: keep everything)."""
    cut: str | None = None
    if maxlen is not None:
        newest = await client.newest(redis, key, maxlen + 1)
        if len(newest) > maxlen:
            cut = str(newest[maxlen - 1][0]) if maxlen > 0 else next_id(str(newest[0][0]))
    if max_age_ms is not None:
        age_cut = f"{int(time.time() * 1000) - max_age_ms}-0"
        cut = age_cut if cut is None else max(cut, age_cut, key=parse_id)
    return cut


async def safe_trim(
    redis: Redis, key: str, *, maxlen: int | None = None, max_age_ms: int | None = None
) -> int:
    """Trim ``key`` to the retention policy without dropping unacknowledged entries.

    Returns the number of entries removed.
    """
    cut = await _policy_cut(redis, key, maxlen, max_age_ms)
    if cut is None:
        return 0
    floor = await acknowledged_floor(redis, key)
    if floor is not None:
        cut = min_id(cut, floor)
    return int(await redis.xtrim(key, minid=cut, approximate=False))
