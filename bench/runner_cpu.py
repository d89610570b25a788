"""CPU time the streams runner spends per event, without Redis: decode, dispatch, spans,
middleware and the settlement plan of 1,000-entry batches, with a no-op handler.

bench/streams.py measures throughput against Redis, which on a shared machine moves
with everything else running; this counts only this process's CPU time (best of
several rounds), so two checkouts can be compared on a busy machine: run it in each,
alternately. Prints one JSON line per handler kind and a summary line.
Env: BENCH_ROUNDS (default 7), BENCH_BATCHES per round (default 20).
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import redis.asyncio as aioredis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from bench._spans import DropExporter
from bench.streams import Sample
from tributary.events import Registry, encode, make_event
from tributary.metrics import Metrics
from tributary.runtime import tune_gc
from tributary.streams.runner import RunnerOptions, StreamRunner

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
BATCHES = int(os.environ.get("BENCH_BATCHES", "20"))
BATCH = 1000
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def _nothing(*_: object) -> None:
    return None


async def per_event_cpu_us(batch_handler: bool) -> float:
    registry = Registry()
    registry.register("bench.sample", Sample)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=65536))
    entries = [
        (f"1-{i}", encode(make_event(
            "bench.sample", {"node": f"n{i % 100}", "upload": i, "download": 2 * i}, "bench",
            registry, traceparent=TRACEPARENT,
        )))
        for i in range(BATCH)
    ]  # fmt: skip
    redis = aioredis.Redis()  # never called: settling is replaced below
    runner = StreamRunner(
        redis, "bench", "g", "c", tracer=provider.get_tracer("bench"), registry=registry,
        metrics=Metrics(), options=RunnerOptions(batch_size=BATCH),
    )  # fmt: skip
    runner.consumer.settle = _nothing  # type: ignore[method-assign,assignment]
    if batch_handler:
        runner.batch_handler("bench.sample")(_nothing)
    else:
        runner.handler("bench.sample")(_nothing)
    rounds = []
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(BATCHES):
            await runner.handle_entries(entries)
        rounds.append((time.process_time() - started) / (BATCHES * BATCH) * 1e6)
    provider.shutdown()
    await redis.aclose()
    return min(rounds)


async def main() -> None:
    tune_gc()
    per_event = await per_event_cpu_us(batch_handler=False)
    batch = await per_event_cpu_us(batch_handler=True)
    for case, value in (("per_event_handler", per_event), ("batch_handler", batch)):
        print(json.dumps({"case": case, "cpu_us_per_event": round(value, 2)}))
    print(json.dumps({"noop_cpu_us_per_event": round(per_event, 2),
                      "noop_batch_cpu_us_per_event": round(batch, 2)}))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
