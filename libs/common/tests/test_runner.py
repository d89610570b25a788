"""The consumer-group runner against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer
from pydantic import BaseModel

from tributary.errors import Reject
from tributary.events import Event, Registry, make_event
from tributary.keys import Keys
from tributary.metrics import Metrics, observe_many
from tributary.redis_client import connect
from tributary.streams import client
from tributary.streams.dlq import DeadLetters
from tributary.streams.message import HandlerCall
from tributary.streams.middleware import Chain, Middleware
from tributary.streams.producer import Producer
from tributary.streams.runner import (
    HandlerOptions,
    RunnerOptions,
    StreamRunner,
    UnexpectedDeadLetter,
)
from tributary.streams.trim import TRIM_PAGE, safe_trim
from tributary.tasks import cancel_and_wait
from tributary_testing.waiting import await_until

FAST = RunnerOptions(
    batch_size=50,
    block_ms=20,
    retry_base_s=0.01,
    retry_max_s=0.05,
    claim_idle_ms=200,
    housekeeping_interval_s=0.05,
    handler_timeout_s=5.0,
)


class Reading(BaseModel):
    device: str
    value: float


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[Tracer]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test")
    provider.shutdown()


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    reg.register("device.read", Reading)
    return reg


def reading(registry: Registry, value: float, device: str = "d1") -> Event:
    return make_event("device.read", {"device": device, "value": value}, "test", registry)


def runner(
    redis: aioredis.Redis,
    keys: Keys,
    tracer: Tracer,
    registry: Registry,
    consumer: str = "c1",
    options: RunnerOptions = FAST,
    metrics: Metrics | None = None,
) -> StreamRunner:
    return StreamRunner(
        redis,
        "readings",
        "g",
        consumer,
        tracer=tracer,
        registry=registry,
        keys=keys,
        options=options,
        metrics=metrics,
    )


async def test_handler_receives_every_envelope_field(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    sent = [reading(registry, float(i)) for i in range(120)]
    await Producer(redis_client, tracer, keys).publish_many([("readings", e) for e in sent])
    got: list[Event] = []
    r = runner(redis_client, keys, tracer, registry)

    @r.handler("device.read")
    async def on_reading(event: Event) -> None:
        got.append(event)

    await r.drain()
    assert sorted(got, key=lambda e: e.id) == sorted(sent, key=lambda e: e.id)
    assert (await redis_client.xpending(keys.stream("readings"), "g"))["pending"] == 0


async def test_malformed_entries_go_to_dlq_and_consumer_keeps_going(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    producer = Producer(redis_client, tracer, keys)
    await producer.publish("readings", reading(registry, 1))
    await client.add(redis_client, keys.stream("readings"), {"garbage": "yes"})
    bad_payload = reading(registry, 2)
    fields = {
        "id": bad_payload.id,
        "type": "device.read",
        "source": "x",
        "time": "t",
        "specversion": "1.0",
        "data": '{"device": 5}',
    }
    await client.add(redis_client, keys.stream("readings"), fields)
    await producer.publish("readings", reading(registry, 3))
    seen: list[float] = []
    metrics = Metrics()
    r = runner(redis_client, keys, tracer, registry, metrics=metrics)

    @r.handler("device.read")
    async def on_reading(event: Event) -> None:
        seen.append(event.payload(Reading).value)

    await r.drain()
    assert seen == [1.0, 3.0]
    letters = await DeadLetters(redis_client, "readings", keys).page()
    assert len(letters) == 2
    assert "missing envelope field" in letters[0].error
    assert letters[0].fields == {"garbage": "yes"}
    assert "device" in letters[1].error
    assert letters[1].group == "g"
    assert metrics.dead_lettered.labels("readings", "g")._value.get() == 2


async def test_failing_handler_is_dead_lettered_after_max_deliveries(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    await Producer(redis_client, tracer, keys).publish("readings", reading(registry, 1))
    attempts = 0
    r = runner(redis_client, keys, tracer, registry)

    @r.handler("device.read")
    async def always_fails(event: Event) -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError(f"boom {attempts}")

    await r.drain()
    assert attempts == 5
    [letter] = await DeadLetters(redis_client, "readings", keys).page()
    assert letter.error == "RuntimeError: boom 5"
    assert letter.deliveries == 5
    assert await redis_client.zcard(keys.retries("readings", "g")) == 0


async def test_handler_failing_twice_then_succeeding_is_processed_once(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    await Producer(redis_client, tracer, keys).publish("readings", reading(registry, 1))
    attempts, effects = 0, 0
    r = runner(redis_client, keys, tracer, registry)

    @r.handler("device.read")
    async def flaky(event: Event) -> None:
        nonlocal attempts, effects
        attempts += 1
        if attempts <= 2:
            raise ConnectionError("transient")
        effects += 1

    await r.drain()
    assert (attempts, effects) == (3, 1)
    assert await DeadLetters(redis_client, "readings", keys).count() == 0


async def test_reject_dead_letters_at_once(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    await Producer(redis_client, tracer, keys).publish("readings", reading(registry, 1))
    r = runner(redis_client, keys, tracer, registry)
    calls = 0

    @r.handler("device.read")
    async def rejects(event: Event) -> None:
        nonlocal calls
        calls += 1
        raise Reject("device unknown")

    await r.drain()
    [letter] = await DeadLetters(redis_client, "readings", keys).page()
    assert (calls, letter.deliveries, letter.error) == (1, 1, "Reject: device unknown")


async def test_pending_entries_of_a_dead_consumer_are_reclaimed(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    await Producer(redis_client, tracer, keys).publish_many(
        [("readings", reading(registry, float(i))) for i in range(10)]
    )
    dead = runner(redis_client, keys, tracer, registry, consumer="dead")
    await dead.ensure_group()
    # "dead" reads the entries and dies before acking any of them
    await client.read_group(redis_client, "g", "dead", keys.stream("readings"), 100, None)
    got: list[float] = []
    live = runner(redis_client, keys, tracer, registry, consumer="live")

    @live.handler("device.read")
    async def on_reading(event: Event) -> None:
        got.append(event.payload(Reading).value)

    await live.drain()
    assert sorted(got) == [float(i) for i in range(10)]
    pending = await redis_client.xpending(keys.stream("readings"), "g")
    assert pending["pending"] == 0


async def test_trimming_never_removes_unacked_entries(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    key = keys.stream("readings")
    producer = Producer(redis_client, tracer, keys)
    ids = [await producer.publish("readings", reading(registry, float(i))) for i in range(20)]
    await redis_client.xgroup_create(key, "slow", id="0")
    await redis_client.xgroup_create(key, "fast", id="0")
    # "fast" acks everything; "slow" read 10, acked the first 5, never read the rest
    fast = await client.read_group(redis_client, "fast", "f", key, 100, None)
    await redis_client.xack(key, "fast", *[i for i, _ in fast])
    slow = await client.read_group(redis_client, "slow", "s", key, 10, None)
    await redis_client.xack(key, "slow", *[i for i, _ in slow][:5])

    removed = await safe_trim(redis_client, key, maxlen=0)
    assert removed == 5
    left = [i for i, _ in await client.entries(redis_client, key)]
    assert left == ids[5:]
    # once "slow" acks everything it read and reads the rest, all may go
    rest = await client.read_group(redis_client, "slow", "s", key, 100, None)
    await redis_client.xack(key, "slow", *ids[5:10], *[i for i, _ in rest])
    assert await safe_trim(redis_client, key, maxlen=3) == 12
    assert [i for i, _ in await client.entries(redis_client, key)] == ids[17:]


async def test_consumer_span_continues_the_producer_trace(
    redis_client: aioredis.Redis,
    keys: Keys,
    tracer: Tracer,
    registry: Registry,
    exporter: InMemorySpanExporter,
) -> None:
    await Producer(redis_client, tracer, keys).publish("readings", reading(registry, 1))
    r = runner(redis_client, keys, tracer, registry)
    inner: list[int] = []

    @r.handler("device.read")
    async def on_reading(event: Event) -> None:
        with tracer.start_as_current_span("inside handler") as span:
            inner.append(span.get_span_context().trace_id)

    await r.drain()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    send, process = spans["send readings"], spans["process readings"]
    assert send.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == send.context.trace_id == inner[0]
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert process.attributes is not None
    assert process.attributes["messaging.consumer.group.name"] == "g"
    assert process.attributes["messaging.system"] == "redis"


async def test_dead_letters_can_be_replayed(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    event = reading(registry, 7)
    await Producer(redis_client, tracer, keys).publish("readings", event)
    healthy = False
    got: list[str] = []
    r = runner(redis_client, keys, tracer, registry)

    @r.handler("device.read")
    async def until_fixed(ev: Event) -> None:
        if not healthy:
            raise Reject("downstream broken")
        got.append(ev.id)

    await r.drain()
    dlq = DeadLetters(redis_client, "readings", keys)
    assert await dlq.count() == 1
    healthy = True
    assert await dlq.replay() == 1
    await r.drain()
    assert got == [event.id]
    assert await dlq.count() == 0


async def test_batch_handler_gets_all_events_of_a_read(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    await Producer(redis_client, tracer, keys).publish_many(
        [("readings", reading(registry, float(i))) for i in range(30)]
    )
    sizes: list[int] = []
    r = runner(redis_client, keys, tracer, registry)

    @r.batch_handler("device.read")
    async def on_batch(events: list[Event]) -> None:
        sizes.append(len(events))

    await r.drain()
    assert sum(sizes) == 30
    assert max(sizes) <= FAST.batch_size


async def test_idle_consumers_without_pending_entries_are_removed(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    key = keys.stream("readings")
    # consumer_idle_ms=-1: any idle time counts, so the test needs no sleep
    r = runner(redis_client, keys, tracer, registry, options=RunnerOptions(consumer_idle_ms=-1))
    await r.ensure_group()
    producer = Producer(redis_client, tracer, keys)
    for i in range(2):
        await producer.publish("readings", reading(registry, float(i)))
    [(done, _)] = await client.read_group(redis_client, "g", "gone", key, 1, None)
    await redis_client.xack(key, "g", done)
    await client.read_group(redis_client, "g", "busy", key, 1, None)  # keeps one pending
    await r.housekeeping.run()
    names = [c["name"] for c in await redis_client.xinfo_consumers(key, "g")]
    assert names == ["busy"]


async def test_restarted_consumer_recovers_its_own_pending_entries_at_once(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    await Producer(redis_client, tracer, keys).publish_many(
        [("readings", reading(registry, float(i))) for i in range(5)]
    )
    slow_claims = RunnerOptions(block_ms=20, claim_idle_ms=600_000, retry_base_s=0.01)
    first = runner(redis_client, keys, tracer, registry, consumer="same", options=slow_claims)
    await first.ensure_group()
    # the first life reads everything and dies before acking
    await client.read_group(redis_client, "g", "same", keys.stream("readings"), 100, None)
    again = runner(redis_client, keys, tracer, registry, consumer="same", options=slow_claims)
    got: list[float] = []

    @again.handler("device.read")
    async def on_reading(event: Event) -> None:
        got.append(event.payload(Reading).value)

    await again.drain(timeout=10)
    assert sorted(got) == [0.0, 1.0, 2.0, 3.0, 4.0]


async def test_middleware_after_hooks_run_in_reverse_and_a_failing_one_is_contained(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    from tributary.streams.middleware import Middleware

    calls: list[str] = []

    class Recorder(Middleware):
        def __init__(self, name: str) -> None:
            self.name = name

        def before_process(self, call: HandlerCall) -> None:
            calls.append(f"before {self.name}")

        def after_process(self, call: HandlerCall, exc: BaseException | None) -> None:
            calls.append(f"after {self.name}")

    class Broken(Middleware):
        def before_process(self, call: HandlerCall) -> None:
            raise RuntimeError("middleware bug")

        def after_process(self, call: HandlerCall, exc: BaseException | None) -> None:
            raise RuntimeError("middleware bug")

    await Producer(redis_client, tracer, keys).publish("readings", reading(registry, 1))
    r = StreamRunner(
        redis_client, "readings", "g", "c1", tracer=tracer, registry=registry, keys=keys,
        options=FAST, middleware=[Recorder("a"), Broken(), Recorder("b")],
    )  # fmt: skip
    handled: list[float] = []

    @r.handler("device.read")
    async def on_reading(event: Event) -> None:
        handled.append(event.payload(Reading).value)

    await r.drain()
    assert handled == [1.0]
    assert calls == ["before a", "before b", "after b", "after a"]


async def test_entries_deleted_while_pending_are_acked_away(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    key = keys.stream("readings")
    entry_id = await Producer(redis_client, tracer, keys).publish("readings", reading(registry, 1))
    r = runner(redis_client, keys, tracer, registry, consumer="live")
    await r.ensure_group()
    await client.read_group(redis_client, "g", "dead", key, 10, None)
    await redis_client.xdel(key, entry_id)
    await r.drain()
    assert (await redis_client.xpending(key, "g"))["pending"] == 0


async def test_an_outage_spends_no_deliveries(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    """A database or Redis outage longer than the retries dead-letters nothing: those
    failures keep the entry's delivery count, and it is handled once the outage ends."""
    import redis.exceptions

    await Producer(redis_client, tracer, keys).publish("readings", reading(registry, 1))
    r = runner(redis_client, keys, tracer, registry)
    seen: list[int] = []

    @r.handler("device.read")
    async def during_outage(event: Event) -> None:
        seen.append(len(seen))
        if len(seen) <= 8:  # more than max_deliveries (5)
            raise redis.exceptions.ConnectionError("Error 111 connecting. Connection refused.")

    await r.drain()
    assert len(seen) == 9
    assert await DeadLetters(redis_client, "readings", keys).count() == 0
    pending = await redis_client.xpending(keys.stream("readings"), "g")
    assert pending["pending"] == 0


async def test_after_an_outage_ordinary_failures_still_dead_letter(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    import redis.exceptions

    await Producer(redis_client, tracer, keys).publish("readings", reading(registry, 1))
    r = runner(redis_client, keys, tracer, registry)
    attempts = 0

    @r.handler("device.read")
    async def outage_then_bug(event: Event) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise redis.exceptions.ConnectionError("Connection refused")
        raise RuntimeError("a bug")

    await r.drain()
    [letter] = await DeadLetters(redis_client, "readings", keys).page()
    # 3 uncounted outage failures, then the 5 deliveries a bug is allowed
    assert attempts == 3 + 5
    assert letter.deliveries == 5
    assert letter.error == "RuntimeError: a bug"


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name, {"stream": "readings", "group": "g"})
    return value or 0.0


async def test_metrics_count_every_outcome(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    """Successes are counted per batch, failures per call; the histogram sees every call."""
    await Producer(redis_client, tracer, keys).publish_many(
        [("readings", reading(registry, float(i))) for i in range(120)]
    )
    metrics = Metrics()
    r = runner(redis_client, keys, tracer, registry, metrics=metrics)
    attempts: dict[float, int] = {}

    @r.handler("device.read")
    async def flaky(event: Event) -> None:
        value = event.payload(Reading).value
        attempts[value] = attempts.get(value, 0) + 1
        if value == 7.0 and attempts[value] == 1:
            raise RuntimeError("once")
        if value == 9.0:
            raise Reject("never")

    await r.drain()
    assert sample(metrics, "tributary_events_processed_total") == 119  # 9.0 never succeeds
    assert sample(metrics, "tributary_events_failed_total") == 2
    assert sample(metrics, "tributary_events_retried_total") == 1
    assert sample(metrics, "tributary_events_dead_lettered_total") == 1
    # 119 successes + 2 failures, each one handler call
    assert sample(metrics, "tributary_handler_duration_seconds_count") == 121


class Recorder(Middleware):
    def __init__(self, name: str, log: list[str], *, fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def before_process(self, call: HandlerCall) -> None:
        self.log.append(f"{self.name}.before")
        if self.fail:
            raise RuntimeError("broken middleware")

    def after_process(self, call: HandlerCall, exc: BaseException | None) -> None:
        self.log.append(f"{self.name}.after")

    def after_batch(self, calls: Sequence[HandlerCall]) -> None:
        self.log.append(f"{self.name}.batch:{len(calls)}")


class OnlyAfter(Middleware):
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def after_process(self, call: HandlerCall, exc: BaseException | None) -> None:
        self.log.append("only.after")


def test_middleware_hooks_run_in_order_and_a_failing_one_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []
    chain = Chain([Recorder("a", log, fail=True), OnlyAfter(log), Recorder("b", log)])
    call = HandlerCall("readings", "g", "c1", [])
    chain.before(call)
    chain.after(call, None)
    chain.after_batch([call, call])
    assert log == [
        "a.before",  # raised: logged, b still runs
        "b.before",
        "b.after",
        "only.after",
        "a.after",
        "b.batch:2",
        "a.batch:2",
    ]
    assert "Recorder.before_process failed" in caplog.text


async def test_a_failed_entry_is_retried_while_a_backlog_is_read(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    """Reads that come back full look for due retries only every so often; they still
    find them before the backlog is over."""
    await Producer(redis_client, tracer, keys).publish_many(
        [("readings", reading(registry, float(i))) for i in range(3000)]
    )
    options = RunnerOptions(batch_size=50, block_ms=20, retry_base_s=0.01, retry_max_s=0.02)
    r = runner(redis_client, keys, tracer, registry, options=options)
    order: list[float] = []
    failed_once = False

    @r.handler("device.read")
    async def slow(event: Event) -> None:
        nonlocal failed_once
        value = event.payload(Reading).value
        if value == 0.0 and not failed_once:
            failed_once = True
            raise RuntimeError("first delivery fails")
        await asyncio.sleep(0.001)  # the work of a real handler
        order.append(value)

    await r.drain(timeout=60)
    assert sorted(order) == [float(i) for i in range(3000)]
    assert order.index(0.0) < len(order) - 500, "the retry waited for the end of the backlog"


def test_observe_many_counts_as_observing_one_by_one() -> None:
    amounts = [0.0, 0.0005, 0.0004, 0.003, 0.75, 31.0, 1e-9, 2.5, 0.0005]
    one, many = Metrics(), Metrics()
    for amount in amounts:
        one.handler_seconds.labels("s", "g").observe(amount)
    observe_many(many.handler_seconds.labels("s", "g"), amounts)
    observe_many(many.handler_seconds.labels("s", "g"), [])

    def samples(m: Metrics) -> list[tuple[str, dict[str, str], float]]:
        return [(s.name, s.labels, s.value) for mf in m.registry.collect() for s in mf.samples
                if s.name.startswith("tributary_handler_duration")
                and not s.name.endswith("_created")]  # fmt: skip

    assert samples(many) == samples(one)


def test_a_middleware_may_skip_successes_and_still_see_failures() -> None:
    seen: list[str] = []

    class FailuresOnly(Middleware):
        after_success = False

        def after_process(self, call: HandlerCall, exc: BaseException | None) -> None:
            seen.append("failure" if exc else "success")

    chain = Chain([FailuresOnly(), Recorder("all", seen)])
    call = HandlerCall("s", "g", "c", [])
    chain.after(call, None)
    chain.after(call, RuntimeError("x"))
    assert seen == ["all.after", "all.after", "failure"]


async def _pending(redis: aioredis.Redis, keys: Keys) -> int:
    return int((await redis.xpending(keys.stream("readings"), "g"))["pending"])


async def _publish_readings(
    redis: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry, n: int
) -> None:
    """Readings with values 0.0 .. n-1 on "readings"."""
    await Producer(redis, tracer, keys).publish_many(
        [("readings", reading(registry, float(i))) for i in range(n)]
    )


async def _readings_runner(
    redis: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry, n: int
) -> StreamRunner:
    """n readings published, and a runner (batches of 50) to read them."""
    await _publish_readings(redis, keys, tracer, registry, n)
    return runner(redis, keys, tracer, registry)


async def test_a_full_read_sends_the_next_read_while_its_batch_runs(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    r = await _readings_runner(redis_client, keys, tracer, registry, 120)
    pending_seen: list[int] = []
    got: list[float] = []

    @r.handler("device.read")
    async def on_reading(event: Event) -> None:
        value = event.payload(Reading).value
        if value == 0.0:
            # the first batch is still running: the second one is read meanwhile
            # (within the handler's own deadline: options.handler_timeout_s is 5 s)
            async def read_ahead() -> bool:
                return await _pending(redis_client, keys) >= 100

            await await_until(read_ahead, seconds=5, what="the next batch read ahead")
            pending_seen.append(await _pending(redis_client, keys))
        got.append(value)

    await r.drain()
    assert pending_seen == [100]
    assert sorted(got) == [float(i) for i in range(120)]
    assert await _pending(redis_client, keys) == 0


async def test_a_stop_handles_the_read_already_sent_and_no_more(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    r = await _readings_runner(redis_client, keys, tracer, registry, 500)
    stop = asyncio.Event()
    got: list[float] = []

    @r.handler("device.read")
    async def on_reading(event: Event) -> None:
        got.append(event.payload(Reading).value)
        stop.set()  # during the first batch, with the second one already asked for

    await asyncio.wait_for(r.run(stop), 10)
    # both batches delivered to this consumer were handled and acked; nothing else was read
    assert sorted(got) == [float(i) for i in range(100)]
    assert await _pending(redis_client, keys) == 0
    groups = await redis_client.xinfo_groups(keys.stream("readings"))
    assert groups[0]["entries-read"] == 100


async def test_entries_read_ahead_are_not_reclaimed_while_their_batch_waits(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    """The read-ahead batch waits behind a slow one for longer than the claim idle time:
    its claims are kept fresh, so another consumer's XAUTOCLAIM leaves it alone."""
    await _publish_readings(redis_client, keys, tracer, registry, 20)
    options = RunnerOptions(batch_size=10, block_ms=20, claim_idle_ms=300,
                            housekeeping_interval_s=3600, handler_timeout_s=5.0)  # fmt: skip
    slow = runner(redis_client, keys, tracer, registry, consumer="slow", options=options)
    other = runner(redis_client, keys, tracer, registry, consumer="other", options=options)
    handled: list[tuple[str, float]] = []
    stolen: list[int] = []

    @slow.handler("device.read")
    async def on_slow(event: Event) -> None:
        value = event.payload(Reading).value
        if value == 0.0:
            # hold the first batch for 4x the claim idle time while "other" keeps looking
            for _ in range(12):
                stolen.append(await other.reclaim_stuck())
                await asyncio.sleep(0.1)
        handled.append(("slow", value))

    @other.handler("device.read")
    async def on_other(event: Event) -> None:
        handled.append(("other", event.payload(Reading).value))

    await slow.drain(timeout=30)
    assert sum(stolen) == 0
    assert sorted(handled) == [("slow", float(i)) for i in range(20)]


async def test_a_group_that_vanishes_is_created_again_and_reading_goes_on(
    redis_client: aioredis.Redis,
    keys: Keys,
    tracer: Tracer,
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As after a restart of a Redis that keeps nothing: the group is gone, with the
    entries this consumer had read ahead; the runner creates it again and re-reads."""
    r = await _readings_runner(redis_client, keys, tracer, registry, 500)
    seen: set[float] = set()
    destroyed = False

    @r.handler("device.read")
    async def on_reading(event: Event) -> None:
        nonlocal destroyed
        if not destroyed:  # the first batch runs with the second one read ahead
            destroyed = True
            await redis_client.xgroup_destroy(keys.stream("readings"), "g")
            raise RuntimeError("its ack would fail: the group is gone")
        seen.add(event.payload(Reading).value)

    stop = asyncio.Event()
    task = asyncio.create_task(r.run(stop))
    await await_until(lambda: len(seen) >= 500, task, what=lambda: f"{len(seen)} of 500 handled")
    stop.set()
    await asyncio.wait_for(task, 10)
    assert seen == {float(i) for i in range(500)}
    assert "group g of readings vanished; creating it again" in caplog.text


async def test_a_stream_deleted_while_a_read_waits_is_made_again_and_reading_goes_on(
    redis_client: aioredis.Redis, redis_url: str, keys: Keys, tracer: Tracer,
    registry: Registry, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """DEL of the stream under a blocked XREADGROUP answers UNBLOCKED: not a crash."""
    options = RunnerOptions(batch_size=50, block_ms=5_000, housekeeping_interval_s=60)
    name = f"{keys.prefix}runner"  # its own connections, told apart from other tests' reads
    own = connect(redis_url, client_name=name)
    r = runner(own, keys, tracer, registry, options=options)
    seen: list[float] = []

    @r.handler("device.read")
    async def on_reading(event: Event) -> None:
        seen.append(event.payload(Reading).value)

    stop = asyncio.Event()
    task = asyncio.create_task(r.run(stop))
    key = keys.stream("readings")

    async def blocked() -> bool:
        clients: list[dict[str, str]] = await redis_client.client_list()
        return any(
            c.get("name") == name and c.get("cmd") == "xreadgroup" and "b" in str(c.get("flags"))
            for c in clients
        )

    await await_until(blocked, task, what="a blocked XREADGROUP")
    await redis_client.delete(key)
    producer = Producer(redis_client, tracer, keys)

    async def read_again() -> bool:
        await producer.publish("readings", reading(registry, 1))  # until the group is back
        return bool(seen)

    await await_until(read_again, task, what="an entry read after the DEL", poll=0.05)
    stop.set()
    await asyncio.wait_for(task, 15)
    await own.aclose()
    assert "group g of readings vanished; creating it again" in caplog.text


async def test_cancelled_with_a_read_ahead_it_stops_and_a_restart_runs_both_batches(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    first = await _readings_runner(redis_client, keys, tracer, registry, 200)
    never = asyncio.Event()

    @first.handler("device.read")
    async def stuck(event: Event) -> None:
        await never.wait()

    await first.ensure_group()
    task = asyncio.create_task(first.run())

    async def read_ahead() -> bool:  # a batch running, one read ahead
        return await _pending(redis_client, keys) >= 100

    await await_until(read_ahead, task, what="a batch running and one read ahead")
    await asyncio.wait_for(cancel_and_wait(task), 10)  # cancels again until it is done
    assert task.cancelled()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("claims:")]

    seen: list[float] = []
    again = runner(redis_client, keys, tracer, registry)  # the same consumer name

    @again.handler("device.read")
    async def record(event: Event) -> None:
        seen.append(event.payload(Reading).value)

    await again.drain()
    assert sorted(seen) == [float(i) for i in range(200)]


async def test_a_slow_handler_holds_back_only_its_own_lane(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    """Lanes take jobs from one queue: while the first call waits, the other lane runs
    every other job of the batch (with jobs dealt out to lanes in advance, the third
    job would wait behind the first, and the first waits for the third: a deadlock)."""
    sent = [reading(registry, float(i)) for i in range(6)]
    await Producer(redis_client, tracer, keys).publish_many([("readings", e) for e in sent])
    options = RunnerOptions(batch_size=50, concurrency=2, handler_timeout_s=10, block_ms=20)
    r = runner(redis_client, keys, tracer, registry, options=options)
    others_done = asyncio.Event()
    done: list[float] = []

    @r.handler("device.read")
    async def on_reading(event: Event) -> None:
        value = event.payload(Reading).value
        if value == 0:
            await others_done.wait()
        done.append(value)
        if len(done) == 5:
            others_done.set()

    await r.drain(timeout=5)
    assert done == [1.0, 2.0, 3.0, 4.0, 5.0, 0.0]


async def test_each_call_gets_exactly_its_deadline(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    """handler_timeout_s means each call's own deadline: a call just under it succeeds
    right after another one did in the same lane, a call just over it is cut at it."""
    sent = [reading(registry, v) for v in (0.2, 0.2, 0.45)]
    await Producer(redis_client, tracer, keys).publish_many([("readings", e) for e in sent])
    options = RunnerOptions(batch_size=50, concurrency=1, handler_timeout_s=0.3, block_ms=20,
                            max_deliveries=1)  # fmt: skip
    r = runner(redis_client, keys, tracer, registry, options=options)
    took: dict[float, float] = {}

    @r.handler("device.read")
    async def slow(event: Event) -> None:
        seconds = event.payload(Reading).value
        started = asyncio.get_running_loop().time()
        try:
            await asyncio.sleep(seconds)
        finally:
            took[seconds] = asyncio.get_running_loop().time() - started

    await r.drain(timeout=10)
    [letter] = await DeadLetters(redis_client, "readings", keys).page()
    assert letter.error == "TimeoutError: handler exceeded its 0.3s deadline"
    assert letter.fields["id"] == sent[2].id
    assert 0.3 <= took[0.45] < 0.45  # cut at its own deadline, not pushed out


async def test_a_handler_declares_its_own_deadline_delivery_limit_and_dead_letter_types(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    registry.register("device.calibrated", Reading)
    registry.register("device.reset", Reading)
    producer = Producer(redis_client, tracer, keys)
    slow = reading(registry, 1)
    calibrated = make_event("device.calibrated", {"device": "d", "value": 2}, "t", registry)
    reset = make_event("device.reset", {"device": "d", "value": 3}, "t", registry)
    await producer.publish_many([("readings", e) for e in (slow, calibrated, reset)])
    r = runner(redis_client, keys, tracer, registry)  # FAST: 5 deliveries, 5 s deadline
    attempts: dict[str, int] = {"calibrated": 0, "reset": 0}

    @r.handler("device.read", HandlerOptions(timeout_s=0.05))
    async def too_slow(event: Event) -> None:
        await asyncio.sleep(1)

    @r.handler("device.calibrated", HandlerOptions(max_deliveries=2))
    async def flaky(event: Event) -> None:
        attempts["calibrated"] += 1
        raise RuntimeError("still broken")

    @r.handler("device.reset", HandlerOptions(dead_letter_on=(KeyError,)))
    async def hopeless(event: Event) -> None:
        attempts["reset"] += 1
        raise KeyError("no such device")

    await r.drain(timeout=20)
    letters = {
        d.fields["type"]: d for d in await DeadLetters(redis_client, "readings", keys).page()
    }
    assert letters["device.read"].error == "TimeoutError: handler exceeded its 0.05s deadline"
    assert letters["device.read"].deliveries == 5
    assert attempts == {"calibrated": 2, "reset": 1}
    assert letters["device.calibrated"].deliveries == 2
    assert letters["device.reset"].deliveries == 1
    with pytest.raises(ValueError, match="positive"):
        HandlerOptions(timeout_s=0)


async def test_a_length_trim_walks_only_what_it_removes_in_pages_up_to_a_group_floor(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    key = keys.stream("big")
    async with redis_client.pipeline(transaction=False) as pipe:
        for n in range(3 * TRIM_PAGE + 500):
            pipe.xadd(key, {"n": str(n)})
        ids: list[str] = await pipe.execute()
    await redis_client.xgroup_create(key, "g", id=ids[2 * TRIM_PAGE + 99])  # acked up to here
    removed = await safe_trim(redis_client, key, maxlen=100)
    assert removed == 2 * TRIM_PAGE + 100  # pages of TRIM_PAGE, stopped at the group's floor
    assert (await client.entries(redis_client, key, count=1))[0][0] == ids[2 * TRIM_PAGE + 100]
    await redis_client.xgroup_setid(key, "g", "$")
    assert await safe_trim(redis_client, key, maxlen=100) == TRIM_PAGE + 400 - 100
    assert await redis_client.xlen(key) == 100
    assert await safe_trim(redis_client, key, maxlen=100) == 0
    old = (await client.entries(redis_client, key, count=1))[0][0]
    assert await safe_trim(redis_client, key, max_age_ms=0) == 100  # everything is older
    assert old not in [i for i, _ in await client.entries(redis_client, key)]


async def test_drain_fail_fast_stops_at_the_first_unexpected_dead_letter(
    redis_client: aioredis.Redis, keys: Keys, tracer: Tracer, registry: Registry
) -> None:
    producer = Producer(redis_client, tracer, keys)
    await producer.publish_many([("readings", reading(registry, float(i))) for i in range(3)])
    r = runner(redis_client, keys, tracer, registry)

    @r.handler("device.read")
    async def rejects_two(event: Event) -> None:
        if event.payload(Reading).value == 2:
            raise Reject("no such device")

    with pytest.raises(UnexpectedDeadLetter, match="was dead-lettered: Reject: no such device"):
        await r.drain(timeout=10, fail_fast=True)
    assert await DeadLetters(redis_client, "readings", keys).count() == 1  # settled first
    await r.drain(timeout=10)  # without it, a drain goes on as before
