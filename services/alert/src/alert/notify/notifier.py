"""The delivery loop: claim due notifications, suppress or send them, record each attempt.

Runs on every replica. A round claims a batch (``FOR UPDATE SKIP LOCKED``, then
a ``claimed_until`` lease so the sending happens outside any transaction),
delivers concurrently with a per-call timeout, and records the attempts in
one transaction. A dead receiver costs its own retries and nothing else:
evaluation never waits for delivery. A replica that dies mid-send leaves its
claim to expire; the notification is then sent again (at-least-once, which
is what webhook receivers get from Alertmanager too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Tracer
from sqlalchemy.orm import Session, sessionmaker

from alert.clock import Clock
from alert.config import AlertSettings
from alert.index import RuleCache
from alert.metrics import AlertMetrics
from alert.models import alert_events, delivery_attempts, notifications, receivers
from alert.notify import mail, webhook
from alert.notify.delivery import Attempt, Delivery
from alert.notify.suppression import Suppression
from tributary.backoff import compute_backoff
from tributary.egress import EgressPolicy, egress_client
from tributary.logs import redact
from tributary.tracing import parse_traceparent

log = logging.getLogger(__name__)

_N, _E, _R = notifications.c, alert_events.c, receivers.c
#: the longest timeout a receiver may set for itself, seconds (see schemas.ReceiverSpec)
RECEIVER_TIMEOUT_MAX = 120.0


class Notifier:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        cache: RuleCache,
        settings: AlertSettings,
        clock: Clock,
        tracer: Tracer,
        metrics: AlertMetrics | None = None,
        client: httpx.AsyncClient | None = None,
        jitter: Callable[[], float] = random.random,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.sessions = sessions
        self.jitter = jitter  # draws in [0, 1) spreading retries over their backoff window
        self.cache = cache
        self.settings = settings
        self.clock = clock
        self.tracer = tracer
        self.metrics = metrics
        self.client = client
        self.egress = egress or EgressPolicy.from_settings(settings)
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the loop -----------------------------------------------------------------------

    def wake(self) -> None:
        """Look for work now (after committing notifications). Safe from any thread."""
        loop = self._loop
        if loop is None:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        async with self._http() as client:
            self.client = client
            while not stop.is_set():
                self._wake.clear()
                try:
                    busy = await self.run_once() > 0
                except Exception:
                    log.exception("notifier round failed")
                    busy = False
                if not busy:
                    await _wait_any(self.settings.notify_poll_seconds, stop, self._wake)

    @contextlib.asynccontextmanager
    async def _http(self) -> AsyncIterator[httpx.AsyncClient]:
        if self.client is not None:
            yield self.client
            return
        # receivers' URLs are user-given: every connection is checked (tributary.egress)
        timeout = self.settings.webhook_timeout_seconds
        async with egress_client(self.egress, timeout=timeout) as client:
            yield client

    async def run_once(self) -> int:
        """One round; returns how many notifications it settled or claimed."""
        now = self.clock()
        deliveries, settled = await asyncio.to_thread(self._claim, now)
        if deliveries:
            limit = asyncio.Semaphore(self.settings.notify_concurrency)
            attempts = await asyncio.gather(*(self._deliver(d, limit) for d in deliveries))
            await asyncio.to_thread(self._record, list(zip(deliveries, attempts, strict=True)))
        return len(deliveries) + settled

    # -- claiming -----------------------------------------------------------------------

    def _claim(self, now: datetime) -> tuple[list[Delivery], int]:
        with self.sessions.begin() as session:
            rows = session.execute(_due_query(now, self.settings.notify_batch_size)).all()
            if not rows:
                return [], 0
            suppression = Suppression.load(session, now, self.cache.refresh(session))
            lease = now + timedelta(seconds=self._claim_seconds())
            deliveries: list[Delivery] = []
            settled = 0
            for row in rows:
                verdict = self._verdict(session, suppression, row)
                if verdict is None:
                    deliveries.append(_delivery(row))
                    values: dict[str, Any] = {"claimed_until": lease, "attempts": row.attempts + 1}
                else:
                    status, reason = verdict
                    values = {"status": status, "last_error": reason}
                    settled += 1
                session.execute(sa.update(notifications).where(_N.id == row.id).values(**values))
            return deliveries, settled

    def _claim_seconds(self) -> float:
        """How long a claim holds: longer than any one delivery can take (a receiver's
        own timeout is at most 120 s), so a live sender is never doubled."""
        s = self.settings
        return 2 * max(RECEIVER_TIMEOUT_MAX, s.webhook_timeout_seconds, s.smtp_timeout_seconds) + 30

    def _verdict(
        self, session: Session, suppression: Suppression, row: Any
    ) -> tuple[str, str] | None:
        """(status, reason) when the notification is settled without sending."""
        if row.receiver_name is None:
            return "failed", "receiver no longer exists"
        if row.kind == "resolved" and not _was_notified(session, row.event_id, row.receiver_id):
            return "skipped", "firing was never notified to this receiver"
        reason = suppression.reason(session, row.event_id, row.rule_id, row.labels)
        if reason is None:
            return None
        if self.metrics is not None:
            self.metrics.notifications_suppressed.labels(reason.split(" ", 1)[0]).inc()
        log.info("notification %s suppressed: %s", row.id, reason)
        return "suppressed", reason

    # -- delivering ---------------------------------------------------------------------

    async def _deliver(self, d: Delivery, limit: asyncio.Semaphore) -> Attempt:
        async with limit:
            parent = _parent_context(d)
            with self.tracer.start_as_current_span(
                f"notify {d.receiver_kind}",
                context=parent,
                attributes={
                    "alert.event_id": d.event_id,
                    "alert.receiver": d.receiver_name,
                    "alert.notification.kind": d.kind,
                    "alert.attempt": d.attempt,
                },
            ) as span:
                started = time.perf_counter()
                try:
                    attempt = await self._send(d)
                except Exception:  # a receiver bug must not end the round
                    log.exception("delivery %s crashed", d.notification_id)
                    attempt = Attempt(ok=False, retryable=True, error="internal-error")
                elapsed = (time.perf_counter() - started) * 1000
                if not attempt.ok:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, attempt.error or ""))
            return Attempt(
                attempt.ok,
                attempt.retryable,
                attempt.status_code,
                redact(attempt.error) if attempt.error else None,
                elapsed,
            )

    async def _send(self, d: Delivery) -> Attempt:
        if d.receiver_kind == "webhook":
            assert self.client is not None
            return await webhook.post(
                self.client,
                d,
                self.settings.external_url,
                self.settings.webhook_timeout_seconds,
                int(self.clock().timestamp()),
            )
        if d.receiver_kind == "email":
            return await mail.send(d, self.settings)
        return Attempt(ok=False, error=f"unknown receiver kind {d.receiver_kind!r}")

    # -- recording ----------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        """Full jitter: deliveries that failed together (a receiver down for all of them)
        retry spread over the window, not all at once."""
        s = self.settings
        return compute_backoff(
            attempt,
            base=s.notify_retry_base_seconds,
            cap=s.notify_retry_max_seconds,
            rng=self.jitter,
        )

    def _record(self, results: Sequence[tuple[Delivery, Attempt]]) -> None:
        now = self.clock()
        attempts, updates = [], []
        for d, a in results:
            attempts.append(
                {
                    "notification_id": d.notification_id,
                    "attempt": d.attempt,
                    "started_at": now,
                    "duration_ms": a.duration_ms,
                    "ok": a.ok,
                    "status_code": a.status_code,
                    "error": a.error,
                }
            )
            updates.append(self._outcome(d, a, now))
            self._count(d, a)
        with self.sessions.begin() as session:
            session.execute(sa.insert(delivery_attempts), attempts)
            stmt = (
                sa.update(notifications)
                .where(_N.id == sa.bindparam("b_id"))
                .values(
                    status=sa.bindparam("b_status"),
                    next_attempt_at=sa.bindparam("b_next"),
                    sent_at=sa.bindparam("b_sent"),
                    last_error=sa.bindparam("b_error"),
                    claimed_until=None,
                )
            )
            session.connection().execute(stmt, updates)

    def _outcome(self, d: Delivery, a: Attempt, now: datetime) -> dict[str, Any]:
        row = {"b_id": d.notification_id, "b_sent": None, "b_error": a.error, "b_next": now}
        if a.ok:
            return {**row, "b_status": "sent", "b_sent": now}
        if a.retryable and d.attempt < self.settings.notify_max_attempts:
            delay = self._backoff(d.attempt)
            log.warning(
                "delivery %s to %s failed (attempt %d), retrying in %.0fs: %s",
                d.notification_id,
                d.receiver_name,
                d.attempt,
                delay,
                a.error,
            )
            return {**row, "b_status": "pending", "b_next": now + timedelta(seconds=delay)}
        log.error(
            "delivery %s to %s failed for good after %d attempt(s): %s",
            d.notification_id,
            d.receiver_name,
            d.attempt,
            a.error,
        )
        return {**row, "b_status": "failed"}

    def _count(self, d: Delivery, a: Attempt) -> None:
        if self.metrics is None:
            return
        counter = self.metrics.notifications_sent if a.ok else self.metrics.notifications_failed
        counter.labels(d.receiver_kind).inc()


def _due_query(now: datetime, limit: int) -> sa.Select[Any]:
    return (
        sa.select(
            _N.id,
            _N.kind,
            _N.attempts,
            _N.event_id,
            _N.receiver_id,
            _N.traceparent,
            _N.tracestate,
            _E.rule_id,
            _E.subject,
            _E.fingerprint,
            _E.labels,
            _E.annotations,
            _E.triggered_at,
            _E.resolved_at,
            _E.current_value,
            _E.resolution_value,
            _R.name.label("receiver_name"),
            _R.kind.label("receiver_kind"),
            _R.config,
            _R.secret,
        )
        .join(alert_events, _E.id == _N.event_id)
        .outerjoin(receivers, _R.id == _N.receiver_id)
        .where(
            _N.status == "pending",
            _N.next_attempt_at <= now,
            sa.or_(_N.claimed_until.is_(None), _N.claimed_until < now),
        )
        .order_by(_N.next_attempt_at, _N.id)
        .limit(limit)
        .with_for_update(of=notifications, skip_locked=True)
    )


def _was_notified(session: Session, event_id: str, receiver_id: int) -> bool:
    found = session.execute(
        sa.select(_N.id)
        .where(
            _N.event_id == event_id,
            _N.receiver_id == receiver_id,
            _N.status == "sent",
            _N.kind != "resolved",
        )
        .limit(1)
    ).first()
    return found is not None


def _delivery(row: Any) -> Delivery:
    resolved = row.kind == "resolved"
    return Delivery(
        notification_id=row.id,
        attempt=row.attempts + 1,
        kind=row.kind,
        event_id=row.event_id,
        rule_id=row.rule_id,
        subject=row.subject,
        fingerprint=row.fingerprint,
        labels=row.labels,
        annotations=row.annotations,
        starts_at=row.triggered_at,
        ends_at=row.resolved_at if resolved else None,
        value=row.resolution_value if resolved else row.current_value,
        receiver_name=row.receiver_name,
        receiver_kind=row.receiver_kind,
        config=row.config,
        secret=row.secret,
        traceparent=row.traceparent,
        tracestate=row.tracestate,
    )


def _parent_context(d: Delivery) -> Context | None:
    """The trace of the evaluation that queued the notification."""
    span_ctx = parse_traceparent(d.traceparent, d.tracestate)
    if span_ctx is None:
        return None
    return trace.set_span_in_context(trace.NonRecordingSpan(span_ctx))


async def _wait_any(seconds: float, *events: asyncio.Event) -> None:
    waiters = {asyncio.ensure_future(e.wait()) for e in events}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
