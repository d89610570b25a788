"""Finding dirty nodes and moving their hashes out of the writers' way, atomically.

One Lua script per batch takes each node's hash (HGETALL + DEL; a key of
another type, which HGETALL refuses, is set aside in quarantine), stores what
it took as one string under the batch's own key ``traffic_sync:batch:{id}``
(see ``MOVE_SCRIPT`` for the format) and records the batch id
in ``traffic_sync:batches``, all at once: an HINCRBY that arrives a moment
later creates a fresh hash, flushed next time. The script builds the nodes'
key names from their ids (and renames keys of the wrong type into quarantine),
from the affixes and prefix :class:`tributary.keys.Keys` gives it in ARGV: it
touches keys it is not given as KEYS, which a standalone Redis allows and a
Redis Cluster would not (the index and the node keys would not share a slot
there anyway; their names are the writers'). The batch key stays until
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
from redis.exceptions import NoScriptError, ResponseError

from traffic_sync.batch import Moved
from traffic_sync.config import DEFAULT_SCAN_COUNT, Discovery
from traffic_sync.counters import TrafficKeys

# KEYS: batch key, batches set, dirty index
# ARGV: batch id, quarantine prefix, node key head, node key tail, node ids as one
# string of netstrings ("<length>:<id>" each; a node's key is head .. id .. tail)
# Returns what it moved as one string, which it also stores under the batch key:
#   "<length>:" plain, then "<length>:<raw id><length>:<JSON payload>" per other node
# where plain is "id upload download id upload download ..." for every node that is
# what writers leave (a hash of exactly upload and download, an id and counters of
# decimal digits), and a JSON payload ({"t": "hash", "f": [field, value, ...]} or
# the key's type) is made for the rest, which Python checks and rejects one by one.
# The ids go in as one argument, and the batch comes back as one string: redis-py
# encodes a command's arguments one by one in Python (9 ms for the 4,000 of 2,000
# nodes), and a string is one allocation in Redis and one reply to parse, where a
# hash field and a reply element per node cost both sides more than the move. The
# deletes and the index's SREM go out as a few variadic calls at the end (in slices
# of 1,000: Lua's unpack has a limit), not a call per node.
# Batch ids are fresh per call, so a batch key that already exists means this very
# call ran before and its reply was lost (redis-py re-sends a command after a dropped
# connection): the script then returns what that run moved and moves nothing more. A
# second move would overwrite the first run's payloads with newer increments.
MOVE_SCRIPT = """
local batch, batches, dirty = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', batch) == 1 then
  return redis.call('GET', batch)
end
local head, tail, packed = ARGV[3], ARGV[4], ARGV[5]
local function in_slices(list, call)
  for i = 1, #list, 1000 do
    call(unpack(list, i, math.min(i + 999, #list)))
  end
end
local plain, others, hashes, ids, seen = {}, {}, {}, {}, {}
local pos = 1
while pos <= #packed do
  local colon = string.find(packed, ':', pos, true)
  local length = tonumber(string.sub(packed, pos, colon - 1))
  local id = string.sub(packed, colon + 1, colon + length)
  pos = colon + length + 1
  if not seen[id] then
    seen[id] = true
    local key = head .. id .. tail
    local payload = nil
    local f = redis.pcall('HGETALL', key)
    if f.err == nil then
      if #f > 0 then
        hashes[#hashes + 1] = key
      end
      if #f == 4 and string.find(f[2], '^%d+$') and string.find(f[4], '^%d+$')
         and string.find(id, '^%d+$') then
        if f[1] == 'upload' and f[3] == 'download' then
          plain[#plain + 1] = id
          plain[#plain + 1] = f[2]
          plain[#plain + 1] = f[4]
        elseif f[1] == 'download' and f[3] == 'upload' then
          plain[#plain + 1] = id
          plain[#plain + 1] = f[4]
          plain[#plain + 1] = f[2]
        else
          payload = cjson.encode({t = 'hash', f = f})
        end
      elseif #f > 0 then
        payload = cjson.encode({t = 'hash', f = f})
      end
    else
      local kind = redis.call('TYPE', key)['ok']
      if kind == 'string' then
        payload = cjson.encode({t = kind, v = redis.call('GET', key)})
      else
        payload = cjson.encode({t = kind})
      end
      redis.call('RENAME', key, ARGV[2] .. id)
    end
    if payload then
      others[#others + 1] = #id .. ':' .. id .. #payload .. ':' .. payload
    end
    ids[#ids + 1] = id
  end
end
in_slices(hashes, function(...) redis.call('DEL', ...) end)
in_slices(ids, function(...) redis.call('SREM', dirty, ...) end)
if #plain == 0 and #others == 0 then
  return ''
end
local text = table.concat(plain, ' ')
local out = #text .. ':' .. text .. table.concat(others)
redis.call('SET', batch, out)
redis.call('SADD', batches, ARGV[1])
return out
"""
_MOVE_SHA = hashlib.sha1(MOVE_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis script id

# KEYS: dirty index
# ARGV: SCAN cursor, MATCH pattern, COUNT, node key head, node key tail
# One SCAN call, then only the ids of the node keys it found that the index does not
# hold: in Redis, a SISMEMBER per key costs less than sending every id to Python and
# back in an SMISMEMBER (the index usually holds them all).
SCAN_UNINDEXED_SCRIPT = """
local reply = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local first, last = #ARGV[4] + 1, -#ARGV[5] - 1
local out = {}
for _, key in ipairs(reply[2]) do
  local id = string.sub(key, first, last)
  if redis.call('SISMEMBER', KEYS[1], id) == 0 then
    out[#out + 1] = id
  end
end
return {reply[1], out}
"""
_SCAN_UNINDEXED_SHA = hashlib.sha1(SCAN_UNINDEXED_SCRIPT.encode()).hexdigest()  # noqa: S324


def _netstring(data: bytes, pos: int) -> tuple[bytes, int]:
    """The netstring at ``pos`` and where the next begins."""
    colon = data.index(b":", pos)
    end = colon + 1 + int(data[pos:colon])
    if end > len(data):
        raise ValueError("a moved batch ends inside a netstring")
    return data[colon + 1 : end], end


def parse_moved(data: bytes) -> Moved:
    """The nodes in a move's reply (or a batch key's value)."""
    if not data:
        return Moved()
    plain, pos = _netstring(data, 0)
    others: list[tuple[bytes, bytes]] = []
    while pos < len(data):
        raw_id, pos = _netstring(data, pos)
        payload, pos = _netstring(data, pos)
        others.append((raw_id, payload))
    return Moved(plain.split(b" ") if plain else [], others)


class Mover:
    """The Redis half of a flush: discovery, move, pending batches, finish."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: TrafficKeys,
        discovery: Discovery = "both",
        scan_count: int = DEFAULT_SCAN_COUNT,
    ) -> None:
        self.redis, self.keys = redis, keys
        self.discovery, self.scan_count = discovery, scan_count

    async def _raw(self, *args: Any) -> Any:
        """A command whose reply is left as bytes."""
        execute = cast("Callable[..., Awaitable[Any]]", self.redis.execute_command)
        return await execute(*args, **{NEVER_DECODE: []})

    async def _script(self, source: str, sha: str, keys: list[Any], args: list[Any]) -> Any:
        """Run a Lua script by its SHA1, sending its text once if Redis does not know it
        (a restarted or flushed script cache)."""
        try:
            return await self._raw("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._raw("EVAL", source, len(keys), *keys, *args)

    # -- discovery ------------------------------------------------------------------

    async def _pages(
        self, call: Callable[[int | bytes], Awaitable[tuple[int | bytes, list[bytes]]]]
    ) -> AsyncIterator[list[bytes]]:
        """The non-empty pages of raw ids a cursor command's calls return, until Redis
        hands the cursor back as 0."""
        cursor: int | bytes = 0
        while True:
            cursor, ids = await call(cursor)
            if ids:
                yield ids
            if int(cursor) == 0:
                return

    def _indexed(self) -> AsyncIterator[list[bytes]]:
        """Raw ids in the dirty index, a page per SSCAN call."""
        return self._pages(
            lambda cursor: self._raw("SSCAN", self.keys.dirty, cursor, "COUNT", self.scan_count)
        )

    def _scanned(self) -> AsyncIterator[list[bytes]]:
        """Raw ids of the node keys each SCAN call finds."""

        async def scan(cursor: int | bytes) -> tuple[int | bytes, list[bytes]]:
            cursor, found = await self._raw(
                "SCAN", cursor, "MATCH", self.keys.node_pattern, "COUNT", self.scan_count
            )
            return cursor, [self.keys.node_id_of(key) for key in found]

        return self._pages(scan)

    def _scanned_unindexed(self) -> AsyncIterator[list[bytes]]:
        """What SCAN finds that the dirty index does not hold (``both``: the index's
        own walk takes the rest). A node indexed after this check and missed by that
        walk too stays dirty for the next flush, like any write during a flush."""
        head, tail = self.keys.node_affixes
        return self._pages(
            lambda cursor: self._script(
                SCAN_UNINDEXED_SCRIPT,
                _SCAN_UNINDEXED_SHA,
                [self.keys.dirty],
                [cursor, self.keys.node_pattern, self.scan_count, head, tail],
            )
        )

    def dirty_walks(self) -> list[AsyncIterator[list[bytes]]]:
        """The walks that find dirty nodes' raw ids, a page at a time (a node may come
        up more than once). With ``both``, the index's and SCAN's, to be walked side by
        side: a large keyspace's SCAN then overlaps the index's batches instead of
        following them."""
        if self.discovery == "index":
            return [self._indexed()]
        if self.discovery == "scan":
            return [self._scanned()]
        return [self._indexed(), self._scanned_unindexed()]

    async def count_dirty(self) -> tuple[int, int]:
        """(ids in the dirty index, node hashes found by SCAN): for ``status``."""
        indexed = int(await self.redis.scard(self.keys.dirty))
        scanned = 0
        async for ids in self._scanned():
            scanned += len(ids)
        return indexed, scanned

    # -- move / finish --------------------------------------------------------------

    async def move(self, batch_id: str, node_ids: Sequence[bytes]) -> Moved:
        """Atomically move the nodes' hashes into the batch; returns what it moved."""
        keys = [self.keys.batch(batch_id), self.keys.batches, self.keys.dirty]
        head, tail = self.keys.node_affixes
        packed = b"".join(b"%d:%s" % (len(node_id), node_id) for node_id in node_ids)
        args = [batch_id, self.keys.quarantine, head, tail, packed]
        data = await self._script(MOVE_SCRIPT, _MOVE_SHA, keys, args)
        return parse_moved(cast("bytes", data))

    async def pending(self) -> list[str]:
        """Ids of batches moved but not finished (a crash, or a failed apply)."""
        members = await self.redis.smembers(self.keys.batches)
        return sorted(str(m) for m in members)

    async def load(self, batch_id: str) -> Moved:
        """The node data of a pending batch (empty once finished)."""
        key = self.keys.batch(batch_id)
        try:
            return parse_moved(cast("bytes | None", await self._raw("GET", key)) or b"")
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
        # a batch an earlier version left pending: a hash of raw id -> JSON payload
        flat = await self._raw("HGETALL", key)
        if isinstance(flat, dict):  # RESP3 replies a map
            return Moved(others=list(flat.items()))
        return Moved(others=list(zip(flat[::2], flat[1::2], strict=True)))

    async def finish(self, batch_id: str) -> None:
        """Forget an applied batch: its key and its pending mark go together."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.batch(batch_id))
            pipe.srem(self.keys.batches, batch_id)
            await pipe.execute()

    async def count_pending(self) -> int:
        return int(await self.redis.scard(self.keys.batches))
