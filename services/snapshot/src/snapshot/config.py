"""Settings of the snapshot service (``SNAPSHOT_*`` plus the shared names)."""

from __future__ import annotations

from typing import ClassVar

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from tributary.config import ServiceSettings

#: the rolling window Outline reports usage and applies data limits over, in days
OUTLINE_WINDOW_DAYS = 30


class SnapshotSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="SNAPSHOT_", extra="ignore", populate_by_name=True, frozen=True
    )
    service_name: ClassVar[str] = "snapshot"

    encryption_key: SecretStr = Field(
        description="Fernet key(s) encrypting Outline apiUrls at rest; comma-separated, the "
        "first encrypts, all decrypt (rotation). `python -m snapshot generate-key` makes one.",
    )
    collect_interval_seconds: float = Field(
        300.0, gt=0, description="Seconds between scheduler ticks (one work item per server)."
    )
    collect_concurrency: int = Field(
        32, ge=1, le=1000, description="Servers collected at once by one replica."
    )
    http_concurrency: int = Field(
        64, ge=1, le=2000, description="Outline API requests in flight at once per replica."
    )
    connections_per_server: int = Field(
        1,
        ge=1,
        le=16,
        description="HTTPS connections to one Outline server (its requests share them).",
    )
    http_timeout_seconds: float = Field(
        10.0, gt=0, description="Timeout of one Outline API request (connect, read, pool)."
    )
    use_interval_metrics: bool = Field(
        True,
        description="Use /experimental/server/metrics for deltas when the server has it.",
    )
    backoff_base_seconds: float = Field(
        10.0, gt=0, description="First backoff after a failed collection; doubles per failure."
    )
    backoff_max_seconds: float = Field(
        300.0, gt=0, description="Longest backoff of a failing server (jittered)."
    )
    maintenance_interval_seconds: float = Field(
        60.0, gt=0, description="Seconds between rollup / window ageing / partition runs."
    )
    raw_retention_days: float = Field(
        30.0,
        gt=0,
        description="Raw snapshots older than this are dropped (whole daily partitions, by "
        "the retention pass; never what is not rolled up yet).",
    )
    rollup_retention_days: float = Field(
        400.0, description="Hourly rollups older than this are deleted (at least 31)."
    )
    drift_interval_seconds: float = Field(
        3600.0, gt=0, description="Seconds between drift checks (summed deltas vs 30-day value)."
    )
    drift_tolerance_ratio: float = Field(
        0.05, ge=0, description="Drift beyond this share of the 30-day value is reported."
    )
    drift_tolerance_bytes: int = Field(
        10_000_000, ge=0, description="Drift below this many bytes is never reported."
    )
    analysis_interval_seconds: float = Field(
        300.0, gt=0, description="Seconds between anomaly and forecast runs."
    )
    anomaly_window_seconds: int = Field(
        3600, ge=300, description="Recent usage window compared with the key's baseline."
    )
    anomaly_baseline_days: int = Field(
        7, ge=1, le=29, description="Days of hourly history forming a key's baseline."
    )
    anomaly_min_history_hours: int = Field(
        24, ge=3, description="Hours of history a key needs before it can be anomalous."
    )
    anomaly_min_bytes: int = Field(
        50_000_000, ge=0, description="Recent usage below this never counts as an anomaly."
    )
    anomaly_score_threshold: float = Field(
        3.5, gt=0, description="Modified z-score (median/MAD) that opens an anomaly episode."
    )
    anomaly_resolve_score: float = Field(
        2.0, ge=0, description="An episode ends when the score falls below this."
    )
    anomaly_min_ratio: float = Field(
        2.0, ge=1, description="Observed / baseline median needed as well (old rule: 3x)."
    )
    forecast_horizon_hours: float = Field(
        72.0, gt=0, description="usage.forecasts is published when the limit is nearer."
    )

    @field_validator("encryption_key")
    @classmethod
    def _valid_fernet_keys(cls, value: SecretStr) -> SecretStr:
        keys = [k.strip() for k in value.get_secret_value().split(",") if k.strip()]
        if not keys:
            raise ValueError("at least one Fernet key is required")
        for key in keys:
            try:
                Fernet(key)
            except ValueError:
                raise ValueError("not a Fernet key (32 url-safe base64-encoded bytes)") from None
        return value

    @model_validator(mode="after")
    def _rollups_outlive_the_window(self) -> SnapshotSettings:
        if self.rollup_retention_days < OUTLINE_WINDOW_DAYS + 1:
            raise ValueError(
                f"SNAPSHOT_ROLLUP_RETENTION_DAYS must be at least {OUTLINE_WINDOW_DAYS + 1}"
            )
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise ValueError(
                "SNAPSHOT_BACKOFF_MAX_SECONDS must be >= SNAPSHOT_BACKOFF_BASE_SECONDS"
            )
        return self
