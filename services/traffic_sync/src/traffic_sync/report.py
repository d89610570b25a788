"""What a flush cycle did: for the log, the metrics and ``status``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class CycleReport:
    started_at: datetime = field(default_factory=_utcnow)
    finished_at: datetime | None = None
    seconds: float = 0.0
    dirty: int = 0
    batches: int = 0
    recovered: int = 0
    nodes: int = 0
    upload_bytes: int = 0
    download_bytes: int = 0
    rejected: int = 0
    failed_batches: int = 0
    pending_batches: int = 0
    events: int = 0

    @property
    def errors(self) -> int:
        return self.rejected + self.failed_batches

    def as_status(self) -> dict[str, str]:
        values = asdict(self)
        values["errors"] = self.errors
        return {k: v.isoformat() if isinstance(v, datetime) else str(v) for k, v in values.items()}
