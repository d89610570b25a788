"""Which keys an interval answer can speak for, as parseInt builds accessKeyId (pure)."""

from __future__ import annotations

import pytest

from snapshot.interval import IntervalAnswer, entry_id, speaks_for
from snapshot.outline import parse_interval


@pytest.mark.parametrize(
    ("key_id", "expected"),
    [("0", True), ("42", True), ("007", False), ("12abc", False), ("my-identifier", False),
     ("", False), ("-1", False), ("٣", False), (str(2**53 - 1), True), (str(2**53), False)],
)  # fmt: skip
def test_speaks_for(key_id: str, expected: bool) -> None:
    assert speaks_for(key_id) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(7, "7"), (7.0, "7"), (7.5, None), (None, None), (True, None), (-3, None),
     (2.0**60, None), ("7", "7"), ("x", None)],
)  # fmt: skip
def test_entry_id(value: object, expected: str | None) -> None:
    assert entry_id(value) == expected


def test_an_answer_names_each_key_once_or_not_at_all() -> None:
    body = {
        "accessKeys": [
            {"accessKeyId": 7, "dataTransferred": {"bytes": 10}},
            {"accessKeyId": 7, "dataTransferred": {"bytes": 20}},  # "007" as parseInt reads it
            {"accessKeyId": 1, "dataTransferred": {"bytes": 5.5}},
            {"accessKeyId": None, "dataTransferred": {"bytes": 3}},
            {"accessKeyId": 2, "dataTransferred": {"bytes": -1e-11}},
        ]
    }
    answer = parse_interval(body)
    assert answer == IntervalAnswer({"7": 10, "1": 6, "2": 0}, frozenset({"7"}), 1, 1)
    assert [answer.bytes_for(k) for k in ("7", "007", "1", "2", "3", "my-id")] == [
        None, None, 6, 0, 0, None,
    ]  # fmt: skip
