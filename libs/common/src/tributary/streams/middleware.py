"""Middleware around every handler call: tracing, metrics, logging and the retry policy.

As in dramatiq, ``before_process`` hooks run in list order and
``after_process`` hooks in reverse, so the first middleware sees the final
outcome. A failing middleware is logged and never takes the worker down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer
from prometheus_client import Counter, Histogram

from tributary.backoff import compute_backoff
from tributary.errors import MalformedEvent, Reject, Retry
from tributary.metrics import Metrics, observe_many
from tributary.outage import is_dependency_outage
from tributary.spans import ConsumerSpans
from tributary.streams.message import HandlerCall, Outcome
from tributary.tracing import MESSAGING_SYSTEM, remote_parent

log = logging.getLogger(__name__)

#: first redelivery delay after a failure, in seconds (doubles each delivery)
DEFAULT_RETRY_BASE_SECONDS = 1.0
#: upper bound of the redelivery delay, in seconds
DEFAULT_RETRY_MAX_SECONDS = 300.0
#: longest wait between retries of an entry while Redis or a database is down
DEFAULT_OUTAGE_RETRY_MAX_SECONDS = 15.0


class Middleware:
    """Base: every hook does nothing. ``exc`` is the handler's exception, if any.

    ``after_batch`` runs once per read, after every call of it has run and
    before its outcomes are settled in Redis: per-event bookkeeping that can
    wait for the batch (counters) is cheaper there. A middleware whose
    ``after_process`` has nothing to do for a success (it does that in
    ``after_batch``) sets ``after_success = False`` and is called for failures
    only.
    """

    #: whether ``after_process`` is called for successful calls too
    after_success = True

    def before_process(self, call: HandlerCall) -> None:
        return None

    def after_process(self, call: HandlerCall, exc: BaseException | None) -> None:
        return None

    def after_batch(self, calls: Sequence[HandlerCall]) -> None:
        return None


class Chain:
    """A middleware list with its hooks looked up once.

    Only hooks a middleware overrides are called (the base ones do nothing),
    ``before_process`` in list order and ``after_process`` in reverse. A hook
    that raises is logged and the others still run.
    """

    def __init__(self, middleware: Sequence[Middleware]) -> None:
        self.middleware = list(middleware)
        backwards = self.middleware[::-1]
        self._before = _overridden(self.middleware, "before_process")
        self._after = _overridden(backwards, "after_process")
        self._after_ok = [(m, hook) for m, hook in self._after if m.after_success]
        self._after_batch = _overridden(backwards, "after_batch")

    def before(self, call: HandlerCall) -> None:
        for m, hook in self._before:
            try:
                hook(call)
            except Exception:
                log.exception("middleware %s.before_process failed", type(m).__name__)

    def after(self, call: HandlerCall, exc: BaseException | None) -> None:
        for m, hook in self._after if exc is not None else self._after_ok:
            try:
                hook(call, exc)
            except Exception:
                log.exception("middleware %s.after_process failed", type(m).__name__)

    def after_batch(self, calls: Sequence[HandlerCall]) -> None:
        for m, hook in self._after_batch:
            try:
                hook(calls)
            except Exception:
                log.exception("middleware %s.after_batch failed", type(m).__name__)


def _overridden(middleware: Sequence[Middleware], hook: str) -> list[tuple[Middleware, Any]]:
    """(middleware, its bound ``hook``) for each one that overrides the base's no-op."""
    base = getattr(Middleware, hook)
    return [(m, getattr(m, hook)) for m in middleware if getattr(type(m), hook) is not base]


class Retries(Middleware):
    """Turns a failure into a delayed redelivery, or into a dead letter once deliveries run out.

    ``Reject``, malformed payloads and the exception types a handler lists in its
    ``dead_letter_on`` are dead-lettered at once; ``Retry(delay_s=)`` chooses its own
    delay; a handler's ``max_deliveries`` overrides the runner's. Otherwise the delay
    is exponential with full jitter.

    A failure that is an outage of Redis or a database
    (:func:`tributary.outage.is_dependency_outage`) is retried without spending a
    delivery (``call.state["uncounted"]``: the runner resets the entry's delivery
    count), after a delay that grows with the number of such failures in a row, so
    an outage of any length dead-letters nothing and does not spin.
    """

    def __init__(
        self,
        max_deliveries: int = 5,
        base_s: float = DEFAULT_RETRY_BASE_SECONDS,
        cap_s: float = DEFAULT_RETRY_MAX_SECONDS,
        outage_cap_s: float = DEFAULT_OUTAGE_RETRY_MAX_SECONDS,
    ) -> None:
        self.max_deliveries = max_deliveries
        self.base_s = base_s
        self.cap_s = cap_s
        self.outage_cap_s = outage_cap_s
        #: outage failures since the last success of this runner
        self.outage_streak = 0

    def backoff(self, deliveries: int, cap_s: float | None = None) -> float:
        cap = self.cap_s if cap_s is None else cap_s
        return compute_backoff(deliveries, base=self.base_s, cap=cap)

    def after_process(self, call: HandlerCall, exc: BaseException | None) -> None:
        if exc is None:
            self.outage_streak = 0
            return
        if isinstance(exc, (Reject, MalformedEvent, *call.options.dead_letter_on)):
            call.outcome = Outcome.DEAD
            return
        if is_dependency_outage(exc):
            self.outage_streak += 1
            call.outcome = Outcome.RETRY
            call.state["uncounted"] = True
            call.delay = self.backoff(min(self.outage_streak, 30), self.outage_cap_s)
            return
        if call.deliveries >= (call.options.max_deliveries or self.max_deliveries):
            call.outcome = Outcome.DEAD
            return
        call.outcome = Outcome.RETRY
        if isinstance(exc, Retry) and exc.delay_s is not None:
            call.delay = exc.delay_s
        else:
            call.delay = self.backoff(call.deliveries)


_OUTCOME_NAMES = {outcome: outcome.value for outcome in Outcome}  # Enum.value is not free


class Tracing(Middleware):
    """A CONSUMER span per call, continuing the producer's trace (links for a batch)."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self._spans: dict[tuple[str, str], ConsumerSpans] = {}

    def _consumer_spans(self, stream: str, group: str) -> ConsumerSpans:
        spans = self._spans.get((stream, group))
        if spans is None:
            spans = self._spans[stream, group] = ConsumerSpans(self.tracer, stream, group)
        return spans

    def before_process(self, call: HandlerCall) -> None:
        messages = call.messages
        if len(messages) == 1 and (event := messages[0].event) is not None:
            span = self._consumer_spans(call.stream, call.group).start(event)
        else:
            events = call.events
            links = [
                Link(ctx)
                for e in events
                if (ctx := remote_parent(e.traceparent, e.tracestate)) is not None
            ]
            span = self.tracer.start_span(
                f"process {call.stream}",
                kind=SpanKind.CONSUMER,
                links=links,
                attributes={
                    "messaging.system": MESSAGING_SYSTEM,
                    "messaging.destination.name": call.stream,
                    "messaging.consumer.group.name": call.group,
                    "messaging.operation.type": "process",
                    "messaging.batch.message_count": len(events),
                },
            )
        call.state["span"] = span
        # the handler runs inside the span: its DB spans and outbox events join this trace
        call.state["otel_token"] = otel_context.attach(trace.set_span_in_context(span))

    def after_process(self, call: HandlerCall, exc: BaseException | None) -> None:
        span = call.state.pop("span", None)
        if span is None:
            return
        otel_context.detach(call.state.pop("otel_token"))
        if exc is not None:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
        span.set_attribute("tributary.outcome", _OUTCOME_NAMES[call.outcome])
        span.end()


class MetricsMiddleware(Middleware):
    """Counts outcomes per stream and group, and times handlers (successes per batch)."""

    after_success = False

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # labelled children looked up once per (stream, group): .labels() is not free
        self._children: dict[tuple[str, str], _Children] = {}

    def _for(self, stream: str, group: str) -> _Children:
        found = self._children.get((stream, group))
        if found is None:
            m, labels = self.metrics, (stream, group)
            found = _Children(
                m.handler_seconds.labels(*labels),
                m.processed.labels(*labels),
                m.failed.labels(*labels),
                m.retried.labels(*labels),
                m.dead_lettered.labels(*labels),
            )
            self._children[(stream, group)] = found
        return found

    def after_process(self, call: HandlerCall, exc: BaseException | None) -> None:
        if exc is None:
            return  # successes are counted per batch
        c, n = self._for(call.stream, call.group), len(call.messages)
        c.seconds.observe(time.perf_counter() - call.started)
        c.failed.inc(n)
        if call.outcome is Outcome.RETRY:
            c.retried.inc(n)
        elif call.outcome is Outcome.DEAD:
            c.dead_lettered.inc(n)

    def after_batch(self, calls: Sequence[HandlerCall]) -> None:
        done = [call for call in calls if call.finished]
        if not done:
            return
        children = self._for(done[0].stream, done[0].group)
        observe_many(children.seconds, [call.finished - call.started for call in done])
        children.processed.inc(sum(len(call.messages) for call in done))


class _Children(NamedTuple):
    seconds: Histogram
    processed: Counter
    failed: Counter
    retried: Counter
    dead_lettered: Counter


class Logging(Middleware):
    """Logs failures (with the outcome) and, at DEBUG, every successful call (a batch
    at a time)."""

    after_success = False

    def after_batch(self, calls: Sequence[HandlerCall]) -> None:
        if log.isEnabledFor(logging.DEBUG):
            for call in calls:
                if call.finished:
                    log.debug("processed %s entries %s", call.stream, _ids(call))

    def after_process(self, call: HandlerCall, exc: BaseException | None) -> None:
        if exc is None:
            return
        log.warning(
            "handler failed on %s (group %s, delivery %d): %s: %s -> %s",
            call.stream,
            call.group,
            call.deliveries,
            type(exc).__name__,
            exc,
            call.outcome.value,
            extra={"entry_ids": _ids(call), "outcome": call.outcome.value},
        )


def _ids(call: HandlerCall) -> list[str]:
    return [m.entry_id for m in call.messages]


def default_middleware(
    tracer: Tracer, metrics: Metrics | None, retries: Retries
) -> list[Middleware]:
    """Metrics first (sees the final outcome), retry policy last (decides it first)."""
    chain: list[Middleware] = []
    if metrics is not None:
        chain.append(MetricsMiddleware(metrics))
    chain.extend([Tracing(tracer), Logging(), retries])
    return chain


__all__ = [
    "Chain",
    "Logging",
    "MetricsMiddleware",
    "Middleware",
    "Retries",
    "Tracing",
    "default_middleware",
]
