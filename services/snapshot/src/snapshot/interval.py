"""What ``/experimental/server/metrics`` says about each key, and which keys it can speak for.

The real server builds ``accessKeyId`` with JavaScript's ``parseInt(label)``: a
key whose id is not a plain decimal number comes back as ``null``
(``my-identifier``), as another key's number (``007`` and ``7`` both as ``7``,
``12abc`` as ``12``) or as a rounded float (ids past 2^53). Traffic without a
key label comes back as ``null`` too. So an answer speaks only for keys whose
id reads back unchanged and is not shared by two entries; every other key gets
its delta from the 30-day window instead (:mod:`snapshot.deltas`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: JavaScript numbers are exact up to here; parseInt of a longer id is rounded
MAX_SAFE_INTEGER = 2**53 - 1
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def speaks_for(key_id: str) -> bool:
    """Whether parseInt(key_id) reads back as key_id (the answer can name this key)."""
    return bool(_DECIMAL.fullmatch(key_id)) and int(key_id) <= MAX_SAFE_INTEGER


@dataclass(frozen=True)
class IntervalAnswer:
    """Bytes per key id over the asked interval, as far as entries can be matched to keys."""

    #: bytes by decimal key id, for ids named by exactly one entry
    bytes_by_id: dict[str, int] = field(default_factory=dict)
    #: ids named by several entries (``7`` and ``007``): no entry can be trusted for them
    ambiguous: frozenset[str] = frozenset()
    #: entries whose ``accessKeyId`` is null or not an exact integer
    unmatched_entries: int = 0
    #: byte counts that were negative (clamped to 0)
    clamped: int = 0

    def bytes_for(self, key_id: str) -> int | None:
        """The key's bytes (0 when it has no entry), or None when the answer cannot
        speak for it."""
        found = self.bytes_by_id.get(key_id)
        if found is not None:  # the usual case: the entry's id is this key's, decimal
            return None if key_id in self.ambiguous else found
        return 0 if speaks_for(key_id) and key_id not in self.ambiguous else None


def entry_id(value: object) -> str | None:
    """The decimal key id an ``accessKeyId`` value stands for (None: no key can be named)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if 0 <= value <= MAX_SAFE_INTEGER else None
    if isinstance(value, float) and value.is_integer() and 0 <= value <= MAX_SAFE_INTEGER:
        return str(int(value))
    if isinstance(value, str) and speaks_for(value):  # a server that sends it as a string
        return value
    return None
