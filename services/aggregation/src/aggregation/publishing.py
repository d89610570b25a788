"""``usage.aggregated`` events of a written batch, queued in the outbox as rendered pages.

One event per changed row, with the previous value: a first run of a busy
day changes every row, a million events. They are not written one by one:
the batch's transaction stores rendered pages
(:func:`tributary.outbox.add_rendered_pages`), each holding, for up to 1,000
rows, the rows' merchant, metric, value and previous value (as columns), the
block of their event ids (UUIDv7s, :func:`tributary.events.new_event_id_block`)
and what the batch's events share (:class:`Shared`: source, time, schema
version, trace context, date, final). The relay makes the entries from that
with :func:`render_page`, which the service gives its relay under the name
:data:`RENDERER` (:data:`RENDERERS`, in ``SERVICE``).

The entries are byte for byte what :func:`tributary.events.encode` gives for
the event, ``data`` as :meth:`catalog.UsageAggregated.model_dump_json` writes
it (a test compares them): the text around a row's values is made once per
page, and names are escaped for JSON only in a page that has a name needing
it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import chain
from typing import Any

from tributary import catalog, outbox
from tributary.events import SPEC_VERSION

EVENT_TYPE = "usage.aggregated"
STREAM = catalog.USAGE_AGGREGATED
#: the outbox page renderer of usage.aggregated pages (its name changes with their format)
RENDERER = "aggregation/usage.aggregated/1"
#: characters JSON escapes (a name without them goes in as it is, between quotes)
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')

#: (merchant ids, metrics, values, previous values): a batch's changed rows as columns
Columns = tuple[Sequence[str], Sequence[str], Sequence[int], Sequence[int | None]]


@dataclass(frozen=True, slots=True)
class Shared:
    """What the events of a batch share besides their type."""

    source: str
    version: str
    time: str
    #: the rows' date, ISO 8601
    date: str
    final: bool
    traceparent: str | None = None

    def __post_init__(self) -> None:
        # a page read back from the outbox is checked here before anything is rendered
        text = (self.source, self.version, self.time, self.date)
        if not (
            all(isinstance(v, str) for v in text)
            and isinstance(self.final, bool)
            and (self.traceparent is None or isinstance(self.traceparent, str))
        ):
            raise ValueError("source, version, time, date and trace context must be text")


def usage_entries(
    shared: Shared, event_ids: Sequence[str], columns: Sequence[Sequence[Any]]
) -> list[dict[str, str]]:
    """The entries of the events of the rows in ``columns`` (:data:`Columns`), with
    ``event_ids`` in order."""
    if len(columns) != 4:
        raise ValueError(f"{len(columns)} columns, not 4")
    merchants, metrics, values, previous = columns
    if any(len(c) != len(event_ids) for c in columns):
        raise ValueError(f"{len(event_ids)} event ids for columns of other lengths")
    names = list(chain(merchants, metrics))
    if not all(isinstance(name, str) for name in names):
        raise ValueError("merchant ids and metrics must be text")
    if _NEEDS_ESCAPE.search("".join(names)):
        merchants, metrics = (
            [json.dumps(n, ensure_ascii=False)[1:-1] for n in c] for c in (merchants, metrics)
        )
    # int(): what goes into the text is decimal digits, whatever the page holds
    numbers = [int(v) for v in values]
    before = ["null" if p is None else int(p) for p in previous]
    head = {
        "type": EVENT_TYPE,
        "source": shared.source,
        "time": shared.time,
        "specversion": SPEC_VERSION,
        "v": shared.version,
    }
    tail = {"traceparent": shared.traceparent} if shared.traceparent else {}
    a, b = '{"merchant_id":"', f'","date":"{shared.date}","metric":"'
    c, d, e = '","value":', ',"previous":', f',"final":{"true" if shared.final else "false"}}}'
    # one comprehension building each entry in one step (no call per event)
    return [
        {"id": i, **head, "data": f"{a}{m}{b}{k}{c}{v}{d}{p}{e}", **tail}
        for i, m, k, v, p in zip(event_ids, merchants, metrics, numbers, before, strict=True)
    ]


def render_page(args: Any) -> list[dict[str, str]]:
    """The entries of a page :func:`queue_usage_aggregated` stored (the relay's renderer)."""
    ids = outbox.page_event_ids(args)
    return usage_entries(Shared(**args["shared"]), ids, args["columns"])


#: the service's page renderers (``Service(renderers=...)`` gives them to its relay)
RENDERERS: outbox.Renderers = {RENDERER: render_page}


def queue_usage_aggregated(
    writer: outbox.SessionOrConnection, shared: Shared, columns: Columns
) -> int:
    """Add the events of the rows in ``columns`` to the outbox, in the caller's
    transaction, with fresh event ids; returns how many."""
    pages = outbox.columnar_pages(columns, asdict(shared))
    outbox.add_rendered_pages(writer, STREAM, RENDERER, pages)
    return len(columns[0])
