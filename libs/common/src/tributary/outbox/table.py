"""The ``outbox`` table: its shape, the formats of its rows, and its housekeeping.

Like the inbox, the table is schema-free: each service adds it to its own
metadata and migrations with :func:`outbox_table`, and the engine's search
path (PostgreSQL) or the URL's database (MySQL/MariaDB) decides where it is.

A row's ``format`` says how its events are stored:

- ``entry``: one event, its flat hash as JSON text in ``fields`` (readable
  as it is with ``SELECT fields``);
- ``page``: up to :data:`MAX_PAGE_EVENTS` events, a JSON array of flat
  hashes, zlib-compressed in ``page`` (``bytea`` / ``LONGBLOB``);
- ``rendered``: the name of a page renderer and its arguments, a JSON object
  ``{"$render": name, "args": ...}``, zlib-compressed in ``page``; the relay
  makes the entries with the renderer it was given under that name;
- ``legacy``: written by a version from before the column (its default):
  ``fields`` holds an entry's JSON, or ``zlib:`` and the base64 of a page's
  or rendered page's bytes. The migration that added the column converted
  the rows there were; the relay reads rows an older replica still writes
  during a rolling upgrade the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

import sqlalchemy as sa
from sqlalchemy import MetaData, Table
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

TABLE_NAME = "outbox"
STREAM_MAX_LENGTH = 200
EVENT_ID_MAX_LENGTH = 64
FORMAT_MAX_LENGTH = 16
#: most events one page row holds (1,000 events of ~450 bytes are ~0.5 MB of JSON)
MAX_PAGE_EVENTS = 1000

ENTRY: Final = "entry"
PAGE: Final = "page"
RENDERED: Final = "rendered"
LEGACY: Final = "legacy"

#: what rows are written (and read) with: an ORM session or a Core connection, in the
#: caller's transaction
SessionOrConnection = Session | Connection


def utcnow() -> datetime:
    return datetime.now(UTC)


def _common_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("stream", sa.String(STREAM_MAX_LENGTH), nullable=False),
        # a page's: its first event's
        sa.Column("event_id", sa.String(EVENT_ID_MAX_LENGTH), nullable=False),
    ]


def fields_type() -> sa.types.TypeEngine[str]:
    """The type of ``fields``: MySQL's TEXT stops at 64 KiB, too little for a large
    payload, so MEDIUMTEXT (16 MiB) there."""
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql")


def format_column() -> sa.Column[str]:
    # rows written by a version that does not know the column (an older replica during a
    # rolling upgrade) get ``legacy``, which the relay reads as that version did
    return sa.Column("format", sa.String(FORMAT_MAX_LENGTH), nullable=False, server_default=LEGACY)


def page_column() -> sa.Column[bytes]:
    # MySQL's BLOB stops at 64 KiB: LONGBLOB there (a page is well under 1 MB)
    return sa.Column("page", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql"))


def _times_and_index() -> list[Any]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, default=utcnow),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        # serves the relay (published_at IS NULL, in id order) and the purge (by age)
        sa.Index("ix_outbox_published_at_id", "published_at", "id"),
    ]


def outbox_table(metadata: MetaData) -> Table:
    """The ``outbox`` table in ``metadata``: one row per event, or per page of events,
    waiting to be (or already) sent."""
    return Table(
        TABLE_NAME,
        metadata,
        *_common_columns(),
        format_column(),
        # an entry's flat hash as JSON (format entry or legacy), NULL for pages
        sa.Column("fields", fields_type(), nullable=True),
        # a page's compressed JSON (format page or rendered), NULL for entries
        page_column(),
        *_times_and_index(),
    )


def legacy_outbox_table(metadata: MetaData) -> Table:
    """The ``outbox`` table as it was before rows had a format (``fields`` only).

    For the first revision of a service's history, which created it so: a
    revision must keep creating what it created when it was written; the
    revision after it adds the format (:mod:`tributary.outbox.migration`).
    """
    return Table(
        TABLE_NAME,
        metadata,
        *_common_columns(),
        sa.Column("fields", fields_type(), nullable=False),
        *_times_and_index(),
    )


# The statements of the package only need the table's shape; the schema comes from the
# connection.
OUTBOX = outbox_table(MetaData())


def purge_published(
    session: SessionOrConnection, older_than: timedelta, now: datetime | None = None
) -> int:
    """Delete rows published more than ``older_than`` ago; returns how many."""
    cutoff = (now or utcnow()) - older_than
    stmt = sa.delete(OUTBOX).where(OUTBOX.c.published_at < cutoff)
    return int(cast("sa.CursorResult[Any]", session.execute(stmt)).rowcount)


def count_unpublished(session: SessionOrConnection) -> int:
    """Rows not yet published (a page counts once, whatever its events)."""
    stmt = sa.select(sa.func.count()).select_from(OUTBOX).where(OUTBOX.c.published_at.is_(None))
    return int(session.execute(stmt).scalar_one())
