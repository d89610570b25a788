"""Anomalies and time-to-quota forecasts: known answers on constructed series, then the
whole path from simulated traffic to one event per episode on the streams."""

from __future__ import annotations

from typing import Any

import pytest

from snapshot.anomalies import SCORE_CAP, assess, modified_z
from snapshot.config import SnapshotSettings
from snapshot.forecast import WINDOW, ageing_series, hours_to_limit, usage_rate
from tributary.catalog import USAGE_ANOMALIES, USAGE_FORECASTS
from tributary.events import decode
from tributary.keys import Keys

from .harness import MB, Harness, make_settings

HOUR = 3600.0


def _settings(**extra: Any) -> SnapshotSettings:
    return make_settings("redis://x", "postgresql+psycopg://x/y", Keys(), **extra)


def test_modified_z_score_known_answers() -> None:
    baseline = [10, 12, 11, 13, 9, 10, 11, 12]  # median 11, MAD 1
    score, median = modified_z(20, baseline)
    assert median == 11
    assert score == pytest.approx(0.6745 * 9)
    # MAD 0 (most hours identical): the mean absolute deviation takes over
    flat = [10.0] * 10 + [12.0] * 3
    score, _ = modified_z(20, flat)
    assert score == pytest.approx(10 / (1.253314 * 6 / 13))
    assert modified_z(11, [10.0] * 30) == (SCORE_CAP, 10.0)
    assert modified_z(10, [10.0] * 30) == (0.0, 10.0)


def test_assess_needs_history_volume_and_ratio() -> None:
    settings = _settings(anomaly_min_bytes=50 * MB, anomaly_min_history_hours=24)
    steady = [20.0 * MB + (i % 3) * MB for i in range(48)]
    spike = assess(400 * MB, steady, settings)
    assert spike is not None
    assert spike.anomalous
    assert spike.ratio == pytest.approx(400 / 21)
    assert spike.median == 21 * MB
    assert assess(400 * MB, steady[:10], settings) is None  # too little history
    tiny = [float(i % 3) for i in range(48)]
    assert not assess(40 * MB, tiny, settings).anomalous  # type: ignore[union-attr]  # volume
    # statistically far out but only 1.5x the usual: the ratio rule keeps it quiet
    tight = [100.0 * MB] * 40 + [100.0 * MB + 1] * 8
    mild = assess(150 * MB, tight, settings)
    assert mild is not None
    assert mild.score > 3.5
    assert not mild.anomalous


def test_time_to_limit_known_answers() -> None:
    assert hours_to_limit(90, 100, 1.0, []) == pytest.approx(10.0)
    assert hours_to_limit(95, 100, 2.0, []) == pytest.approx(2.5)
    assert hours_to_limit(100, 100, 0.0, []) == 0.0
    # half of each hour's new usage is offset by old usage leaving the window
    assert hours_to_limit(90, 100, 1.0, [0.5] * 100) == pytest.approx(20.0)
    # more leaves than comes: never within the window
    assert hours_to_limit(90, 100, 1.0, [2.0] * 720) is None
    # a burst ages out after 5 hours: the key dips, then climbs again
    ageing = [0.0] * 5 + [30.0] + [0.0] * 100
    assert hours_to_limit(90, 100, 1.0, ageing) == pytest.approx(40.0)
    assert hours_to_limit(90, 100, 0.0, []) is None
    assert usage_rate(240, 480, 48) == 10.0
    assert usage_rate(480, 480, 48) == 20.0  # the recent day weighs when it is higher


def test_ageing_series_known_answers() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    start = now - WINDOW
    hourly = [(start, 10), (start + timedelta(hours=1), 20), (start + timedelta(hours=5), 7)]
    series = ageing_series(hourly, now, start - timedelta(days=1), 0, hours=8)
    assert series == [10, 20, 0, 0, 0, 7, 0, 0]
    # only what we tracked (after the epoch) is expected to leave
    half = ageing_series(hourly, now, start + timedelta(minutes=30), 0, hours=3)
    assert half == [5, 20, 0]
    # what we never saw is spread over the time it has left in the window
    epoch = start + timedelta(hours=72)
    spread = ageing_series([], now, epoch, 72.0, hours=100)
    assert spread[:72] == [1.0] * 72
    assert spread[72:] == [0.0] * 28


def _events(harness: Harness, stream: str) -> list[Any]:
    import redis

    client = redis.Redis.from_url(
        harness.settings.redis_url.get_secret_value(), decode_responses=True
    )
    try:
        entries = client.xrange(harness.res.keys.stream(stream))
    finally:
        client.close()
    return [decode(fields, harness.res.service.registry) for _, fields in entries]  # type: ignore[arg-type, union-attr]


async def _hourly(harness: Harness, server: Any, server_id: str, usage: dict[str, int]) -> None:
    harness.advance(HOUR)
    for key, nbytes in usage.items():
        server.add_traffic(key, nbytes)
    assert (await harness.collect(server_id)).status == "collected"
    harness.maintain()


async def test_one_anomaly_event_per_episode(harness: Harness) -> None:
    server = await harness.sim.add_server()
    for _ in range(2):
        server.create_key()
    server_id = harness.register(server)
    await harness.collect(server_id)
    for hour in range(48):
        await _hourly(harness, server, server_id, {"0": (20 + hour % 3) * MB, "1": 1000})
    server.create_key()  # "2": a new key, no history yet
    await _hourly(harness, server, server_id, {"0": 400 * MB, "1": 5000, "2": 900 * MB})
    anomalies, _ = harness.app.analysis.run_once()
    assert [(a.key_id, a.observed_bytes) for a in anomalies] == [("0", 400 * MB)]
    assert anomalies[0].ratio == pytest.approx(400 / 21, rel=1e-3)
    harness.advance(600)
    assert harness.app.analysis.run_once()[0] == []  # same episode: no second event
    for _ in range(2):
        await _hourly(harness, server, server_id, {"0": 21 * MB})
    harness.app.analysis.run_once()
    episodes = harness.rows("SELECT ended_at FROM anomaly_episodes")
    assert len(episodes) == 1
    assert episodes[0].ended_at is not None
    harness.advance(600)
    assert harness.app.analysis.run_once()[0] == []  # normal usage opens nothing
    await _hourly(harness, server, server_id, {"0": 500 * MB})
    assert [a.key_id for a in harness.app.analysis.run_once()[0]] == ["0"]  # a new episode
    await harness.res.relay.relay_once()
    published = _events(harness, USAGE_ANOMALIES)
    assert [e.data.key_id for e in published] == ["0", "0"]
    assert published[0].data.observed_bytes == 400 * MB


async def test_forecast_events_when_near_and_when_reached(harness: Harness) -> None:
    server = await harness.sim.add_server()
    server.create_key()
    server.create_key()
    server.keys["0"].data_limit = 1000 * MB
    server.access_key_data_limit = 10_000 * MB  # "1" falls back to the server-wide limit
    server_id = harness.register(server)
    await harness.collect(server_id)
    for _ in range(48):
        await _hourly(harness, server, server_id, {"0": 10 * MB, "1": 10 * MB})
    _, forecasts = harness.app.analysis.run_once()
    assert [(f.key_id, f.reached) for f in forecasts] == [("0", False)]
    assert forecasts[0].used_bytes == 480 * MB
    assert forecasts[0].hours_to_limit == pytest.approx(52.0)
    assert forecasts[0].predicted_limit_at is not None
    assert (forecasts[0].predicted_limit_at - harness.now()).total_seconds() == pytest.approx(
        52 * HOUR
    )
    harness.advance(600)
    assert harness.app.analysis.run_once()[1] == []  # nothing changed: nothing published
    await _hourly(harness, server, server_id, {"0": 600 * MB})
    _, forecasts = harness.app.analysis.run_once()
    assert [(f.key_id, f.reached, f.hours_to_limit) for f in forecasts] == [("0", True, 0.0)]
    await harness.res.relay.relay_once()
    published = _events(harness, USAGE_FORECASTS)
    assert [(e.data.key_id, e.data.reached) for e in published] == [("0", False), ("0", True)]
