"""A proxy node's writer, run as a separate process by the load and crash tests.

``python writer.py REDIS_URL PREFIX SEED NODES MODE [CONCURRENCY [RATE]]`` increments
random nodes by random amounts (at most RATE increments per second per coroutine,
0: as fast as it can) until SIGTERM, then prints what it wrote as JSON:
``{"ops": n, "sums": {"<node>": [upload, download]}}``. MODE ``index`` uses
record_traffic (MULTI + dirty index); ``raw`` writes as the Go proxies do:
HINCRBY upload, HINCRBY download, EXPIRE, not atomically, no index.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time

import redis.asyncio as aioredis

from traffic_sync.counters import TrafficKeys, record_traffic
from tributary.keys import Keys

#: increments in flight at once in this process, by default
DEFAULT_CONCURRENCY = 8


async def raw_write(redis: aioredis.Redis, key: str, up: int, down: int) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hincrby(key, "upload", up)
        pipe.hincrby(key, "download", down)
        pipe.expire(key, 86400)
        await pipe.execute()


async def loop(
    redis: aioredis.Redis, keys: TrafficKeys, rng: random.Random, nodes: int, mode: str,
    sums: dict[int, list[int]], stop: asyncio.Event, rate: float,
) -> int:  # fmt: skip
    ops = 0
    started = time.monotonic()
    while not stop.is_set():
        if rate:  # pace the load: the machine is shared with the service under test
            await asyncio.sleep(max(0.0, started + ops / rate - time.monotonic()))
        node, up, down = rng.randrange(nodes), rng.randrange(1, 10_000), rng.randrange(0, 5_000)
        if mode == "index":
            await record_traffic(redis, node, up, down, keys=keys)
        else:
            await raw_write(redis, keys.node(node), up, down)
        total = sums.setdefault(node, [0, 0])
        total[0] += up
        total[1] += down
        ops += 1
    return ops


async def main(
    url: str, prefix: str, seed: int, nodes: int, mode: str, concurrency: int, rate: float
) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    redis = aioredis.Redis.from_url(url, decode_responses=True)
    keys = TrafficKeys(Keys(prefix))
    rng = random.Random(seed)
    sums: dict[int, list[int]] = {}
    print("ready", flush=True)
    ops = await asyncio.gather(
        *(loop(redis, keys, rng, nodes, mode, sums, stop, rate) for _ in range(concurrency))
    )
    await redis.aclose()
    print(json.dumps({"ops": sum(ops), "sums": sums}), flush=True)


if __name__ == "__main__":
    url, prefix, seed, nodes, mode = sys.argv[1:6]
    concurrency = int(sys.argv[6]) if len(sys.argv) > 6 else DEFAULT_CONCURRENCY
    rate = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
    asyncio.run(main(url, prefix, int(seed), int(nodes), mode, concurrency, rate))
