"""API models of receivers, silences, maintenance windows and readings (rules: rules.py)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from alert.matchers import Matcher
from tributary import catalog

ReceiverKind = Literal["webhook", "email"]
#: bound on a reading's json_value and on its metadata, in bytes of JSON: each becomes
#: part of a device.readings entry, and rules read at most 200 leaves of them anyway
MAX_READING_JSON_BYTES = 8192


class ReceiverSpec(BaseModel):
    """A webhook (``url``, optional ``hmac_secret``) or an email receiver (``to``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: ReceiverKind
    url: str | None = Field(None, max_length=2000, description="webhook: where to POST.")
    timeout_seconds: float | None = Field(None, gt=0, le=120, description="webhook timeout.")
    headers: dict[str, str] = Field(default_factory=dict, description="webhook: extra headers.")
    hmac_secret: SecretStr | None = Field(
        None, description="webhook: HMAC-SHA256 key (kept when omitted on update; '' clears)."
    )
    to: list[str] = Field(default_factory=list, description="email: recipients.")
    subject_prefix: str = Field("", max_length=100, description="email: subject prefix.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            local, _, domain = address.partition("@")
            if not local or not domain or any(c.isspace() for c in address):
                raise ValueError(f"{address!r} is not an email address")
        return value

    @model_validator(mode="after")
    def _fits_kind(self) -> ReceiverSpec:
        if self.kind == "webhook" and not self.url:
            raise ValueError("a webhook receiver needs a url")
        if self.kind == "email" and not self.to:
            raise ValueError("an email receiver needs at least one address in to")
        return self

    def row(self) -> dict[str, Any]:
        """Its column values (a secret only when given: omitted on update, it is kept)."""
        values: dict[str, Any] = {"name": self.name, "kind": self.kind, "config": self.config()}
        if self.hmac_secret is not None:
            values["secret"] = self.hmac_secret.get_secret_value() or None
        return values

    def config(self) -> dict[str, Any]:
        if self.kind == "webhook":
            return {
                "url": self.url,
                "timeout_seconds": self.timeout_seconds,
                "headers": self.headers,
            }
        return {"to": self.to, "subject_prefix": self.subject_prefix}


class ReceiverOut(BaseModel):
    id: int
    name: str
    kind: ReceiverKind
    url: str | None = None
    timeout_seconds: float | None = None
    header_names: list[str] = Field(default_factory=list)
    has_hmac_secret: bool = False
    to: list[str] = Field(default_factory=list)
    subject_prefix: str = ""
    created_at: datetime
    updated_at: datetime


class SilenceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    matchers: list[Matcher] = Field(min_length=1)
    starts_at: datetime | None = Field(None, description="Default: now.")
    ends_at: datetime
    created_by: str = Field("", max_length=200)
    comment: str = Field("", max_length=2000)

    def row(self) -> dict[str, Any]:
        """Its column values (``starts_at`` None: from when it is stored)."""
        return {
            "matchers": [m.model_dump() for m in self.matchers],
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "created_by": self.created_by,
            "comment": self.comment,
        }


class SilenceOut(BaseModel):
    id: int
    matchers: list[Matcher]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    created_at: datetime
    active: bool


class WindowSpec(BaseModel):
    """Weekly recurring maintenance: on ``days_of_week`` (0 = Monday) from ``start_time``
    (local, ``timezone``) for ``duration_minutes``; ``matchers`` pick the alerts (all: [])."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    matchers: list[Matcher] = Field(default_factory=list)
    days_of_week: list[int] = Field(min_length=1, max_length=7)
    start_time: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    duration_minutes: int = Field(gt=0, le=7 * 24 * 60)
    timezone: str = "UTC"
    enabled: bool = True

    @field_validator("days_of_week")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if any(d < 0 or d > 6 for d in value):
            raise ValueError("days are 0 (Monday) to 6 (Sunday)")
        return sorted(set(value))

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    def row(self) -> dict[str, Any]:
        """Its column values."""
        values = self.model_dump()
        values["matchers"] = [m.model_dump() for m in self.matchers]
        return values


class WindowOut(WindowSpec):
    id: int
    active: bool
    created_at: datetime
    updated_at: datetime


class RuleOut(BaseModel):
    id: int
    revision: int
    created_at: datetime
    updated_at: datetime
    spec: dict[str, Any]


class ReadingIn(BaseModel):
    """A device reading sent over HTTP; published to device.readings as is."""

    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(min_length=1, max_length=300)
    metric: str | None = Field(None, max_length=200)
    value: float | None = None
    json_value: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    time: datetime | None = Field(None, description="Default: when received.")

    @field_validator("json_value", "metadata")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        size = len(json.dumps(value, ensure_ascii=False, default=str).encode())
        if size > MAX_READING_JSON_BYTES:
            raise ValueError(f"must be at most {MAX_READING_JSON_BYTES} bytes of JSON")
        return value

    def payload(self, now: datetime) -> catalog.DeviceReadingRecorded:
        data = self.model_dump()
        data["time"] = self.time or now
        return catalog.DeviceReadingRecorded.model_validate(data)


class Accepted(BaseModel):
    event_ids: list[str]


class EventOut(BaseModel):
    id: str
    rule_id: int
    subject: str
    fingerprint: str
    status: str
    severity: str
    metric: str
    operator: str | None
    threshold_value: float | None
    current_value: float | None
    triggered_at: datetime
    resolved_at: datetime | None
    resolution_value: float | None
    labels: dict[str, str]
    annotations: dict[str, str]
    metadata: dict[str, Any]
    escalated_at: datetime | None


class AttemptOut(BaseModel):
    attempt: int
    started_at: datetime
    duration_ms: float
    ok: bool
    status_code: int | None
    error: str | None


class NotificationOut(BaseModel):
    id: int
    receiver_id: int
    kind: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    delivery_attempts: list[AttemptOut] = Field(default_factory=list)


class EventDetail(EventOut):
    notifications: list[NotificationOut] = Field(default_factory=list)
