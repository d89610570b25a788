"""A consumer's periodic chores: reclaim entries stuck on dead consumers, remove consumers
idle for long with nothing pending, update the pending and lag gauges. Trimming is not theirs: the
service's lease holder trims the streams it owns (:mod:`tributary.retention`)."""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from tributary.metrics import Metrics
from tributary.streams.consumer import GroupConsumer
from tributary.streams.redelivery import Redelivery

log = logging.getLogger(__name__)


class Housekeeping:
    def __init__(
        self,
        redis: Redis,
        consumer: GroupConsumer,
        redelivery: Redelivery,
        metrics: Metrics | None,
        *,
        interval_s: float,
        consumer_idle_ms: int,
    ) -> None:
        self.redis = redis
        self.consumer = consumer
        self.redelivery = redelivery
        self.metrics = metrics
        self.interval_s = interval_s
        self.consumer_idle_ms = consumer_idle_ms
        self._next = 0.0

    def reset(self) -> None:
        """Make the next :meth:`run_if_due` run (a run starts with a round)."""
        self._next = 0.0

    async def run_if_due(self) -> None:
        if time.monotonic() >= self._next:
            await self.run()
            self._next = time.monotonic() + self.interval_s

    async def run(self) -> None:
        """One round; a Redis error reply is logged, not raised (connection errors are)."""
        try:
            await self.redelivery.reclaim_stuck()
            await self._remove_idle_consumers()
            await self._update_gauges()
        except ResponseError:
            log.exception("housekeeping failed on %s", self.consumer.stream)

    async def _remove_idle_consumers(self) -> None:
        c = self.consumer
        for info in await self.redis.xinfo_consumers(c.key, c.group):
            name = info["name"]
            idle_ms = int(info.get("inactive", info["idle"]))
            if name != c.name and int(info["pending"]) == 0 and idle_ms > self.consumer_idle_ms:
                await self.redis.xgroup_delconsumer(c.key, c.group, name)
                log.info("removed idle consumer %s from %s/%s", name, c.stream, c.group)

    async def _update_gauges(self) -> None:
        if self.metrics is None:
            return
        c = self.consumer
        for info in await self.redis.xinfo_groups(c.key):
            if info["name"] == c.group:
                labels = (c.stream, c.group)
                self.metrics.pending.labels(*labels).set(int(info["pending"]))
                if info.get("lag") is not None:
                    self.metrics.consumer_lag.labels(*labels).set(int(info["lag"]))
