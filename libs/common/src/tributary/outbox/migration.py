"""The Alembic revision that gives an ``outbox`` table its ``format`` column.

Every service with an outbox has one revision in its own history that calls
:func:`upgrade_to_formats` (and :func:`downgrade_from_formats`). It adds
``format`` (default ``legacy``) and ``page``, lets ``fields`` be NULL, and
converts the rows there are, a batch of ids at a time: a row whose
``fields`` start with ``zlib:`` gets format ``page`` or ``rendered`` and the
base64-decoded bytes in ``page`` (``fields`` NULL), any other row format
``entry``. A row it cannot tell (``zlib:`` and no readable page) stays
``legacy``: the relay reads it as the versions before did, and dead-letters it
as they would have. Offline (``--sql``) only the entries are converted, in one
statement; the pages stay ``legacy``, which the relay reads as well.

Additive, so replicas of the version before keep working during a rolling
upgrade: their rows get ``legacy``, and their relays stop at a page row
(``fields`` NULL) until a replica of this version publishes it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tributary.outbox.entries import legacy_format
from tributary.outbox.pages import LEGACY_PAGE_PREFIX
from tributary.outbox.table import (
    ENTRY,
    LEGACY,
    OUTBOX,
    PAGE,
    RENDERED,
    TABLE_NAME,
    fields_type,
    format_column,
    page_column,
)

#: rows (by id) converted per statement; the page rows of a batch are read into memory
DEFAULT_BATCH_ROWS = 5000


def upgrade_to_formats(batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
    """From a revision's ``upgrade()``: the columns, then the rows converted."""
    from alembic import op

    op.add_column(TABLE_NAME, format_column())
    op.add_column(TABLE_NAME, page_column())
    op.alter_column(TABLE_NAME, "fields", existing_type=fields_type(), nullable=True)
    if op.get_context().as_sql:
        op.execute(_entries_of(OUTBOX.c.id.is_not(None)))
        return
    convert_legacy_rows(op.get_bind(), batch_rows)


def downgrade_from_formats(batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
    """From a revision's ``downgrade()``: pages back into ``fields`` as ``zlib:`` and
    their base64 (in SQL, so offline too), then the columns dropped."""
    from alembic import op

    context = op.get_context()
    has_page = OUTBOX.c.page.is_not(None)
    as_text = sa.literal(LEGACY_PAGE_PREFIX) + _base64(OUTBOX.c.page, context.dialect.name)
    to_text = sa.update(OUTBOX).values(fields=as_text)
    if context.as_sql:
        op.execute(to_text.where(has_page))
    else:
        conn = op.get_bind()
        for batch in _id_batches(conn, has_page, batch_rows):
            conn.execute(to_text.where(batch, has_page))
    op.alter_column(TABLE_NAME, "fields", existing_type=fields_type(), nullable=False)
    op.drop_column(TABLE_NAME, "page")
    op.drop_column(TABLE_NAME, "format")


def _base64(column: sa.ColumnElement[bytes], dialect: str) -> sa.ColumnElement[str]:
    """Base64 of ``column`` in SQL, on one line (both databases break it every 76 characters)."""
    if dialect == "postgresql":
        encoded = sa.func.encode(column, "base64")
    else:
        encoded = sa.func.to_base64(column)
    return sa.func.replace(encoded, "\n", "", type_=sa.Text)


def convert_legacy_rows(conn: Connection, batch_rows: int = DEFAULT_BATCH_ROWS) -> int:
    """Give every ``legacy`` row the format it holds (see the module); returns how many
    rows were converted."""
    converted = 0
    is_legacy = OUTBOX.c.format == LEGACY
    for batch in _id_batches(conn, is_legacy, batch_rows):
        result = conn.execute(_entries_of(batch & is_legacy))
        converted += int(result.rowcount)
        is_page = batch & is_legacy & OUTBOX.c.fields.startswith(LEGACY_PAGE_PREFIX)
        updates = []
        for row_id, fields in conn.execute(sa.select(OUTBOX.c.id, OUTBOX.c.fields).where(is_page)):
            known = legacy_format(fields)
            if known is not None and known[0] in (PAGE, RENDERED):
                format_, _, page = known
                updates.append(
                    {"row_id": row_id, "new_format": format_, "new_fields": None, "new_page": page}
                )
        converted += _update_each(conn, updates)
    return converted


def _entries_of(rows: sa.ColumnElement[bool]) -> sa.Update:
    """Make the ``rows`` whose fields are not a legacy page entries."""
    return (
        sa.update(OUTBOX)
        .where(rows, sa.not_(OUTBOX.c.fields.startswith(LEGACY_PAGE_PREFIX)))
        .values(format=ENTRY)
    )


def _id_batches(
    conn: Connection, rows: sa.ColumnElement[bool], batch_rows: int
) -> list[sa.ColumnElement[bool]]:
    """Conditions for consecutive id ranges of ``batch_rows`` ids that cover ``rows``."""
    low, high = conn.execute(
        sa.select(sa.func.min(OUTBOX.c.id), sa.func.max(OUTBOX.c.id)).where(rows)
    ).one()
    if low is None:
        return []
    return [
        OUTBOX.c.id.between(start, min(start + batch_rows - 1, high))
        for start in range(low, high + 1, batch_rows)
    ]


def _update_each(conn: Connection, updates: list[dict[str, Any]]) -> int:
    """Set each row's format, fields and page (one statement, many parameter sets)."""
    if updates:
        conn.execute(
            sa.update(OUTBOX)
            .where(OUTBOX.c.id == sa.bindparam("row_id"))
            .values(
                format=sa.bindparam("new_format"),
                fields=sa.bindparam("new_fields"),
                page=sa.bindparam("new_page"),
            ),
            updates,
        )
    return len(updates)
