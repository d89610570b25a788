"""Dispatch: a batch of entries becomes handler calls, run with bounded concurrency, each
under its own deadline, inside the middleware chain.

- Decode: a malformed entry (:func:`tributary.events.decode`, or over the size limit)
  is a call whose outcome is DEAD; so is an event type that neither a handler nor the
  registry knows. A known type without a handler here is acked and counted as ignored.
- Route: a per-event handler gets a call per event; a batch handler one call with all
  events of its type in the batch.
- Run: ``concurrency`` lanes take calls from one queue, a free lane the next call,
  so one slow handler holds back only its own lane.
- Deadline: each call gets exactly its handler's ``timeout_s`` (or the runner's
  ``handler_timeout_s``). A fresh ``asyncio.timeout`` per call costs more than a no-op
  handler, so a lane keeps one and a timer that fires when the running call is due:
  it cancels that call, or, if the call it was armed for is done, is set again for
  the call now running. A call costs two stores and a comparison.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tributary.errors import MalformedEvent
from tributary.events import Event, Registry, decode
from tributary.metrics import Metrics
from tributary.streams.client import Entry
from tributary.streams.message import HandlerCall, Message, Outcome
from tributary.streams.middleware import Chain
from tributary.streams.options import HandlerOptions, RunnerOptions

Handler = Callable[[Event], Awaitable[None]]
BatchHandler = Callable[[list[Event]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    """A registered handler: ``fn(event)``, or ``fn(events)`` when ``batch``."""

    fn: Callable[[Any], Awaitable[None]]
    batch: bool
    options: HandlerOptions
    timeout_s: float  # math.inf: none


#: a call, its handler, the handler's argument (the event, or a batch handler's list),
#: and the call's deadline in seconds (math.inf: none)
Job = tuple[HandlerCall, Callable[[Any], Awaitable[None]], Any, float]


class Worker:
    def __init__(
        self,
        stream: str,
        group: str,
        consumer: str,
        registry: Registry,
        chain: Chain,
        metrics: Metrics | None,
        options: RunnerOptions,
    ) -> None:
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.registry = registry
        self.chain = chain
        self.metrics = metrics
        self.options = options
        self.routes: dict[str, Route] = {}

    def register(
        self,
        event_type: str,
        fn: Callable[[Any], Awaitable[None]],
        *,
        batch: bool,
        options: HandlerOptions,
    ) -> None:
        if event_type in self.routes:
            raise ValueError(f"{self.stream}: a handler for {event_type!r} is already registered")
        timeout_s = options.timeout_s
        if timeout_s is None:
            timeout_s = self.options.handler_timeout_s
        self.routes[event_type] = Route(
            fn, batch, options, math.inf if timeout_s is None else timeout_s
        )

    # -- decoding -----------------------------------------------------------------------

    def message(self, entry_id: str, fields: dict[str, str] | None, deliveries: int) -> Message:
        fields = fields or {}
        msg = Message(entry_id, fields, None, deliveries)
        try:
            msg.event = decode(fields, self.registry, self.options.max_entry_chars)
        except MalformedEvent as exc:
            msg.error, msg.decode_error = f"MalformedEvent: {exc}", exc
        return msg

    # -- dispatch -----------------------------------------------------------------------

    async def process(
        self, entries: Sequence[Entry], deliveries: dict[str, int] | None = None
    ) -> list[HandlerCall]:
        """Decode, route and run one batch; every entry's call with its outcome."""
        messages = [
            self.message(entry_id, fields, deliveries.get(entry_id, 1) if deliveries else 1)
            for entry_id, fields in entries
        ]
        settled: list[HandlerCall] = []
        jobs: list[Job] = []
        batched: dict[str, list[Message]] = defaultdict(list)
        routes = self.routes
        for msg in messages:
            event = msg.event
            if event is None:
                settled.append(self._malformed(msg))
            elif (route := routes.get(event.type)) is None:
                settled.append(self._unrouted(msg))
            elif route.batch:
                batched[event.type].append(msg)
            else:
                call = self._call([msg], route.options)
                jobs.append((call, route.fn, event, route.timeout_s))
        for event_type, msgs in batched.items():
            route = routes[event_type]
            call = self._call(msgs, route.options)
            jobs.append((call, route.fn, call.events, route.timeout_s))
        await self._run(jobs)
        settled.extend(job[0] for job in jobs)
        self.chain.after_batch(settled)
        return settled

    def _call(self, messages: list[Message], options: HandlerOptions) -> HandlerCall:
        call = HandlerCall(self.stream, self.group, self.consumer, messages)
        call.options = options
        return call

    def _unrouted(self, msg: Message) -> HandlerCall:
        """No handler here. A type the registry knows (a stream shared by several types)
        is acked and counted as ignored; a type nothing knows is a producer's mistake or
        a hostile entry, dead-lettered at once like any malformed entry."""
        assert msg.event is not None
        if self.registry.model_for(msg.event.type) is not None:
            if self.metrics is not None:
                self.metrics.ignored.labels(self.stream, self.group).inc()
            return HandlerCall(self.stream, self.group, self.consumer, [msg])
        exc = MalformedEvent(f"unknown event type {msg.event.type!r}: no handler or model")
        msg.event, msg.error, msg.decode_error = None, f"MalformedEvent: {exc}", exc
        return self._malformed(msg)

    def _malformed(self, msg: Message) -> HandlerCall:
        call = HandlerCall(self.stream, self.group, self.consumer, [msg])
        self.chain.after(call, msg.decode_error)
        call.outcome = Outcome.DEAD  # never worth a retry, whatever the middleware says
        return call

    async def _run(self, jobs: list[Job]) -> None:
        queue = iter(jobs)  # one queue: a free lane takes the next job (one thread, no lock)
        lanes = min(self.options.concurrency, len(jobs))
        if lanes <= 1:
            await _Lane(self).run(queue)
            return
        await asyncio.gather(*(_Lane(self).run(queue) for _ in range(lanes)))

    def finish(self, call: HandlerCall, exc: Exception | None) -> None:
        if exc is None:
            call.finished = time.perf_counter()
        else:
            call.outcome, call.delay = Outcome.RETRY, 0.0
            for msg in call.messages:
                msg.error = f"{type(exc).__name__}: {exc}"
        self.chain.after(call, exc)


class _Lane:
    """Runs jobs one after another; each call is cancelled once past its own deadline."""

    __slots__ = ("_armed_at", "_deadline", "_due", "_loop", "_timer", "_worker")

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._loop = asyncio.get_running_loop()
        self._deadline: asyncio.Timeout | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = math.inf  # perf_counter when the running call is due (inf: idle)
        self._armed_at = math.inf  # perf_counter the timer fires at (inf: not armed)

    async def run(self, queue: Iterator[Job]) -> None:
        worker = self._worker
        before, finish, perf_counter = worker.chain.before, worker.finish, time.perf_counter
        job: Job | None = None
        try:
            while True:
                try:
                    async with asyncio.timeout(None) as self._deadline:
                        for job in queue:
                            call, fn, argument, timeout = job
                            call.started = started = perf_counter()
                            self._due = due = started + timeout
                            if due < self._armed_at:
                                self._arm(due)
                            before(call)
                            try:
                                await fn(argument)
                            except Exception as exc:
                                finish(call, exc)
                            else:
                                finish(call, None)
                        return
                except TimeoutError:
                    assert job is not None
                    timeout = job[3]
                    finish(job[0], TimeoutError(f"handler exceeded its {timeout}s deadline"))
        finally:
            if self._timer is not None:
                self._timer.cancel()

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = due
        self._timer = self._loop.call_later(due - time.perf_counter(), self._check)

    def _check(self) -> None:
        """The timer fired: cancel the running call if it is due, else wait for it."""
        self._timer, self._armed_at = None, math.inf
        due = self._due
        if due == math.inf:
            return
        if due <= time.perf_counter():
            self._due = math.inf
            if self._deadline is not None:
                self._deadline.reschedule(self._loop.time())  # cancels the lane's task now
            return
        self._arm(due)
