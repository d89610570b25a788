"""The transactional outbox and its relay (DESIGN.md section 3).

An event that follows a database write is not XADDed by the handler: it is
written to the ``outbox`` table in the same transaction as the write
(:func:`add`), and :class:`OutboxRelay` publishes committed rows to their
streams afterwards, in id order. A crash between the commit and the XADD
loses nothing: the rows are still there for the next relay.

Three modules, read in this order:

- :mod:`~tributary.outbox.table`: the table (:func:`outbox_table`, which each
  service adds to its own metadata and migrations) and its row formats:
  ``entry`` (one event as JSON text), ``page`` (up to 1,000 events,
  compressed bytes), ``rendered`` (a renderer's name and arguments,
  compressed bytes);
- :mod:`~tributary.outbox.pages`: writing rows in the caller's transaction
  (:func:`add`, :func:`add_many`, :func:`add_page`, :func:`add_encoded_pages`,
  :func:`add_rendered_pages`);
- :mod:`~tributary.outbox.relay`: :class:`OutboxRelay`, which reads rows back
  (:mod:`~tributary.outbox.entries`), XADDs them and marks them published,
  with the page renderers the service gives it.

:mod:`~tributary.outbox.migration` converts a table from before the
``format`` column.
"""

from tributary.outbox.entries import NotReadableHere, OutboxRow, row_entries, stored_rows
from tributary.outbox.pages import (
    PageRenderer,
    Renderers,
    add,
    add_encoded_pages,
    add_many,
    add_page,
    add_rendered_pages,
    columnar_pages,
    page_event_ids,
    page_text,
    read_page,
)
from tributary.outbox.relay import RELAY_GROUP, OutboxRelay, dead_letter
from tributary.outbox.table import (
    ENTRY,
    LEGACY,
    MAX_PAGE_EVENTS,
    PAGE,
    RENDERED,
    SessionOrConnection,
    count_unpublished,
    legacy_outbox_table,
    outbox_table,
    purge_published,
)

__all__ = [
    "ENTRY",
    "LEGACY",
    "MAX_PAGE_EVENTS",
    "PAGE",
    "RELAY_GROUP",
    "RENDERED",
    "NotReadableHere",
    "OutboxRelay",
    "OutboxRow",
    "PageRenderer",
    "Renderers",
    "SessionOrConnection",
    "add",
    "add_encoded_pages",
    "add_many",
    "add_page",
    "add_rendered_pages",
    "columnar_pages",
    "count_unpublished",
    "dead_letter",
    "legacy_outbox_table",
    "outbox_table",
    "page_event_ids",
    "page_text",
    "purge_published",
    "read_page",
    "row_entries",
    "stored_rows",
]
