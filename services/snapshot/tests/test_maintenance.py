"""Rollups, window totals, retention in bounded batches, drift."""

from __future__ import annotations

from typing import Any

import pytest

from snapshot.maintenance import WINDOWS, rebuild_totals

from .harness import MB, Harness

HOUR = 3600.0


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"retention_batch_size": 100, "retention_max_batches": 2}


def _totals(harness: Harness) -> dict[str, tuple[int, int, int]]:
    rows = harness.rows("SELECT key_id, used_24h, used_7d, used_30d FROM access_keys")
    return {r.key_id: (r.used_24h, r.used_7d, r.used_30d) for r in rows}


async def test_window_totals_follow_the_windows_and_match_a_rebuild(harness: Harness) -> None:
    server = await harness.sim.add_server()
    server.create_key()
    server_id = harness.register(server)
    await harness.collect(server_id)
    harness.maintain()
    hours = 24 * 9
    for _ in range(hours):
        harness.advance(HOUR)
        server.add_traffic("0", MB)
        await harness.collect(server_id)
        if harness.now().hour % 6 == 0:
            harness.maintain()
    harness.advance(600)
    harness.maintain()
    # 24 h: the last 24 collections (hour resolution at the old edge); 7 d: 168; 30 d: all
    assert _totals(harness)["0"] == (24 * MB, 168 * MB, hours * MB)
    with harness.res.sessions.begin() as session:
        rebuild_totals(session, harness.now())
    assert _totals(harness)["0"] == (24 * MB, 168 * MB, hours * MB)
    assert set(WINDOWS) == {"24h", "7d", "30d"}


async def test_retention_deletes_in_bounded_batches_and_keeps_counts(harness: Harness) -> None:
    server = await harness.sim.add_server()
    for _ in range(10):
        server.create_key()
    server_id = harness.register(server)
    for _ in range(40):  # 400 snapshots, 10 hours apart
        server.add_traffic("0", MB)
        await harness.collect(server_id)
        harness.advance(10 * HOUR)
    harness.app.maintenance.run_once()
    counted = harness.server_row(server_id).snapshot_count
    actual = harness.rows("SELECT count(*) AS n, min(collected_at) AS oldest FROM snapshots")[0]
    assert counted == actual.n
    assert actual.n == 400  # 400 hours < 30 days: nothing is old enough yet
    harness.advance(30 * 24 * HOUR)  # now everything is older than 30 days
    harness.app.maintenance.run_once()
    left = harness.rows("SELECT count(*) AS n FROM snapshots")[0].n
    assert left == 400 - 200, "one run deletes at most batch size x max batches"
    assert harness.server_row(server_id).snapshot_count == left
    harness.app.maintenance.run_once()
    assert harness.rows("SELECT count(*) AS n FROM snapshots")[0].n == 0
    assert harness.server_row(server_id).snapshot_count == 0
    hourly = harness.rows("SELECT count(*) AS n, sum(bytes) AS b FROM usage_hourly")[0]
    # rollups outlive the raw snapshots (the first collection is a baseline: 39 deltas)
    assert hourly.n > 0
    assert hourly.b == 39 * MB


async def test_drift_check_reports_keys_whose_deltas_disagree(harness: Harness) -> None:
    server = await harness.sim.add_server()
    server.create_key()
    server.create_key()
    server_id = harness.register(server)
    await harness.collect(server_id)
    for _ in range(3):
        harness.advance(HOUR)
        server.add_traffic("0", 10 * MB)
        server.add_traffic("1", 10 * MB)
        await harness.collect(server_id)
    assert harness.app.maintenance.drift_once() == []
    # simulate lost deltas: the tracked total of key 1 is 20 MB short
    with harness.res.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE access_keys SET used_30d = used_30d - 20000000 WHERE key_id = '1'"
        )
    drifting = harness.app.maintenance.drift_once()
    assert [(d.key_id, d.drift_bytes) for d in drifting] == [("1", -20 * MB)]
