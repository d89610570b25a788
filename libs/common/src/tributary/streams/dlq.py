"""Dead-letter streams: ``<stream>.dlq`` holds entries that could not be processed.

A DLQ entry is the original entry's fields, unchanged, plus ``dlq.*`` fields
saying why: error text, delivery count, group, consumer, original stream and
entry id, and when. Operators list, inspect and replay them (``dlq`` CLI verb);
replaying puts the original fields back on the original stream and removes
the DLQ entry in one MULTI, so an entry is never in both or in neither.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from tributary.events import utc_now_rfc3339
from tributary.keys import Keys
from tributary.streams import client

DLQ_PREFIX = "dlq."
#: how many DLQ entries one list/replay call handles by default
DEFAULT_DLQ_PAGE = 100


def dead_letter_fields(
    fields: dict[str, str],
    *,
    error: str,
    deliveries: int,
    stream: str,
    group: str,
    consumer: str,
    entry_id: str,
) -> dict[str, str]:
    """The DLQ copy of an entry: original fields plus the reason it is there."""
    dead = {k: v for k, v in fields.items() if not k.startswith(DLQ_PREFIX)}
    dead.update(
        {
            "dlq.error": error[:4000],
            "dlq.deliveries": str(deliveries),
            "dlq.stream": stream,
            "dlq.group": group,
            "dlq.consumer": consumer,
            "dlq.original_id": entry_id,
            "dlq.time": utc_now_rfc3339(),
        }
    )
    return dead


@dataclass(frozen=True, slots=True)
class DeadLetter:
    dlq_id: str
    fields: dict[str, str]  # the original entry
    error: str
    deliveries: int
    group: str
    stream: str
    original_id: str
    time: str

    @classmethod
    def from_entry(cls, dlq_id: str, raw: dict[str, str]) -> DeadLetter:
        original = {k: v for k, v in raw.items() if not k.startswith(DLQ_PREFIX)}
        return cls(
            dlq_id=dlq_id,
            fields=original,
            error=raw.get("dlq.error", ""),
            deliveries=_count(raw.get("dlq.deliveries", "")),
            group=raw.get("dlq.group", ""),
            stream=raw.get("dlq.stream", ""),
            original_id=raw.get("dlq.original_id", ""),
            time=raw.get("dlq.time", ""),
        )


class DeadLetters:
    """Operator tools over the DLQ of one stream."""

    def __init__(self, redis: Redis, stream: str, keys: Keys | None = None) -> None:
        self.redis = redis
        self.stream = stream
        self.keys = keys or Keys()
        self.key = self.keys.dlq(stream)

    async def count(self) -> int:
        return int(await self.redis.xlen(self.key))

    async def page(self, count: int = DEFAULT_DLQ_PAGE, start: str = "-") -> list[DeadLetter]:
        found = await client.entries(self.redis, self.key, start, "+", count)
        return [DeadLetter.from_entry(i, f) for i, f in found]

    async def get(self, dlq_id: str) -> DeadLetter | None:
        found = await client.entries(self.redis, self.key, dlq_id, dlq_id, 1)
        return DeadLetter.from_entry(*found[0]) if found else None

    async def replay(self, ids: list[str] | None = None, count: int = DEFAULT_DLQ_PAGE) -> int:
        """Put entries back on their stream (all, up to ``count``, or the given ids), byte
        for byte as they were dead-lettered. A letter without original fields (an outbox
        row the relay could not read) has nothing to replay and stays."""
        letters = [await self.get(i) for i in ids] if ids else await self.page(count)
        replayed = 0
        for letter in letters:
            if letter is None or not letter.fields:
                continue
            async with self.redis.pipeline(transaction=True) as pipe:
                client.add_binary(pipe, self.keys.stream(self.stream), letter.fields)
                pipe.xdel(self.key, letter.dlq_id)
                await pipe.execute()
            replayed += 1
        return replayed

    async def purge(self, ids: list[str]) -> int:
        return int(await self.redis.xdel(self.key, *ids)) if ids else 0


def _count(text: str) -> int:
    """A DLQ entry's delivery count; 0 when the field is missing or not a number."""
    try:
        return int(text)
    except ValueError:
        return 0
