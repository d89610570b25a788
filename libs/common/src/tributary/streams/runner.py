"""The consumer-group runner: XREADGROUP in batches, handlers with bounded concurrency,
ack after success, redelivery with backoff, XAUTOCLAIM of stuck entries, dead letters.

Life of an entry (DESIGN.md section 3):

1. XREADGROUP delivers it (delivery 1) and it is decoded; a malformed entry
   goes straight to ``<stream>.dlq``.
2. Its handler runs inside the middleware chain. Success: XACK. Failure: the
   entry stays pending and its id goes into a per-group retry sorted set,
   scored by when it is due; any replica that ZREMs it first XCLAIMs it
   (delivery n+1) and runs it again. Deliveries exhausted: DLQ copy + XACK in
   one MULTI.
3. While reads come back full (a backlog), the next read is sent as soon as a
   batch arrives, so Redis prepares it while this batch's handlers run; the
   entries it brings are pending on this consumer until their own turn (their
   claims are kept fresh like the running batch's, and on a stop they are
   handled before ``run`` returns).
4. Entries left pending by a dead consumer are found by XAUTOCLAIM (JUSTID,
   so the delivery count only grows when the entry is really re-run) once
   idle longer than the handler deadline. While a handler runs, the runner
   keeps its entries' idle time fresh so nobody else claims them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Tracer
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tributary.errors import MalformedEvent
from tributary.events import Event, Registry, decode
from tributary.metrics import Metrics
from tributary.streams import client
from tributary.streams.dlq import dead_letter_fields
from tributary.streams.ids import next_id, parse_id
from tributary.streams.message import HandlerCall, Message, Outcome
from tributary.streams.middleware import Chain, Middleware, Retries, default_middleware
from tributary.streams.names import Keys
from tributary.streams.trim import safe_trim
from tributary.tasks import cancel_and_wait

log = logging.getLogger(__name__)

#: longest pause between attempts to reach Redis again, in seconds
DEFAULT_RECONNECT_MAX_SECONDS = 5.0
#: while reads come back full (a backlog), due retries are looked for at most this often,
#: in seconds (otherwise before every read): a round trip per read costs ~2% of a no-op drain
DEFAULT_BACKLOG_RETRY_POLL_SECONDS = 0.1
#: an entry whose names and values add up to more characters than this is not decoded:
#: it goes to the DLQ (events are small facts; a megabyte is a producer's bug or an attack)
DEFAULT_MAX_ENTRY_BYTES = 256 * 1024

_XAUTOCLAIM_JUSTID = """
return redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
                  'COUNT', ARGV[5], 'JUSTID')
"""

Handler = Callable[[Event], Awaitable[None]]
BatchHandler = Callable[[list[Event]], Awaitable[None]]
#: a call, its handler and the handler's argument (the event, or a batch handler's list)
Job = tuple[HandlerCall, Callable[[Any], Awaitable[None]], Any]


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    batch_size: int = 500  # entries per XREADGROUP
    concurrency: int = 16  # handler calls in flight at once
    block_ms: int = 1000  # XREADGROUP BLOCK, milliseconds
    handler_timeout: float | None = 30.0  # a handler's deadline, seconds
    claim_idle_ms: int = 60_000  # XAUTOCLAIM min idle; must exceed handler_timeout
    housekeeping_interval: float = 15.0  # seconds between claim/cleanup/metrics rounds
    consumer_idle_ms: int = 3_600_000  # idle consumers without pending entries are removed
    max_deliveries: int = 5
    retry_base: float = 1.0  # seconds, doubled per delivery
    retry_max: float = 300.0  # seconds
    outage_retry_max: float = 15.0  # seconds between retries while Redis/a database is down
    start_id: str = "0"  # where a new group starts: "0" = everything still in the stream
    trim_maxlen: int | None = None  # keep at most this many entries (never unacked ones)
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES  # larger entries are dead-lettered unread


@dataclass(slots=True)
class _Settlement:
    """What one batch's outcomes ask of Redis."""

    ack: list[str] = field(default_factory=list)
    dead: list[dict[str, str]] = field(default_factory=list)
    due: dict[str, float] = field(default_factory=dict)  # entry id -> due time (ms)
    #: retries after an outage keep their delivery count: XCLAIM ... RETRYCOUNT n-1 now,
    #: so the XCLAIM of the redelivery brings it back to n
    uncounted: dict[int, list[str]] = field(default_factory=dict)
    now_ms: float = field(default_factory=lambda: time.time() * 1000)

    def add(self, call: HandlerCall, dead_letter: Callable[[Message], dict[str, str]]) -> None:
        if call.outcome is Outcome.ACK and len(call.messages) == 1:  # the common case, cheaply
            self.ack.append(call.messages[0].entry_id)
            return
        ids = [m.entry_id for m in call.messages]
        if call.outcome is Outcome.ACK:
            self.ack.extend(ids)
        elif call.outcome is Outcome.DEAD:
            self.ack.extend(ids)
            self.dead.extend(dead_letter(m) for m in call.messages)
        elif call.outcome is Outcome.RETRY:
            self.due.update(dict.fromkeys(ids, self.now_ms + call.delay * 1000))
            if call.state.get("uncounted"):
                for m in call.messages:
                    self.uncounted.setdefault(max(m.deliveries - 1, 0), []).append(m.entry_id)


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
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.registry = registry or Registry()
        self.metrics = metrics
        self.keys = keys or Keys()
        self.options = options or RunnerOptions()
        self.key = self.keys.stream(stream)
        self.retry_key = self.keys.retries(stream, group)
        self.dlq_key = self.keys.dlq(stream)
        self.retries = Retries(
            self.options.max_deliveries,
            self.options.retry_base,
            self.options.retry_max,
            min(self.options.outage_retry_max, self.options.retry_max),
        )
        self.middleware = (
            list(middleware)
            if middleware is not None
            else default_middleware(tracer, metrics, self.retries)
        )
        self._chain = Chain(self.middleware)
        self._handlers: dict[str, Handler] = {}
        self._batch_handlers: dict[str, BatchHandler] = {}
        self._inflight: list[str] = []
        # the next read, sent while the current batch runs (only during a backlog)
        self._prefetch: asyncio.Task[list[client.Entry]] | None = None
        self._next_housekeeping = 0.0
        self._backlog = False  # the last read was full
        self._next_retry_poll = 0.0
        # redis-py drops XAUTOCLAIM's cursor and deleted ids when JUSTID is given; a script
        # returns the raw reply
        self._autoclaim = redis.register_script(_XAUTOCLAIM_JUSTID)

    # -- registration -------------------------------------------------------------------

    def handler(self, event_type: str) -> Callable[[Handler], Handler]:
        """Register ``async def fn(event)`` for one event type."""

        def register(fn: Handler) -> Handler:
            self._check_free(event_type)
            self._handlers[event_type] = fn
            return fn

        return register

    def batch_handler(self, event_type: str) -> Callable[[BatchHandler], BatchHandler]:
        """Register ``async def fn(events)``: all events of a type in a read, all or nothing."""

        def register(fn: BatchHandler) -> BatchHandler:
            self._check_free(event_type)
            self._batch_handlers[event_type] = fn
            return fn

        return register

    def _check_free(self, event_type: str) -> None:
        if event_type in self._handlers or event_type in self._batch_handlers:
            raise ValueError(f"{self.stream}: a handler for {event_type!r} is already registered")

    # -- running ------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(
                self.key, self.group, id=self.options.start_id, mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, stop: asyncio.Event | None = None, *, burst: bool = False) -> None:
        """Consume until ``stop`` is set; with ``burst``, return once nothing is left to do.

        Redis going away is survived: the loop backs off and carries on, and a
        group that vanished with a non-persistent Redis is created again.
        """
        stop = stop or asyncio.Event()
        refresher = asyncio.create_task(self._keep_claims_fresh(), name=f"claims:{self.stream}")
        self._next_housekeeping = 0.0
        failures, group_ready = 0, False
        try:
            while not stop.is_set():
                try:
                    if not group_ready:
                        await self.ensure_group()
                        await self.recover_own_pending()
                        group_ready = True
                    if await self._step(burst):
                        return
                    failures = 0
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    failures += 1
                    delay = min(DEFAULT_RECONNECT_MAX_SECONDS, 0.05 * 2**failures)
                    log.warning("redis unavailable on %s (%s); retrying in %.2fs",
                                self.stream, exc, delay)  # fmt: skip
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
                    await self._drop_prefetch()  # read from the vanished group
            await self._handle_prefetched()
        finally:
            try:
                await self._drop_prefetch()
            finally:  # a second cancellation of run() during the drop stops the refresher too
                await cancel_and_wait(refresher)

    async def _handle_prefetched(self) -> None:
        """On a stop: handle what the last prefetch already brought (it is delivered to
        this consumer; left alone it would wait for a restart or for XAUTOCLAIM)."""
        task, self._prefetch = self._prefetch, None
        if task is None:
            return
        try:
            entries = await task
            if entries:
                await self.handle_entries(entries)
        except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
            # what was read and not acked stays pending on this consumer
            log.warning("redis failed on %s while finishing the last read: %s", self.stream, exc)

    async def _drop_prefetch(self) -> None:
        """Cancelled or failed: whatever the prefetch brought stays pending on this
        consumer (found again by recover_own_pending or XAUTOCLAIM)."""
        task, self._prefetch = self._prefetch, None
        if task is not None:
            await cancel_and_wait(task)
            if not task.cancelled():
                task.exception()  # retrieved: a failed read is not worth a warning here

    async def _step(self, burst: bool) -> bool:
        """One round: housekeeping when due, due retries, one read. True: burst is done."""
        if time.monotonic() >= self._next_housekeeping:
            await self.housekeeping()
            self._next_housekeeping = time.monotonic() + self.options.housekeeping_interval
        busy, now = False, time.monotonic()
        if not self._backlog or now >= self._next_retry_poll:
            self._next_retry_poll = now + DEFAULT_BACKLOG_RETRY_POLL_SECONDS
            busy = await self._run_due_retries()
        busy = await self._read_and_handle(0 if busy else self.options.block_ms) or busy
        return burst and not busy and await self._group_is_empty()

    async def drain(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109 - a test helper's bound
        """Burst mode for tests: process until the stream and the pending list are empty."""
        await asyncio.wait_for(self.run(burst=True), timeout)

    async def _group_is_empty(self) -> bool:
        summary = await self.redis.xpending(self.key, self.group)
        return int(summary["pending"]) == 0

    def _read(self, block_ms: int | None) -> Coroutine[Any, Any, list[client.Entry]]:
        return client.read_group(
            self.redis, self.group, self.consumer, self.key, self.options.batch_size, block_ms
        )

    async def _read_and_handle(self, block_ms: int) -> bool:
        if self._prefetch is not None:
            task, self._prefetch = self._prefetch, None
            entries = await task
        else:
            entries = await self._read(block_ms or None)
        self._backlog = len(entries) >= self.options.batch_size
        if not entries:
            return False
        if self._backlog:
            # a full read: more is likely waiting; ask for it now (without blocking), so
            # that Redis builds the reply while this batch is being handled
            self._prefetch = asyncio.create_task(self._read(None))
        await self.handle_entries(entries)
        return True

    def _prefetched_ids(self) -> list[str]:
        task = self._prefetch
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return []
        return [entry_id for entry_id, _ in task.result()]

    # -- handling -----------------------------------------------------------------------

    async def handle_entries(
        self,
        entries: Sequence[tuple[str, dict[str, str] | None]],
        deliveries: dict[str, int] | None = None,
    ) -> None:
        """Decode, dispatch, settle one batch of entries delivered to this consumer."""
        messages = [self._decode(entry_id, fields, deliveries) for entry_id, fields in entries]
        self._inflight = [m.entry_id for m in messages]
        try:
            calls = await self._dispatch(messages)
            self._chain.after_batch(calls)
            await self._settle(calls)
        finally:
            self._inflight = []

    def _decode(
        self, entry_id: str, fields: dict[str, str] | None, deliveries: dict[str, int] | None
    ) -> Message:
        fields = fields or {}
        msg = Message(entry_id, fields, None, deliveries.get(entry_id, 1) if deliveries else 1)
        try:
            size = sum(map(len, fields.values())) + sum(map(len, fields))
            if size > self.options.max_entry_bytes:
                raise MalformedEvent(
                    f"entry is {size} characters, over the limit of {self.options.max_entry_bytes}"
                )
            msg.event = decode(fields, self.registry)
        except MalformedEvent as exc:
            msg.error, msg.decode_error = f"MalformedEvent: {exc}", exc
        return msg

    def _call(self, messages: list[Message]) -> HandlerCall:
        return HandlerCall(self.stream, self.group, self.consumer, messages)

    async def _dispatch(self, messages: list[Message]) -> list[HandlerCall]:
        settled: list[HandlerCall] = []
        jobs: list[Job] = []
        batched: dict[str, list[Message]] = defaultdict(list)
        for msg in messages:
            event = msg.event
            if event is None:
                settled.append(self._malformed(msg))
            elif (fn := self._handlers.get(event.type)) is not None:
                jobs.append((self._call([msg]), fn, event))
            elif event.type in self._batch_handlers:
                batched[event.type].append(msg)
            elif self.registry.model_for(event.type) is not None:
                settled.append(self._ignored(msg))
            else:
                settled.append(self._unknown(msg))
        for event_type, msgs in batched.items():
            call = self._call(msgs)
            jobs.append((call, self._batch_handlers[event_type], call.events))
        await self._run_jobs(jobs)
        settled.extend(job[0] for job in jobs)
        return settled

    def _ignored(self, msg: Message) -> HandlerCall:
        """A type the catalog knows that this group does not handle (a stream shared by
        several types): acked and counted."""
        if self.metrics is not None:
            self.metrics.ignored.labels(self.stream, self.group).inc()
        return self._call([msg])

    def _unknown(self, msg: Message) -> HandlerCall:
        """A type that neither a handler nor the registry knows: a producer's mistake or
        a hostile entry, dead-lettered at once like any malformed entry."""
        assert msg.event is not None
        exc = MalformedEvent(f"unknown event type {msg.event.type!r}: no handler or model")
        msg.event, msg.error, msg.decode_error = None, f"MalformedEvent: {exc}", exc
        return self._malformed(msg)

    def _malformed(self, msg: Message) -> HandlerCall:
        call = self._call([msg])
        self._chain.after(call, msg.decode_error)
        call.outcome = Outcome.DEAD  # never worth a retry, whatever the middleware says
        return call

    async def _run_jobs(self, jobs: list[Job]) -> None:
        lanes = min(self.options.concurrency, len(jobs))
        if lanes <= 1:
            await self._lane(jobs)
            return
        await asyncio.gather(*(self._lane(jobs[i::lanes]) for i in range(lanes)))

    async def _lane(self, jobs: list[Job]) -> None:
        """Run jobs one after another under a shared, rarely rescheduled deadline.

        A fresh ``asyncio.timeout`` per call costs more than a no-op handler, so
        the lane keeps one and pushes it out only when less than a full deadline
        is left: each call gets between 1x and 1.5x ``handler_timeout``.
        """
        timeout = self.options.handler_timeout
        loop = asyncio.get_running_loop()
        before, perf_counter = self._chain.before, time.perf_counter
        i, count = 0, len(jobs)
        while i < count:
            try:
                async with asyncio.timeout(None) as deadline:
                    while i < count:
                        call, fn, argument = jobs[i]
                        if timeout is not None:
                            now, when = loop.time(), deadline.when()
                            if when is None or when < now + timeout:
                                deadline.reschedule(now + 1.5 * timeout)
                        call.started = perf_counter()
                        before(call)
                        try:
                            await fn(argument)
                        except Exception as exc:
                            self._finish(call, exc)
                        else:
                            self._finish(call, None)
                        i += 1
            except TimeoutError:
                call = jobs[i][0]
                self._finish(call, TimeoutError(f"handler exceeded its {timeout}s deadline"))
                i += 1

    def _finish(self, call: HandlerCall, exc: Exception | None) -> None:
        if exc is None:
            call.finished = time.perf_counter()
        else:
            call.outcome, call.delay = Outcome.RETRY, 0.0
            for msg in call.messages:
                msg.error = f"{type(exc).__name__}: {exc}"
        self._chain.after(call, exc)

    async def _settle(self, calls: list[HandlerCall]) -> None:
        """Ack, dead-letter and schedule retries for a batch in one MULTI."""
        plan = _Settlement()
        for call in calls:
            plan.add(call, self._dead_letter)
        if not (plan.ack or plan.due):
            return
        if not (plan.dead or plan.uncounted or plan.due):  # the common case: acks only
            await self.redis.xack(self.key, self.group, *plan.ack)
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            for fields in plan.dead:
                client.add_binary(pipe, self.dlq_key, fields)
            if plan.ack:
                pipe.xack(self.key, self.group, *plan.ack)
            for count, ids in plan.uncounted.items():
                pipe.xclaim(self.key, self.group, self.consumer, 0, list[Any](ids),
                            retrycount=count, justid=True)  # fmt: skip
            if plan.due:
                pipe.zadd(self.retry_key, plan.due)
            await pipe.execute()

    def _dead_letter(self, msg: Message) -> dict[str, str]:
        return dead_letter_fields(
            msg.fields,
            error=msg.error or "unknown error",
            deliveries=msg.deliveries,
            stream=self.stream,
            group=self.group,
            consumer=self.consumer,
            entry_id=msg.entry_id,
        )

    # -- redelivery ---------------------------------------------------------------------

    async def _run_due_retries(self) -> bool:
        """Take retries that are due (ZREM decides who wins one) and run them again."""
        now_ms = time.time() * 1000
        ids: list[str] = await self.redis.zrangebyscore(  # type: ignore[assignment]
            self.retry_key, "-inf", now_ms, start=0, num=self.options.batch_size
        )
        if not ids:
            return False
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.zrem(self.retry_key, entry_id)
            removed = await pipe.execute()
        won = [entry_id for entry_id, n in zip(ids, removed, strict=True) if n]
        await self._claim_and_handle(won)
        return bool(won)

    async def _claim_and_handle(self, ids: list[str]) -> None:
        """XCLAIM (delivery count + 1) and handle; ids acked or deleted meanwhile drop out."""
        if not ids:
            return
        entries = await client.claim(self.redis, self.key, self.group, self.consumer, ids)
        if entries:
            await self.handle_entries(entries, await self._delivery_counts([i for i, _ in entries]))

    async def _delivery_counts(self, ids: list[str]) -> dict[str, int]:
        rows = await self.redis.xpending_range(
            self.key,
            self.group,
            min=min(ids, key=parse_id),
            max=max(ids, key=parse_id),
            count=len(ids) * 2 + 10,
            consumername=self.consumer,
        )
        wanted = set(ids)
        return {
            r["message_id"]: int(r["times_delivered"]) for r in rows if r["message_id"] in wanted
        }

    async def reclaim_stuck(self) -> int:
        """XAUTOCLAIM entries idle past the deadline (their consumer died) and run them."""
        cursor, reclaimed = "0-0", 0
        for _ in range(100):  # bounded: at most 100 pages per housekeeping round
            reply: list[Any] = await self._autoclaim(
                keys=[self.key],
                args=[self.group, self.consumer, self.options.claim_idle_ms, cursor,
                      self.options.batch_size],
            )  # fmt: skip
            cursor, ids = reply[0], list(reply[1])
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:  # trimmed or XDEL'd while pending: nothing to run, ack them away
                await self.redis.xack(self.key, self.group, *deleted)
            reclaimed += await self._run_reclaimed(ids)
            if cursor in ("0-0", b"0-0"):
                break
        return reclaimed

    async def recover_own_pending(self) -> int:
        """Re-run entries still pending on this consumer's name from a previous life.

        Consumer names are stable, so after a crash the restarted replica finds
        its own unacked entries here at once instead of waiting for XAUTOCLAIM.
        """
        recovered, start = 0, "-"
        while True:
            rows: list[dict[str, Any]] = await self.redis.xpending_range(
                self.key, self.group, min=start, max="+",
                count=self.options.batch_size, consumername=self.consumer,
            )  # fmt: skip
            if not rows:
                return recovered
            ids = [str(r["message_id"]) for r in rows]
            recovered += await self._run_reclaimed(ids)
            start = next_id(ids[-1])

    async def _run_reclaimed(self, ids: list[str]) -> int:
        """Run reclaimed ids, except retries whose backoff is not over (we just hold them)."""
        if not ids:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.zscore(self.retry_key, entry_id)
            scores = await pipe.execute()
        now_ms = time.time() * 1000
        runnable = [i for i, s in zip(ids, scores, strict=True) if s is None or s <= now_ms]
        scheduled = [i for i, s in zip(ids, scores, strict=True) if s is not None and s <= now_ms]
        if scheduled:
            await self.redis.zrem(self.retry_key, *scheduled)
        await self._claim_and_handle(runnable)
        return len(runnable)

    async def _keep_claims_fresh(self) -> None:
        """While a batch runs, reset its entries' idle time (and the read-ahead's, once it
        has arrived) so XAUTOCLAIM leaves them alone."""
        interval = self.options.claim_idle_ms / 3000
        while True:
            await asyncio.sleep(interval)
            ids = [*self._inflight, *self._prefetched_ids()]
            if ids:
                try:
                    await client.touch(self.redis, self.key, self.group, self.consumer, ids)
                except Exception:
                    log.warning("could not refresh claims on %s", self.stream, exc_info=True)

    # -- housekeeping -------------------------------------------------------------------

    async def housekeeping(self) -> None:
        """Reclaim stuck entries, remove idle consumers, update gauges, trim safely."""
        try:
            await self.reclaim_stuck()
            await self._remove_idle_consumers()
            await self._update_gauges()
            if self.options.trim_maxlen is not None:
                await safe_trim(self.redis, self.key, maxlen=self.options.trim_maxlen)
        except ResponseError:
            log.exception("housekeeping failed on %s", self.stream)

    async def _remove_idle_consumers(self) -> None:
        for info in await self.redis.xinfo_consumers(self.key, self.group):
            name = info["name"]
            idle_ms = int(info.get("inactive", info["idle"]))
            if (
                name != self.consumer
                and int(info["pending"]) == 0
                and idle_ms > self.options.consumer_idle_ms
            ):
                await self.redis.xgroup_delconsumer(self.key, self.group, name)
                log.info("removed idle consumer %s from %s/%s", name, self.stream, self.group)

    async def _update_gauges(self) -> None:
        if self.metrics is None:
            return
        for info in await self.redis.xinfo_groups(self.key):
            if info["name"] == self.group:
                labels = (self.stream, self.group)
                self.metrics.pending.labels(*labels).set(int(info["pending"]))
                if info.get("lag") is not None:
                    self.metrics.consumer_lag.labels(*labels).set(int(info["lag"]))
