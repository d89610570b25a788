"""Settings of the aggregation service (``AGGREGATION_*`` plus the shared names)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from tributary.config import ServiceSettings

#: where a run looks for counter keys: the per-date index set, a keyspace SCAN, or both
Discovery = Literal["index+scan", "index", "scan"]
#: how a batch reaches PostgreSQL: ``unnest`` arrays, ``copy`` into a staging table, or
#: ``auto`` (COPY for batches of at least ``AGGREGATION_COPY_THRESHOLD`` rows)
WriteMethod = Literal["auto", "unnest", "copy"]


class AggregationSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AGGREGATION_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "aggregation"

    interval_seconds: float = Field(
        3600.0, gt=0, description="Seconds between scheduled passes (today and yesterday)."
    )
    scheduler_enabled: bool = Field(
        True, description="Run the leader-only scheduler; CLI runs work either way."
    )
    finality_grace_hours: float = Field(
        26.0,
        ge=0,
        description="A date is final once a complete run started this long after its "
        "start (UTC midnight).",
    )
    lookback_days: int = Field(
        7,
        ge=1,
        le=366,
        description="Scheduled passes also retry dates this far back that are not final yet "
        "(keep it at the counters' TTL).",
    )
    discovery: Discovery = Field(
        "index+scan",
        description="Where runs find counters: the per-date index set, SCAN MATCH of the "
        "keyspace (foreign writers), or both.",
    )
    batch_size: int = Field(
        10_000, ge=1, le=200_000, description="Counters read and written per transaction."
    )
    mget_chunk: int = Field(
        1_000, ge=1, le=100_000, description="Keys per MGET inside one pipeline."
    )
    scan_count: int = Field(
        5_000, ge=10, le=1_000_000, description="COUNT hint of SCAN/SSCAN calls."
    )
    write_method: WriteMethod = Field(
        "auto", description="How batches are written: unnest arrays, COPY staging, or auto."
    )
    copy_threshold: int = Field(
        2_000, ge=1, description="Batches with at least this many rows use COPY when auto."
    )
    write_concurrency: int = Field(
        2, ge=1, le=16, description="Batches written to PostgreSQL at the same time."
    )
    publish_events: bool = Field(
        True, description="Publish usage.aggregated (through the outbox) for changed rows."
    )
    retry_base_seconds: float = Field(
        60.0, gt=0, description="First retry delay of a partial or failed run; doubles each time."
    )
    retry_max_seconds: float = Field(
        1800.0, gt=0, description="Longest retry delay of a partial or failed run."
    )
    retry_max_attempts: int = Field(
        5,
        ge=0,
        description="Retries of a date before waiting for the next scheduled pass.",
    )
    max_recorded_errors: int = Field(
        1_000, ge=0, description="Malformed keys stored per run (all are counted)."
    )
    run_retention_days: float = Field(
        90.0, gt=0, description="Finished runs (and their recorded errors) are kept this long."
    )

    @model_validator(mode="after")
    def _retry_bounds(self) -> AggregationSettings:
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError(
                "AGGREGATION_RETRY_MAX_SECONDS must be at least AGGREGATION_RETRY_BASE_SECONDS"
            )
        return self

    @property
    def tick_seconds(self) -> float:
        """How often the leader looks for due work (passes and retries)."""
        return min(self.interval_seconds, self.retry_base_seconds)
