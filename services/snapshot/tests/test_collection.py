"""Deltas from a simulated Outline server over real HTTPS, through the real tables.

Traffic is injected at collection times that are whole hours, so the expected
delta of every collection is exactly the traffic injected since the previous
one, also after traffic starts leaving the 30-day window.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from simulators.outline import FakeOutlineServer
from snapshot import partitions
from tributary.service import retention_sweep

from .harness import MB, Harness

HOURS = 3600.0
STEP = 12 * HOURS  # collections every 12 hours
PER_DAY = 2
DAYS = 34


async def _server(harness: Harness, interval: bool, keys: int = 2) -> FakeOutlineServer:
    server = await harness.sim.add_server(interval_metrics=interval)
    for _ in range(keys):
        server.create_key()
    return server


def _traffic(step: int, key: int) -> int:
    """A varying but known amount per step, so roll-off cannot be mistaken for zero."""
    return ((step * 7 + key * 3) % 11 + 1) * MB


@pytest.mark.parametrize("interval", [False, True], ids=["window", "interval"])
async def test_deltas_equal_injected_traffic_across_window_roll_off(
    harness: Harness, interval: bool
) -> None:
    server = await _server(harness, interval)
    server_id = harness.register(server)
    first = await harness.collect(server_id)
    assert first.status == "collected"
    expected = {"0": [0], "1": [0]}
    for step in range(1, DAYS * PER_DAY + 1):
        harness.advance(STEP)
        for key in ("0", "1"):
            nbytes = _traffic(step, int(key))
            server.add_traffic(key, nbytes)
            expected[key].append(nbytes)
        outcome = await harness.collect(server_id)
        assert outcome.status == "collected", outcome
        harness.maintain()
    await retention_sweep(harness.res, harness.parts).run_pass()
    # raw snapshots: the last 30 days are kept, from the midnight before (whole days go)
    kept_from = partitions.day_start((harness.now() - timedelta(days=30)).date())
    for key in ("0", "1"):
        rows = harness.deltas(server_id, key)
        assert rows[0].collected_at == kept_from
        assert 30 * PER_DAY + 1 <= len(rows) <= 31 * PER_DAY
        assert [r.delta_bytes for r in rows] == expected[key][-len(rows) :]
        # the last reading is the 30-day window only: older traffic has aged out
        assert rows[-1].reading_bytes == sum(expected[key][-30 * PER_DAY :])
        assert rows[-1].reading_bytes < sum(expected[key])
        assert all(r.dropped_bytes == 0 for r in rows)
    sources = {r.source for r in harness.deltas(server_id, "0")[1:]}
    assert sources == {"interval" if interval else "window"}


@pytest.mark.parametrize("interval", [False, True], ids=["window", "interval"])
async def test_deleted_and_recreated_key_gives_no_phantom_usage(
    harness: Harness, interval: bool
) -> None:
    server = await _server(harness, interval, keys=1)
    server_id = harness.register(server)
    await harness.collect(server_id)
    harness.advance(STEP)
    server.add_traffic("0", 500 * MB)
    await harness.collect(server_id)
    server.delete_key("0")
    harness.advance(STEP)
    await harness.collect(server_id)
    deleted = harness.rows("SELECT deleted_at FROM access_keys WHERE key_id = '0'")
    assert deleted[0].deleted_at is not None
    # the id comes back (a reinstalled server): its old traffic is still in the window
    server.create_key(key_id="0")
    harness.advance(STEP)
    server.add_traffic("0", 3 * MB)
    await harness.collect(server_id)
    harness.advance(STEP)
    server.add_traffic("0", 4 * MB)
    await harness.collect(server_id)
    rows = harness.deltas(server_id, "0")
    deltas = [r.delta_bytes for r in rows]
    assert deltas[:2] == [0, 500 * MB]
    assert deltas[2] in (0, 3 * MB)  # the recreation: never the old 500 MB again
    assert deltas[3] == 4 * MB
    assert min(deltas) >= 0
    # 30 days later the old incarnation's traffic leaves the window: no negative, no phantom
    for _ in range(PER_DAY * 31):
        harness.advance(STEP)
        server.add_traffic("0", MB)
        await harness.collect(server_id)
        harness.maintain()
    later = [r.delta_bytes for r in harness.deltas(server_id, "0")[4:]]
    assert min(later) >= 0
    assert max(later) <= MB


@pytest.mark.parametrize("interval", [False, True], ids=["window", "interval"])
async def test_server_restart_losing_metrics_is_no_traffic(
    harness: Harness, interval: bool
) -> None:
    server = await _server(harness, interval, keys=1)
    server_id = harness.register(server)
    await harness.collect(server_id)
    for _ in range(3):
        harness.advance(STEP)
        server.add_traffic("0", 100 * MB)
        await harness.collect(server_id)
        harness.maintain()
    server.reset_metrics()
    harness.advance(STEP)
    server.add_traffic("0", 7 * MB)
    await harness.collect(server_id)
    rows = harness.deltas(server_id, "0")
    reset = rows[-1]
    assert reset.dropped_bytes == 300 * MB - 7 * MB  # the reading fell from 300 MB to 7 MB
    # what the restarted server counts is all new: the delta either way, nothing negative
    assert reset.delta_bytes == 7 * MB
    # a month on, the pre-restart traffic would have aged out: nothing is subtracted twice
    for _ in range(PER_DAY * 31):
        harness.advance(STEP)
        server.add_traffic("0", 2 * MB)
        await harness.collect(server_id)
        harness.maintain()
    await retention_sweep(harness.res, harness.parts).run_pass()
    later = [r for r in harness.deltas(server_id, "0") if r.collected_at > reset.collected_at]
    # raw snapshots of the last 30 days, from the midnight before (whole days go)
    assert PER_DAY * 30 + 1 <= len(later) < PER_DAY * 31
    assert [r.delta_bytes for r in later] == [2 * MB] * len(later)
    assert all(r.dropped_bytes == 0 for r in later)


async def test_new_key_between_collections_counts_its_traffic(harness: Harness) -> None:
    server = await _server(harness, interval=False, keys=1)
    server_id = harness.register(server)
    server.add_traffic("0", 50 * MB)
    await harness.collect(server_id)
    assert harness.deltas(server_id, "0")[0].source == "baseline"
    server.create_key()
    harness.advance(STEP)
    server.add_traffic("1", 9 * MB)
    await harness.collect(server_id)
    new = harness.deltas(server_id, "1")
    assert [(r.delta_bytes, r.source) for r in new] == [(9 * MB, "new")]


async def test_a_server_without_the_interval_endpoint_is_asked_again_hourly(
    harness: Harness,
) -> None:
    server = await _server(harness, interval=False, keys=1)
    server_id = harness.register(server)
    await harness.collect(server_id)
    harness.advance(300)
    server.add_traffic("0", MB)
    await harness.collect(server_id)  # asks, gets a 404: window mode from now on
    assert harness.server_row(server_id).interval_metrics is False
    server.interval_metrics = True  # the server is upgraded
    harness.advance(300)
    server.add_traffic("0", MB)
    await harness.collect(server_id)
    assert harness.deltas(server_id, "0")[-1].source == "window"  # not asked again yet
    harness.advance(3600)
    server.add_traffic("0", 2 * MB)
    await harness.collect(server_id)
    last = harness.deltas(server_id, "0")[-1]
    assert (last.source, last.delta_bytes) == ("interval", 2 * MB)
    assert harness.server_row(server_id).interval_metrics is True


async def test_servers_collected_together_each_get_their_own_keys_and_state(
    harness: Harness,
) -> None:
    """A tick's servers are written in groups (one transaction, one statement for all their
    snapshots): each server still gets exactly its own keys, deltas and state."""
    servers = []
    for i in range(6):
        server = await _server(harness, interval=i % 2 == 0, keys=i + 1)
        server.access_key_data_limit = (i + 1) * MB if i % 3 == 0 else None
        servers.append((server, harness.register(server)))
    assert len((await harness.tick_and_drain()).published) == 6
    harness.advance(STEP)
    for i, (server, _) in enumerate(servers):
        for key in range(i + 1):
            server.add_traffic(str(key), (10 * i + key + 1) * MB)
    await harness.tick_and_drain()
    for i, (server, server_id) in enumerate(servers):
        row = harness.server_row(server_id)
        assert (row.key_count, row.snapshot_count) == (i + 1, 2 * (i + 1))
        assert (row.last_tick, row.last_success_at) == (harness.now(), harness.now())
        assert row.outline_name == server.name
        assert row.access_key_data_limit == server.access_key_data_limit
        assert row.interval_metrics is (i % 2 == 0)
        source = "interval" if i % 2 == 0 else "window"
        for key in range(i + 1):
            rows = harness.deltas(server_id, str(key))
            assert [(r.delta_bytes, r.source) for r in rows] == [
                (0, "baseline"),
                ((10 * i + key + 1) * MB, source),
            ]
