"""The counter key format and track_usage (INCRBY, TTL, per-date index) on the real Redis."""

from __future__ import annotations

import re

import pytest
import redis
import redis.asyncio as aioredis

from aggregation.keys import Counter, InvalidName, KeyFormat, glob_escape, parse_value
from aggregation.tracking import DEFAULT_TTL_SECONDS, track_usage, track_usage_sync

from .conftest import DAY


def test_keys_round_trip_and_patterns_escape_glob_characters() -> None:
    keys = KeyFormat("p[1]:")
    key = keys.counter("shop*1", DAY, "api_calls")
    assert key == "p[1]:usage:shop*1:2025-03-10:api_calls"
    assert keys.parse(key) == Counter("shop*1", DAY, "api_calls")
    assert keys.index(DAY) == "p[1]:usage-index:2025-03-10"
    assert keys.pattern(DAY, "shop*1") == r"p\[1\]:usage:shop\*1:2025-03-10:*"
    assert glob_escape("a?b\\") == "a\\?b\\\\"


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("usage:x:notadate:q", "'notadate' is not a YYYY-MM-DD date"),
        ("usage:x:2025-02-30:q", "is not a valid date"),
        ("usage:a:b:2025-03-10:q", "expected usage:{merchantId}:{date}:{metricType}"),
        ("usage::2025-03-10:q", "merchant id '' is empty"),
        ("other:x:2025-03-10:q", "does not start with 'usage:'"),
    ],
)
def test_malformed_keys_say_what_is_wrong(key: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        KeyFormat().parse(key)


@pytest.mark.parametrize(
    ("raw", "value"), [("0", 0), ("42", 42), ("-7", -7), (str(2**63 - 1), 2**63 - 1)]
)
def test_values_are_plain_64_bit_integers(raw: str, value: int) -> None:
    assert parse_value(raw) == value


@pytest.mark.parametrize("raw", ["", "-", "1.5", " 1", "+1", "1_000", "\u0661", str(2**63), "abc"])
def test_other_values_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="integer"):
        parse_value(raw)


@pytest.mark.asyncio
async def test_track_usage_increments_keeps_the_ttl_and_indexes_the_key(
    redis_client: aioredis.Redis, key_format: KeyFormat
) -> None:
    p = key_format.prefix
    assert await track_usage(redis_client, "m1", "calls", date=DAY, prefix=p) == 1
    assert await track_usage(redis_client, "m1", "calls", 5, "2025-03-10", prefix=p) == 6
    key = key_format.counter("m1", DAY, "calls")
    assert await redis_client.get(key) == "6"
    assert DEFAULT_TTL_SECONDS - 5 < await redis_client.ttl(key) <= DEFAULT_TTL_SECONDS
    assert await redis_client.smembers(key_format.index(DAY)) == {key}
    assert await redis_client.ttl(key_format.index(DAY)) > 0
    for merchant, metric in [("a:b", "calls"), ("", "calls"), ("m1", "bad\x00")]:
        with pytest.raises(InvalidName):
            await track_usage(redis_client, merchant, metric, prefix=p)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        await track_usage(redis_client, "m1", "calls", date="10/03/2025", prefix=p)
    with pytest.raises(TypeError):
        await track_usage(redis_client, "m1", "calls", 1.5, prefix=p)  # type: ignore[arg-type]
    assert await redis_client.get(key) == "6", "refused calls change nothing"


def test_track_usage_sync(redis_url: str, key_format: KeyFormat) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert track_usage_sync(client, "m2", "sms", 3, DAY, prefix=key_format.prefix) == 3
        assert client.sismember(key_format.index(DAY), key_format.counter("m2", DAY, "sms"))
    finally:
        client.close()
