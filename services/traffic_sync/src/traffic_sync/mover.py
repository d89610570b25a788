"""Finding dirty nodes and moving their hashes out of the writers' way, atomically.

One Lua script per batch takes each node's hash (HGETALL + DEL), stores it
in the batch's own hash ``traffic_sync:batch:{id}`` and records the batch id
in ``traffic_sync:batches``, all at once: an HINCRBY that arrives a moment
later creates a fresh hash, flushed next time. The batch hash stays until
the database transaction that applied it has committed (:meth:`Mover.finish`);
a restarted flusher finds it in ``traffic_sync:batches`` (:meth:`Mover.pending`).

Everything here is binary-safe (replies are read undecoded): a foreign writer
may leave bytes that are not UTF-8, and that must not stop a flush.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.client import NEVER_DECODE
from redis.exceptions import NoScriptError

from traffic_sync.config import Discovery
from traffic_sync.counters import TrafficKeys

# KEYS: batch hash, batches set, dirty index, node keys...
# ARGV: batch id, quarantine prefix, node ids... (ARGV[i - 1] is the id of KEYS[i])
# Returns the moved entries as a flat list: id, JSON payload, id, payload...
# Batch ids are fresh per call, so a batch hash that already exists means this very
# call ran before and its reply was lost (redis-py re-sends a command after a dropped
# connection): the script then returns what that run moved and moves nothing more. A
# second move would overwrite the first run's payloads with newer increments.
MOVE_SCRIPT = """
local batch, batches, dirty = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', batch) == 1 then
  return redis.call('HGETALL', batch)
end
local out = {}
for i = 4, #KEYS do
  local key, id = KEYS[i], ARGV[i - 1]
  local kind = redis.call('TYPE', key)['ok']
  local payload = nil
  if kind == 'hash' then
    payload = cjson.encode({t = 'hash', f = redis.call('HGETALL', key)})
    redis.call('DEL', key)
  elseif kind ~= 'none' then
    if kind == 'string' then
      payload = cjson.encode({t = kind, v = redis.call('GET', key)})
    else
      payload = cjson.encode({t = kind})
    end
    redis.call('RENAME', key, ARGV[2] .. id)
  end
  if payload then
    redis.call('HSET', batch, id, payload)
    out[#out + 1] = id
    out[#out + 1] = payload
  end
  redis.call('SREM', dirty, id)
end
if #out > 0 then
  redis.call('SADD', batches, ARGV[1])
end
return out
"""
_MOVE_SHA = hashlib.sha1(MOVE_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis script id

Moved = list[tuple[bytes, bytes]]


def _pairs(flat: Sequence[bytes]) -> Moved:
    return list(zip(flat[::2], flat[1::2], strict=True))


class Mover:
    """The Redis half of a flush: discovery, move, pending batches, finish."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: TrafficKeys,
        discovery: Discovery = "both",
        scan_count: int = 1000,
    ) -> None:
        self.redis, self.keys = redis, keys
        self.discovery, self.scan_count = discovery, scan_count

    async def _raw(self, *args: Any) -> Any:
        """A command whose reply is left as bytes."""
        execute = cast("Callable[..., Awaitable[Any]]", self.redis.execute_command)
        return await execute(*args, **{NEVER_DECODE: []})

    # -- discovery ------------------------------------------------------------------

    async def _indexed(self) -> AsyncIterator[bytes]:
        cursor: int | bytes = 0
        while True:
            cursor, ids = await self._raw(
                "SSCAN", self.keys.dirty, cursor, "COUNT", self.scan_count
            )
            for node_id in ids:
                yield node_id
            if int(cursor) == 0:
                return

    async def _scanned(self) -> AsyncIterator[bytes]:
        cursor: int | bytes = 0
        pattern = self.keys.node_pattern
        while True:
            cursor, found = await self._raw(
                "SCAN", cursor, "MATCH", pattern, "COUNT", self.scan_count
            )
            for key in found:
                yield self.keys.node_id_of(key)
            if int(cursor) == 0:
                return

    async def dirty_nodes(self) -> AsyncIterator[bytes]:
        """Raw ids of nodes with data waiting (a node may come up more than once)."""
        if self.discovery in ("index", "both"):
            async for node_id in self._indexed():
                yield node_id
        if self.discovery in ("scan", "both"):
            async for node_id in self._scanned():
                yield node_id

    async def dirty_batches(self, size: int) -> AsyncIterator[list[bytes]]:
        """Dirty node ids in groups of up to ``size`` distinct ids."""
        group: dict[bytes, None] = {}
        async for node_id in self.dirty_nodes():
            group[node_id] = None
            if len(group) >= size:
                yield list(group)
                group = {}
        if group:
            yield list(group)

    async def count_dirty(self) -> tuple[int, int]:
        """(ids in the dirty index, node hashes found by SCAN): for ``status``."""
        indexed = int(await self.redis.scard(self.keys.dirty))
        scanned = 0
        async for _ in self._scanned():
            scanned += 1
        return indexed, scanned

    # -- move / finish --------------------------------------------------------------

    async def move(self, batch_id: str, node_ids: Sequence[bytes]) -> Moved:
        """Atomically move the nodes' hashes into the batch; returns (raw id, payload) pairs."""
        keys = [
            self.keys.batch(batch_id),
            self.keys.batches,
            self.keys.dirty,
            *(self.keys.node_bytes(node_id) for node_id in node_ids),
        ]
        args = [batch_id, self.keys.quarantine, *node_ids]
        try:
            flat = await self._raw("EVALSHA", _MOVE_SHA, len(keys), *keys, *args)
        except NoScriptError:
            flat = await self._raw("EVAL", MOVE_SCRIPT, len(keys), *keys, *args)
        return _pairs(cast("list[bytes]", flat))

    async def pending(self) -> list[str]:
        """Ids of batches moved but not finished (a crash, or a failed apply)."""
        members = await self.redis.smembers(self.keys.batches)
        return sorted(str(m) for m in members)

    async def load(self, batch_id: str) -> Moved:
        """The node data of a pending batch (empty once finished)."""
        flat = await self._raw("HGETALL", self.keys.batch(batch_id))
        if isinstance(flat, dict):  # RESP3 replies a map
            return list(flat.items())
        return _pairs(cast("list[bytes]", flat))

    async def finish(self, batch_id: str) -> None:
        """Forget an applied batch: its hash and its pending mark go together."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.batch(batch_id))
            pipe.srem(self.keys.batches, batch_id)
            await pipe.execute()

    async def count_pending(self) -> int:
        return int(await self.redis.scard(self.keys.batches))
