"""The Redis key format of usage counters, shared with the API that writes them.

A counter is ``usage:{merchantId}:{date}:{metricType}`` (date ``YYYY-MM-DD``,
UTC), an integer written with INCRBY. :func:`aggregation.tracking.track_usage`
also adds each key to ``usage-index:{date}``, a set the aggregator reads with
SSCAN instead of scanning the keyspace (the index name does not match
``usage:*``, so a SCAN never mistakes it for a counter). Every key may sit
behind the deployment's ``STREAM_PREFIX``. The names come from
:mod:`tributary.keys`; this module parses and validates them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from tributary.keys import Keys

#: merchant ids and metric names longer than this are refused (and reported as malformed)
MAX_NAME_LENGTH = 255
#: PostgreSQL BIGINT bounds; Redis integers are 64-bit too, but SET can store anything
BIGINT_MAX = 2**63 - 1
BIGINT_MIN = -(2**63)

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


class InvalidName(ValueError):
    """A merchant id or metric that cannot be part of a counter key."""


@dataclass(frozen=True, slots=True)
class Counter:
    merchant_id: str
    date: date
    metric: str


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a merchant id or metric name (None: it can)."""
    if not value:
        return "is empty"
    if len(value) > MAX_NAME_LENGTH:
        return f"is longer than {MAX_NAME_LENGTH} characters"
    if ":" in value:
        return "contains ':'"
    # rejects control characters (NUL cannot be stored in PostgreSQL text) and
    # undecodable bytes, which arrive as lone surrogates (surrogateescape)
    if not value.isprintable():
        return "contains unprintable characters or invalid UTF-8"
    return None


def check_name(kind: str, value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise InvalidName(f"{kind} {value!r} {problem}")
    return value


def parse_date(text: str) -> date:
    """A strict ``YYYY-MM-DD`` date (no other ISO forms)."""
    if not _DATE.fullmatch(text):
        raise ValueError(f"{text!r} is not a YYYY-MM-DD date")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date ({exc})") from None


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis MATCH pattern."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


@dataclass(frozen=True, slots=True)
class KeyFormat:
    """Counter and index key names behind an optional prefix."""

    prefix: str = ""
    keys: Keys = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", Keys(self.prefix))

    @property
    def counter_prefix(self) -> str:
        return self.keys.usage_counter_prefix

    def counter(self, merchant_id: str, day: date, metric: str) -> str:
        return self.keys.usage_counter(merchant_id, day.isoformat(), metric)

    def index(self, day: date) -> str:
        return self.keys.usage_index(day.isoformat())

    def pattern(self, day: date, merchant_id: str | None = None) -> str:
        """MATCH pattern of the counters of ``day`` (of one merchant if given)."""
        merchant = "*" if merchant_id is None else glob_escape(merchant_id)
        return Keys(glob_escape(self.prefix)).usage_counter(merchant, day.isoformat(), "*")

    def parse(self, key: str) -> Counter:
        """The counter a key names; ValueError saying what is wrong otherwise."""
        start = self.counter_prefix
        if not key.startswith(start):
            raise ValueError(f"does not start with {start!r}")
        parts = key[len(start) :].split(":")
        if len(parts) != 3:
            raise ValueError("expected usage:{merchantId}:{date}:{metricType}")
        merchant_id, day_text, metric = parts
        day = parse_date(day_text)
        check_name("merchant id", merchant_id)
        check_name("metric", metric)
        return Counter(merchant_id, day, metric)


def parse_value(raw: str) -> int:
    """A counter value: a plain base-10 integer that fits PostgreSQL BIGINT."""
    digits = raw[1:] if raw.startswith("-") else raw
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError("value is not an integer")
    value = int(raw)
    if not BIGINT_MIN <= value <= BIGINT_MAX:
        raise ValueError("value does not fit a 64-bit integer")
    return value
