"""SIGKILL at random points of the flush, under write load: the totals stay exact.

The service runs as a real process flushing back to back in small batches
while writer processes increment. It is killed at least ten times: by the crash
hook its test entry (prewarmed.py) gives the flush, right before a move, right
after a move and right after a commit, and by the test at random moments. After the
last restart everything written is in MariaDB exactly once.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from traffic_sync.counters import TrafficKeys
from traffic_sync.models import flush_ledger
from tributary.db import make_sessionmaker
from tributary_testing.process import failure_text
from tributary_testing.waiting import wait_until

from .load import Writers
from .stored import all_traffic

NODES = 150
#: (crash point or "external", how many times); at least ten kills in all
#: increments per second of each writer coroutine (8 of them)
WRITE_RATE = 100.0
#: processes started (and imported, waiting to go) ahead of the running one
AHEAD = 2
PREWARMED = Path(__file__).with_name("prewarmed.py")
KILLS = [("before_move", 2), ("after_move", 3), ("after_commit", 3), ("external", 2)]


def ledger_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(flush_ledger)).scalar_one())


class Harness:
    """Runs the kill plan. The next processes are started ahead (see prewarmed.py),
    so that their start-up overlaps the running one's flushes."""

    def __init__(self, env: dict[str, str], client: redis.Redis, tkeys: TrafficKeys,
                 engine: Engine, plan: list[str]) -> None:  # fmt: skip
        self.env, self.redis, self.tkeys, self.engine = env, client, tkeys, engine
        self.rng = random.Random(1234)
        self.plan = plan
        self.procs: list[subprocess.Popen[bytes]] = []
        self.queue: deque[tuple[str, subprocess.Popen[bytes]]] = deque()
        #: batches in the ledger when the running process was told to go
        self.ledger_before = 0

    def _launch(self, point: str) -> None:
        crash = [] if point in ("external", "last") else [f"{point}:{self.rng.randint(1, 4)}"]
        proc = subprocess.Popen(
            [sys.executable, str(PREWARMED), *crash],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.procs.append(proc)
        self.queue.append((point, proc))

    def next(self) -> tuple[str, subprocess.Popen[bytes]]:
        """The next process of the plan, told to go; starts the ones behind it."""
        while len(self.queue) < AHEAD + 1 and self.plan:
            self._launch(self.plan.pop(0))
        point, proc = self.queue.popleft()
        self.ledger_before = ledger_rows(self.engine)
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        return point, proc

    def lease_expired(self) -> None:
        """What the lease's ttl does after a holder dies, without waiting for it."""
        self.redis.delete(self.tkeys.keys.lease("traffic_sync:flush"))

    def crash_at(self, point: str, proc: subprocess.Popen[bytes]) -> None:
        proc.wait(timeout=90)
        assert proc.returncode == -signal.SIGKILL, f"{point}: {failure_text(proc)}"
        pending = self.redis.scard(self.tkeys.batches)
        if point == "after_move":
            assert pending >= 1, "a batch should be left moved but not applied"
        if point == "after_commit":
            assert pending >= 1, "a batch should be left applied but not cleaned up"
            assert ledger_rows(self.engine) > self.ledger_before

    def kill_at_random(self, proc: subprocess.Popen[bytes]) -> None:
        wait_until(lambda: ledger_rows(self.engine) > self.ledger_before, proc, 60)
        time.sleep(self.rng.uniform(0, 0.3))  # a random moment of the running flushes
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


@pytest.mark.slow
def test_sigkill_at_random_points_of_the_flush_keeps_totals_exact(
    env: dict[str, str], redis_url: str, sync_redis: redis.Redis, tkeys: TrafficKeys,
    mysql_engine: Engine,
) -> None:  # fmt: skip
    env = {**env, "TRAFFIC_SYNC_INTERVAL_SECONDS": "0.05", "TRAFFIC_SYNC_BATCH_SIZE": "20"}
    plan = [point for point, times in KILLS for _ in range(times)]
    random.Random(99).shuffle(plan)
    harness = Harness(env, sync_redis, tkeys, mysql_engine, [*plan, "last"])
    # a steady load that leaves the CPU to the restarts (2 cores shared by everything)
    writers = Writers(
        redis_url, tkeys.keys.prefix, ["index", "raw"], NODES, concurrency=4, rate=WRITE_RATE
    )
    try:
        for _ in plan:
            point, proc = harness.next()
            if point == "external":
                harness.kill_at_random(proc)
            else:
                harness.crash_at(point, proc)
            harness.lease_expired()
        assert writers.alive(), "a writer died during the load"
        ops, written = writers.stop()
        assert ops > 1000, f"only {ops} writes: not much of a load"
        _, last = harness.next()

        def drained() -> bool:
            return (
                next(sync_redis.scan_iter(match=tkeys.node_pattern), None) is None
                and sync_redis.scard(tkeys.batches) == 0
            )

        wait_until(drained, last, 60)
        last.send_signal(signal.SIGTERM)
        assert last.wait(timeout=30) == 0
    finally:
        writers.kill()
        harness.stop_all()
    with make_sessionmaker(mysql_engine)() as session:
        stored = all_traffic(session)
    assert stored == {node: (up, down, up + down) for node, (up, down) in written.items()}
