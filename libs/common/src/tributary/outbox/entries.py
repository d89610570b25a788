"""Reading outbox rows back: the entries the relay XADDs for a row.

:func:`row_entries` makes them from the row's stored columns, or raises
ValueError naming the row when nobody can (the relay dead-letters it), or
:class:`NotReadableHere` when another process might (a renderer or a format
this process does not have: the relay stops there). Rows written before the
``format`` column (``legacy``) are read as the versions before read them.
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tributary.outbox.pages import LEGACY_PAGE_PREFIX, RENDER_KEY, Renderers
from tributary.outbox.table import (
    ENTRY,
    LEGACY,
    MAX_PAGE_EVENTS,
    OUTBOX,
    PAGE,
    RENDERED,
    SessionOrConnection,
)


class NotReadableHere(ValueError):
    """A row another process may be able to publish: a newer version's format, or a
    rendered page whose renderer this process was not given."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    stream: str
    #: the entries to XADD, in order: one, or a page's
    entries: list[dict[str, str]]
    #: why the row can never be published (then ``entries`` is empty): it is dead-lettered
    problem: str | None = None
    #: what the row stores, kept for the dead letter of a row with a problem
    format: str = ENTRY
    fields: str | None = None
    page: bytes | None = None


def read_row(
    row_id: int,
    stream: str,
    format_: str,
    fields: str | None,
    page: bytes | None,
    renderers: Renderers,
) -> OutboxRow:
    """The row as the relay publishes it, or with the problem that makes it a dead letter
    (what another process may publish is not such a problem: it raises)."""
    try:
        return OutboxRow(row_id, stream, row_entries(row_id, format_, fields, page, renderers))
    except NotReadableHere:
        raise
    except ValueError as exc:
        return OutboxRow(row_id, stream, [], str(exc), format_, fields, page)


def stored_rows(reader: SessionOrConnection, renderers: Renderers) -> list[OutboxRow]:
    """Every row of the table, published or not, in id order, read as the relay reads
    them (for tests and inspection)."""
    stmt = sa.select(
        OUTBOX.c.id, OUTBOX.c.stream, OUTBOX.c.format, OUTBOX.c.fields, OUTBOX.c.page
    ).order_by(OUTBOX.c.id)
    return [read_row(*row, renderers) for row in reader.execute(stmt)]


def row_entries(
    row_id: int, format_: str, fields: str | None, page: bytes | None, renderers: Renderers
) -> list[dict[str, str]]:
    """The entries the relay XADDs for an outbox row (its id and stored columns): one,
    a page's, or a rendered page's; ValueError (naming the row) if nobody can make them,
    :class:`NotReadableHere` if another process may."""
    if format_ == ENTRY:
        parsed = _json(row_id, fields)
        if not isinstance(parsed, dict):
            raise ValueError(f"outbox row {row_id}: fields are not an entry")
        entries = [parsed]
    elif format_ == PAGE:
        parsed = _json(row_id, _decompressed(row_id, page))
        if not isinstance(parsed, list):
            raise ValueError(f"outbox row {row_id}: the page is not an array of entries")
        entries = parsed
    elif format_ == RENDERED:
        entries = _rendered(row_id, _json(row_id, _decompressed(row_id, page)), renderers)
    elif format_ == LEGACY:
        entries = _legacy_entries(row_id, fields, renderers)
    else:
        raise NotReadableHere(f"outbox row {row_id}: format {format_!r} is unknown here")
    for entry in entries:
        if not (
            isinstance(entry, dict)
            and entry
            and all(isinstance(k, str) and isinstance(v, str) for k, v in entry.items())
        ):
            raise ValueError(f"outbox row {row_id}: an entry is not a flat hash of strings")
    return entries


def _json(row_id: int, text: str | bytes | None) -> Any:
    if text is None:
        raise ValueError(f"outbox row {row_id}: fields are not readable: the column is empty")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"outbox row {row_id}: fields are not readable: {exc}") from None


def _decompressed(row_id: int, page: bytes | None) -> bytes | None:
    if page is None:
        return None
    try:
        return zlib.decompress(page)
    except zlib.error as exc:
        raise ValueError(f"outbox row {row_id}: fields are not readable: {exc}") from None


def _rendered(row_id: int, page: Any, renderers: Renderers) -> list[dict[str, str]]:
    if not (isinstance(page, dict) and RENDER_KEY in page):
        raise ValueError(f"outbox row {row_id}: the rendered page names no renderer")
    name = page[RENDER_KEY]
    if not isinstance(name, str):
        raise ValueError(f"outbox row {row_id}: the renderer's name is not a string")
    renderer = renderers.get(name)
    if renderer is None:
        raise NotReadableHere(f"outbox row {row_id}: no page renderer {name!r} in this process")
    try:
        entries = renderer(page.get("args"))
    except Exception as exc:  # whatever a bad row makes it raise: name the row
        problem = f"renderer {name!r} refused the page: {type(exc).__name__}: {exc}"
        raise ValueError(f"outbox row {row_id}: {problem}") from None
    if len(entries) > MAX_PAGE_EVENTS:
        raise ValueError(f"outbox row {row_id}: renderer {name!r} made {len(entries)} entries")
    return entries


def legacy_page(fields: str) -> bytes | None:
    """The page bytes a legacy row's ``fields`` hold (None: they hold an entry's JSON);
    ValueError if they are not base64."""
    if not fields.startswith(LEGACY_PAGE_PREFIX):
        return None
    return base64.b64decode(fields[len(LEGACY_PAGE_PREFIX) :], validate=True)


def _legacy_entries(row_id: int, fields: str | None, renderers: Renderers) -> list[Any]:
    """A legacy row read as the versions before the format column read it: what its
    JSON is (an object, an array, an object naming a renderer) says what it holds."""
    try:
        page = legacy_page(fields or "")
    except ValueError as exc:
        raise ValueError(f"outbox row {row_id}: fields are not readable: {exc}") from None
    parsed = _json(row_id, fields if page is None else _decompressed(row_id, page))
    if isinstance(parsed, dict) and RENDER_KEY in parsed:
        return _rendered(row_id, parsed, renderers)
    if isinstance(parsed, dict):
        return [parsed]
    if isinstance(parsed, list):
        return parsed
    raise ValueError(f"outbox row {row_id}: fields are neither an entry nor a page")


def legacy_format(fields: str) -> tuple[str, str | None, bytes | None] | None:
    """The (format, fields, page) of a legacy row, for the migration that converts them;
    None when its fields are none of what the versions before wrote (it stays legacy)."""
    try:
        page = legacy_page(fields)
        if page is None:
            return ENTRY, fields, None
        parsed = json.loads(zlib.decompress(page))
    except (ValueError, zlib.error):
        return None
    if isinstance(parsed, dict) and RENDER_KEY in parsed:
        return RENDERED, None, page
    return (PAGE, None, page) if isinstance(parsed, list) else None
