"""The Redis side the proxy nodes write: ``node:{node_id}:traffic`` hashes.

Writers HINCRBY the ``upload`` and ``download`` fields (bytes) and keep a
24 h expiry on the key, as the Go worker's writers did; :func:`record_traffic`
does exactly that in one MULTI and also adds the node to a dirty-node index
so the flusher need not SCAN. Every key sits behind ``STREAM_PREFIX`` (empty
in production, so the key names are the legacy ones); the names come from
:mod:`tributary.keys`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis

from tributary.keys import Keys

UPLOAD = "upload"
DOWNLOAD = "download"
#: expiry writers keep on a node's hash (and on the dirty index), in seconds
DEFAULT_KEY_TTL_SECONDS = 24 * 3600
#: largest value a counter may hold (BIGINT, and Redis' own 64-bit integers)
MAX_BYTES = 2**63 - 1

_GLOB_SPECIAL = "*?[]\\"


def _escape_glob(text: str) -> str:
    return "".join(f"\\{ch}" if ch in _GLOB_SPECIAL else ch for ch in text)


@dataclass(frozen=True, slots=True)
class TrafficKeys:
    """Every Redis key traffic_sync reads or writes, under the service's prefix: the
    names from :class:`tributary.keys.Keys`, the patterns and ids from here."""

    keys: Keys = field(default_factory=Keys)
    #: what comes before and after the raw id in a node's key
    node_affixes: tuple[bytes, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        head, tail = self.keys.node_traffic_affixes
        object.__setattr__(self, "node_affixes", (head.encode(), tail.encode()))

    def node(self, node_id: int | str) -> str:
        return self.keys.node_traffic(node_id)

    def node_bytes(self, node_id: bytes) -> bytes:
        head, tail = self.node_affixes
        return b"".join((head, node_id, tail))

    @property
    def node_pattern(self) -> str:
        """SCAN MATCH pattern of every node hash (the prefix escaped)."""
        return Keys(_escape_glob(self.keys.prefix)).node_traffic("*")

    def node_id_of(self, key: bytes) -> bytes:
        """The raw id part of a node key found by SCAN."""
        head, tail = self.node_affixes
        return key[len(head) : -len(tail)]

    @property
    def dirty(self) -> str:
        """Set of node ids written since their last flush (maintained by record_traffic)."""
        return self.keys.traffic_dirty

    def batch(self, batch_id: str) -> str:
        """Hash of the node data one flush batch moved out of the writers' way."""
        return self.keys.traffic_batch(batch_id)

    @property
    def batches(self) -> str:
        """Set of batch ids moved but not yet known to be applied."""
        return self.keys.traffic_batches

    @property
    def quarantine(self) -> str:
        """Prefix of keys where node keys of the wrong Redis type are set aside."""
        return self.keys.traffic_quarantine_prefix

    @property
    def status(self) -> str:
        """Hash describing the last flush cycle (for ``status``)."""
        return self.keys.traffic_status


async def record_traffic(
    redis: aioredis.Redis,
    node_id: int | str,
    upload: int,
    download: int,
    *,
    keys: TrafficKeys | None = None,
    ttl_seconds: int = DEFAULT_KEY_TTL_SECONDS,
) -> None:
    """Add ``upload``/``download`` bytes to a node's counters, as a proxy node would.

    HINCRBY of both fields, the key's expiry and the dirty index, in one MULTI.
    """
    if upload < 0 or download < 0:
        raise ValueError("traffic increments must not be negative")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    keys = keys or TrafficKeys()
    key = keys.node(node_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hincrby(key, UPLOAD, upload)
        pipe.hincrby(key, DOWNLOAD, download)
        pipe.expire(key, ttl_seconds)
        pipe.sadd(keys.dirty, str(node_id))
        # the index lives as long as the newest node hash, never shorter
        pipe.expire(keys.dirty, ttl_seconds)
        await pipe.execute()
