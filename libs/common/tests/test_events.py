from __future__ import annotations

import json
import time
import uuid

import pytest
from pydantic import BaseModel

from tributary.errors import MalformedEvent
from tributary.events import (
    Event,
    EventIdBlock,
    Registry,
    decode,
    encode,
    make_event,
    new_event_id,
    new_event_id_block,
    new_event_ids,
)


class Flushed(BaseModel):
    node: str
    upload: int


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    reg.register("traffic.flushed", Flushed, version="2")
    return reg


def test_round_trip_keeps_every_envelope_field(registry: Registry) -> None:
    event = make_event(
        "traffic.flushed",
        {"node": "n1", "upload": 5},
        source="traffic_sync",
        registry=registry,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="vendor=x",
    )
    fields = encode(event)
    assert set(fields) == {
        "id",
        "type",
        "source",
        "time",
        "specversion",
        "v",
        "data",
        "traceparent",
        "tracestate",
    }
    back = decode(fields, registry)
    assert back == event
    assert back.v == "2"
    assert isinstance(back.data, Flushed)
    assert json.loads(fields["data"]) == {"node": "n1", "upload": 5}
    assert fields["time"].endswith("Z")


def test_event_ids_are_unique_uuid7() -> None:
    ids = {new_event_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(i[14] == "7" for i in ids)


def test_a_batch_of_event_ids_is_rfc9562_uuid7_counting_up_from_now() -> None:
    before = time.time_ns() // 1_000_000
    batches = [new_event_ids(n) for n in (1, 2, 5000, 5000)]
    after = time.time_ns() // 1_000_000
    ids = [i for batch in batches for i in batch]
    assert len(set(ids)) == len(ids) == 10_003
    for text in ids:
        u = uuid.UUID(text)
        assert str(u) == text
        assert (u.version, u.variant) == (7, uuid.RFC_4122)
        assert before <= u.int >> 80 <= after
    for batch in batches:  # the same prefix, the last group counting up by one
        values = [uuid.UUID(i).int for i in batch]
        assert values == list(range(values[0], values[0] + len(batch)))
    assert new_event_ids(0) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "missing envelope field"),
        (
            {"id": "1", "type": "t", "source": "s", "time": "x", "specversion": "9", "data": "{}"},
            "specversion",
        ),
        (
            {"id": "1", "type": "t", "source": "s", "time": "x", "specversion": "1.0", "data": "{"},
            "not valid JSON",
        ),
        (
            {
                "id": "1",
                "type": "t",
                "source": "s",
                "time": "x",
                "specversion": "1.0",
                "data": "[1]",
            },
            "not a JSON object",
        ),
        (
            {
                "id": "1",
                "type": "traffic.flushed",
                "source": "s",
                "time": "x",
                "specversion": "1.0",
                "data": '{"node": "n"}',
            },
            "upload",
        ),
    ],
)
def test_malformed_entries_raise_one_error_type(
    registry: Registry, fields: dict[str, str], message: str
) -> None:
    with pytest.raises(MalformedEvent, match=message):
        decode(fields, registry)


def test_payload_converts_and_validates() -> None:
    event = Event(type="x", data={"node": "a", "upload": "3"}, source="s")
    assert event.payload(Flushed).upload == 3
    with pytest.raises(MalformedEvent):
        Event(type="x", data={"node": "a"}, source="s").payload(Flushed)


def test_an_event_id_block_is_three_values_that_make_the_same_ids() -> None:
    block = new_event_id_block(5)
    ids = block.ids()
    assert ids == [block.id_at(i) for i in range(5)]
    assert EventIdBlock(block.prefix, block.start, block.count).ids() == ids
    part = block.part(2, 3)
    assert part.ids() == ids[2:]
    assert part.prefix == block.prefix
    with pytest.raises(ValueError, match="not in a block of 5"):
        block.part(3, 3)
    with pytest.raises(IndexError):
        block.id_at(5)
    with pytest.raises(ValueError, match="at least one id"):
        new_event_id_block(0)


@pytest.mark.parametrize(
    ("prefix", "start", "count", "message"),
    [
        ("0190a000-0000-7000-8000-", 0, 1, None),
        ("0190a000-0000-7000-8000-", 2**48 - 1, 1, None),
        ("0190a000-0000-7000-8000-", 2**48 - 1, 2, "overflow the last 48 bits"),
        ("0190a000-0000-7000-8000-", -1, 1, "overflow"),
        ("0190a000-0000-4000-8000-", 0, 1, "not the prefix of a UUIDv7"),  # version 4
        ("0190A000-0000-7000-8000-", 0, 1, "not the prefix"),  # upper case
        ("0190a000-0000-7000-8000", 0, 1, "not the prefix"),  # no dash before the counter
    ],
)
def test_an_event_id_block_refuses_what_is_not_uuid7s(
    prefix: str, start: int, count: int, message: str | None
) -> None:
    if message is None:
        assert str(uuid.UUID(EventIdBlock(prefix, start, count).id_at(0))).startswith(prefix)
        return
    with pytest.raises(ValueError, match=message):
        EventIdBlock(prefix, start, count)
