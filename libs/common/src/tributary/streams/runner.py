"""The consumer-group runner: one stream, one group, one consumer name, with handlers.

It puts together the pieces, each readable alone:

- :class:`~tributary.streams.consumer.GroupConsumer` reads (with read-ahead during a
  backlog), acks, dead-letters and requeues;
- :class:`~tributary.streams.worker.Worker` decodes a batch and runs its handlers in
  the middleware chain, with bounded concurrency and a deadline per call;
- :class:`~tributary.streams.redelivery.Redelivery` brings back due retries, this
  consumer's own pending entries after a restart and entries stuck on dead consumers,
  and keeps running entries' claims fresh;
- :class:`~tributary.streams.housekeeping.Housekeeping` does the periodic chores.

Life of an entry (DESIGN.md section 3): XREADGROUP delivers it; it is decoded (a
malformed one goes straight to ``<stream>.dlq``); its handler runs. Success: XACK.
Failure: it stays pending and waits in the retry set until due, then any replica
runs it again; deliveries exhausted: a DLQ copy and the XACK in one MULTI. This
loop survives Redis going away (it backs off and carries on) and a group or stream
that vanished (it creates them again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from opentelemetry.trace import Tracer
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tributary.backoff import compute_backoff
from tributary.events import Registry
from tributary.keys import Keys
from tributary.metrics import Metrics
from tributary.streams.client import Entry
from tributary.streams.consumer import GroupConsumer, Settlement
from tributary.streams.housekeeping import Housekeeping
from tributary.streams.middleware import Chain, Middleware, Retries, default_middleware
from tributary.streams.options import NO_HANDLER_OPTIONS, HandlerOptions, RunnerOptions
from tributary.streams.redelivery import Redelivery
from tributary.streams.worker import BatchHandler, Handler, Worker
from tributary.tasks import cancel_and_wait

__all__ = [
    "BatchHandler",
    "Handler",
    "HandlerOptions",
    "RunnerOptions",
    "StreamRunner",
    "UnexpectedDeadLetter",
]

log = logging.getLogger(__name__)


class UnexpectedDeadLetter(AssertionError):
    """``drain(fail_fast=True)`` saw an entry go to the DLQ."""


#: first and longest pause between attempts to reach Redis again, in seconds
RECONNECT_BASE_SECONDS = 0.1
DEFAULT_RECONNECT_MAX_SECONDS = 5.0
#: while reads come back full (a backlog), due retries are looked for at most this often,
#: in seconds (otherwise before every read): a round trip per read costs ~2% of a no-op drain
DEFAULT_BACKLOG_RETRY_POLL_SECONDS = 0.1


class StreamRunner:
    """Consumes one stream as one consumer of one group."""

    def __init__(
        self,
        redis: Redis,
        stream: str,
        group: str,
        consumer: str,
        *,
        tracer: Tracer,
        registry: Registry | None = None,
        metrics: Metrics | None = None,
        keys: Keys | None = None,
        options: RunnerOptions | None = None,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        self.stream = stream
        self.group = group
        self.options = options = options or RunnerOptions()
        #: entries this runner dead-lettered since it was made (``once`` reports them)
        self.dead_lettered = 0
        self.retries = Retries(
            options.max_deliveries,
            options.retry_base_s,
            options.retry_max_s,
            min(options.outage_retry_max_s, options.retry_max_s),
        )
        self.middleware = (
            list(middleware)
            if middleware is not None
            else default_middleware(tracer, metrics, self.retries)
        )
        self.consumer = GroupConsumer(
            redis,
            keys or Keys(),
            stream,
            group,
            consumer,
            batch_size=options.batch_size,
            start_id=options.start_id,
        )
        self.worker = Worker(
            stream,
            group,
            consumer,
            registry or Registry(),
            Chain(self.middleware),
            metrics,
            options,
        )
        self.redelivery = Redelivery(
            redis, self.consumer, self.handle_entries, claim_idle_ms=options.claim_idle_ms
        )
        self.housekeeping = Housekeeping(
            redis,
            self.consumer,
            self.redelivery,
            metrics,
            interval_s=options.housekeeping_interval_s,
            consumer_idle_ms=options.consumer_idle_ms,
        )
        self._inflight: list[str] = []
        self._next_retry_poll = 0.0
        self._fail_fast = False

    @property
    def registry(self) -> Registry:
        return self.worker.registry

    # -- registration -------------------------------------------------------------------

    def handler(
        self, event_type: str, options: HandlerOptions = NO_HANDLER_OPTIONS
    ) -> Callable[[Handler], Handler]:
        """Register ``async def fn(event)`` for one event type."""

        def register(fn: Handler) -> Handler:
            self.worker.register(event_type, fn, batch=False, options=options)
            return fn

        return register

    def batch_handler(
        self, event_type: str, options: HandlerOptions = NO_HANDLER_OPTIONS
    ) -> Callable[[BatchHandler], BatchHandler]:
        """Register ``async def fn(events)``: all events of a type in a read, all or nothing."""

        def register(fn: BatchHandler) -> BatchHandler:
            self.worker.register(event_type, fn, batch=True, options=options)
            return fn

        return register

    # -- running ------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        await self.consumer.ensure_group()

    async def run(self, stop: asyncio.Event | None = None, *, burst: bool = False) -> None:
        """Consume until ``stop`` is set; with ``burst``, return once nothing is left to do.

        Redis going away is survived: the loop backs off and carries on, and a
        group that vanished with a non-persistent Redis is created again.
        """
        stop = stop or asyncio.Event()
        refresher = asyncio.create_task(
            self.redelivery.keep_claims_fresh(self._running_ids), name=f"claims:{self.stream}"
        )
        self.housekeeping.reset()
        failures, group_ready = 0, False
        try:
            while not stop.is_set():
                try:
                    if not group_ready:
                        await self.consumer.ensure_group()
                        await self.redelivery.recover_own_pending()
                        group_ready = True
                    if await self._step(burst):
                        return
                    failures = 0
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    failures += 1
                    delay = compute_backoff(
                        failures, base=RECONNECT_BASE_SECONDS, cap=DEFAULT_RECONNECT_MAX_SECONDS
                    )
                    log.warning(
                        "redis unavailable on %s (%s); retrying in %.2fs", self.stream, exc, delay
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                except ResponseError as exc:
                    # NOGROUP: the group is gone (a Redis that kept nothing restarted);
                    # UNBLOCKED: the stream was deleted while our read waited on it
                    if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                        raise
                    log.warning(
                        "group %s of %s vanished; creating it again", self.group, self.stream
                    )
                    group_ready = False
                    await self.consumer.drop_read_ahead()  # read from the vanished group
            await self._handle_read_ahead()
        finally:
            try:
                await self.consumer.drop_read_ahead()
            finally:  # a second cancellation of run() during the drop stops the refresher too
                await cancel_and_wait(refresher)

    async def _step(self, burst: bool) -> bool:
        """One round: housekeeping when due, due retries, one read. True: burst is done."""
        await self.housekeeping.run_if_due()
        busy, now = False, time.monotonic()
        if not self.consumer.backlog or now >= self._next_retry_poll:
            self._next_retry_poll = now + DEFAULT_BACKLOG_RETRY_POLL_SECONDS
            busy = await self.redelivery.run_due()
        entries = await self.consumer.read(0 if busy else self.options.block_ms)
        if entries:
            await self.handle_entries(entries)
            return False
        return burst and not busy and await self.consumer.is_settled()

    async def _handle_read_ahead(self) -> None:
        """On a stop: handle what the last read-ahead already brought."""
        try:
            entries = await self.consumer.finish_read_ahead()
            if entries:
                await self.handle_entries(entries)
        except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
            # what was read and not acked stays pending on this consumer
            log.warning("redis failed on %s while finishing the last read: %s", self.stream, exc)

    async def drain(self, timeout: float = 60.0, *, fail_fast: bool = False) -> None:  # noqa: ASYNC109
        """Burst mode for tests: process until the stream and the pending list are empty.

        With ``fail_fast``, the first entry dead-lettered (malformed, rejected or out of
        deliveries) ends the drain with :class:`UnexpectedDeadLetter` naming it and why,
        right after its batch is settled, instead of a test finding out from its effects.
        """
        self._fail_fast = fail_fast
        try:
            await asyncio.wait_for(self.run(burst=True), timeout)
        finally:
            self._fail_fast = False

    # -- handling -----------------------------------------------------------------------

    async def handle_entries(
        self, entries: Sequence[Entry], deliveries: dict[str, int] | None = None
    ) -> None:
        """Decode, dispatch, settle one batch of entries delivered to this consumer."""
        self._inflight = [entry_id for entry_id, _ in entries]
        try:
            calls = await self.worker.process(entries, deliveries)
            plan = Settlement.of(calls)
            await self.consumer.settle(plan)
            self.dead_lettered += len(plan.dead)
        finally:
            self._inflight = []
        if self._fail_fast and plan.dead:
            msg = plan.dead[0]
            raise UnexpectedDeadLetter(
                f"{self.stream}: entry {msg.entry_id} was dead-lettered: {msg.error}"
            )

    def _running_ids(self) -> list[str]:
        return [*self._inflight, *self.consumer.read_ahead_ids()]

    # -- redelivery and housekeeping, callable on their own -----------------------------

    async def recover_own_pending(self) -> int:
        return await self.redelivery.recover_own_pending()

    async def reclaim_stuck(self) -> int:
        return await self.redelivery.reclaim_stuck()
