"""The state machine of one (rule, subject), with explicit timestamps (no clock, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alert.evaluation import FIRING, INACTIVE, PENDING, State, Transition, advance, apply_sample
from alert.rules import Rule, RuleSpec, compile_rule

T0 = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def rule(**spec: Any) -> Rule:
    spec.setdefault("name", "r")
    spec.setdefault("source", "device.readings")
    spec.setdefault("metric", "temp")
    return compile_rule(1, 1, RuleSpec.model_validate(spec))


def feed(
    r: Rule, samples: list[tuple[float, float]], state: State | None = None
) -> list[Transition]:
    state = state or State(1, "dev-1")
    out: list[Transition] = []
    for offset, value in samples:
        changes = apply_sample(r, state, at(offset), value, {"device_id": "dev-1"})
        out.extend(changes or [])
    return out


def kinds(transitions: list[Transition]) -> list[tuple[str, float]]:
    """(kind, seconds after T0) of the triggered/resolved transitions."""
    return [(t.kind, (t.at - T0).total_seconds()) for t in transitions if t.kind != "pending"]


@pytest.mark.parametrize(
    ("op", "threshold", "fires_at", "quiet_at"),
    [
        (">", 30, 31, 30),
        (">=", 30, 30, 29.9),
        ("<", 5, 4.9, 5),
        ("<=", 5, 5, 5.1),
        ("==", 7, 7, 7.5),
        ("!=", 7, 8, 7),
    ],
)
def test_each_operator(op: str, threshold: float, fires_at: float, quiet_at: float) -> None:
    r = rule(operator=op, threshold=threshold)
    assert kinds(feed(r, [(0, quiet_at)])) == []
    assert kinds(feed(r, [(0, fires_at)])) == [("triggered", 0)]
    assert kinds(feed(r, [(0, quiet_at), (10, fires_at), (20, quiet_at)])) == [
        ("triggered", 10),
        ("resolved", 20),
    ]


def test_trigger_carries_value_and_new_event_id_and_resolve_the_same_id() -> None:
    r = rule(operator=">", threshold=30)
    fired, resolved = feed(r, [(0, 35), (5, 20)])
    assert fired.value == 35
    assert fired.event_id is not None
    assert resolved.event_id == fired.event_id
    assert resolved.value == 20


def test_recovery_threshold_resolves_only_past_the_recovery_value() -> None:
    r = rule(operator=">", threshold=30, recovery_threshold=25)
    out = feed(r, [(0, 31), (10, 28), (20, 26), (30, 25.5), (40, 25)])
    assert kinds(out) == [("triggered", 0), ("resolved", 40)]


def test_flapping_around_the_threshold_gives_one_event_with_hysteresis() -> None:
    signal = [(i * 10.0, 30.5 if i % 2 == 0 else 29.5) for i in range(50)]
    with_hysteresis = feed(rule(operator=">", threshold=30, recovery_threshold=25), signal)
    without = feed(rule(operator=">", threshold=30), signal)
    assert kinds(with_hysteresis) == [("triggered", 0)]
    assert len(kinds(without)) == 50  # one trigger and one resolve per crossing


def test_recovery_is_strict_for_inclusive_operators() -> None:
    # a >= rule whose recovery equals its threshold must not flap at exactly that value
    r = rule(operator=">=", threshold=30, recovery_threshold=30)
    assert kinds(feed(r, [(0, 30), (10, 30), (20, 29.9)])) == [("triggered", 0), ("resolved", 20)]


def test_for_keeps_the_alert_pending_until_the_condition_held_long_enough() -> None:
    r = rule(operator=">", threshold=30, **{"for_seconds": 60})
    state = State(1, "dev-1")
    out = feed(r, [(0, 31), (30, 32)], state)
    assert kinds(out) == []
    assert state.status == PENDING
    assert state.due_at == at(60)
    # the sample at +60 confirms it: the alert fires at the due time
    assert kinds(feed(r, [(60, 33)], state)) == [("triggered", 60)]


def test_for_is_reset_when_the_condition_breaks() -> None:
    r = rule(operator=">", threshold=30, for_seconds=60)
    out = feed(r, [(0, 31), (50, 29), (55, 31), (100, 31), (115, 31)])
    assert kinds(out) == [("triggered", 115)]


def test_for_fires_from_the_tick_at_the_due_time() -> None:
    r = rule(operator=">", threshold=30, for_seconds=60)
    state = State(1, "dev-1")
    feed(r, [(0, 31)], state)
    assert advance(r, state, at(59)) == []
    (fired,) = advance(r, state, at(75))
    assert fired.kind == "triggered"
    assert fired.at == at(60)
    assert state.status == FIRING


def test_a_late_sample_still_fires_at_the_due_time_even_if_the_tick_did_not_run() -> None:
    r = rule(operator=">", threshold=30, for_seconds=60)
    out = feed(r, [(0, 31), (300, 20)])
    # held from 0 until at least 60 (it was still true at the last look), then cleared at 300
    assert kinds(out) == [("triggered", 60), ("resolved", 300)]


def test_keep_firing_for_holds_the_alert_after_the_condition_clears() -> None:
    r = rule(operator=">", threshold=30, keep_firing_for_seconds=120)
    state = State(1, "dev-1")
    out = feed(r, [(0, 31), (10, 20), (60, 20), (100, 31), (110, 20)], state)
    assert kinds(out) == [("triggered", 0)]
    assert state.clear_since == at(110)
    assert advance(r, state, at(200)) == []
    (resolved,) = advance(r, state, at(230))
    assert (resolved.kind, resolved.at) == ("resolved", at(230))
    assert state.status == INACTIVE


def test_keep_firing_for_resolves_on_a_sample_past_its_end() -> None:
    r = rule(operator=">", threshold=30, keep_firing_for_seconds=120)
    assert kinds(feed(r, [(0, 31), (10, 20), (500, 20)])) == [
        ("triggered", 0),
        ("resolved", 130),
    ]


def test_no_data_fires_when_a_reporting_subject_goes_silent_and_resolves_when_it_reports() -> None:
    r = rule(kind="no_data", no_data_seconds=300)
    state = State(1, "dev-1")
    assert feed(r, [(0, 1), (200, 1)], state) == []
    assert state.due_at == at(500)
    assert advance(r, state, at(499)) == []
    (fired,) = advance(r, state, at(520))
    assert (fired.kind, fired.at, fired.reason) == ("triggered", at(500), "no data for 300s")
    assert advance(r, state, at(2000)) == []  # fires once, not every tick
    (resolved,) = feed(r, [(2100, 1)], state)
    assert (resolved.kind, resolved.at) == ("resolved", at(2100))
    assert state.due_at == at(2400)


def test_no_data_gap_seen_only_through_samples_fires_and_resolves() -> None:
    r = rule(kind="no_data", no_data_seconds=300)
    assert kinds(feed(r, [(0, 1), (1000, 1)])) == [("triggered", 300), ("resolved", 1000)]


def test_moving_average_over_a_window() -> None:
    r = rule(kind="moving_average", operator=">", threshold=30, window_seconds=60)
    # a single spike does not move the 1-minute mean past 30
    out = feed(r, [(0, 20), (10, 20), (20, 50), (30, 20)])
    assert kinds(out) == []
    state = State(1, "dev-1")
    out = feed(r, [(0, 20), (10, 35), (20, 40), (30, 40)], state)
    assert kinds(out) == [("triggered", 20)]  # mean of 20, 35, 40 = 31.7
    # old points leave the window
    out = feed(r, [(100, 25), (110, 25)], state)
    assert kinds(out) == [("resolved", 100)]
    assert [p[1] for p in state.window] == [25, 25]


def test_rate_of_change_over_a_window() -> None:
    # degrees per minute over the last 5 minutes
    r = rule(
        kind="rate_of_change",
        operator=">",
        threshold=1.0,
        window_seconds=300,
        rate_unit_seconds=60,
    )
    state = State(1, "dev-1")
    assert kinds(feed(r, [(0, 20)], state)) == []  # one point: no slope yet
    assert kinds(feed(r, [(60, 20.5), (120, 21)], state)) == []  # 0.5/min
    out = feed(r, [(180, 24)], state)  # (24 - 20) / 3 min = 1.33/min
    assert kinds(out) == [("triggered", 180)]
    assert out[-1].value == pytest.approx(4 / 3)
    out = feed(r, [(600, 24), (660, 24)], state)  # flat within the window
    assert kinds(out) == [("resolved", 660)]


def test_falling_rate_with_a_negative_threshold() -> None:
    r = rule(kind="rate_of_change", operator="<", threshold=-0.1, window_seconds=100)
    assert kinds(feed(r, [(0, 100), (50, 90)])) == [("triggered", 50)]


def test_out_of_order_and_repeated_timestamps_are_ignored() -> None:
    r = rule(operator=">", threshold=30)
    state = State(1, "dev-1")
    assert kinds(feed(r, [(10, 31)], state)) == [("triggered", 10)]
    assert apply_sample(r, state, at(5), 20, {}) is None
    assert apply_sample(r, state, at(10), 20, {}) is None
    assert state.status == FIRING
    assert state.last_value == 31


def test_window_is_bounded() -> None:
    r = rule(kind="moving_average", operator=">", threshold=1e9, window_seconds=10_000)
    state = State(1, "dev-1")
    for i in range(50):
        apply_sample(r, state, at(i), float(i), {}, max_points=10)
    assert len(state.window) == 10
    assert state.window[0][1] == 40
