"""Publishing events: XADD with a producer span whose context travels in the entry."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.trace import Tracer
from redis.asyncio import Redis

from tributary.events import Event, encode
from tributary.keys import Keys
from tributary.metrics import Metrics
from tributary.streams import client
from tributary.tracing import start_producer_span


class Producer:
    """Writes events to streams. Entries are never trimmed here: see ``trim.py``."""

    def __init__(
        self, redis: Redis, tracer: Tracer, keys: Keys | None = None, metrics: Metrics | None = None
    ) -> None:
        self.redis = redis
        self.tracer = tracer
        self.keys = keys or Keys()
        self.metrics = metrics

    async def publish(self, stream: str, event: Event) -> str:
        """XADD one event; returns the entry id."""
        span = start_producer_span(self.tracer, stream, event)
        try:
            entry_id = await client.add(self.redis, self.keys.stream(stream), encode(event))
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            span.end()
        if self.metrics is not None:
            self.metrics.published.labels(stream).inc()
        return _text(entry_id)

    async def publish_many(self, items: Sequence[tuple[str, Event]]) -> list[str]:
        """XADD many events in one round trip (a non-transactional pipeline)."""
        if not items:
            return []
        spans = [start_producer_span(self.tracer, stream, event) for stream, event in items]
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream, event in items:
                    client.add(pipe, self.keys.stream(stream), encode(event))
                ids = await pipe.execute()
        finally:
            for span in spans:
                span.end()
        if self.metrics is not None:
            for stream, _ in items:
                self.metrics.published.labels(stream).inc()
        return [_text(i) for i in ids]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
