"""The one way the library and the services open a Redis client.

Replies are decoded as UTF-8 text (``decode_responses``), but with
``surrogateescape``: bytes that are not UTF-8 become lone surrogates
(U+DC80..U+DCFF) instead of raising ``UnicodeDecodeError`` inside the read
command. Stream entries are written by other systems; one entry with a stray
``0xff`` byte must not make every read of its stream fail. Such text is found
by :func:`tributary.wire.undecodable` and turned back into the exact original
bytes by :func:`tributary.wire.to_bytes` (a dead-letter copy, a replay).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

#: what invalid UTF-8 in a reply decodes to (and encodes back from)
ENCODING_ERRORS = "surrogateescape"


def connect(url: str, **options: Any) -> aioredis.Redis:
    """An asyncio client of the Redis at ``url`` that decodes replies binary-safely."""
    return aioredis.Redis.from_url(
        url, decode_responses=True, encoding_errors=ENCODING_ERRORS, **options
    )
