"""usage.aggregated pages, rendered by the relay: the entries encode() gives."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Any

import pytest

from aggregation.publishing import EVENT_TYPE, Shared, render_page, usage_entries
from tributary import catalog, outbox
from tributary.events import encode, make_event, new_event_id

DAY = date(2025, 3, 10)
TIME = "2025-03-11T01:02:03.456Z"
TRACEPARENT = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"
#: names as they are, and names JSON must escape (quotes, backslashes, control characters)
NAMES = [
    ("m1", "calls"),
    ("shop é ✓", "api calls"),
    ('m"3\\', 'say "hi"\\n'),
    ("m4", "tab\tand\\"),
    ("bell\x07", "nul\x00"),
]


@pytest.mark.parametrize(("merchant", "metric"), NAMES)
@pytest.mark.parametrize("traceparent", [None, TRACEPARENT])
@pytest.mark.parametrize(("previous", "final"), [(None, False), (5, True)])
def test_rendered_entries_are_the_encoded_event(
    merchant: str, metric: str, traceparent: str | None, previous: int | None, final: bool
) -> None:
    shared = Shared("aggregation", "1", TIME, DAY.isoformat(), final, traceparent)
    event_id = new_event_id()
    columns: list[list[Any]] = [["m0", merchant], ["x", metric], [1, 2**63 - 1], [None, previous]]
    entry = usage_entries(shared, ["id-0", event_id], columns)[1]
    payload = catalog.UsageAggregated(
        merchant_id=merchant, date=DAY, metric=metric, value=2**63 - 1, previous=previous,
        final=final,
    )  # fmt: skip
    event = make_event(EVENT_TYPE, payload, "aggregation", catalog.default_registry(),
                       id=event_id, time=TIME, traceparent=traceparent)  # fmt: skip
    # byte for byte and in encode()'s order
    assert list(entry.items()) == list(encode(event).items())


def pages() -> list[tuple[str, dict[str, Any]]]:
    shared = Shared("aggregation", "1", TIME, DAY.isoformat(), False)
    columns: list[list[Any]] = [["m1", "m2", "m3"], ["calls"] * 3, [1, 2, 3], [None, 1, None]]
    return outbox.columnar_pages(columns, asdict(shared), page_size=2)


def test_a_page_stores_the_values_and_its_ids_as_a_block() -> None:
    (first_id, first), (second_id, second) = pages()
    assert [len(render_page(args)) for args in (first, second)] == [2, 1]
    prefix, start, count = first["ids"]
    assert (count, second["ids"]) == (2, [prefix, start + 2, 1])
    assert [first_id, second_id] == [render_page(args)[0]["id"] for args in (first, second)]
    assert first["columns"] == [["m1", "m2"], ["calls", "calls"], [1, 2], [None, 1]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ids": ["not-a-uuid-", 0, 2]}, "not the prefix of a UUIDv7"),
        ({"ids": None}, "cannot unpack"),
        ({"columns": [["m1", "m2"]] * 3}, "3 columns"),
        ({"columns": [["m1"], ["c"], [1], [None]]}, "other lengths"),
        ({"columns": [["m1", 7], ["c", "c"], [1, 2], [None, None]]}, "must be text"),
        ({"columns": [["m1", "m2"], ["c", "c"], ["1; DROP", 2], [None, None]]}, "invalid literal"),
        ({"shared": {"source": "s", "version": "1", "time": "t", "date": "d", "final": "no"}},
         "must be text"),
        ({"shared": {"source": None, "version": "1", "time": "t", "date": "d", "final": True}},
         "must be text"),
        ({"shared": {"source": "s", "version": "1", "time": "t", "date": "d", "final": True,
                     "x": 1}}, "unexpected keyword"),
    ],
)  # fmt: skip
def test_render_page_refuses_arguments_it_did_not_make(
    change: dict[str, object], message: str
) -> None:
    (_, args), _ = pages()
    with pytest.raises((ValueError, TypeError), match=message):
        render_page(args | change)


def test_pages_over_the_relays_limit_are_refused_when_read() -> None:
    (_, args), _ = pages()
    prefix, start, _ = args["ids"]
    with pytest.raises(ValueError, match="a page of 1001 events"):
        render_page(args | {"ids": [prefix, start, 1001]})
