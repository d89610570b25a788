"""Behaviours of the real Outline server (outline-server, src/shadowbox/server) that a
well-mannered fake would not have, each behind a switch so tests and the demo can turn
it on (:attr:`FakeOutlineServer.quirks`, ``--quirks`` on the command line).

What each switch copies, from ``manager_metrics.ts`` / ``manager_service.ts``:

- ``parse_int_ids``: ``accessKeyId: parseInt(label)`` in /experimental/server/metrics:
  ``null`` for a non-numeric id (JSON has no NaN), ``7`` for ``007``, ``12`` for
  ``12abc``, a rounded number past 2^53.
- ``unlabelled_bytes``: traffic counted without an ``access_key`` label: the ``""`` key
  of /metrics/transfer and an ``accessKeyId: null`` entry of the interval answer.
- ``query_cache``: identical Prometheus queries answered from a cache for up to 300 s
  (pruned at each request): the same ``since`` within 300 s gets the previous answer.
- ``scrape_seconds``: Prometheus scrapes the counters this often: an interval answer
  sees traffic only up to the last scrape, and a ``since`` shorter than the scrape
  interval has fewer than two samples, so ``increase()`` returns nothing.
- ``fractional_bytes``: interval bytes are ``parseFloat`` of ``increase()``, which
  extrapolates: fractions (the 30-day /metrics/transfer is ``Math.round``-ed).
- ``negative_bytes``: float sums a hair below zero (``-1.4e-11``) for keys without
  traffic in the interval.
- ``zero_entries``: keys with tunnel time but no data are listed with 0 bytes in the
  interval answer (the 30-day map leaves 0-byte keys out: that is always so).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

#: the real server prunes its Prometheus cache entries older than this, in seconds
CACHE_SECONDS = 300.0
#: JavaScript numbers are exact up to 2^53
_SAFE = 2**53
_LEADING_INT = re.compile(r"\s*([+-]?\d+)")


def parse_int(label: str) -> int | float | None:
    """JavaScript's ``parseInt(label)`` as JSON.stringify writes it: None for NaN, a
    float (rounded, as a double holds it) past 2^53."""
    match = _LEADING_INT.match(label)
    if match is None:
        return None
    value = int(match[1])
    return value if abs(value) < _SAFE else float(value)


@dataclass
class Quirks:
    """The real server's behaviours the fake reproduces when switched on (all off: the
    fake as tidy as the API description's examples)."""

    parse_int_ids: bool = True
    unlabelled_bytes: int = 0
    query_cache: bool = False
    scrape_seconds: float = 0.0
    fractional_bytes: bool = False
    negative_bytes: bool = False
    zero_entries: bool = False

    @classmethod
    def every(cls) -> Quirks:
        """All of them, as a real server behaves (the demo's ``--quirks all``)."""
        return cls(True, 1_000_000, True, 60.0, True, True, True)

    @classmethod
    def parse(cls, text: str) -> Quirks:
        """``all``, or comma-separated switch names (``query_cache,scrape_seconds=60``)."""
        if text.strip() == "all":
            return cls.every()
        quirks = cls()
        types = {f.name: f.type for f in fields(cls)}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, value = item.partition("=")
            if name not in types:
                raise ValueError(f"unknown quirk {name!r}; known: {', '.join(types)}")
            setattr(quirks, name, _value(str(types[name]), value))
        return quirks


def _value(kind: str, text: str) -> Any:
    if kind == "bool":
        return text.lower() not in ("0", "false", "no", "off")
    if kind == "int":
        return int(text or "1000000")
    return float(text or "60")


class QueryCache:
    """The real server's cache of Prometheus answers: by query, pruned after 300 s."""

    def __init__(self) -> None:
        self._answers: dict[str, tuple[float, Any]] = {}

    def get(self, query: str, now: float) -> Any | None:
        for key, (at, _) in list(self._answers.items()):
            if now - at > CACHE_SECONDS:
                del self._answers[key]
        found = self._answers.get(query)
        return None if found is None else found[1]

    def put(self, query: str, now: float, answer: Any) -> None:
        self._answers[query] = (now, answer)
