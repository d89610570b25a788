"""Rollups, window totals, drift (retention: test_partitions.py)."""

from __future__ import annotations

from snapshot.maintenance import WINDOWS, rebuild_totals

from .harness import MB, Harness

HOUR = 3600.0


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
