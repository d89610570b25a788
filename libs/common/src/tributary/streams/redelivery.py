"""Entries that come back: failed ones once their retry is due, this consumer's own pending
entries after a restart, and entries stuck on a consumer that died; and, while entries run,
keeping their claims fresh so that nobody else takes them.

- A failed entry stays pending and its id waits in the group's retry set (a sorted
  set scored by due time); any replica that ZREMs a due id first XCLAIMs it
  (delivery n+1) and runs it again.
- Consumer names are stable, so a restarted replica finds its own unacked entries
  in its pending list at once instead of waiting for XAUTOCLAIM.
- Entries left pending by a dead consumer are found by XAUTOCLAIM (JUSTID, so the
  delivery count only grows when the entry is really re-run) once idle longer than
  every handler deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from tributary.streams import client
from tributary.streams.consumer import GroupConsumer
from tributary.streams.ids import next_id, parse_id

log = logging.getLogger(__name__)

#: runs entries claimed by this consumer: (entries, delivery count per entry id)
Handle = Callable[[list[client.Entry], dict[str, int]], Awaitable[None]]

#: at most this many XAUTOCLAIM pages per round
MAX_AUTOCLAIM_PAGES = 100

_XAUTOCLAIM_JUSTID = """
return redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
                  'COUNT', ARGV[5], 'JUSTID')
"""


class Redelivery:
    def __init__(
        self, redis: Redis, consumer: GroupConsumer, handle: Handle, *, claim_idle_ms: int
    ) -> None:
        self.redis = redis
        self.consumer = consumer
        self.handle = handle
        self.claim_idle_ms = claim_idle_ms
        # redis-py drops XAUTOCLAIM's cursor and deleted ids when JUSTID is given; a
        # script returns the raw reply
        self._autoclaim = redis.register_script(_XAUTOCLAIM_JUSTID)

    async def run_due(self) -> bool:
        """Take retries that are due (ZREM decides who wins one) and run them again."""
        key = self.consumer.retry_key
        ids: list[str] = await self.redis.zrangebyscore(  # type: ignore[assignment]
            key, "-inf", time.time() * 1000, start=0, num=self.consumer.batch_size
        )
        if not ids:
            return False
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.zrem(key, entry_id)
            removed = await pipe.execute()
        won = [entry_id for entry_id, n in zip(ids, removed, strict=True) if n]
        await self._claim_and_handle(won)
        return bool(won)

    async def recover_own_pending(self) -> int:
        """Re-run entries still pending on this consumer's name from a previous life."""
        c, recovered, start = self.consumer, 0, "-"
        while True:
            rows: list[dict[str, Any]] = await self.redis.xpending_range(
                c.key, c.group, min=start, max="+", count=c.batch_size, consumername=c.name
            )
            if not rows:
                return recovered
            ids = [str(r["message_id"]) for r in rows]
            recovered += await self._run_reclaimed(ids)
            start = next_id(ids[-1])

    async def reclaim_stuck(self) -> int:
        """XAUTOCLAIM entries idle past the deadline (their consumer died) and run them."""
        c, cursor, reclaimed = self.consumer, "0-0", 0
        for _ in range(MAX_AUTOCLAIM_PAGES):
            reply: list[Any] = await self._autoclaim(
                keys=[c.key], args=[c.group, c.name, self.claim_idle_ms, cursor, c.batch_size]
            )
            cursor, ids = reply[0], list(reply[1])
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:  # trimmed or XDEL'd while pending: nothing to run, ack them away
                await self.redis.xack(c.key, c.group, *deleted)
            reclaimed += await self._run_reclaimed(ids)
            if cursor in ("0-0", b"0-0"):
                break
        return reclaimed

    async def _run_reclaimed(self, ids: list[str]) -> int:
        """Run reclaimed ids, except retries whose backoff is not over (we just hold them)."""
        if not ids:
            return 0
        key = self.consumer.retry_key
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.zscore(key, entry_id)
            scores = await pipe.execute()
        now_ms = time.time() * 1000
        runnable = [i for i, s in zip(ids, scores, strict=True) if s is None or s <= now_ms]
        scheduled = [i for i, s in zip(ids, scores, strict=True) if s is not None and s <= now_ms]
        if scheduled:
            await self.redis.zrem(key, *scheduled)
        await self._claim_and_handle(runnable)
        return len(runnable)

    async def _claim_and_handle(self, ids: list[str]) -> None:
        """XCLAIM (delivery count + 1) and handle; ids acked or deleted meanwhile drop out."""
        if not ids:
            return
        entries = await self.consumer.claim(ids)
        if entries:
            await self.handle(entries, await self._delivery_counts([i for i, _ in entries]))

    async def _delivery_counts(self, ids: list[str]) -> dict[str, int]:
        c = self.consumer
        rows = await self.redis.xpending_range(
            c.key,
            c.group,
            min=min(ids, key=parse_id),
            max=max(ids, key=parse_id),
            count=len(ids) * 2 + 10,
            consumername=c.name,
        )
        wanted = set(ids)
        return {
            r["message_id"]: int(r["times_delivered"]) for r in rows if r["message_id"] in wanted
        }

    async def keep_claims_fresh(self, running: Callable[[], list[str]]) -> None:
        """Until cancelled: reset the idle time of the entries ``running()`` names (the
        batch being handled, and what the read-ahead brought) a few times per claim
        idle time, so that XAUTOCLAIM elsewhere leaves them alone."""
        interval = self.claim_idle_ms / 3000
        while True:
            await asyncio.sleep(interval)
            ids = running()
            if ids:
                try:
                    await self.consumer.touch(ids)
                except Exception:
                    log.warning(
                        "could not refresh claims on %s", self.consumer.stream, exc_info=True
                    )
