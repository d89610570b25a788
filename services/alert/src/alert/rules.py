"""Alert rules: the validated definition (:class:`RuleSpec`, what the API takes and the
``rules`` table stores) and its compiled, hashable runtime form (:class:`Rule`).

A rule matches samples by source, metric (or, for device readings, a path into
the reading) and label matchers, and says when a subject is in alert:

- ``threshold``: the sample's value against ``operator``/``threshold``;
- ``moving_average``: the mean of the samples within ``window_seconds``;
- ``rate_of_change``: the slope over ``window_seconds`` (per ``rate_unit_seconds``);
- ``no_data``: the subject reported before and has been silent ``no_data_seconds``.

``recovery_threshold`` adds hysteresis: a ``>`` rule with threshold 30 and
recovery 25 fires above 30 and only resolves at or below 25.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from alert.matchers import Matcher, match_all
from alert.samples import DEVICE_PATH_ROOTS, SOURCES, SUBJECT_LABELS

Operator = Literal[">", "<", "==", ">=", "<=", "!="]
Kind = Literal["threshold", "rate_of_change", "moving_average", "no_data"]
Source = Literal[
    "device.readings", "traffic.flushed", "usage.aggregated", "usage.anomalies", "usage.forecasts"
]

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    ">=": operator.ge,
    "<=": operator.le,
    "!=": operator.ne,
}
UPWARD = (">", ">=")
DOWNWARD = ("<", "<=")
TREND_KINDS = ("rate_of_change", "moving_average")
#: labels and annotations of a rule, at most: every alert event of the rule carries them
MAX_LABELS = 30
LabelName = Annotated[str, Field(min_length=1, max_length=100)]
Labels = Annotated[
    dict[LabelName, Annotated[str, Field(max_length=1000)]], Field(max_length=MAX_LABELS)
]
Annotations = Annotated[
    dict[LabelName, Annotated[str, Field(max_length=4000)]], Field(max_length=MAX_LABELS)
]
#: labels every alert carries; a rule's own labels cannot override them
RESERVED_LABELS = ("alertname", "rule_id", "severity", "subject", "source", "metric")

assert set(SOURCES) == set(get_args(Source))


class Escalation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    after_seconds: float = Field(gt=0, description="Escalate once firing this long.")
    receiver: str = Field(min_length=1, max_length=100, description="Receiver name.")


class Inhibition(BaseModel):
    """While this rule fires for a subject, other alerts with the same ``equal`` labels
    (and matching ``target``) are not notified."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    equal: list[str] = Field(min_length=1, description="Labels that must have equal values.")
    target: list[Matcher] = Field(default_factory=list, description="Alerts muted (all: []).")


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    source: Source
    metric: str = Field(min_length=1, max_length=200, description="Metric name of the source.")
    path: str | None = Field(
        None,
        max_length=300,
        description="device.readings only: where the value is, e.g. json_value.water.temp, "
        "metadata.battery or value (default: the metric name in value, json_value, metadata).",
    )
    matchers: list[Matcher] = Field(default_factory=list, description="Label selectors.")
    kind: Kind = "threshold"
    operator: Operator | None = None
    threshold: float | None = None
    recovery_threshold: float | None = None
    window_seconds: float | None = Field(None, gt=0, description="Trend window.")
    rate_unit_seconds: float = Field(1.0, gt=0, description="rate_of_change per this many s.")
    for_seconds: float = Field(0.0, ge=0, description="Pending this long before firing.")
    keep_firing_for_seconds: float = Field(0.0, ge=0, description="Firing this long after clear.")
    no_data_seconds: float | None = Field(None, gt=0, description="no_data: silence that fires.")
    severity: str = Field("warning", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    labels: Labels = Field(default_factory=dict)
    annotations: Annotations = Field(default_factory=dict)
    receivers: list[str] = Field(default_factory=list, description="Receiver names.")
    repeat_interval_seconds: float | None = Field(None, gt=0, description="Re-notify period.")
    escalation: Escalation | None = None
    inhibits: Inhibition | None = None
    enabled: bool = True

    @field_validator("threshold", "recovery_threshold")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("labels")
    @classmethod
    def _no_reserved_labels(cls, value: dict[str, str]) -> dict[str, str]:
        clash = sorted(set(value) & set(RESERVED_LABELS))
        if clash:
            raise ValueError(f"labels {', '.join(clash)} are set by the service")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RuleSpec:
        _check_kind(self)
        _check_recovery(self)
        _check_path(self)
        return self


def _check_kind(spec: RuleSpec) -> None:
    if spec.kind == "no_data":
        if spec.no_data_seconds is None:
            raise ValueError("a no_data rule needs no_data_seconds")
        return
    if spec.operator is None or spec.threshold is None:
        raise ValueError(f"a {spec.kind} rule needs an operator and a threshold")
    if spec.kind in TREND_KINDS and spec.window_seconds is None:
        raise ValueError(f"a {spec.kind} rule needs window_seconds")


def _check_recovery(spec: RuleSpec) -> None:
    recovery, threshold, op = spec.recovery_threshold, spec.threshold, spec.operator
    if recovery is None or threshold is None:
        return
    if op in UPWARD and recovery > threshold:
        raise ValueError(
            f"recovery_threshold {recovery:g} is on the wrong side: a '{op}' rule needs "
            f"recovery_threshold <= threshold ({threshold:g})"
        )
    if op in DOWNWARD and recovery < threshold:
        raise ValueError(
            f"recovery_threshold {recovery:g} is on the wrong side: a '{op}' rule needs "
            f"recovery_threshold >= threshold ({threshold:g})"
        )
    if op in ("==", "!="):
        raise ValueError(f"recovery_threshold makes no sense with operator '{op}'")


def _check_path(spec: RuleSpec) -> None:
    if spec.path is None:
        return
    if spec.source != "device.readings":
        raise ValueError("path is only for device.readings rules")
    root = spec.path.split(".", 1)[0]
    if root not in DEVICE_PATH_ROOTS:
        raise ValueError(f"path must start with one of {', '.join(DEVICE_PATH_ROOTS)}")


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """A rule compiled for evaluation; identity is its id (and revision)."""

    id: int
    revision: int
    spec: RuleSpec
    #: the sample metric key the rule reads (its path, else its metric)
    key: str
    #: subject the rule is pinned to by an equality matcher (None: any subject)
    subject: str | None
    compare: Callable[[float, float], bool]
    threshold: float
    #: the bound the condition is checked against for recovery (hysteresis)
    recovery_bound: float

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def source(self) -> str:
        return self.spec.source

    @property
    def kind(self) -> str:
        return self.spec.kind

    def selects(self, labels: Mapping[str, str]) -> bool:
        return match_all(self.spec.matchers, labels)

    def is_active(self, value: float) -> bool:
        return self.compare(value, self.threshold)

    def is_recovered(self, value: float) -> bool:
        """Resolved by ``value``: the condition is false against the recovery threshold
        (hysteresis) or, without one, against the threshold."""
        return not self.compare(value, self.recovery_bound)

    def receiver_names(self, escalated: bool = False) -> list[str]:
        names = list(self.spec.receivers)
        esc = self.spec.escalation
        if escalated and esc is not None and esc.receiver not in names:
            names.append(esc.receiver)
        return names


def pinned_subject(spec: RuleSpec) -> str | None:
    """The subject an equality matcher pins the rule to, for the rule index."""
    names = ("subject", SUBJECT_LABELS.get(spec.source, "subject"))
    for m in spec.matchers:
        if m.op == "=" and m.name in names:
            return m.value
    return None


def _never(value: float, bound: float) -> bool:
    return False


def compile_rule(rule_id: int, revision: int, spec: RuleSpec) -> Rule:
    threshold = spec.threshold if spec.threshold is not None else 0.0
    recovery = spec.recovery_threshold
    return Rule(
        id=rule_id,
        revision=revision,
        spec=spec,
        key=spec.path or spec.metric,
        subject=pinned_subject(spec),
        # no_data rules have no condition on the value
        compare=OPERATORS[spec.operator] if spec.operator else _never,
        threshold=threshold,
        recovery_bound=threshold if recovery is None else recovery,
    )


def rule_from_row(rule_id: int, revision: int, raw: Mapping[str, Any]) -> Rule:
    """A stored rule: validated when it was written, so constructed without re-validation."""
    return compile_rule(rule_id, revision, RuleSpec.model_validate(raw))
