"""Notifications against a real local webhook server and a real local SMTP server:
payload shape, signature, retries, suppression, repeats and escalation."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

from alert.clock import ManualClock

from .conftest import Hook, Inbox
from .harness import Harness


async def fire(harness: Harness, device: str = "aq-1", value: float = 35) -> None:
    await harness.reading(device, value, harness.clock())
    await harness.drain()


async def clear(harness: Harness, device: str = "aq-1") -> None:
    harness.clock.advance(1)
    await harness.reading(device, 20, harness.clock())
    await harness.drain()


async def test_webhook_gets_alertmanager_v4_json_signed_with_hmac(
    harness: Harness, hook: Hook
) -> None:
    harness.add_receiver(name="ops", kind="webhook", url=hook.url, hmac_secret="s3cret")
    harness.add_rule(name="hot", operator=">", threshold=30, receivers=["ops"])
    await fire(harness)
    assert await harness.notify() == 1
    (call,) = hook.calls
    body = call["json"]
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "ops"
    (alert,) = body["alerts"]
    assert alert["labels"]["alertname"] == "hot"
    assert alert["labels"]["device_id"] == "aq-1"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["startsAt"] == harness.clock().isoformat().replace("+00:00", "Z")
    assert set(body) >= {
        "groupKey",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "truncatedAlerts",
    }
    timestamp = call["headers"]["x-tributary-timestamp"]
    expected = hmac.new(b"s3cret", timestamp.encode() + b"." + call["body"], hashlib.sha256)
    assert call["headers"]["x-tributary-signature"] == f"sha256={expected.hexdigest()}"
    await clear(harness)
    assert await harness.notify() == 1
    assert hook.bodies[1]["status"] == "resolved"
    assert hook.bodies[1]["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    assert [n.status for n in harness.notifications()] == ["sent", "sent"]


async def test_dead_webhook_is_retried_with_backoff_and_never_blocks_evaluation(
    harness: Harness, hook: Hook, clock: ManualClock
) -> None:
    hook.status = 503
    harness.add_receiver(name="flaky", kind="webhook", url=hook.url)
    harness.add_receiver(name="gone", kind="webhook", url="http://127.0.0.1:9/nothing-here")
    harness.add_rule(operator=">", threshold=30, receivers=["flaky", "gone"])
    await fire(harness)
    await harness.notify()
    assert len(hook.calls) == 1
    await fire(harness, "aq-2")  # evaluation carries on while deliveries fail
    assert harness.open_count() == 2
    await harness.notify()
    assert len(hook.calls) == 2  # aq-2's first attempt; aq-1 waits for its backoff (10 s)
    clock.advance(9)
    await harness.notify()
    assert len(hook.calls) == 2
    hook.status = 200
    clock.advance(2)
    await harness.notify()
    assert len(hook.calls) == 4
    by_status = sorted((n.status, n.attempts) for n in harness.notifications())
    assert by_status == [("pending", 2), ("pending", 2), ("sent", 2), ("sent", 2)]
    for _ in range(5):  # the unreachable one gives up after ALERT_NOTIFY_MAX_ATTEMPTS
        clock.advance(400)
        await harness.notify()
    statuses = sorted((n.status, n.attempts) for n in harness.notifications())
    assert statuses == [("failed", 5), ("failed", 5), ("sent", 2), ("sent", 2)]
    failed = harness.notifications()[1]
    assert failed.last_error == "connect-failed"


async def test_webhook_timeout_and_permanent_client_error(
    harness: Harness, hook: Hook, clock: ManualClock
) -> None:
    harness.add_receiver(name="slow", kind="webhook", url=hook.url, timeout_seconds=0.2)
    harness.add_rule(operator=">", threshold=30, receivers=["slow"])
    hook.delay = 1.0
    await fire(harness)
    await harness.notify()
    (n,) = harness.notifications()
    assert (n.status, n.attempts) == ("pending", 1)
    assert n.last_error == "timeout"
    hook.delay, hook.status = 0.0, 400
    clock.advance(60)
    await harness.notify()
    (n,) = harness.notifications()
    assert (n.status, n.attempts) == ("failed", 2)  # a 400 will not get better: no retry
    assert harness.open_count() == 1


async def test_email_receiver_over_smtp(harness: Harness, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    harness.app.notifier.settings = harness.app.settings.model_copy(
        update={"smtp_port": port, "smtp_from": "alerts@example.test"}
    )
    harness.add_receiver(
        name="mail", kind="email", to=["oncall@example.test"], subject_prefix="[aquarium] "
    )
    harness.add_rule(name="hot", operator=">", threshold=30, receivers=["mail"])
    await fire(harness)
    await harness.notify()
    (message,) = inbox.messages
    assert message["to"] == ["oncall@example.test"]
    assert message["from"] == "alerts@example.test"
    assert "Subject: [aquarium] [FIRING] hot on aq-1 (warning)" in message["data"]
    assert "value: 35" in message["data"]
    await clear(harness)
    await harness.notify()
    assert "[RESOLVED]" in inbox.messages[1]["data"]


async def test_silence_suppresses_notifications_but_keeps_events(
    harness: Harness, hook: Hook, clock: ManualClock
) -> None:
    from alert import repository
    from alert.schemas import SilenceSpec

    harness.add_receiver(name="ops", kind="webhook", url=hook.url)
    harness.add_rule(operator=">", threshold=30, receivers=["ops"])
    with harness.res.sessions.begin() as session:
        spec = SilenceSpec(
            matchers=[{"name": "device_id", "value": "aq-1"}],
            ends_at=clock() + timedelta(hours=1),
            comment="cleaning the tank",
        )
        repository.insert_silence(session, spec.row(), clock())
    await fire(harness, "aq-1")
    await fire(harness, "aq-2")
    await harness.notify()
    assert [b["alerts"][0]["labels"]["subject"] for b in hook.bodies] == ["aq-2"]
    assert harness.open_count() == 2  # the silenced alert is still an alert
    statuses = sorted((n.status, n.last_error or "") for n in harness.notifications())
    assert statuses[0] == ("sent", "")
    assert statuses[1][0] == "suppressed"
    assert "silence" in statuses[1][1]
    # its resolve is not sent either: the receiver never heard of the alert
    await clear(harness, "aq-1")
    await harness.notify()
    assert len(hook.calls) == 1
    assert harness.notifications()[-1].status == "skipped"


async def test_maintenance_window_suppresses_notifications(
    harness: Harness, hook: Hook, clock: ManualClock
) -> None:
    from alert import repository
    from alert.schemas import WindowSpec

    harness.add_receiver(name="ops", kind="webhook", url=hook.url)
    harness.add_rule(operator=">", threshold=30, receivers=["ops"])
    with harness.res.sessions.begin() as session:  # Mondays 11:30-12:30 UTC; T0 is Monday 12:00
        spec = WindowSpec(
            name="weekly", days_of_week=[0], start_time="11:30", duration_minutes=60, matchers=[]
        )
        repository.save_window(session, spec.row(), clock())
    await fire(harness, "aq-1")
    await harness.notify()
    assert hook.calls == []
    assert harness.notifications()[0].status == "suppressed"
    clock.advance(3600)  # window over
    await fire(harness, "aq-2")
    await harness.notify()
    assert len(hook.calls) == 1
    assert harness.open_count() == 2


async def test_inhibition_mutes_a_devices_other_alerts_while_it_is_offline(
    harness: Harness, hook: Hook, clock: ManualClock
) -> None:
    harness.add_receiver(name="ops", kind="webhook", url=hook.url)
    harness.add_rule(
        name="offline",
        kind="no_data",
        metric="value",
        no_data_seconds=65,
        receivers=["ops"],
        inhibits={"equal": ["device_id"]},
    )
    harness.add_rule(
        name="battery",
        metric="battery",
        operator="<",
        threshold=20,
        receivers=["ops"],
        repeat_interval_seconds=100,
    )
    for device in ("aq-1", "aq-2"):  # both report a low battery
        await harness.reading(device, 1, clock(), metric=None, metadata={"battery": 5})
    await harness.drain()
    await harness.notify()
    assert len(hook.calls) == 2
    clock.advance(50)
    await harness.reading("aq-2", 1, clock(), metric=None, metadata={"battery": 5})
    await harness.drain()
    clock.advance(20)
    await harness.tick()  # aq-1 silent for 70 s: offline
    await harness.notify()
    clock.advance(40)
    await harness.tick()  # 110 s: both battery alerts are due a repeat
    await harness.notify()
    sent = [
        (b["alerts"][0]["labels"]["alertname"], b["alerts"][0]["labels"]["subject"])
        for b in hook.bodies
    ]
    assert sent[2:] == [("offline", "aq-1"), ("battery", "aq-2")]
    (muted,) = [n for n in harness.notifications() if n.status == "suppressed"]
    assert muted.kind == "repeat"
    assert "inhibited by alert" in (muted.last_error or "")
    assert harness.open_count() == 3  # the muted alert is still open


async def test_repeat_interval_and_escalation(
    harness: Harness, hook: Hook, clock: ManualClock
) -> None:
    harness.add_receiver(name="ops", kind="webhook", url=hook.url)
    harness.add_receiver(name="boss", kind="webhook", url=hook.url + "?boss")
    harness.add_rule(
        operator=">",
        threshold=30,
        receivers=["ops"],
        repeat_interval_seconds=600,
        escalation={"after_seconds": 900, "receiver": "boss"},
    )
    await fire(harness)
    await harness.notify()
    assert [b["receiver"] for b in hook.bodies] == ["ops"]
    clock.advance(599)
    await harness.tick()
    await harness.notify()
    assert len(hook.calls) == 1
    clock.advance(1)
    outcome = await harness.tick()
    assert outcome.repeats == 1
    await harness.notify()
    assert [b["receiver"] for b in hook.bodies] == ["ops", "ops"]
    clock.advance(300)  # 900 s firing: escalate
    outcome = await harness.tick()
    assert outcome.escalations == 1
    await harness.notify()
    assert [b["receiver"] for b in hook.bodies] == ["ops", "ops", "boss"]
    assert hook.bodies[2]["notificationKind"] == "escalation"
    clock.advance(300)  # next repeat goes to both now
    await harness.tick()
    await harness.notify()
    assert sorted(b["receiver"] for b in hook.bodies[3:]) == ["boss", "ops"]
    await clear(harness)
    await harness.notify()
    assert sorted(b["receiver"] for b in hook.bodies[5:]) == ["boss", "ops"]
    assert {b["status"] for b in hook.bodies[5:]} == {"resolved"}
    clock.advance(3600)
    outcome = await harness.tick()
    assert (outcome.repeats, outcome.escalations) == (0, 0)
