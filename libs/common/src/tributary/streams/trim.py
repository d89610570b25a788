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

from tributary.streams.ids import min_id, next_id


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


#: the oldest ``ARGV[2]`` (at most) of the entries beyond the newest ``ARGV[1]``: the last
#: one's id and how many entries beyond ``ARGV[1]`` there are. Only the oldest entries, the
#: ones a trim removes, are walked, inside Redis; one id comes back.
_OLDEST_BEYOND = """
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[1])
if excess <= 0 then return {false, 0} end
local page = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(excess, tonumber(ARGV[2])))
return {page[#page][1], excess}
"""
#: entries one step of a length trim walks at most
TRIM_PAGE = 1000


def _age_cut(max_age_ms: int | None) -> str | None:
    return None if max_age_ms is None else f"{int(time.time() * 1000) - max_age_ms}-0"


async def safe_trim(
    redis: Redis, key: str, *, maxlen: int | None = None, max_age_ms: int | None = None
) -> int:
    """Trim ``key`` to the retention policy (at most ``maxlen`` entries, none older than
    ``max_age_ms``) without dropping an entry some group has not acknowledged.

    The length cut is found from the old end, a page of :data:`TRIM_PAGE` entries at a
    time inside Redis: what is read is what is removed, never the entries that stay.
    Returns the number of entries removed.
    """
    floor = await acknowledged_floor(redis, key)
    removed = 0
    age_cut = _age_cut(max_age_ms)
    if age_cut is not None:
        removed += await _trim_below(redis, key, age_cut, floor)
    if maxlen is None:
        return removed
    oldest_beyond = redis.register_script(_OLDEST_BEYOND)
    while True:
        last, excess = await oldest_beyond(keys=[key], args=[maxlen, TRIM_PAGE])
        if not last:
            return removed
        cut = next_id(last if isinstance(last, str) else last.decode())
        trimmed = await _trim_below(redis, key, cut, floor)
        removed += trimmed
        held_back = floor is not None and min_id(cut, floor) != cut
        # a group's floor stopped it (no use asking again), or that was the last page
        if held_back or trimmed == 0 or int(excess) <= TRIM_PAGE:
            return removed


async def _trim_below(redis: Redis, key: str, cut: str, floor: str | None) -> int:
    """XTRIM MINID ``cut``, but never past ``floor``."""
    if floor is not None:
        cut = min_id(cut, floor)
    return int(await redis.xtrim(key, minid=cut, approximate=False))
