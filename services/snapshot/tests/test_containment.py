"""One server's bad data fails that server's work item only (issue 20): three servers
collected in one tick, one of them answering with each kind of bad data; the other two
are stored, nothing reaches the DLQ, and the bad one's failure (if it is one) is
recorded with its backoff where operators look: the server row, /metrics, the summary."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from simulators.outline import FakeOutlineServer
from snapshot.analytics import summary
from tributary.catalog import OUTLINE_COLLECT

from .harness import MB, Harness

Spoil = Callable[[FakeOutlineServer], None]


def _long_key_id(server: FakeOutlineServer) -> None:
    server.create_key(key_id="k" * 5000, name="n" * 5000)  # PUT /access-keys/{id}
    server.add_traffic("k" * 5000, 3 * MB)


def _named_key(server: FakeOutlineServer) -> None:
    server.create_key(key_id="my-identifier")
    server.add_traffic("my-identifier", 3 * MB)


def _huge_limit(server: FakeOutlineServer) -> None:
    # past PostgreSQL's bigint: the database refuses the row
    server.create_key(data_limit=10**20)


def _broken_body(server: FakeOutlineServer) -> None:
    original = server.handle

    def handle(method: str, endpoint: str, query: str, body: object = None) -> tuple[int, object]:
        if endpoint == "/metrics/transfer":
            return 200, {"bytesTransferredByUserId": {"0": "many"}}
        return original(method, endpoint, query, body)

    server.handle = handle  # type: ignore[method-assign]


def _down(server: FakeOutlineServer) -> None:
    server.down = True


#: (spoil the server, the outcome of its collection: None = stored, else the error kind)
CASES: dict[str, tuple[Spoil, str | None]] = {
    "long-key-id": (_long_key_id, None),
    "non-numeric-key-id": (_named_key, None),
    "db-refuses-value": (_huge_limit, "data"),
    "protocol": (_broken_body, "protocol"),
    "http-500": (_down, "http"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_one_bad_server_fails_only_its_own_item(harness: Harness, case: str) -> None:
    spoil, failure = CASES[case]
    servers = [await harness.sim.add_server() for _ in range(3)]
    ids = [harness.register(server) for server in servers]
    for server in servers:
        server.create_key()
    await harness.tick_and_drain()  # baselines
    harness.advance(300)
    for server in servers:
        server.add_traffic("0", 2 * MB)
    spoil(servers[1])

    await harness.app.runner.drain(timeout=60, fail_fast=True)  # nothing left over
    await harness.tick_and_drain()

    for good in (ids[0], ids[2]):
        row = harness.server_row(good)
        assert (row.last_error_kind, row.consecutive_failures) == (None, 0)
        assert [d.delta_bytes for d in harness.deltas(good, "0")] == [0, 2 * MB]
    dlq = await harness.res.redis.xlen(harness.res.keys.dlq(OUTLINE_COLLECT))
    assert dlq == 0
    bad = harness.server_row(ids[1])
    assert bad.last_attempt_at == harness.now()
    metrics = harness.res.metrics.registry
    if failure is None:
        assert (bad.last_error_kind, bad.last_success_at) == (None, harness.now())
        return
    assert bad.last_error_kind == failure
    assert bad.consecutive_failures == 1
    assert bad.backoff_until > harness.now()
    counted = metrics.get_sample_value(
        "snapshot_collections_total", {"outcome": "failed", "reason": failure}
    )
    assert counted == 1
    with harness.res.sessions() as session:
        report = summary(session, harness.now())
    assert [s["id"] for s in report["servers_in_backoff"]] == [ids[1]]
    assert report["servers_in_backoff"][0]["last_error_kind"] == failure
