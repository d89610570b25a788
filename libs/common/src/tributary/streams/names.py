"""The import path :class:`~tributary.keys.Keys` had before ``tributary.keys`` existed.

Kept for code outside this repository that imports it (the peers benchmark harness,
``../shared/peers``); the project itself imports ``tributary.keys``.
"""

from __future__ import annotations

from tributary.keys import DLQ_SUFFIX, Keys

__all__ = ["DLQ_SUFFIX", "Keys"]
