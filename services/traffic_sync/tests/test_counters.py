"""record_traffic and the parsing of moved node data."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from traffic_sync.batch import (
    BAD_NODE_ID,
    NEGATIVE,
    NO_TRAFFIC_FIELDS,
    NOT_INTEGER,
    OUT_OF_RANGE,
    WRONG_TYPE,
    BadNode,
    Moved,
    NodeDelta,
    parse_batch,
    parse_node,
)
from traffic_sync.counters import DEFAULT_KEY_TTL_SECONDS, TrafficKeys, record_traffic
from traffic_sync.mover import Mover
from tributary.keys import Keys


def moved(fields: dict[str, str]) -> bytes:
    flat = [x for pair in fields.items() for x in pair]
    return json.dumps({"t": "hash", "f": flat}).encode()


async def test_record_traffic_increments_both_fields_sets_expiry_and_indexes_the_node(
    redis_client: aioredis.Redis, tkeys: TrafficKeys
) -> None:
    await record_traffic(redis_client, 7, 100, 5, keys=tkeys)
    await record_traffic(redis_client, 7, 1, 2, keys=tkeys)
    key = tkeys.node(7)
    assert key == f"{tkeys.keys.prefix}node:7:traffic"
    assert await redis_client.hgetall(key) == {"upload": "101", "download": "7"}
    assert DEFAULT_KEY_TTL_SECONDS - 5 < await redis_client.ttl(key) <= DEFAULT_KEY_TTL_SECONDS
    assert await redis_client.smembers(tkeys.dirty) == {"7"}
    assert await redis_client.ttl(tkeys.dirty) > 0


async def test_record_traffic_refuses_negative_increments(
    redis_client: aioredis.Redis, tkeys: TrafficKeys
) -> None:
    with pytest.raises(ValueError, match="negative"):
        await record_traffic(redis_client, 7, -1, 0, keys=tkeys)
    assert await redis_client.exists(tkeys.node(7)) == 0


def test_default_keys_are_the_legacy_key_names() -> None:
    keys = TrafficKeys()
    assert keys.node(42) == "node:42:traffic"
    assert keys.node_pattern == "node:*:traffic"
    assert TrafficKeys(Keys("a*b:")).node_pattern == "a\\*b:node:*:traffic"
    assert TrafficKeys(Keys("p:")).node_id_of(b"p:node:42:traffic") == b"42"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"t":"hash","f":["upload","12","download","34"]}',
        b'{"t":"hash","f":["download","34","upload","12"]}',
        b'{"t":"hash","f":["upload","12","download","34","extra","x"]}',
        b'{"t":"hash","f":["download","34","upload","12"],"x":1}',
        b'{"f":["upload","12","download","34"],"t":"hash"}',
        moved({"upload": "12", "download": "34"}),
    ],
)
def test_both_parsers_agree_on_plain_hashes(payload: bytes) -> None:
    assert parse_node(b"5", payload) == NodeDelta(5, 12, 34)


def test_the_fast_parser_leaves_odd_hashes_to_the_full_one() -> None:
    twice = b'{"t":"hash","f":["upload","1","upload","2"]}'
    assert parse_node(b"5", twice) == NodeDelta(5, 2, 0)
    with pytest.raises(BadNode) as caught:
        parse_node(b"5", b'{"t":"hash","f":["upload","9999999999999999999","download","1"]}')
    assert caught.value.reason == OUT_OF_RANGE


def test_parse_batch_merges_nodes_drops_zero_deltas_and_sorts() -> None:
    batch = parse_batch(
        "b1",
        Moved(others=[
            (b"9", moved({"upload": "5", "download": "1"})),
            (b"3", moved({"upload": "2"})),
            (b"009", moved({"download": "10"})),
            (b"4", moved({"upload": "0", "download": "0"})),
            (b"5", moved({"upload": "1", "download": "1", "extra": "x"})),
        ]),
    )  # fmt: skip
    assert batch.deltas == (NodeDelta(3, 2, 0), NodeDelta(5, 1, 1), NodeDelta(9, 5, 11))
    assert batch.rejects == ()
    assert (batch.upload_bytes, batch.download_bytes) == (8, 12)


@pytest.mark.parametrize(
    ("raw_id", "payload", "reason"),
    [
        (b"abc", moved({"upload": "1"}), BAD_NODE_ID),
        (b"1:2", moved({"upload": "1"}), BAD_NODE_ID),
        (b"-4", moved({"upload": "1"}), BAD_NODE_ID),
        (b"99999999999999999999", moved({"upload": "1"}), BAD_NODE_ID),
        (b"1", moved({"upload": "lots"}), NOT_INTEGER),
        (b"1", moved({"upload": "1.5"}), NOT_INTEGER),
        (b"1", moved({"upload": ""}), NOT_INTEGER),
        (b"1", moved({"download": "-3"}), NEGATIVE),
        (b"1", moved({"upload": "9223372036854775808"}), OUT_OF_RANGE),
        (b"1", moved({"foo": "1"}), NO_TRAFFIC_FIELDS),
        (b"1", json.dumps({"t": "string", "v": "12"}).encode(), WRONG_TYPE),
        (b"1", b'{"t":"hash","f":["upload","\xff\xfe"]}', NOT_INTEGER),
        (b"\xff", moved({"upload": "1"}), BAD_NODE_ID),
    ],
)
def test_bad_node_data_is_rejected_with_its_reason(
    raw_id: bytes, payload: bytes, reason: str
) -> None:
    batch = parse_batch("b1", Moved(others=[(raw_id, payload), (b"2", moved({"upload": "1"}))]))
    assert batch.deltas == (NodeDelta(2, 1, 0),)
    assert [r.reason for r in batch.rejects] == [reason]
    assert batch.rejects[0].raw


async def test_what_writers_leave_moves_as_plain_numbers(
    redis_client: aioredis.Redis, tkeys: TrafficKeys
) -> None:
    await record_traffic(redis_client, 3, 12, 34, keys=tkeys)
    moved = await Mover(redis_client, tkeys).move("b1", [b"3"])
    assert moved == Moved(plain=[b"3", b"12", b"34"], others=[])


def test_plain_numbers_out_of_range_are_rejected_and_the_rest_flush() -> None:
    too_big = b"9223372036854775808"
    batch = parse_batch(
        "b1",
        Moved(plain=[b"1", too_big, b"1", b"2", b"5", b"6", too_big, b"1", b"1", b"07", b"1", b"0"],
              others=[(b"7", moved({"upload": "2"}))]),
    )  # fmt: skip
    assert batch.deltas == (NodeDelta(2, 5, 6), NodeDelta(7, 3, 0))
    assert sorted(r.reason for r in batch.rejects) == [BAD_NODE_ID, OUT_OF_RANGE]
    assert all(r.raw.startswith("upload=") for r in batch.rejects)


async def test_a_node_named_twice_in_one_move_is_moved_once(
    redis_client: aioredis.Redis, tkeys: TrafficKeys
) -> None:
    async with redis_client.pipeline(transaction=False) as pipe:
        for node in range(1, 2501):  # more than one slice of the script's variadic calls
            pipe.hset(tkeys.node(node), mapping={"upload": node, "download": 1})
            pipe.sadd(tkeys.dirty, node)
        await pipe.execute()
    ids = [str(node).encode() for node in range(1, 2501)]
    moved = await Mover(redis_client, tkeys).move("b1", [*ids, b"7"])
    batch = parse_batch("b1", moved)
    assert len(batch.deltas) == 2500
    assert batch.upload_bytes == sum(range(1, 2501))
    assert await Mover(redis_client, tkeys).load("b1") == moved
    assert await redis_client.scard(tkeys.dirty) == 0
    assert await redis_client.exists(*(tkeys.node(node) for node in range(1, 2501))) == 0


async def test_ids_with_any_bytes_move_intact(
    redis_client: aioredis.Redis, tkeys: TrafficKeys
) -> None:
    odd = [b"1:2", b"3\xff", b"12"]  # a separator, bytes that are not UTF-8, a plain id
    for raw in odd:
        await redis_client.hset(tkeys.node_bytes(raw), "upload", "5")
    moved = await Mover(redis_client, tkeys).move("b1", odd)
    assert moved.plain == []
    assert sorted(raw for raw, _ in moved.others) == sorted(odd)
    batch = parse_batch("b1", moved)
    assert batch.deltas == (NodeDelta(12, 5, 0),)
    assert sorted(r.reason for r in batch.rejects) == ["bad_node_id", "bad_node_id"]
    assert await redis_client.exists(*(tkeys.node_bytes(raw) for raw in odd)) == 0
