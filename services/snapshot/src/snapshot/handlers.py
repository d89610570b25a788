"""Stream handlers: one function per event type."""

from __future__ import annotations

from snapshot.collector import Collector, Request
from tributary.catalog import OutlineCollectRequested
from tributary.events import Event
from tributary.streams.runner import StreamRunner

COLLECT_REQUESTED = "outline.collect.requested"


def register_handlers(runner: StreamRunner, collector: Collector) -> None:
    @runner.batch_handler(COLLECT_REQUESTED)
    async def collect_servers(events: list[Event]) -> None:
        """Collect the servers named by a batch of work items (their rows read at once).

        A failed collection is recorded, not raised; only an infrastructure error
        (database) fails the batch, whose redelivery skips the servers already done.
        """
        requests = []
        for event in events:
            item = event.payload(OutlineCollectRequested)
            requests.append(Request(item.server_id, item.tick, event.id))
        await collector.collect_many(requests)
