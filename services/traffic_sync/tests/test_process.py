"""The service as a real process: final flush on SIGTERM, ``status``, bad configuration."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Iterator

import pytest
import redis
import sqlalchemy as sa

from traffic_sync.counters import TrafficKeys
from traffic_sync.models import flush_ledger
from tributary import catalog
from tributary.db import make_sessionmaker
from tributary.events import decode
from tributary_testing.process import ServiceProcesses
from tributary_testing.waiting import wait_until

from .stored import all_traffic

Launcher = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def start(env: dict[str, str]) -> Iterator[Launcher]:
    procs = ServiceProcesses("traffic_sync", env)
    yield procs.start
    procs.close()


def hincr(client: redis.Redis, tkeys: TrafficKeys, node: int, up: int, down: int) -> None:
    key = tkeys.node(node)
    client.hincrby(key, "upload", up)
    client.hincrby(key, "download", down)
    client.sadd(tkeys.dirty, str(node))


@pytest.mark.slow
def test_sigterm_flushes_what_was_written_since_the_last_cycle_and_exits_0(
    start: Launcher, sync_redis: redis.Redis, tkeys: TrafficKeys, mysql_database_url: str,
) -> None:  # fmt: skip
    proc = start(TRAFFIC_SYNC_INTERVAL_SECONDS="3600")
    # the first cycle runs at once; after it, nothing flushes for an hour
    wait_until(lambda: bool(sync_redis.hget(tkeys.status, "finished_at")), proc, 60)
    for node in range(1, 21):
        hincr(sync_redis, tkeys, node, node * 100, node)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    engine = sa.create_engine(mysql_database_url)
    try:
        with make_sessionmaker(engine)() as session:
            assert all_traffic(session) == {n: (n * 100, n, n * 101) for n in range(1, 21)}
    finally:
        engine.dispose()
    assert list(sync_redis.scan_iter(match=tkeys.node_pattern)) == []
    # the final flush's events were published before exit, not left in the outbox
    entries: list[tuple[str, dict[str, str]]] = sync_redis.xrange(  # type: ignore[assignment]
        tkeys.keys.stream(catalog.TRAFFIC_FLUSHED)
    )
    events = [decode(fields, catalog.default_registry()) for _, fields in entries]
    nodes = sorted(int(e.payload(catalog.TrafficFlushed).node_id) for e in events)
    assert nodes == list(range(1, 21))


def test_once_flushes_and_status_reports_it(
    start: Launcher, sync_redis: redis.Redis, tkeys: TrafficKeys, mysql_database_url: str,
) -> None:  # fmt: skip
    hincr(sync_redis, tkeys, 1, 10, 20)
    sync_redis.hset(tkeys.node(2), "upload", "bogus")
    once = start("once")
    _, err = once.communicate(timeout=60)
    assert once.returncode == 0, err
    hincr(sync_redis, tkeys, 3, 1, 1)
    status = start("status")
    out, err = status.communicate(timeout=60)
    assert status.returncode == 0, err
    report = json.loads(out)
    assert report["last_cycle"]["nodes"] == "1"
    assert report["last_cycle"]["errors"] == "1"
    assert report["dirty_nodes_indexed"] == 1
    assert report["dirty_node_keys"] == 1
    assert report["pending_batches"] == 0
    assert report["batches_in_ledger"] == 1
    assert report["rejected_nodes_in_ledger"] == 1
    assert report["recent_rejects"][0]["reason"] == "not_integer"
    assert report["last_batch_applied_at"]
    engine = sa.create_engine(mysql_database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(flush_ledger)).scalar() == 1
    finally:
        engine.dispose()


def test_bad_configuration_is_one_line_naming_every_bad_variable(start: Launcher) -> None:
    bad = {
        "TRAFFIC_SYNC_APPLY_CONCURRENCY": "99",
        "TRAFFIC_SYNC_DISCOVERY": "guess",
        "TRAFFIC_SYNC_BATCH_SIZE": "0",
        "TRAFFIC_SYNC_INTERVAL_SECONDS": "-1",
    }
    proc = start("check-config", **bad)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1
    for variable in bad:
        assert variable in lines[0]


def test_check_config_masks_the_database_password(start: Launcher) -> None:
    proc = start("check-config", DATABASE_URL="mysql+pymysql://svc:hunter2@db:3306/traffic")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert b"hunter2" not in out
    assert json.loads(out)["interval_seconds"] == 300.0
