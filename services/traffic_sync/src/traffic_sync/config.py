"""traffic_sync settings: the shared ones (``REDIS_URL``, ``DATABASE_URL``...) plus
its own, prefixed ``TRAFFIC_SYNC_``."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from tributary.config import ServiceSettings, shared

#: MySQL/MariaDB, as the deployment this service replaces
DEFAULT_DATABASE_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
#: seconds between two flushes
DEFAULT_INTERVAL_SECONDS = 300.0
#: nodes moved out of Redis and applied to the database per transaction (each commit
#: syncs the redo log and each move is a round trip: with four in flight, 100,000
#: nodes flushed about 10% faster in batches of 4,000 than of 2,000; see
#: docs/services/traffic_sync.md#benchmark)
DEFAULT_BATCH_SIZE = 4000
#: COUNT hint of each SCAN / SSCAN call: a walk of a large keyspace is bound by round
#: trips (1M keys: about 6 s at 1,000 a call, 1.5 s at 10,000), and a call of 10,000
#: keys holds Redis for about a millisecond
DEFAULT_SCAN_COUNT = 10_000

Discovery = Literal["both", "index", "scan"]


class TrafficSyncSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRAFFIC_SYNC_", extra="ignore", populate_by_name=True, frozen=True
    )
    service_name: ClassVar[str] = "traffic_sync"

    database_url: SecretStr = Field(
        SecretStr(DEFAULT_DATABASE_URL),
        validation_alias=shared("DATABASE_URL"),
        description="SQLAlchemy URL of the traffic database (MySQL/MariaDB or PostgreSQL).",
    )
    interval_seconds: float = Field(
        DEFAULT_INTERVAL_SECONDS,
        gt=0,
        description="Seconds between two flushes (run on the lease holder only).",
    )
    batch_size: int = Field(
        DEFAULT_BATCH_SIZE,
        ge=1,
        le=50_000,
        description="Nodes moved out of Redis and applied in one database transaction.",
    )
    apply_concurrency: int = Field(
        4,
        ge=1,
        le=16,
        description="Batches applied to the database at the same time during a flush.",
    )
    discovery: Discovery = Field(
        "both",
        description=(
            "How dirty nodes are found: `index` (the set record_traffic maintains), "
            "`scan` (SCAN for node:*:traffic, finds foreign writers too) or `both`."
        ),
    )
    scan_count: int = Field(
        DEFAULT_SCAN_COUNT, ge=1, description="COUNT hint of each SCAN/SSCAN call."
    )
    publish_events: bool = Field(
        True, description="Publish one traffic.flushed event per flushed node (via the outbox)."
    )
    ledger_retention_days: float = Field(
        30.0,
        gt=0,
        description="Days an applied batch id is kept in the ledger (must outlive any crash).",
    )
