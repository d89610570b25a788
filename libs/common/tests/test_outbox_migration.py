"""The revision that gives the outbox its formats: rows the versions before wrote (with
their SQL) are converted, in batches, and published as they would have been; downgrading
gives them back. On PostgreSQL and MySQL/MariaDB."""

from __future__ import annotations

import base64
import io
import json
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

from tributary import outbox
from tributary.events import Event, decode, encode
from tributary.keys import Keys
from tributary.migrate import alembic_config, check_migrations, run_migrations
from tributary.outbox import ENTRY, LEGACY, PAGE, RENDERED, OutboxRelay
from tributary.streams import client

HISTORY = Path(__file__).parent / "migrations_outbox"
VERSION_TABLE = "outbox_sample_alembic_version"
STREAM = "traffic.flushed"
LEGACY_COLUMNS = ["id", "stream", "event_id", "fields", "created_at", "published_at"]


@dataclass(frozen=True)
class Target:
    engine: Engine
    schema: str | None

    def upgrade(self, revision: str = "head") -> None:
        run_migrations(self.engine, HISTORY, self.schema, VERSION_TABLE, revision)

    def downgrade(self, revision: str) -> None:
        with self.engine.begin() as conn:
            command.downgrade(alembic_config(HISTORY, conn, self.schema, VERSION_TABLE), revision)

    def columns(self) -> list[str]:
        return [c["name"] for c in sa.inspect(self.engine).get_columns("outbox", self.schema)]


@pytest.fixture
def target(database: tuple[Engine, str | None]) -> Target:
    return Target(*database)


def event(n: int) -> Event:
    return Event(type=STREAM, data={"node": f"n{n}", "total": n}, source="traffic_sync")


def render_counts(args: dict[str, Any]) -> list[dict[str, str]]:
    """The renderer of the old rendered page below: events n0 .. n<count-1>."""
    made = [event(n) for n in range(args["count"])]
    for n, e in enumerate(made):
        e.id, e.time = f"{args['prefix']}-{n}", "2026-12-04T00:00:00.000Z"
    return [encode(e) for e in made]


RENDERERS = {"tests/counts/1": render_counts}


def old_page(value: object) -> str:
    """A page's ``fields`` as the versions before the format column wrote them."""
    packed = zlib.compress(json.dumps(value, separators=(",", ":")).encode(), 1)
    return "zlib:" + base64.b64encode(packed).decode("ascii")


@dataclass
class OldRows:
    """Rows as the versions before wrote them, and what becomes of them."""

    #: (fields, published) in id order
    rows: list[tuple[str, bool]] = field(default_factory=list)
    #: the format each row has after the upgrade
    formats: list[str] = field(default_factory=list)
    #: the ids of the events the relay publishes, in order
    published: list[str] = field(default_factory=list)

    def entry(self, e: Event, published: bool = False) -> None:
        self.rows.append((json.dumps(encode(e), separators=(",", ":")), published))
        self.formats.append(ENTRY)
        self.published += [] if published else [e.id]

    def page(self, events: list[Event]) -> None:
        self.rows.append((old_page([encode(e) for e in events]), False))
        self.formats.append(PAGE)
        self.published += [e.id for e in events]

    def rendered(self, prefix: str, count: int) -> None:
        args = {"prefix": prefix, "count": count}
        self.rows.append((old_page({"$render": "tests/counts/1", "args": args}), False))
        self.formats.append(RENDERED)
        self.published += [f"{prefix}-{n}" for n in range(count)]


def old_rows() -> OldRows:
    old = OldRows()
    old.entry(event(1), published=True)
    old.entry(event(2))
    old.page([event(n) for n in range(3, 7)])
    old.rendered("r", 3)
    old.rows.append(("zlib:%%%", False))  # garbage no version could publish: stays legacy
    old.formats.append(LEGACY)
    old.entry(event(7))
    old.page([event(8), event(9)])
    old.entry(event(10), published=True)
    old.entry(event(11))
    return old


def write_old_rows(target: Target, old: OldRows) -> None:
    """INSERT as the versions before did (no format, no page), published or not."""
    now = datetime.now(UTC)
    insert = sa.text(
        "INSERT INTO outbox (stream, event_id, fields, created_at, published_at)"
        " VALUES (:stream, :event_id, :fields, :created_at, :published_at)"
    )
    with target.engine.begin() as conn:
        for n, (fields, published) in enumerate(old.rows):
            published_at = now - timedelta(hours=1) if published else None
            conn.execute(insert, {"stream": STREAM, "event_id": f"e{n}", "fields": fields,
                                  "created_at": now, "published_at": published_at})  # fmt: skip


def stored(target: Target) -> list[sa.Row[Any]]:
    with target.engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT * FROM outbox ORDER BY id")))


async def test_old_rows_are_converted_in_batches_and_published_as_before(
    target: Target, redis_client: aioredis.Redis, keys: Keys
) -> None:
    target.upgrade("0001")
    assert target.columns() == LEGACY_COLUMNS
    old = old_rows()
    write_old_rows(target, old)
    target.upgrade()
    check_migrations(target.engine, HISTORY, target.schema, VERSION_TABLE)

    rows = stored(target)
    assert [r.format for r in rows] == old.formats  # 10 rows, converted 3 ids at a time
    for row, (fields, _) in zip(rows, old.rows, strict=True):
        if row.format in (PAGE, RENDERED):  # the bytes the base64 held, moved to page
            assert (row.fields, row.page) == (None, base64.b64decode(fields[5:]))
        else:  # entries (and what the migration cannot tell) keep their text
            assert (row.fields, row.page) == (fields, None)

    relay = OutboxRelay(target.engine, redis_client, keys, renderers=RENDERERS)
    try:
        while await relay.relay_once():
            pass
    finally:
        relay.close()
    entries = await client.entries(redis_client, keys.stream(STREAM))
    assert [decode(f).id for _, f in entries] == old.published
    [(_, letter)] = await client.entries(redis_client, keys.dlq(STREAM))
    assert (letter["dlq.outbox_format"], letter["dlq.outbox_fields"]) == (LEGACY, "zlib:%%%")


def test_downgrade_gives_the_rows_back_as_the_versions_before_wrote_them(
    target: Target,
) -> None:
    target.upgrade("0001")
    old = old_rows()
    write_old_rows(target, old)
    target.upgrade()
    new = [event(n) for n in range(20, 23)]
    with target.engine.begin() as conn:  # rows the new version wrote in the meantime
        outbox.add(conn, STREAM, new[0])
        outbox.add_page(conn, STREAM, new[1:])
    target.downgrade("0001")

    assert target.columns() == LEGACY_COLUMNS
    rows = stored(target)
    assert [r.fields for r in rows[: len(old.rows)]] == [fields for fields, _ in old.rows]
    # what the versions before read from the new version's rows: the same events
    legacy = [outbox.row_entries(r.id, LEGACY, r.fields, None, {}) for r in rows[len(old.rows) :]]
    assert [[decode(e).id for e in entries] for entries in legacy] == [
        [new[0].id],
        [e.id for e in new[1:]],
    ]


@pytest.mark.parametrize(
    ("url", "to_text"),
    [
        ("postgresql+psycopg://u@db.invalid/x", "'zlib:' || replace(encode(outbox.page, 'base64')"),
        ("mysql+pymysql://u@db.invalid/x", "concat('zlib:', replace(to_base64(outbox.page)"),
    ],
)
def test_offline_sql_converts_entries_and_downgrades_pages(url: str, to_text: str) -> None:
    """``--sql``: the entries are converted in one statement (pages stay legacy, which the
    relay reads); a downgrade turns pages back into text in SQL."""
    config = alembic_config(HISTORY, schema="svc", version_table=VERSION_TABLE)
    config.set_main_option("sqlalchemy.url", url)
    config.output_buffer = upgrade = io.StringIO()
    command.upgrade(config, "0001:head", sql=True)
    assert "ADD COLUMN format VARCHAR(16)" in upgrade.getvalue()
    assert "UPDATE outbox SET format='entry'" in upgrade.getvalue()
    config.output_buffer = downgrade = io.StringIO()
    command.downgrade(config, "head:0001", sql=True)
    assert to_text in downgrade.getvalue()
    assert "DROP COLUMN format" in downgrade.getvalue()
