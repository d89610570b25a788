"""A minimal service used by the library's own process-level tests (crash, SIGTERM).

It consumes ``sample.events`` and, for each event, inserts one row into
``effects`` through the inbox. ``effects`` has no unique key on purpose: a
second effect of the same event would show up as a duplicate row.

Run: ``python -m tributary_testing.sample_service run`` with ``DB_SCHEMA``
naming the PostgreSQL schema to use.
"""

from __future__ import annotations

import asyncio
import sys

import sqlalchemy as sa
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from sqlalchemy.orm import Session

from tributary.cli import main
from tributary.config import ServiceSettings
from tributary.events import Event
from tributary.inbox import aprocess_once, inbox_table
from tributary.service import Components, Resources, Service
from tributary.streams.runner import RunnerOptions

STREAM = "sample.events"
EVENT_TYPE = "sample.happened"


class SampleSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SAMPLE_", extra="ignore", frozen=True)

    handler_delay_ms: float = Field(0.0, ge=0, description="Simulated work per batch, ms.")
    batch_size: int = Field(200, ge=1)


metadata = sa.MetaData()
inbox_table(metadata)
effects = sa.Table(
    "effects",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("event_id", sa.String(64), nullable=False),
)


def build(res: Resources[SampleSettings]) -> Components[None]:
    settings = res.settings
    metadata.create_all(res.engine)
    runner = res.runner(
        STREAM, RunnerOptions(batch_size=settings.batch_size, block_ms=100, claim_idle_ms=5_000)
    )

    def write(session: Session, new_ids: set[str]) -> None:
        session.execute(effects.insert(), [{"event_id": i} for i in sorted(new_ids)])

    pause = settings.handler_delay_ms / 2000

    @runner.batch_handler(EVENT_TYPE)
    async def on_events(events: list[Event]) -> None:
        # simulated work on both sides of the commit, so that a kill often lands
        # between the commit and the XACK: the window the inbox exists for
        await asyncio.sleep(pause)
        await aprocess_once(res.sessions, res.service.name, [e.id for e in events], write)
        await asyncio.sleep(pause)

    return Components(app=None, runners=[runner])


SERVICE: Service[SampleSettings, None] = Service(
    name="sample", settings_class=SampleSettings, build=build, schema="sample"
)

if __name__ == "__main__":
    sys.exit(main(SERVICE))
