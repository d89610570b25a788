"""The fake Gmail's scenario switches: failures and quirks the real API produces,
turned on from a test's (or the demo's) thread while the server runs.

Each switch is one real behaviour (docs/services/gmail_fetch.md lists them with the
service's reaction): per-part and whole-request errors in any of Google's error
shapes, per-user rate limits that say when to retry, messages deleted between
``messages.list`` and ``messages.get``, mail arriving while a listing pages, short
and empty ``messages.list`` pages that still carry a ``nextPageToken``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from simulators.gmail_errors import QUOTA_MESSAGE, ErrorStyle, Reply, google_error

#: what Gmail says with each reason (the message of an injected error)
REASON_MESSAGES = {
    "rateLimitExceeded": "Rate Limit Exceeded",
    "userRateLimitExceeded": "User Rate Limit Exceeded",
    "backendError": "Backend Error",
    "insufficientPermissions": "Request had insufficient authentication scopes.",
}


@dataclass
class Fault:
    status: int
    reason: str
    style: ErrorStyle = "classic"

    def reply(self) -> Reply:
        domain = "usageLimits" if self.status in (403, 429) else "global"
        if self.style == "message_only" and self.reason.lower().endswith("ratelimitexceeded"):
            message = QUOTA_MESSAGE
        else:
            message = REASON_MESSAGES.get(self.reason, "Injected failure")
        return google_error(self.status, message, self.reason, domain, self.style)


def _flag(value: str) -> bool:
    return value.lower() in ("1", "true", "yes", "on")


#: the switches that are plain settings, and how to read one from the command line
SETTINGS: dict[str, Callable[[str], object]] = {
    "list_page_cap": int,
    "empty_list_pages": int,
    "result_size_estimate": int,
    "reverse_batch_parts": _flag,
    "future_history_is_404": _flag,
}


@dataclass
class FaultSwitches:
    """Failures and quirks to produce; every method is safe from any thread."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    #: messages.list pages hold at most this many ids (Gmail may return fewer than maxResults)
    list_page_cap: int | None = None
    #: this many of the next messages.list pages come back empty, with a nextPageToken
    empty_list_pages: int = 0
    #: messages.list's resultSizeEstimate (an estimate in the real API, and it can be far
    #: off); None: the exact count
    result_size_estimate: int | None = None
    #: batch responses list their parts last first ("the server might perform your calls
    #: in any order"; parts are matched by Content-ID)
    reverse_batch_parts: bool = False
    #: history.list with a startHistoryId ahead of the mailbox answers 404 (as Gmail
    #: "typically" does); False: 200 with the mailbox's (lower) historyId and no records
    future_history_is_404: bool = True
    _part_faults: list[Fault] = field(default_factory=list)
    _id_faults: dict[str, list[Fault]] = field(default_factory=dict)
    _request_faults: list[tuple[Fault, str]] = field(default_factory=list)
    _delete_after_listing: set[str] = field(default_factory=set)
    _arrive_after_listing: int = 0
    _limited_until: float = 0.0  # time.time() before which every call is rate limited
    _limit_fault: Fault = field(default_factory=lambda: Fault(429, "rateLimitExceeded"))

    def set_switch(self, spec: str) -> None:
        """``NAME=VALUE`` for one of :data:`SETTINGS` (the demo's ``--set``)."""
        name, _, value = spec.partition("=")
        if name not in SETTINGS:
            raise ValueError(f"unknown switch {name!r}; one of {', '.join(SETTINGS)}")
        with self.lock:
            setattr(self, name, SETTINGS[name](value))

    def fail_next_parts(
        self,
        count: int,
        status: int = 429,
        reason: str = "rateLimitExceeded",
        style: ErrorStyle = "classic",
    ) -> None:
        """The next ``count`` batch parts fail with ``status``."""
        with self.lock:
            self._part_faults.extend(Fault(status, reason, style) for _ in range(count))

    def fail_ids(
        self,
        ids: Iterable[str],
        status: int = 429,
        reason: str = "rateLimitExceeded",
        times: int = 1,
        style: ErrorStyle = "classic",
    ) -> None:
        """messages.get of each id (in a batch or not) fails ``times`` times."""
        with self.lock:
            for message_id in ids:
                self._id_faults.setdefault(message_id, []).extend(
                    Fault(status, reason, style) for _ in range(times)
                )

    def fail_next_requests(
        self,
        count: int,
        status: int = 503,
        reason: str = "backendError",
        path: str = "",
        style: ErrorStyle = "classic",
    ) -> None:
        """The next ``count`` HTTP requests whose path contains ``path`` fail whole."""
        with self.lock:
            self._request_faults.extend((Fault(status, reason, style), path) for _ in range(count))

    def delete_after_listing(self, ids: Iterable[str]) -> None:
        """``ids`` are deleted (as by the user) right after the next messages.list page is
        served: listed, then 404 on messages.get."""
        with self.lock:
            self._delete_after_listing.update(ids)

    def arrive_after_listing(self, count: int) -> None:
        """``count`` new messages arrive right after the next messages.list page is served:
        the pages after it shift (the token is an offset), so a listed id comes again."""
        with self.lock:
            self._arrive_after_listing += count

    def rate_limit_for(
        self, seconds: float, status: int = 429, style: ErrorStyle = "classic"
    ) -> None:
        """Every Gmail API call (plain or batch part) answers ``status`` "User-rate limit
        exceeded.  Retry after <time>" until ``seconds`` from now, as the per-user limits
        (concurrency, bandwidth) do."""
        with self.lock:
            # whole milliseconds, rounded up: the time in the message is never early
            self._limited_until = math.ceil((time.time() + seconds) * 1000) / 1000
            self._limit_fault = Fault(status, "rateLimitExceeded", style)

    # -- used by the fake while serving ---------------------------------------------------

    def rate_limited(self) -> Reply | None:
        with self.lock:
            until, fault = self._limited_until, self._limit_fault
        if time.time() >= until:
            return None
        stamp = datetime.fromtimestamp(until, UTC).isoformat(timespec="milliseconds")
        message = f"User-rate limit exceeded.  Retry after {stamp.replace('+00:00', 'Z')}"
        return google_error(fault.status, message, fault.reason, "usageLimits", fault.style)

    def request_fault(self, path: str) -> Reply | None:
        with self.lock:
            for i, (fault, wanted) in enumerate(self._request_faults):
                if wanted in path:
                    del self._request_faults[i]
                    return fault.reply()
        return None

    def part_fault(self) -> Reply | None:
        with self.lock:
            if not self._part_faults:
                return None
            fault = self._part_faults.pop(0)
        return fault.reply()

    def id_fault(self, message_id: str) -> Reply | None:
        with self.lock:
            faults = self._id_faults.get(message_id)
            return faults.pop(0).reply() if faults else None

    def take_deletions_after_listing(self) -> set[str]:
        with self.lock:
            ids, self._delete_after_listing = self._delete_after_listing, set()
            return ids

    def take_arrivals_after_listing(self) -> int:
        with self.lock:
            count, self._arrive_after_listing = self._arrive_after_listing, 0
            return count

    def take_empty_list_page(self) -> bool:
        with self.lock:
            if self.empty_list_pages <= 0:
                return False
            self.empty_list_pages -= 1
            return True
