"""Trimming one stream to its retention policy, paced, never past what a group still needs.

Every group has a floor: its oldest pending entry, or, with nothing pending, the entry
after the last one delivered to it (everything before was acked). Entries below the
lowest floor are done with; the policy's cut is applied up to that floor and no
further (unless the operator allows trimming past a lagging group).

The work is O(entries removed) and cut into slices so consumers keep their share of
Redis: the age cut is an id computed from the clock (``<now - age>-0``), applied by
``XTRIM MINID ~ cut LIMIT slice`` (whole macro-nodes, no entry read) and finished by one
exact ``XTRIM MINID`` (at most a node's worth). The length cut is ``XTRIM MAXLEN`` when
no group holds anything back; below a floor, a Lua step finds the oldest entries under
the floor (at most a slice, all of which it then removes) inside Redis.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from tributary.retention.policy import StreamRetention
from tributary.streams.ids import min_id, next_id, parse_id

#: what a pass calls between slices (sleeps to keep its duty cycle; tests pass a no-op)
Pause = Callable[[float], Awaitable[None]]

#: one slice of a length trim below a group's floor: removes the oldest
#: ``min(XLEN - ARGV[1], ARGV[2])`` entries if all of them are below ``ARGV[3]`` (a floor;
#: '' for none), or those of them that are. Returns how many it removed.
_LENGTH_SLICE = """
local length = redis.call('XLEN', KEYS[1])
local excess = length - tonumber(ARGV[1])
if excess <= 0 then return 0 end
local n = math.min(excess, tonumber(ARGV[2]))
if ARGV[3] ~= '' then
  n = #redis.call('XRANGE', KEYS[1], '-', '(' .. ARGV[3], 'COUNT', n)
  if n == 0 then return 0 end
end
return redis.call('XTRIM', KEYS[1], 'MAXLEN', '=', length - n)
"""
#: entries below ``ARGV[1]``, counted up to ``ARGV[2]`` (dry runs only)
_COUNT_BELOW = """
return #redis.call('XRANGE', KEYS[1], '-', '(' .. ARGV[1], 'COUNT', tonumber(ARGV[2]))
"""
#: a dry run counts what it would remove up to this many entries per stream
DRY_RUN_COUNT_CAP = 1_000_000  # (a dry run reads them inside Redis)
#: entries a length trim walks per slice by default (the settings choose in a service)
DEFAULT_SLICE_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class GroupFloor:
    """A group's floor and its unacknowledged backlog (pending + not yet delivered)."""

    group: str
    floor: str
    backlog: int


@dataclass
class StreamFigures:
    """What the pass saw of a stream, and what it did."""

    stream: str
    policy: StreamRetention
    length: int = 0
    oldest_age_s: float | None = None
    #: entries past the policy's cut kept for a group (its unacknowledged backlog)
    held_back: int = 0
    lagging_group: str | None = None
    removed: int = 0
    #: entries removed past a lagging group's floor (operator's choice): lost to it
    dropped: int = 0


def _now_ms() -> int:
    return int(time.time() * 1000)


def age_cut(policy: StreamRetention, now_ms: int | None = None) -> str | None:
    """The id below which entries are older than the policy's age (None: no age bound)."""
    if policy.max_age_s is None:
        return None
    return f"{max(0, (now_ms or _now_ms()) - int(policy.max_age_s * 1000))}-0"


async def group_floors(redis: Redis, key: str) -> list[GroupFloor]:
    """Each group's floor (XINFO GROUPS, and an XPENDING summary where entries are
    pending): no entry is read."""
    floors = []
    length: int | None = None
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(key)
    except ResponseError as exc:
        if "no such key" in str(exc):  # a stream nobody wrote yet
            return []
        raise
    for info in groups:
        pending = int(info["pending"])
        floor = next_id(str(info["last-delivered-id"]))
        if pending > 0:
            summary = await redis.xpending(key, info["name"])
            # acknowledged between the two calls (the soak saw it): None, the floor above
            if summary["min"] is not None:
                floor = str(summary["min"])
        lag = info.get("lag")
        if lag is None:  # Redis cannot tell (entries deleted midway): the whole stream
            length = await redis.xlen(key) if length is None else length
            lag = length
        floors.append(GroupFloor(str(info["name"]), floor, pending + int(lag)))
    return floors


def lowest(floors: list[GroupFloor]) -> GroupFloor | None:
    low: GroupFloor | None = None
    for floor in floors:
        if low is None or parse_id(floor.floor) < parse_id(low.floor):
            low = floor
    return low


async def acknowledged_floor(redis: Redis, key: str) -> str | None:
    """Lowest id some group still needs; None when the stream has no groups."""
    low = lowest(await group_floors(redis, key))
    return None if low is None else low.floor


async def oldest_age_s(redis: Redis, key: str, now_ms: int | None = None) -> float | None:
    """Age of the oldest entry from its id (XRANGE COUNT 1); None when empty."""
    first: Any = await redis.xrange(key, count=1)
    if not first:
        return None
    return max(0.0, ((now_ms or _now_ms()) - parse_id(str(first[0][0]))[0]) / 1000)


async def _no_pause(seconds: float) -> None:
    return None


class Trimmer:
    """Applies policies to streams in slices, with ``pause(seconds_worked)`` after each."""

    def __init__(
        self,
        redis: Redis,
        *,
        slice_entries: int = DEFAULT_SLICE_ENTRIES,
        lag_warn_entries: int = 1_000_000,
        trim_past_lagging: bool = False,
        pause: Pause = _no_pause,
    ) -> None:
        self.redis = redis
        self.slice_entries = slice_entries
        self.lag_warn_entries = lag_warn_entries
        self.trim_past_lagging = trim_past_lagging
        self.pause = pause
        self._length_slice = redis.register_script(_LENGTH_SLICE)
        self._count_below = redis.register_script(_COUNT_BELOW)

    async def look(self, stream: str, key: str, policy: StreamRetention) -> StreamFigures:
        """The stream's figures, without changing it."""
        figures = StreamFigures(stream, policy)
        await self._measure(key, figures, await group_floors(self.redis, key))
        return figures

    async def _measure(self, key: str, figures: StreamFigures, floors: list[GroupFloor]) -> None:
        figures.length = int(await self.redis.xlen(key))
        figures.oldest_age_s = await oldest_age_s(self.redis, key)
        cut = age_cut(figures.policy)
        low = lowest(floors)
        figures.held_back, figures.lagging_group = 0, None
        if low is None or figures.length == 0:
            return
        # a group holds back retention when its floor is below what the policy would cut
        holding = [f for f in floors if cut is not None and min_id(f.floor, cut) != cut]
        over_length = figures.policy.max_len is not None and figures.length > figures.policy.max_len
        if not holding and over_length:
            holding = [low]
        if holding:
            worst = max(holding, key=lambda f: f.backlog)
            figures.held_back, figures.lagging_group = worst.backlog, worst.group

    def lagging(self, figures: StreamFigures) -> bool:
        return figures.held_back > self.lag_warn_entries

    async def trim(self, stream: str, key: str, policy: StreamRetention) -> StreamFigures:
        """One pass over a stream: the safe cut, then (if allowed and the backlog is past
        the bound) the cut past a lagging group; figures measured after."""
        figures = StreamFigures(stream, policy)
        floors = await group_floors(self.redis, key)
        floor = None if (low := lowest(floors)) is None else low.floor
        figures.removed = await self.apply(key, policy, floor)
        await self._measure(key, figures, await group_floors(self.redis, key))
        if self.trim_past_lagging and self.lagging(figures):
            figures.dropped = await self.apply(key, policy, None)
            figures.removed += figures.dropped
            await self._measure(key, figures, await group_floors(self.redis, key))
        return figures

    async def apply(self, key: str, policy: StreamRetention, floor: str | None) -> int:
        """Remove what ``policy`` cuts, below ``floor`` only (None: no floor); how many."""
        removed = 0
        cut = age_cut(policy)
        if cut is not None:
            removed += await self._trim_minid(key, cut if floor is None else min_id(cut, floor))
        if policy.max_len is not None:
            removed += await self._trim_length(key, policy.max_len, floor)
        return removed

    async def _timed(self, step: Awaitable[Any]) -> int:
        started = time.monotonic()
        removed = int(await step)
        await self.pause(time.monotonic() - started)
        return removed

    async def _trim_minid(self, key: str, cut: str) -> int:
        removed = 0
        while True:  # whole macro-nodes, a slice at a time: nothing read, O(removed)
            step = self.redis.xtrim(key, minid=cut, approximate=True, limit=self.slice_entries)
            n = await self._timed(step)
            removed += n
            if n == 0:
                break
        # the rest below the cut, within the first node
        return removed + int(await self.redis.xtrim(key, minid=cut, approximate=False))

    async def _trim_length(self, key: str, max_len: int, floor: str | None) -> int:
        removed = 0
        while True:
            args: list[str | int] = [max_len, self.slice_entries, floor or ""]
            n = await self._timed(self._length_slice(keys=[key], args=args))
            removed += n
            if n < self.slice_entries:
                return removed

    async def would_remove(self, key: str, policy: StreamRetention) -> int:
        """What a pass would remove now, without the lagging-group override (counted up to
        :data:`DRY_RUN_COUNT_CAP` below the cut; dry runs only)."""
        floor = await acknowledged_floor(self.redis, key)
        length = int(await self.redis.xlen(key))
        below = 0
        cut = age_cut(policy)
        if cut is not None:
            cut = cut if floor is None else min_id(cut, floor)
            below = int(await self._count_below(keys=[key], args=[cut, DRY_RUN_COUNT_CAP]))
        if policy.max_len is not None and length - below > policy.max_len:
            excess = length - below - policy.max_len
            if floor is None:
                below += excess
            else:
                args: list[str | int] = [floor, below + excess]
                below = max(below, int(await self._count_below(keys=[key], args=args)))
        return below
