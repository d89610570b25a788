"""Two real service processes: exactly one schedules; kill it and the other takes over."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from simulators.ports import free_port
from snapshot.credentials import generate_key
from tributary.keys import Keys
from tributary.leases import DEFAULT_LEASE_TTL_SECONDS
from tributary_testing.auth import AUTH
from tributary_testing.waiting import wait_until

LEASE = re.compile(r'^tributary_lease_held\{lease="snapshot:tick"\} (\S+)$', re.MULTILINE)


@pytest.fixture
def start(
    redis_url: str, postgres_url: str, pg_schema: str, keys: Keys
) -> Iterator[Callable[[str], tuple[subprocess.Popen[bytes], int]]]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SNAPSHOT_", "OTEL_", "DB_SCHEMA"))
    }
    env.update(
        REDIS_URL=redis_url, DATABASE_URL=postgres_url, STREAM_PREFIX=keys.prefix,
        DB_SCHEMA=pg_schema, SNAPSHOT_ENCRYPTION_KEY=generate_key(),
        SNAPSHOT_COLLECT_INTERVAL_SECONDS="0.5", LOG_LEVEL="WARNING",
        SHUTDOWN_TIMEOUT_SECONDS="5",
    )  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []

    def launch(name: str) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "snapshot", "run"],
            env={**env, "CONSUMER_NAME": name, "HTTP_PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        return proc, port

    yield launch
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.communicate()


def _leads(port: int) -> bool | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=AUTH, timeout=2).text
    except httpx.HTTPError:
        return None
    match = LEASE.search(text)
    return match is not None and float(match[1]) == 1.0


@pytest.mark.slow
def test_one_instance_schedules_and_the_other_takes_over(
    start: Callable[[str], tuple[subprocess.Popen[bytes], int]], redis_url: str, keys: Keys
) -> None:
    a, port_a = start("snap-a")
    b, port_b = start("snap-b")
    wait_until(lambda: {_leads(port_a), _leads(port_b)} == {True, False}, [a, b], 60, poll=0.1)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    scheduler = keys.snapshot_scheduler
    for _ in range(10):  # stays exactly one while both run
        assert [_leads(port_a), _leads(port_b)].count(True) == 1
        time.sleep(0.2)
    leader, standby, standby_port = (a, b, port_b) if _leads(port_a) else (b, a, port_a)
    standby_name = "snap-b" if standby is b else "snap-a"
    assert client.hget(scheduler, "replica") != standby_name

    leader.send_signal(signal.SIGKILL)
    leader.wait(timeout=10)
    took = wait_until(
        lambda: bool(_leads(standby_port)) and client.hget(scheduler, "replica") == standby_name,
        standby,
        DEFAULT_LEASE_TTL_SECONDS + 5,
        what="the standby leading and ticking",
        poll=0.1,
    )
    assert took <= DEFAULT_LEASE_TTL_SECONDS + 5
    first = client.hget(scheduler, "last_tick")
    ticked = lambda: client.hget(scheduler, "last_tick") != first  # noqa: E731
    wait_until(ticked, standby, 5, what="the new leader's ticks going on", poll=0.1)
    client.close()
    standby.send_signal(signal.SIGTERM)
    assert standby.wait(timeout=30) == 0
