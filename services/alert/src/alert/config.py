"""Settings of the alert service, from ``ALERT_*`` variables plus the shared ones."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from tributary.config import ServiceSettings


class AlertSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ALERT_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "alert"

    batch_size: int = Field(
        500, ge=1, le=5000, description="Stream entries read and evaluated per batch."
    )
    read_block_ms: int = Field(
        1000, ge=1, le=60_000, description="How long one stream read waits for entries, ms."
    )
    eval_parallelism: int = Field(
        2,
        ge=1,
        le=16,
        description="Transactions one batch is split into (by subject), evaluated side by side.",
    )
    tick_interval_seconds: float = Field(
        5.0,
        gt=0,
        description="Period of the leader-only tick (for, keep_firing_for, no-data, repeats).",
    )
    max_clock_skew_seconds: float = Field(
        300.0, gt=0, description="Samples timed further than this in the future are skipped."
    )
    max_window_points: int = Field(
        1000, ge=2, description="Most samples kept per (rule, subject) for trend windows."
    )
    notify_poll_seconds: float = Field(
        1.0, gt=0, description="Longest pause of the notifier between looks for due work."
    )
    notify_batch_size: int = Field(
        100, ge=1, description="Notifications claimed per notifier round."
    )
    notify_concurrency: int = Field(16, ge=1, description="Deliveries in flight at once.")
    notify_max_attempts: int = Field(
        5, ge=1, description="Delivery attempts of one notification before it is failed."
    )
    notify_retry_base_seconds: float = Field(
        2.0, gt=0, description="First retry delay of a failed delivery (doubles per attempt)."
    )
    notify_retry_max_seconds: float = Field(
        300.0, gt=0, description="Upper bound of the retry delay."
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, description="Timeout of one webhook call (a receiver may set its own)."
    )
    smtp_host: str = Field("127.0.0.1", description="SMTP server of email receivers.")
    smtp_port: int = Field(25, ge=1, le=65535, description="SMTP port.")
    smtp_username: str | None = Field(None, description="SMTP user name (no login when unset).")
    smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_tls: bool = Field(False, description="Connect to SMTP over TLS (SMTPS).")
    smtp_from: str = Field("alert@localhost", description="From address of alert emails.")
    smtp_timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one SMTP delivery.")
    external_url: str = Field(
        "http://localhost:8000", description="This service's URL, put in webhook payloads."
    )
    resolved_retention_days: float = Field(
        90.0,
        gt=0,
        description="Resolved alert events triggered longer ago than this are deleted.",
    )
    notification_retention_days: float = Field(
        90.0,
        gt=0,
        description="Finished notifications and delivery attempts older than this are deleted.",
    )
