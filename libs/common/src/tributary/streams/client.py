"""Typed access to the stream commands the library uses.

redis-py's annotations cover RESP2 and RESP3 replies, bytes and str at once;
the library always uses a client from :func:`tributary.redis_client.connect`
(text replies, bytes that are not UTF-8 kept as surrogates), so these helpers
state the shapes it actually gets and keep the casts in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from tributary.wire import binary_fields

Entry = tuple[str, dict[str, str]]


def _entries(raw: Any) -> list[Entry]:
    return [(entry_id, fields) for entry_id, fields in raw or [] if fields is not None]


async def read_group(
    redis: Redis, group: str, consumer: str, key: str, count: int, block_ms: int | None
) -> list[Entry]:
    reply: Any = await redis.xreadgroup(group, consumer, {key: ">"}, count=count, block=block_ms)
    if not reply:
        return []
    return _entries(reply[0][1])


async def claim(
    redis: Redis, key: str, group: str, consumer: str, ids: Sequence[str]
) -> list[Entry]:
    """XCLAIM with min-idle 0 (delivery count + 1); entries deleted meanwhile drop out."""
    reply: Any = await redis.xclaim(key, group, consumer, 0, cast(Any, list(ids)))
    return _entries(reply)


async def touch(redis: Redis, key: str, group: str, consumer: str, ids: Sequence[str]) -> None:
    """XCLAIM JUSTID: reset idle time without counting a delivery."""
    await redis.xclaim(key, group, consumer, 0, cast(Any, list(ids)), justid=True)


async def entries(
    redis: Redis, key: str, start: str = "-", end: str = "+", count: int | None = None
) -> list[Entry]:
    return _entries(await redis.xrange(key, min=start, max=end, count=count))


async def newest(redis: Redis, key: str, count: int) -> list[Entry]:
    return _entries(await redis.xrevrange(key, max="+", min="-", count=count))


def add(pipe: Pipeline | Redis, key: str, fields: Mapping[str, str]) -> Any:
    """XADD (on a client or a pipeline) of a flat string hash."""
    return pipe.xadd(key, cast(Any, dict(fields)))


def add_binary(pipe: Pipeline | Redis, key: str, fields: Mapping[str, str]) -> Any:
    """XADD of fields read from a stream, byte for byte as they were read (even bytes
    that are not UTF-8): dead-letter copies and replays."""
    return pipe.xadd(key, cast(Any, binary_fields(fields)))
