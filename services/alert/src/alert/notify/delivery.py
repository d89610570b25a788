"""One notification ready to deliver, and the outcome of one attempt."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Delivery:
    notification_id: int
    attempt: int
    kind: str  # firing | resolved | repeat | escalation
    event_id: str
    rule_id: int
    subject: str
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    value: float | None
    receiver_name: str
    receiver_kind: str
    config: dict[str, Any]
    secret: str | None = field(default=None, repr=False)
    traceparent: str | None = None
    tracestate: str | None = None


@dataclass(frozen=True)
class Attempt:
    ok: bool
    retryable: bool = False
    status_code: int | None = None
    error: str | None = None
    duration_ms: float = 0.0
