"""Streaming evaluation end to end: readings on device.readings -> rule state -> alert
events -> the alerts stream, against real Redis and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from alert.clock import ManualClock
from alert.models import rule_state
from alert.repository import notification_retention, resolved_retention
from alert.samples import SOURCES
from tributary import catalog
from tributary.events import encode, make_event
from tributary.retention.sweep import RetentionSweep
from tributary.streams import client

from .conftest import T0
from .harness import Harness


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_trigger_and_resolve_publish_alert_events(harness: Harness) -> None:
    rule_id = harness.add_rule(
        operator=">",
        threshold=30,
        severity="critical",
        labels={"team": "aquarium"},
        annotations={"summary": "{{ subject }} is {{ value }}"},
    )
    await harness.reading("aq-1", 25, at(0))
    await harness.reading("aq-1", 31.5, at(10))
    await harness.reading("aq-2", 20, at(10))
    await harness.drain()
    (event,) = harness.events(open_only=True)
    assert (event.rule_id, event.subject, event.current_value) == (rule_id, "aq-1", 31.5)
    assert (event.operator, event.threshold_value, event.metric) == (">", 30, "temp")
    assert event.triggered_at == at(10)
    assert event.labels["team"] == "aquarium"
    assert event.labels["severity"] == "critical"
    assert event.annotations["summary"] == "aq-1 is 31.5"
    await harness.reading("aq-1", 29, at(20))
    await harness.drain()
    assert harness.open_count() == 0
    (closed,) = harness.events()
    assert (closed.resolved_at, closed.resolution_value, closed.status) == (at(20), 29, "resolved")
    published = await harness.alerts()
    assert [e.type for e in published] == ["alert.triggered", "alert.resolved"]
    fired = published[0].payload(catalog.AlertChanged)
    assert (fired.status, fired.subject, fired.event_id) == ("firing", "aq-1", event.id)
    assert fired.starts_at == at(10)
    assert published[1].payload(catalog.AlertChanged).ends_at == at(20)


async def test_flapping_signal_gives_one_event_with_hysteresis(harness: Harness) -> None:
    harness.add_rule(operator=">", threshold=30, recovery_threshold=25)
    for i in range(40):
        await harness.reading("aq-1", 30.5 if i % 2 == 0 else 29.5, at(i * 5))
    await harness.drain()
    assert len(harness.events()) == 1
    assert harness.open_count() == 1
    assert len(await harness.alerts()) == 1


async def test_redelivered_and_duplicate_samples_change_nothing(harness: Harness) -> None:
    harness.add_rule(operator=">", threshold=30)
    event = await harness.reading("aq-1", 35, at(0))
    await harness.drain()
    # the same event published again (a producer retry) and a resolve in between
    await harness.res.producer.publish(catalog.DEVICE_READINGS, event)
    await harness.drain()
    assert len(harness.events()) == 1
    await harness.reading("aq-1", 20, at(10))
    await harness.drain()
    await harness.res.producer.publish(catalog.DEVICE_READINGS, event)
    await harness.drain()
    assert harness.open_count() == 0, "a duplicate of the old trigger must not re-open the alert"
    assert len(harness.events()) == 1
    skipped = harness.res.metrics.registry.get_sample_value(
        "alert_samples_skipped_total", {"source": catalog.DEVICE_READINGS, "reason": "duplicate"}
    )
    assert skipped == 2


async def test_out_of_order_samples_are_ignored(harness: Harness) -> None:
    harness.add_rule(operator=">", threshold=30)
    await harness.reading("aq-1", 35, at(100))
    await harness.drain()
    await harness.reading("aq-1", 20, at(50))  # older than what was seen: ignored
    await harness.drain()
    assert harness.open_count() == 1
    await harness.reading("aq-1", 20, at(150))
    await harness.drain()
    assert harness.open_count() == 0


async def test_malformed_readings_are_dead_lettered_and_the_rest_goes_on(harness: Harness) -> None:
    harness.add_rule(operator=">", threshold=30)
    key = harness.res.keys.stream(catalog.DEVICE_READINGS)
    bad = encode(make_event("device.reading.recorded", {"device_id": "aq-1"}, "test"))
    await client.add(harness.res.redis, key, bad)  # no time: fails validation
    await client.add(harness.res.redis, key, {"type": "device.reading.recorded", "data": "{"})
    await harness.reading("aq-1", 35, at(0))
    await harness.reading("", 50, at(0))  # no subject: counted and skipped
    await harness.drain()
    assert harness.open_count() == 1
    dlq = await client.entries(harness.res.redis, harness.res.keys.dlq(catalog.DEVICE_READINGS))
    assert len(dlq) == 2
    invalid = harness.res.metrics.registry.get_sample_value(
        "alert_samples_skipped_total", {"source": catalog.DEVICE_READINGS, "reason": "invalid"}
    )
    assert invalid == 1


async def test_samples_from_the_future_are_skipped(harness: Harness, clock: ManualClock) -> None:
    harness.add_rule(operator=">", threshold=30)
    await harness.reading("aq-1", 35, clock() + timedelta(hours=2))
    await harness.drain()
    assert harness.open_count() == 0
    await harness.reading("aq-1", 35, clock())
    await harness.drain()
    assert harness.open_count() == 1


async def test_for_fires_from_the_tick_after_a_restart(
    harness: Harness, clock: ManualClock
) -> None:
    harness.add_rule(operator=">", threshold=30, for_seconds=120)
    await harness.reading("aq-1", 35, clock())
    await harness.drain()
    (state,) = harness.states().values()
    assert (state.status, state.due_at) == ("pending", clock() + timedelta(seconds=120))
    harness.restart()  # nothing kept in memory: the state comes back from the database
    clock.advance(119)
    await harness.tick()
    assert harness.open_count() == 0
    clock.advance(30)
    outcome = await harness.tick()
    assert outcome.count("triggered") == 1
    (event,) = harness.events(open_only=True)
    assert event.triggered_at == T0 + timedelta(seconds=120)
    assert [e.type for e in await harness.alerts()] == ["alert.triggered"]


async def test_no_data_fires_on_the_tick(harness: Harness, clock: ManualClock) -> None:
    harness.add_rule(name="offline", kind="no_data", no_data_seconds=300, metric="value")
    await harness.reading("aq-1", 1, clock(), metric=None)
    await harness.reading("aq-2", 1, clock(), metric=None)
    await harness.drain()
    clock.advance(200)
    await harness.reading("aq-2", 1, clock(), metric=None)
    await harness.drain()
    clock.advance(150)
    await harness.tick()
    (event,) = harness.events(open_only=True)
    assert (event.subject, event.triggered_at) == ("aq-1", T0 + timedelta(seconds=300))
    await harness.reading("aq-1", 1, clock(), metric=None)
    await harness.drain()
    assert harness.open_count() == 0


async def test_rule_changes_are_picked_up_and_disabling_resolves(harness: Harness) -> None:
    from alert import rule_admin
    from alert.rules import RuleSpec

    await harness.reading("aq-1", 35, at(0))
    await harness.drain()
    rule_id = harness.add_rule(operator=">", threshold=30)
    await harness.reading("aq-1", 35, at(10))
    await harness.drain()
    assert harness.open_count() == 1
    spec = RuleSpec(
        name="r", source="device.readings", metric="temp", operator=">", threshold=30, enabled=False
    )
    with harness.res.sessions.begin() as session:
        assert rule_admin.update(session, rule_id, spec, harness.app.evaluator.emitter, at(20))
    assert harness.open_count() == 0
    assert harness.states() == {}
    await harness.reading("aq-1", 36, at(30))
    await harness.drain()
    assert harness.open_count() == 0
    assert [e.type for e in await harness.alerts()] == ["alert.triggered", "alert.resolved"]


async def test_one_open_event_per_rule_and_subject_even_if_state_is_lost(harness: Harness) -> None:
    harness.add_rule(operator=">", threshold=30)
    await harness.reading("aq-1", 35, at(0))
    await harness.drain()
    with harness.res.sessions.begin() as session:  # as if the state row were restored stale
        session.execute(sa.update(rule_state).values(status="inactive", event_id=None))
    await harness.reading("aq-1", 36, at(10))
    await harness.drain()
    (event,) = harness.events()
    assert harness.open_count() == 1
    (state,) = harness.states().values()
    assert state.event_id == event.id
    await harness.reading("aq-1", 20, at(20))
    await harness.drain()
    assert harness.open_count() == 0


async def test_other_sources_feed_rules(harness: Harness) -> None:
    harness.add_rule(
        name="quota",
        source="traffic.flushed",
        metric="traffic_used_ratio",
        operator=">=",
        threshold=0.9,
    )
    harness.add_rule(
        name="anomaly",
        source="usage.anomalies",
        metric="score",
        operator=">",
        threshold=3,
        matchers=[{"name": "server_id", "value": "s1"}],
    )
    await harness.publish(
        catalog.TRAFFIC_FLUSHED,
        {
            "node_id": "n1",
            "upload_delta": 1,
            "download_delta": 1,
            "upload_total": 45,
            "download_total": 50,
            "traffic_used_total": 95,
            "traffic_limit": 100,
            "batch_id": "b",
        },
    )
    for server in ("s1", "s2"):
        await harness.publish(
            catalog.USAGE_ANOMALIES,
            {
                "server_id": server,
                "key_id": "k",
                "observed_bytes": 10,
                "baseline_bytes": 1.0,
                "score": 5.0,
                "window_seconds": 60,
                "detected_at": at(0),
            },
        )
    await harness.drain()
    assert sorted(e.subject for e in harness.events(open_only=True)) == ["n1", "s1/k"]


async def test_device_rules_read_json_value_and_metadata_paths(harness: Harness) -> None:
    harness.add_rule(
        name="ph", metric="ph", path="json_value.water.ph", operator="<", threshold=6.5
    )
    harness.add_rule(name="battery", metric="battery", operator="<", threshold=20)
    await harness.reading(
        "aq-1",
        None,
        at(0),
        metric=None,
        json_value={"water": {"ph": 6.1}},
        metadata={"battery": 15},
    )
    await harness.drain()
    names = sorted(e.labels["alertname"] for e in harness.events(open_only=True))
    assert names == ["battery", "ph"]


async def test_trend_windows_survive_batches_and_restarts(harness: Harness) -> None:
    harness.add_rule(
        name="avg", kind="moving_average", operator=">", threshold=30, window_seconds=300
    )
    harness.add_rule(
        name="rise",
        kind="rate_of_change",
        operator=">",
        threshold=5,
        window_seconds=300,
        rate_unit_seconds=60,
    )
    for i, value in enumerate([20.0, 24.0, 28.0]):  # one batch each, a restart in between
        await harness.reading("aq-1", value, at(i * 60))
        await harness.drain()
        harness.restart()
    assert harness.open_count() == 0  # mean 24, slope 4/min
    await harness.reading("aq-1", 60.0, at(180))
    await harness.drain()
    # only with the earlier points: mean of 20, 24, 28, 60 = 33; slope (60 - 20) / 3 min
    assert sorted(e.labels["alertname"] for e in harness.events(open_only=True)) == ["avg", "rise"]


async def test_keep_firing_for_resolves_on_the_tick(harness: Harness, clock: ManualClock) -> None:
    harness.add_rule(operator=">", threshold=30, keep_firing_for_seconds=60)
    await harness.reading("aq-1", 35, clock())
    await harness.drain()
    clock.advance(10)
    await harness.reading("aq-1", 20, clock())
    await harness.drain()
    clock.advance(59)
    await harness.tick()
    assert harness.open_count() == 1
    clock.advance(1)
    await harness.tick()
    (event,) = harness.events()
    assert event.resolved_at == T0 + timedelta(seconds=70)


def _count(harness: Harness, table: str) -> int:
    with harness.res.sessions() as session:
        return int(session.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def _sweep(harness: Harness, hours: float, resolved_days: float) -> RetentionSweep:
    # model_copy: ages far below what a configuration may set (the DLQ's 7 days)
    settings = harness.res.settings.model_copy(
        update={"inbox_retention_hours": hours, "outbox_retention_hours": hours}
    )
    return RetentionSweep.for_service(
        "alert",
        settings,
        harness.res.redis,
        harness.res.engine,
        harness.res.metrics,
        consumed=SOURCES,
        registered=[resolved_retention(timedelta(days=resolved_days))],
    )


async def test_the_retention_pass_forgets_old_inbox_outbox_rows_and_resolved_alerts(
    harness: Harness, clock: ManualClock
) -> None:
    harness.add_rule(operator=">", threshold=30)
    await harness.reading("aq-1", 35, clock())
    await harness.reading("aq-2", 35, clock())
    await harness.drain()
    clock.advance(10)
    await harness.reading("aq-1", 20, clock())  # aq-1 resolves, aq-2 stays open
    await harness.drain()
    await harness.relay()
    await _sweep(harness, 168, 3650).run_pass()  # nothing is old enough yet
    assert _count(harness, "inbox") == 3
    assert _count(harness, "alert_events") == 2
    await _sweep(harness, 1e-9, 1e-9).run_pass()
    assert _count(harness, "inbox") == 0
    assert _count(harness, "outbox") == 0
    (left,) = harness.events()
    assert left.subject == "aq-2"  # an open alert is never deleted


async def test_finished_notifications_and_attempts_past_their_age_go_and_pending_ones_stay(
    harness: Harness,
) -> None:
    """The soak found them growing for ever: every firing and resolve adds a row to
    each, and nothing deleted them."""
    now = datetime.now(UTC)
    old, young = now - timedelta(days=100), now - timedelta(days=1)
    with harness.res.sessions.begin() as session:
        for n, (status, at) in enumerate(
            [("sent", old), ("failed", old), ("pending", old), ("sent", young)]
        ):
            session.execute(sa.text(
                "INSERT INTO notifications (id, event_id, receiver_id, kind, status, attempts, "
                "next_attempt_at, created_at) VALUES (:n, 'e', 1, 'firing', :s, 1, :at, :at)"
            ), {"n": n + 1, "s": status, "at": at})  # fmt: skip
            session.execute(sa.text(
                "INSERT INTO delivery_attempts (notification_id, attempt, started_at, "
                "duration_ms, ok) VALUES (:n, 1, :at, 1.0, true)"
            ), {"n": n + 1, "at": at})  # fmt: skip
    sweep = RetentionSweep.for_service(
        "alert",
        harness.res.settings,
        harness.res.redis,
        harness.res.engine,
        None,
        consumed=SOURCES,
        registered=notification_retention(timedelta(days=90)),
    )
    report = await sweep.run_pass()
    removed = {t.table: t.removed for t in report.tables}
    assert (removed["notifications"], removed["delivery_attempts"]) == (2, 3)
    with harness.res.sessions() as session:
        left = session.execute(sa.text("SELECT status FROM notifications ORDER BY id")).scalars()
        assert list(left) == ["pending", "sent"]
    assert _count(harness, "delivery_attempts") == 1
