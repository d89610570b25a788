"""Test helpers: the snapshot service wired to real Redis and PostgreSQL and to the
Outline simulator over real HTTPS, sharing one hand-moved clock.

Used by the service's tests (``from .harness import Harness``)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from simulators.outline import FakeOutlineServer, ManualClock, OutlineSimulator
from snapshot.collector import Outcome
from snapshot.config import SnapshotSettings
from snapshot.credentials import SecretBox, generate_key
from snapshot.jobs import TickResult
from snapshot.servers import Registration, register_server
from snapshot.service import Snapshot, components
from tributary.keys import Keys
from tributary.service import Components, Resources

#: an hour boundary: collections at whole hours line up with the hourly buckets
START = datetime(2026, 1, 5, tzinfo=UTC).timestamp()
MB = 1_000_000


class Harness:
    """The service's parts plus the simulator, moved together by one clock."""

    def __init__(
        self,
        res: Resources[SnapshotSettings],
        app: Snapshot,
        sim: OutlineSimulator,
        clock: ManualClock,
    ) -> None:
        self.res, self.app, self.sim, self.clock = res, app, sim, clock
        self.settings = app.settings
        self.parts: Components[Snapshot] = components(res, app, self.now)
        # drain() ends after one empty read: do not block a second on it
        app.runner.options = dataclasses.replace(app.runner.options, block_ms=20)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def register(self, server: FakeOutlineServer, pin: str | None = None) -> str:
        reg = Registration.model_validate(
            {"apiUrl": server.api_url, "certSha256": pin or server.certificate.sha256,
             "name": server.name}
        )  # fmt: skip
        with self.res.sessions.begin() as session:
            row = register_server(session, SecretBox(self.settings.encryption_key), reg, self.now())
        return str(row.id)

    async def collect(self, server_id: str) -> Outcome:
        return await self.app.collector.collect(server_id)

    async def tick_and_drain(self) -> TickResult:
        result = await self.app.scheduler.tick()
        await self.app.runner.drain(timeout=60)
        return result

    def maintain(self) -> None:
        self.app.maintenance.run_once()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.res.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))

    def deltas(self, server_id: str, key_id: str) -> list[Any]:
        return self.rows(
            "SELECT s.collected_at, s.reading_bytes, s.delta_bytes, s.dropped_bytes, s.source "
            "FROM snapshots s JOIN access_keys a ON a.id = s.key_ref "
            "WHERE a.server_id = :server AND a.key_id = :key ORDER BY s.collected_at",
            server=server_id,
            key=key_id,
        )

    def server_row(self, server_id: str) -> Any:
        return self.rows("SELECT * FROM servers WHERE id = :id", id=server_id)[0]


def make_settings(redis_url: str, postgres_url: str, keys: Keys, **extra: Any) -> SnapshotSettings:
    values: dict[str, Any] = {
        "encryption_key": generate_key(),
        "redis_url": redis_url,
        "database_url": postgres_url,
        "stream_prefix": keys.prefix,
        "http_port": 0,
        "consumer_name": "snapshot-test",
        "http_timeout_seconds": 5.0,
        "anomaly_min_bytes": 10 * MB,
        # the simulated Outline servers listen on loopback: allow-listed, as an operator would
        "egress_allow_networks": "127.0.0.0/8",
    }
    values.update(extra)
    return SnapshotSettings(**values)
