"""Poison entries against the real services, as processes: every stream a service consumes,
every malformed kind (:mod:`tributary_testing.poison`). Each entry must end in
``<stream>.dlq`` with its reason and bytes, the event sent after it must be processed, the
service must stay up, and a restart with poison in its pending list must not crash it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from simulators.stack import secrets_env
from simulators.system import LocalSystem, SystemConfig
from tributary import catalog
from tributary.events import encode, make_event
from tributary.keys import Keys
from tributary.streams.dlq import DLQ_PREFIX
from tributary_testing.infra import drop_run_data
from tributary_testing.poison import Poison, poisons
from tributary_testing.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

#: the consumer group (= service) of each stream, and a valid payload of its type
CONSUMED: dict[str, tuple[str, str, dict[str, Any]]] = {
    catalog.OUTLINE_COLLECT: (
        "snapshot", "outline.collect.requested",
        {"server_id": str(uuid.uuid4()), "tick": datetime.now(UTC)},
    ),
    catalog.GMAIL_JOBS: ("gmail_fetch", "gmail.job.created", {"job_id": str(uuid.uuid4())}),
    catalog.DEVICE_READINGS: (
        "alert", "device.reading.recorded",
        {"device_id": "aq-1", "metric": "temp", "value": 20.5, "time": datetime.now(UTC)},
    ),
    catalog.TRAFFIC_FLUSHED: (
        "alert", "traffic.flushed",
        {"node_id": "n1", "upload_delta": 1, "download_delta": 2, "upload_total": 1,
         "download_total": 2, "traffic_used_total": 3, "batch_id": "b1"},
    ),
    catalog.USAGE_AGGREGATED: (
        "alert", "usage.aggregated",
        {"merchant_id": "m1", "date": "2026-12-06", "metric": "calls", "value": 5},
    ),
    catalog.USAGE_ANOMALIES: (
        "alert", "usage.anomaly.detected",
        {"server_id": "s1", "key_id": "k1", "observed_bytes": 10, "baseline_bytes": 1.0,
         "score": 9.0, "window_seconds": 300, "detected_at": datetime.now(UTC)},
    ),
    catalog.USAGE_FORECASTS: (
        "alert", "usage.forecast.updated",
        {"server_id": "s1", "key_id": "k1", "used_bytes": 10, "limit_bytes": 100,
         "predicted_limit_at": None, "hours_to_limit": None},
    ),
}  # fmt: skip
SERVICES = sorted({group for group, _, _ in CONSUMED.values()})


def good_fields(stream: str) -> dict[str, str]:
    _, event_type, payload = CONSUMED[stream]
    return encode(make_event(event_type, payload, "test", catalog.default_registry()))


CASES = [(stream, p) for stream in CONSUMED for p in poisons(good_fields(stream))]


class Running:
    def __init__(self, system: LocalSystem, client: redis.Redis, prefix: str) -> None:
        self.system = system
        self.redis = client
        self.keys = Keys(prefix)

    def key(self, stream: str) -> str:
        return self.keys.stream(stream)

    def add(self, stream: str, fields: Mapping[bytes, bytes] | Mapping[str, str]) -> bytes:
        return cast(bytes, self.redis.xadd(self.key(stream), cast(Any, fields)))

    def processed(self, stream: str, entry_id: bytes) -> bool:
        """The group read past ``entry_id`` and has nothing pending: acked, so handled
        (a failed handler leaves its entry pending until it is dead-lettered)."""
        self.system.check_alive()  # a crash fails the test at once, with the service's log
        group = CONSUMED[stream][0]
        for info in self.redis.xinfo_groups(self.key(stream)):
            if info["name"] == group.encode():
                delivered = info["last-delivered-id"]
                return _id(delivered) >= _id(entry_id) and info["pending"] == 0
        return False

    def dead_letter_of(self, stream: str, entry_id: bytes) -> dict[bytes, bytes] | None:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]],
                       self.redis.xrange(self.keys.dlq(stream)))  # fmt: skip
        for _, fields in entries:
            if fields.get(b"dlq.original_id") == entry_id:
                return fields
        return None


def _id(entry_id: bytes) -> tuple[int, int]:
    ms, seq = entry_id.split(b"-")
    return int(ms), int(seq)


@pytest.fixture(scope="module")
def running(
    redis_url: str, postgres_url: str, mysql_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    run = uuid.uuid4().hex[:8]
    prefix = f"poison_{run}:"
    schemas = {name: f"poison_{run}_{name}" for name in SERVICES}
    config = SystemConfig(
        redis_url=redis_url,
        postgres_url=postgres_url,
        mysql_url=mysql_url,
        stream_prefix=prefix,
        log_dir=Path(tmp_path_factory.mktemp("logs")),
        schemas=schemas,
        log_level="WARNING",
        env={**secrets_env(), "ALERT_READ_BLOCK_MS": "100"},
    )
    system = LocalSystem(config, SERVICES)
    client = redis.Redis.from_url(redis_url)
    try:
        system.migrate()
        system.start_all()
        system.wait_ready()
        yield Running(system, client, prefix)
    finally:
        system.stop_all()
        client.close()
        drop_run_data(redis_url, prefix, postgres_url, schemas.values())


def check_dead_lettered(running: Running, stream: str, poison: Poison, entry_id: bytes) -> None:
    letter = running.dead_letter_of(stream, entry_id)
    assert letter is not None
    assert poison.reason in letter[b"dlq.error"].decode(errors="replace")
    assert {k: v for k, v in letter.items() if not k.startswith(DLQ_PREFIX.encode())} == (
        poison.fields
    )


@pytest.mark.parametrize(("stream", "poison"), CASES, ids=[f"{s}-{p.kind}" for s, p in CASES])
def test_a_poison_entry_is_dead_lettered_and_the_service_goes_on(
    running: Running, stream: str, poison: Poison
) -> None:
    bad = running.add(stream, poison.fields)
    after = running.add(stream, good_fields(stream))
    wait_until(lambda: running.processed(stream, after), None, 60, f"{stream}: good event")
    running.system.check_alive()
    check_dead_lettered(running, stream, poison, bad)
    assert running.dead_letter_of(stream, after) is None


@pytest.mark.parametrize("service", SERVICES)
def test_a_restart_with_poison_pending_does_not_crash(running: Running, service: str) -> None:
    """The failure this guards against: poison delivered, the service died, and every
    restart read it again and died again. Here it waits in the pending list of the
    service's own consumer name when the service starts."""
    system = running.system
    system.stop(service)
    consumer = system.env(service)["CONSUMER_NAME"]
    pending: list[tuple[str, Poison, bytes]] = []
    for stream, (group, _, _) in CONSUMED.items():
        if group != service:
            continue
        for poison in poisons(good_fields(stream))[:12]:  # the invalid UTF-8 ones
            pending.append((stream, poison, running.add(stream, poison.fields)))
        running.redis.xreadgroup(group, consumer, {running.key(stream): ">"})
    system.start(service)
    system.wait_ready([service])
    for stream in {stream for stream, _, _ in pending}:
        wait_until(partial(_settled, running, stream), None, 60, f"{stream}: poison settled")
    for stream, poison, entry_id in pending:
        check_dead_lettered(running, stream, poison, entry_id)
    stream = pending[0][0]
    after = running.add(stream, good_fields(stream))
    wait_until(lambda: running.processed(stream, after), None, 60, "good event")
    system.check_alive(service)


def _settled(running: Running, stream: str) -> bool:
    running.system.check_alive()
    group = CONSUMED[stream][0]
    return all(
        info["pending"] == 0
        for info in running.redis.xinfo_groups(running.key(stream))
        if info["name"] == group.encode()
    )
