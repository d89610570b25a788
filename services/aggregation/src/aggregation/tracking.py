"""``track_usage``: how an API counts usage so that the aggregator finds it cheaply.

One MULTI/EXEC: INCRBY the counter, keep its TTL (7 days by default), add the
key to the per-date index set and give the index the same TTL. Writers that
do not use it (a bare INCRBY) are still found by the aggregator's SCAN.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import redis
import redis.asyncio as aioredis

from aggregation.keys import KeyFormat, check_name, parse_date

#: how long counters (and the index of their date) live after their last increment, seconds
DEFAULT_TTL_SECONDS = 7 * 24 * 3600


def _day(value: date | str | None) -> date:
    if value is None:
        return datetime.now(UTC).date()
    if isinstance(value, datetime):
        raise TypeError("date must be a date or YYYY-MM-DD string, not a datetime")
    if isinstance(value, date):
        return value
    return parse_date(value)


def _queue(
    pipe: Any, keys: KeyFormat, merchant_id: str, metric: str, amount: int, day: date, ttl: int
) -> None:
    check_name("merchant id", merchant_id)
    check_name("metric", metric)
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError("amount must be an integer")
    counter, index = keys.counter(merchant_id, day, metric), keys.index(day)
    pipe.incrby(counter, amount)
    pipe.expire(counter, ttl)
    pipe.sadd(index, counter)
    pipe.expire(index, ttl)


async def track_usage(
    client: aioredis.Redis,
    merchant_id: str,
    metric: str,
    amount: int = 1,
    date: date | str | None = None,
    *,
    prefix: str = "",
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
) -> int:
    """Add ``amount`` to today's (or ``date``'s) counter; returns the new value."""
    day = _day(date)
    async with client.pipeline(transaction=True) as pipe:
        _queue(pipe, KeyFormat(prefix), merchant_id, metric, amount, day, ttl_seconds)
        replies = await pipe.execute()
    return int(replies[0])


def track_usage_sync(
    client: redis.Redis,
    merchant_id: str,
    metric: str,
    amount: int = 1,
    date: date | str | None = None,
    *,
    prefix: str = "",
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
) -> int:
    """:func:`track_usage` for a synchronous redis-py client."""
    day = _day(date)
    with client.pipeline(transaction=True) as pipe:
        _queue(pipe, KeyFormat(prefix), merchant_id, metric, amount, day, ttl_seconds)
        replies = pipe.execute()
    return int(replies[0])
