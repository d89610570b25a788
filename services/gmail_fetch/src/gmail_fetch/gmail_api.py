"""The Gmail API through google-api-python-client, from asyncio.

The client is synchronous (httplib2), so every call runs in a bounded pool
of worker threads, each with its own ``httplib2.Http`` (they are not thread
safe); the pool's size is the number of Gmail requests a replica has in
flight. The service is built from the library's bundled discovery document
(``static_discovery=True``) pointed at ``api_endpoint``; batch requests go to
an explicit ``batch_uri`` because the library would build that one from the
discovery document's Google root URL.

Credentials are ``google.oauth2.credentials.Credentials`` built directly with
the configured ``token_uri``. google-auth refreshes them before a request when
they are expired and again on a 401 (``AuthorizedHttp``); the batch request
re-sends 401 parts once after a refresh. A refresh refused with
``invalid_grant`` is permanent: the job fails without retries.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import google_auth_httplib2
import httplib2  # type: ignore[import-untyped]
from google.auth import exceptions as auth_exceptions
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest, HttpRequest
from opentelemetry.trace import SpanKind, Tracer

from gmail_fetch.config import GmailFetchSettings
from gmail_fetch.errors import HistoryExpired, PermanentJobError, TransientJobError
from gmail_fetch.gmail_errors import ApiError, auth_failure, describe
from gmail_fetch.gmail_http import TRANSPORT_ERRORS, GmailExecutor, NotFound
from gmail_fetch.history import HISTORY_TYPES, HistoryDelta, apply_history_record
from gmail_fetch.metrics import GmailMetrics
from gmail_fetch.quota import UNITS, QuotaBucket
from tributary.backoff import compute_backoff

T = TypeVar("T")

#: what a message costs to fetch: enough for analytics, a fraction of format=full
MESSAGE_FIELDS = "id,threadId,labelIds,historyId,internalDate,sizeEstimate,payload/headers"
#: messages.list and history.list page size (the API's maximum)
PAGE_SIZE = 500

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class MessageRef:
    id: str
    thread_id: str


@dataclass
class FetchResult:
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)  # deleted between listing and fetching
    retried_parts: int = 0


@dataclass
class _BatchReply:
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    retry: dict[str, ApiError] = field(default_factory=dict)  # id -> why
    permanent: list[str] = field(default_factory=list)


class GmailClient:
    """One account's Gmail, for one job attempt."""

    def __init__(
        self,
        settings: GmailFetchSettings,
        executor: GmailExecutor,
        quota: QuotaBucket,
        credentials: Credentials,
        user_id: str,
        *,
        tracer: Tracer,
        metrics: GmailMetrics,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self.user_id = user_id
        self._executor = executor
        self._quota = quota
        self._tracer = tracer
        self._metrics = metrics
        self._sleep = sleep
        self._rng = rng
        self._wall = wall
        self._service = build(
            "gmail",
            "v1",
            http=google_auth_httplib2.AuthorizedHttp(credentials, http=httplib2.Http()),
            static_discovery=True,
            client_options={"api_endpoint": settings.api_endpoint},
        )
        self._users: Any = self._service.users()
        self._refresh_lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------

    def backoff(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` (1: the first) of a request."""
        s = self.settings
        return compute_backoff(
            attempt, base=s.backoff_base_seconds, cap=s.backoff_max_seconds, rng=self._rng
        )

    def _authorized(self, http: httplib2.Http) -> google_auth_httplib2.AuthorizedHttp:
        """``http`` with credentials, holding a valid access token.

        Refreshing here, once for every thread that finds the token expired, spares
        the token endpoint a refresh per concurrent batch; later 401s are still
        handled by AuthorizedHttp and the batch request.
        """
        with self._refresh_lock:
            if not self.credentials.valid:
                self.credentials.refresh(google_auth_httplib2.Request(http))  # type: ignore[no-untyped-call]
        return google_auth_httplib2.AuthorizedHttp(self.credentials, http=http)

    async def _run(self, method: str, fn: Callable[[httplib2.Http], T]) -> T:
        """One HTTP exchange in a worker thread, in a client span; refresh failures mapped."""
        with self._tracer.start_as_current_span(
            f"gmail {method}", kind=SpanKind.CLIENT, attributes={"rpc.method": method}
        ):
            try:
                result = await self._executor.run(fn)
            except auth_exceptions.RefreshError as exc:
                self._metrics.requests.labels(method, "auth_error").inc()
                raise auth_failure(exc) from None
            except Exception:
                self._metrics.requests.labels(method, "error").inc()
                raise
        self._metrics.requests.labels(method, "ok").inc()
        return result

    def asked_wait(self, error: ApiError, what: str) -> float:
        """Seconds Gmail asked to wait before retrying (``Retry after <time>``); a wait
        beyond the call's longest backoff fails the attempt, and the job waits it out."""
        wait = error.retry_after(self._wall())
        if wait > self.settings.backoff_max_seconds:
            raise TransientJobError(
                f"{what}: Gmail asks to retry in {wait:.0f}s: {error.describe()}",
                retry_after=wait,
            )
        return wait

    async def _execute(self, method: str, make: Callable[[], HttpRequest]) -> dict[str, Any]:
        """A single call, retried on rate limits, 5xx and transport errors with backoff
        (at least as long as Gmail asked)."""
        last, wait = "", 0.0
        for attempt in range(self.settings.part_max_retries + 1):
            if attempt:
                await self._sleep(max(self.backoff(attempt), wait))
            await self._quota.take(self.user_id, UNITS[method])
            try:
                reply: dict[str, Any] = await self._run(
                    method, lambda http: make().execute(http=self._authorized(http))
                )
                return reply
            except HttpError as exc:
                error = ApiError.of(exc)
                if error.status == 404:
                    raise NotFound(error.describe()) from None
                if not error.retryable:
                    raise PermanentJobError(f"{method} failed: {error.describe()}") from None
                last, wait = error.describe(), self.asked_wait(error, method)
            except TRANSPORT_ERRORS as exc:
                last, wait = describe(exc), 0.0
        raise TransientJobError(
            f"{method} still failing after {self.settings.part_max_retries} retries: {last}"
        )

    # -- calls ----------------------------------------------------------------------------

    async def profile_history_id(self) -> int:
        try:
            reply = await self._execute(
                "users.getProfile",
                lambda: self._users.getProfile(userId="me", fields="emailAddress,historyId"),
            )
        except NotFound:
            raise PermanentJobError("Gmail user not found (404)") from None
        return int(reply["historyId"])

    async def list_messages(self, limit: int) -> list[MessageRef]:
        """The newest ``limit`` messages (ids and threads), paging as needed.

        ``maxResults`` is only a bound: a page can hold fewer ids, or none, and still
        carry a ``nextPageToken``, so paging ends only when there is no token. Mail that
        arrives meanwhile shifts the pages: an id seen on an earlier page is not kept twice.
        """
        refs: dict[str, MessageRef] = {}
        page: str | None = None
        seen_tokens: set[str] = set()
        while len(refs) < limit:
            size = min(PAGE_SIZE, limit - len(refs))

            def request(size: int = size, page: str | None = page) -> HttpRequest:
                return self._users.messages().list(
                    userId="me",
                    maxResults=size,
                    pageToken=page,
                    fields="messages(id,threadId),nextPageToken",
                )

            try:
                reply = await self._execute("messages.list", request)
            except NotFound:
                raise PermanentJobError("Gmail user not found (404)") from None
            for m in reply.get("messages", []):
                refs.setdefault(m["id"], MessageRef(m["id"], m["threadId"]))
            page = reply.get("nextPageToken")
            if not page or page in seen_tokens:
                break
            seen_tokens.add(page)
        return list(refs.values())[:limit]

    async def history_since(self, start: int) -> HistoryDelta:
        """Changes since ``start``; raises HistoryExpired when Gmail no longer has them
        (404: too old or invalid) or ``start`` is ahead of the mailbox."""
        delta = HistoryDelta(history_id=start)
        page: str | None = None
        while True:

            def request(page: str | None = page) -> HttpRequest:
                return self._users.history().list(
                    userId="me",
                    startHistoryId=str(start),
                    historyTypes=HISTORY_TYPES,
                    maxResults=PAGE_SIZE,
                    pageToken=page,
                )

            try:
                reply = await self._execute("history.list", request)
            except NotFound:
                raise HistoryExpired(f"history since {start} is no longer available") from None
            for record in reply.get("history", []):
                apply_history_record(delta, record)
            current = int(reply.get("historyId", start))
            if current < start:
                # an id this mailbox never issued (restored, or another mailbox's): Gmail
                # usually answers 404; keeping it would skip every change until it catches up
                raise HistoryExpired(f"history id {start} is newer than the mailbox's {current}")
            delta.history_id = max(delta.history_id, current)
            page = reply.get("nextPageToken")
            if not page:
                return delta

    def _get_request(self, message_id: str) -> HttpRequest:
        request: HttpRequest = self._users.messages().get(
            userId="me",
            id=message_id,
            format="metadata",
            metadataHeaders=self.settings.headers,
            fields=MESSAGE_FIELDS,
        )
        return request

    async def fetch_messages(self, ids: list[str]) -> FetchResult:
        """messages.get of ``ids`` in one batch request; failed parts (429, 403 rate
        limits, 5xx) are re-sent alone with backoff and jitter, up to part_max_retries."""
        result, pending, last, wait = FetchResult(), list(ids), "", 0.0
        for attempt in range(self.settings.part_max_retries + 1):
            if attempt:
                result.retried_parts += len(pending)
                self._metrics.parts_retried.inc(len(pending))
                await self._sleep(max(self.backoff(attempt), wait))
            await self._quota.take(self.user_id, UNITS["messages.get"] * len(pending))
            try:
                reply = await self._batch(pending)
            except HttpError as exc:
                error = ApiError.of(exc)
                if not error.retryable:
                    raise PermanentJobError(f"batch request failed: {error.describe()}") from None
                last, wait = error.describe(), self.asked_wait(error, "batch request")
                continue
            except TRANSPORT_ERRORS as exc:
                last, wait = describe(exc), 0.0
                continue
            if reply.permanent:
                raise PermanentJobError(f"messages.get failed: {reply.permanent[0]}")
            result.messages.update(reply.messages)
            result.missing |= reply.missing
            if not reply.retry:
                return result
            pending = list(reply.retry)
            last = next(iter(reply.retry.values())).describe()
            wait = max(self.asked_wait(e, "messages.get") for e in reply.retry.values())
        raise TransientJobError(
            f"{len(pending)} messages still failing after "
            f"{self.settings.part_max_retries} retries: {last}"
        )

    async def _batch(self, ids: list[str]) -> _BatchReply:
        def send(http: httplib2.Http) -> dict[str, tuple[Any, HttpError | None]]:
            results: dict[str, tuple[Any, HttpError | None]] = {}

            def collect(request_id: str, response: Any, exception: HttpError | None) -> None:
                results[request_id] = (response, exception)

            batch = BatchHttpRequest(callback=collect, batch_uri=self.settings.batch_uri)
            for message_id in ids:
                batch.add(self._get_request(message_id), request_id=message_id)
            batch.execute(http=self._authorized(http))
            return results

        results = await self._run("batch", send)
        reply = _BatchReply()
        for message_id in ids:
            response, exc = results.get(message_id, (None, None))
            sort_part(reply, message_id, response, exc)
        self._metrics.requests.labels("messages.get", "ok").inc(len(reply.messages))
        return reply


def sort_part(reply: _BatchReply, message_id: str, response: Any, exc: HttpError | None) -> None:
    """File one batch part's outcome: a message, gone, worth a retry, or a permanent error."""
    if exc is None and isinstance(response, dict):
        reply.messages[message_id] = response
        return
    if exc is None:
        reply.retry[message_id] = ApiError(0, "no response for this part", frozenset())
        return
    error = ApiError.of(exc)
    if error.status == 404:
        reply.missing.add(message_id)
    elif error.retryable:
        reply.retry[message_id] = error
    else:
        reply.permanent.append(error.describe())
