"""What a stream keeps: its retention policy, and the ``STREAM_RETENTION`` setting that
overrides the catalog's defaults.

A policy keeps entries for an age (``XTRIM MINID`` at now - age) and/or up to a length;
either may be absent. The catalog (:data:`tributary.catalog.STREAMS`) gives each stream
its default; dead-letter streams share :data:`tributary.catalog.DLQ_RETENTION`.

The setting is a comma-separated list of ``<stream>=<age>[/<length>]`` items, e.g.
``traffic.flushed=2h,alerts=14d/500000,dlq=30d/20000``: an age is a number with a unit
(``s``, ``m``, ``h``, ``d``) or ``-`` (no age bound); a length a whole number of
entries or ``-``; the name ``dlq`` stands for every ``<stream>.dlq``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

#: seconds in each unit an age may be written in
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
#: the name that stands for every dead-letter stream in ``STREAM_RETENTION``
DLQ_NAME = "dlq"
NONE = "-"


@dataclass(frozen=True, slots=True)
class StreamRetention:
    """Keep entries younger than ``max_age_s`` seconds and at most ``max_len`` of them
    (None: no bound of that kind). Never an entry some group has not acknowledged,
    unless the operator allows trimming past a lagging group."""

    max_age_s: float | None = None
    max_len: int | None = None

    def __post_init__(self) -> None:
        if self.max_age_s is not None and self.max_age_s < 0:
            raise ValueError(f"a retention age must not be negative, got {self.max_age_s}")
        if self.max_len is not None and self.max_len < 0:
            raise ValueError(f"a retention length must not be negative, got {self.max_len}")

    def describe(self) -> str:
        """``<age>/<length>`` as the setting writes it."""
        return f"{format_age(self.max_age_s)}/{NONE if self.max_len is None else self.max_len}"


def format_age(seconds: float | None) -> str:
    """An age in the largest unit that divides it (``6h``, ``7d``, ``90s``)."""
    if seconds is None:
        return NONE
    for unit in ("d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


def parse_age(text: str) -> float | None:
    """``6h`` -> 21600.0; ``-`` -> None (no age bound)."""
    text = text.strip()
    if text == NONE:
        return None
    match = _AGE.match(text)
    if match is None:
        raise ValueError(f"bad age {text!r} (a number and s, m, h or d, e.g. 6h; or -)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"bad age {text!r}: must be positive")
    return seconds


def _parse_length(text: str) -> int | None:
    text = text.strip()
    if text == NONE:
        return None
    if not text.isdigit():
        raise ValueError(f"bad length {text!r} (a whole number of entries, or -)")
    return int(text)


def parse_overrides(text: str, known: Mapping[str, object]) -> dict[str, StreamRetention]:
    """The ``STREAM_RETENTION`` setting as policies by stream name (``dlq``: every DLQ).

    ``known`` lists the streams there are; a name outside it is an error (a typo would
    otherwise keep the default silently)."""
    overrides: dict[str, StreamRetention] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"bad item {item!r} (expected <stream>=<age>[/<length>])")
        if name != DLQ_NAME and name not in known:
            choices = ", ".join(sorted([*known, DLQ_NAME]))
            raise ValueError(f"unknown stream {name!r} (one of {choices})")
        age, _, length = value.partition("/")
        overrides[name] = StreamRetention(parse_age(age), _parse_length(length or NONE))
    return overrides
