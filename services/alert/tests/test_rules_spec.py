"""Rule validation: invalid rules are refused with a message saying what is wrong."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from alert.index import RuleIndex
from alert.rules import RuleSpec, compile_rule
from alert.samples import Sample

BASE = {
    "name": "r",
    "source": "device.readings",
    "metric": "temp",
    "operator": ">",
    "threshold": 30,
}


def invalid(**changes: Any) -> str:
    with pytest.raises(ValidationError) as info:
        RuleSpec.model_validate({**BASE, **changes})
    return str(info.value)


def test_a_valid_rule() -> None:
    spec = RuleSpec.model_validate({**BASE, "recovery_threshold": 25, "for_seconds": 60})
    assert spec.kind == "threshold"


def test_unknown_operator() -> None:
    assert "operator" in invalid(operator="=>")


def test_recovery_threshold_on_the_wrong_side() -> None:
    assert "recovery_threshold 35 is on the wrong side" in invalid(recovery_threshold=35)
    assert "recovery_threshold >= threshold" in invalid(operator="<", recovery_threshold=20)
    assert "makes no sense" in invalid(operator="==", recovery_threshold=30)


@pytest.mark.parametrize(
    "field", ["for_seconds", "keep_firing_for_seconds", "window_seconds", "no_data_seconds"]
)
def test_negative_durations(field: str) -> None:
    assert field in invalid(**{field: -1})


def test_kind_requirements() -> None:
    assert "needs an operator and a threshold" in invalid(operator=None)
    assert "needs window_seconds" in invalid(kind="moving_average")
    assert "needs no_data_seconds" in invalid(kind="no_data")
    RuleSpec.model_validate(
        {
            "name": "n",
            "source": "traffic.flushed",
            "metric": "x",
            "kind": "no_data",
            "no_data_seconds": 60,
        }
    )


def test_paths_only_for_device_readings_and_known_roots() -> None:
    assert "only for device.readings" in invalid(source="traffic.flushed", path="value")
    assert "path must start with" in invalid(path="payload.x")
    RuleSpec.model_validate({**BASE, "path": "json_value.water.temp"})


def test_reserved_labels_unknown_fields_and_bad_regex() -> None:
    assert "set by the service" in invalid(labels={"severity": "x"})
    assert "extra" in invalid(colour="red").lower()
    assert "invalid regex" in invalid(matchers=[{"name": "device_id", "op": "=~", "value": "("}])
    assert "finite" in invalid(threshold=float("nan"))


def sample(subject: str, labels: dict[str, str] | None = None, **metrics: float) -> Sample:
    from datetime import UTC, datetime

    return Sample(
        "device.readings",
        subject,
        datetime.now(UTC),
        metrics,
        {"device_id": subject, "subject": subject, **(labels or {})},
        "e",
    )


def test_index_finds_pinned_and_unpinned_rules_only() -> None:
    index = RuleIndex()
    pinned = compile_rule(
        1, 1, RuleSpec.model_validate({**BASE, "matchers": [{"name": "device_id", "value": "d1"}]})
    )
    anyone = compile_rule(2, 1, RuleSpec.model_validate({**BASE, "metric": "ph"}))
    tank = compile_rule(
        3, 1, RuleSpec.model_validate({**BASE, "matchers": [{"name": "tank", "value": "reef"}]})
    )
    for r in (pinned, anyone, tank):
        index.put(r)
    assert [r.id for r, _ in index.matching(sample("d1", temp=1.0))] == [1]
    assert [r.id for r, _ in index.matching(sample("d2", temp=1.0))] == []
    assert [r.id for r, _ in index.matching(sample("d2", {"tank": "reef"}, temp=1.0))] == [3]
    assert [r.id for r, _ in index.matching(sample("d2", ph=7.0))] == [2]
    index.remove(1)
    assert list(index.matching(sample("d1", temp=1.0))) == []
    assert len(index) == 2
