"""One consumer of one group on one stream: read, ack, dead-letter, requeue.

The small contract dramatiq's broker consumer has, over XREADGROUP. While
reads come back full (a backlog), the next read is sent as soon as a batch
arrives (without BLOCK), so Redis builds the reply while this batch's handlers
run; the entries it brings are pending on this consumer from then on
(:meth:`GroupConsumer.read_ahead_ids` lets their claims be kept fresh, and on
a stop :meth:`GroupConsumer.finish_read_ahead` hands them over).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from tributary.keys import Keys
from tributary.streams import client
from tributary.streams.dlq import dead_letter_fields
from tributary.streams.message import HandlerCall, Message, Outcome
from tributary.tasks import cancel_and_wait


@dataclass(slots=True)
class Settlement:
    """What one batch's outcomes ask of Redis: acks, dead letters, requeues."""

    ack: list[str] = field(default_factory=list)
    dead: list[Message] = field(default_factory=list)
    due: dict[str, float] = field(default_factory=dict)  # entry id -> due time (ms)
    #: retries after an outage keep their delivery count: XCLAIM ... RETRYCOUNT n-1 now,
    #: so the XCLAIM of the redelivery brings it back to n
    uncounted: dict[int, list[str]] = field(default_factory=dict)
    now_ms: float = field(default_factory=lambda: time.time() * 1000)

    @classmethod
    def of(cls, calls: list[HandlerCall]) -> Settlement:
        plan = cls()
        for call in calls:
            plan.add(call)
        return plan

    def add(self, call: HandlerCall) -> None:
        if call.outcome is Outcome.ACK and len(call.messages) == 1:  # the common case, cheaply
            self.ack.append(call.messages[0].entry_id)
            return
        ids = [m.entry_id for m in call.messages]
        if call.outcome is Outcome.ACK:
            self.ack.extend(ids)
        elif call.outcome is Outcome.DEAD:
            self.ack.extend(ids)
            self.dead.extend(call.messages)
        elif call.outcome is Outcome.RETRY:
            self.due.update(dict.fromkeys(ids, self.now_ms + call.delay * 1000))
            if call.state.get("uncounted"):
                for m in call.messages:
                    self.uncounted.setdefault(max(m.deliveries - 1, 0), []).append(m.entry_id)


class GroupConsumer:
    """``name`` in ``group`` on ``stream``: the Redis side of consuming."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        stream: str,
        group: str,
        name: str,
        *,
        batch_size: int,
        start_id: str = "0",
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.name = name
        self.batch_size = batch_size
        self.start_id = start_id
        self.key = keys.stream(stream)
        self.dlq_key = keys.dlq(stream)
        #: sorted set of this group's entry ids waiting for redelivery, scored by due time
        self.retry_key = keys.retries(stream, group)
        #: the last read was full: a backlog
        self.backlog = False
        self._read_ahead: asyncio.Task[list[client.Entry]] | None = None

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.key, self.group, id=self.start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- reading ------------------------------------------------------------------------

    def _xreadgroup(self, block_ms: int | None) -> Coroutine[Any, Any, list[client.Entry]]:
        return client.read_group(
            self.redis, self.group, self.name, self.key, self.batch_size, block_ms
        )

    async def read(self, block_ms: int) -> list[client.Entry]:
        """The next batch of new entries: what the read-ahead brought, or a read that
        waits up to ``block_ms`` (0: not at all) for some."""
        if self._read_ahead is not None:
            task, self._read_ahead = self._read_ahead, None
            entries = await task
        else:
            entries = await self._xreadgroup(block_ms or None)
        self.backlog = len(entries) >= self.batch_size
        if self.backlog:
            # a full read: more is likely waiting; ask for it now, so that Redis builds
            # the reply while this batch is being handled
            self._read_ahead = asyncio.create_task(self._xreadgroup(None))
        return entries

    def read_ahead_ids(self) -> list[str]:
        """Ids the read-ahead brought, once it has (they are pending on this consumer)."""
        task = self._read_ahead
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return []
        return [entry_id for entry_id, _ in task.result()]

    async def finish_read_ahead(self) -> list[client.Entry]:
        """On a stop: what the last read-ahead brought (delivered to this consumer: left
        alone, it would wait for a restart or for XAUTOCLAIM)."""
        task, self._read_ahead = self._read_ahead, None
        return [] if task is None else await task

    async def drop_read_ahead(self) -> None:
        """Cancelled or failed: whatever the read-ahead brought stays pending on this
        consumer (found again by its own-pending recovery or XAUTOCLAIM)."""
        task, self._read_ahead = self._read_ahead, None
        if task is not None:
            await cancel_and_wait(task)
            if not task.cancelled():
                task.exception()  # retrieved: a failed read is not worth a warning here

    async def claim(self, ids: list[str]) -> list[client.Entry]:
        """XCLAIM (a delivery counted); entries deleted meanwhile drop out."""
        return await client.claim(self.redis, self.key, self.group, self.name, ids)

    async def touch(self, ids: list[str]) -> None:
        """Reset the idle time of entries pending on this consumer (no delivery counted)."""
        await client.touch(self.redis, self.key, self.group, self.name, ids)

    async def is_settled(self) -> bool:
        """Nothing of the group is pending (on any consumer)."""
        summary = await self.redis.xpending(self.key, self.group)
        return int(summary["pending"]) == 0

    # -- settling -----------------------------------------------------------------------

    async def settle(self, plan: Settlement) -> None:
        """Ack, dead-letter and requeue a batch's entries in one MULTI (acks alone: one XACK)."""
        if not (plan.ack or plan.due):
            return
        if not (plan.dead or plan.uncounted or plan.due):  # the common case: acks only
            await self.redis.xack(self.key, self.group, *plan.ack)
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            for msg in plan.dead:
                client.add_binary(pipe, self.dlq_key, self.dead_letter(msg))
            if plan.ack:
                pipe.xack(self.key, self.group, *plan.ack)
            for count, ids in plan.uncounted.items():
                pipe.xclaim(
                    self.key,
                    self.group,
                    self.name,
                    0,
                    list[Any](ids),
                    retrycount=count,
                    justid=True,
                )
            if plan.due:
                pipe.zadd(self.retry_key, plan.due)
            await pipe.execute()

    def dead_letter(self, msg: Message) -> dict[str, str]:
        return dead_letter_fields(
            msg.fields,
            error=msg.error or "unknown error",
            deliveries=msg.deliveries,
            stream=self.stream,
            group=self.group,
            consumer=self.name,
            entry_id=msg.entry_id,
        )
