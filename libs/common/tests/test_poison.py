"""Hostile stream entries: whatever bytes an entry holds, the runner dead-letters it byte
for byte with a reason and goes on, on every path an entry reaches a handler by (a read,
its own pending entries after a restart, XAUTOCLAIM); the DLQ tools and ``tail`` show and
replay such entries without failing."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import cast

import pytest
import redis
import redis.asyncio as aioredis
from opentelemetry.trace import NoOpTracer
from pydantic import BaseModel
from rich.console import Console

from tributary.cli import main
from tributary.events import Event, Registry, encode, make_event
from tributary.keys import Keys
from tributary.metrics import Metrics
from tributary.redis_client import connect
from tributary.streams.dlq import DLQ_PREFIX
from tributary.streams.runner import RunnerOptions, StreamRunner
from tributary.tail import tail
from tributary_testing.poison import BAD_BYTE, Poison, poisons, with_garbage_traceparent
from tributary_testing.sample_service import SERVICE, STREAM

FAST = RunnerOptions(batch_size=50, block_ms=20, retry_base_s=0.01, claim_idle_ms=100,
                     housekeeping_interval_s=0.05)  # fmt: skip


class Reading(BaseModel):
    device: str
    value: float


def registry() -> Registry:
    reg = Registry()
    reg.register("device.read", Reading)
    return reg


def good(value: float = 1.0) -> Event:
    return make_event("device.read", {"device": "d1", "value": value}, "test", registry())


GOOD = encode(good())
KINDS = poisons(GOOD)


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client that neither decodes replies nor encodes anything for us: bytes in, bytes out."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


class Consumer:
    def __init__(
        self, redis: aioredis.Redis, keys: Keys, name: str = "c1", reg: Registry | None = None
    ) -> None:
        self.metrics = Metrics()
        self.seen: list[str] = []
        self.runner = StreamRunner(redis, "readings", "g", name, tracer=NoOpTracer(),
                                   registry=reg or registry(), keys=keys, options=FAST,
                                   metrics=self.metrics)  # fmt: skip

        @self.runner.handler("device.read")
        async def on_reading(event: Event) -> None:
            self.seen.append(event.id)


async def dead_letters(raw: aioredis.Redis, keys: Keys) -> list[dict[bytes, bytes]]:
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await raw.xrange(keys.dlq("readings")))
    return [fields for _, fields in entries]


def original(letter: dict[bytes, bytes]) -> dict[bytes, bytes]:
    return {k: v for k, v in letter.items() if not k.startswith(DLQ_PREFIX.encode())}


@pytest.mark.parametrize("poison", KINDS, ids=[p.kind for p in KINDS])
async def test_a_poison_entry_is_dead_lettered_byte_for_byte_and_the_next_event_runs(
    redis_client: aioredis.Redis, raw: aioredis.Redis, keys: Keys, poison: Poison
) -> None:
    await raw.xadd(keys.stream("readings"), poison.fields)  # type: ignore[arg-type]
    after = good(2.0)
    await raw.xadd(keys.stream("readings"), encode(after))  # type: ignore[arg-type]
    consumer = Consumer(redis_client, keys)
    await consumer.runner.drain(timeout=10)
    assert consumer.seen == [after.id]
    [letter] = await dead_letters(raw, keys)
    assert original(letter) == poison.fields
    assert poison.reason in letter[b"dlq.error"].decode()
    assert letter[b"dlq.error"].startswith(b"MalformedEvent: ")
    dead = consumer.metrics.registry.get_sample_value(
        "tributary_events_dead_lettered_total", {"stream": "readings", "group": "g"}
    )
    assert dead == 1


async def test_every_kind_at_once_on_each_redelivery_path(
    redis_client: aioredis.Redis, raw: aioredis.Redis, keys: Keys
) -> None:
    """Delivered to a consumer that died (its own pending list after a restart) and to
    one that never came back (XAUTOCLAIM): the same dead letters, nothing crashes."""
    key = keys.stream("readings")
    await redis_client.xgroup_create(key, "g", id="0", mkstream=True)
    for poison in KINDS:
        await raw.xadd(key, poison.fields)  # type: ignore[arg-type]
    half = len(KINDS) // 2
    # c1 and "gone" read their share and die before handling it (bytes: nothing decoded)
    await raw.xreadgroup("g", "c1", {key: ">"}, count=half)
    await raw.xreadgroup("g", "gone", {key: ">"}, count=len(KINDS) - half)
    after = good(3.0)
    await raw.xadd(key, encode(after))  # type: ignore[arg-type]

    restarted = Consumer(redis_client, keys, "c1")  # recovers its own pending entries
    await restarted.runner.drain(timeout=10)
    assert restarted.seen == [after.id]
    letters = await dead_letters(raw, keys)
    assert sorted(map(original, letters), key=repr) == sorted((p.fields for p in KINDS), key=repr)
    assert (await redis_client.xpending(key, "g"))["pending"] == 0


def test_dlq_tools_show_and_replay_an_entry_that_is_not_utf8(
    keys: Keys, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    poison = next(p for p in KINDS if p.kind == "utf8-data")
    raw = redis.Redis.from_url(redis_url)
    raw.xadd(keys.stream(STREAM), poison.fields)  # type: ignore[arg-type]

    async def dead_letter_it() -> None:
        client = connect(redis_url)
        runner = StreamRunner(client, STREAM, "g", "c1", tracer=NoOpTracer(), keys=keys,
                              options=FAST)  # fmt: skip
        await runner.drain(timeout=10)
        await client.aclose()

    asyncio.run(dead_letter_it())
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("STREAM_PREFIX", keys.prefix)
    assert main(SERVICE, ["dlq", "list", STREAM]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "not valid UTF-8" in row["error"]
    assert main(SERVICE, ["dlq", "show", STREAM, row["id"]]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["fields"]["data"].endswith("}\\xff")  # the stray byte, visibly
    assert main(SERVICE, ["dlq", "replay", STREAM]) == 0
    assert "replayed 1" in capsys.readouterr().out
    entries = raw.xrange(keys.stream(STREAM))  # the original (acked), then the replay
    assert [f for _, f in entries] == [poison.fields] * 2  # type: ignore[union-attr]
    raw.close()


async def test_tail_shows_an_entry_that_is_not_utf8(
    redis_client: aioredis.Redis, raw: aioredis.Redis, keys: Keys
) -> None:
    fields = {**{k.encode(): v.encode() for k, v in GOOD.items()}, b"type": b"x" + BAD_BYTE}
    await raw.xadd(keys.stream("readings"), fields)  # type: ignore[arg-type]
    await raw.xadd(keys.stream("readings"), encode(good()))  # type: ignore[arg-type]
    out = io.StringIO()
    console = Console(file=out, width=400, color_system=None)
    assert await tail(redis_client, keys, ["readings"], console, from_start=True, count=2) == 2
    text = out.getvalue()
    assert "MALFORMED (field 'type': value is not valid UTF-8" in text
    assert '"type": "x\\\\xff"' in text
    assert "device.read from test" in text


async def test_a_garbage_traceparent_is_ignored_and_the_event_processed(
    redis_client: aioredis.Redis, raw: aioredis.Redis, keys: Keys
) -> None:
    """W3C Trace Context: a traceparent that does not parse is ignored (a new trace
    starts); the event itself is fine."""
    fields = with_garbage_traceparent(encode(good()))
    await redis_client.xadd(keys.stream("readings"), fields)  # type: ignore[arg-type]
    consumer = Consumer(redis_client, keys)
    await consumer.runner.drain(timeout=10)
    assert consumer.seen == [fields["id"]]
    assert await dead_letters(raw, keys) == []


async def test_a_type_the_registry_knows_but_the_group_does_not_handle_is_acked_and_counted(
    redis_client: aioredis.Redis, raw: aioredis.Redis, keys: Keys
) -> None:
    """A stream shared by several types is normal: a known type without a handler here is
    ignored (counted); a type nobody knows is dead-lettered (see the kinds above)."""
    reg = registry()
    reg.register("device.calibrated", Reading)
    other = make_event("device.calibrated", {"device": "d1", "value": 1}, "test", reg)
    await redis_client.xadd(keys.stream("readings"), encode(other))  # type: ignore[arg-type]
    consumer = Consumer(redis_client, keys, reg=reg)
    await consumer.runner.drain(timeout=10)
    assert await dead_letters(raw, keys) == []
    ignored = consumer.metrics.registry.get_sample_value(
        "tributary_events_ignored_total", {"stream": "readings", "group": "g"}
    )
    assert ignored == 1
