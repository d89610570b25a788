"""The plumbing under :mod:`gmail_fetch.gmail_api`: worker threads for the synchronous
client, OAuth credentials, the errors of the transport (:mod:`gmail_fetch.gmail_errors`
says what an error reply means)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import httplib2  # type: ignore[import-untyped]
from google.auth import exceptions as auth_exceptions
from google.oauth2.credentials import Credentials
from googleapiclient.errors import BatchError

from gmail_fetch.config import GmailFetchSettings

T = TypeVar("T")

#: errors of the transport (connection refused/reset, timeouts): worth a retry
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    httplib2.HttpLib2Error,
    OSError,
    auth_exceptions.TransportError,
    BatchError,
)


class NotFound(Exception):
    """A 404 from a single call; what it means depends on the call."""


class GmailExecutor:
    """Worker threads for the synchronous client; each keeps its own ``httplib2.Http``."""

    def __init__(self, size: int, timeout: float) -> None:
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="gmail-http")
        self._local = threading.local()
        self._timeout = timeout
        self._https: list[httplib2.Http] = []
        self._lock = threading.Lock()

    def _http(self) -> httplib2.Http:
        http: httplib2.Http | None = getattr(self._local, "http", None)
        if http is None:
            http = httplib2.Http(timeout=self._timeout)
            self._local.http = http
            with self._lock:
                self._https.append(http)
        return http

    def _call(self, fn: Callable[[httplib2.Http], T]) -> T:
        return fn(self._http())

    async def run(self, fn: Callable[[httplib2.Http], T]) -> T:
        """Run ``fn(http)`` in a worker thread (the caller's context, and so its span, follow)."""
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, ctx.run, self._call, fn)

    def close(self) -> None:
        """Stop the threads (after the requests in flight) and close their connections."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for http in self._https:
                http.close()
            self._https.clear()


def make_credentials(settings: GmailFetchSettings, refresh_token: str) -> Credentials:
    """OAuth credentials with no access token yet: the first call refreshes them."""
    return Credentials(  # type: ignore[no-untyped-call]
        token=None,
        refresh_token=refresh_token,
        token_uri=settings.token_uri,
        client_id=settings.oauth_client_id,
        client_secret=settings.oauth_client_secret.get_secret_value(),
        scopes=settings.scopes,
    )
