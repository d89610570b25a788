"""Parsing a batch of keys and values: the whole-batch path gives what the per-key one does."""

from __future__ import annotations

from datetime import timedelta

import pytest

from aggregation.keys import MAX_NAME_LENGTH, KeyFormat
from aggregation.reader import _Parser

from .conftest import DAY

KEYS = KeyFormat("p:1:")
GOOD = {KEYS.counter(f"m{n}", DAY, f"metric {n % 3}"): str(n * 7) for n in range(50)}
ODD = {
    "a missing value": (KEYS.counter("m1", DAY, "gone"), None),
    "a negative value": (KEYS.counter("m1", DAY, "x"), "-3"),
    "19 digits": (KEYS.counter("m1", DAY, "x"), "1" * 19),
    "not digits": (KEYS.counter("m1", DAY, "x"), "١٢"),
    "a value with a newline": (KEYS.counter("m1", DAY, "x"), "1\n2"),
    "another date": (KEYS.counter("m1", DAY - timedelta(days=1), "x"), "1"),
    "a long name": (KEYS.counter("m" * (MAX_NAME_LENGTH + 1), DAY, "x"), "1"),
    "a newline in a key": (KEYS.counter("m1", DAY, "x\ny"), "1"),
    "one part more": (f"{KEYS.counter_prefix}a:b:{DAY}:x", "1"),
    "another prefix": (f"q:usage:m1:{DAY}:x", "1"),
    "undecodable bytes": (KEYS.counter("caf\udce9", DAY, "x"), "1"),
}


@pytest.mark.parametrize("odd", [None, *ODD])
@pytest.mark.parametrize("merchant", [None, "m1"])
def test_a_batch_parses_as_key_by_key(odd: str | None, merchant: str | None) -> None:
    parser = _Parser(KEYS, DAY, merchant)
    pairs: list[tuple[str, str | None]] = list(GOOD.items())
    if odd is not None:
        pairs.insert(20, ODD[odd])
    pairs.append(pairs[3])  # SSCAN may repeat a member
    names, values = [k for k, _ in pairs], [v for _, v in pairs]

    batch = parser.batch(names, values)

    assert batch == parser._each_key(names, values)
    assert batch.keys_read == len(pairs)
    # the whole batch at once only when every key and value is of the common case
    assert (parser._common_rows(names, values) is not None) == (odd is None and merchant is None)
    if merchant is None:
        assert batch.rows[("m3", "metric 0")] == 21
