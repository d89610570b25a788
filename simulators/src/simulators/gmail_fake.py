"""The state and the API logic of the fake Gmail (:mod:`simulators.gmail` serves it).

Mailboxes, OAuth grants and access tokens, injected faults and request counts;
every method is safe to call from a test's thread while the server runs.
"""

from __future__ import annotations

import secrets
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from simulators.gmail_errors import STATUS_TEXT, Reply, google_error
from simulators.gmail_faults import FaultSwitches
from simulators.gmail_mailbox import Mailbox, parse_fields, select_fields

__all__ = ["MAX_BATCH_PARTS", "STATUS_TEXT", "GmailFake", "Grant", "Reply", "google_error"]

#: the largest batch Gmail accepts
MAX_BATCH_PARTS = 100
#: lifetime of an issued access token, in seconds (what ``expires_in`` says)
DEFAULT_TOKEN_TTL = 3600
GMAIL_SCOPES = frozenset(
    {
        "https://mail.google.com/",
        "https://www.googleapis.com/auth/gmail.readonly",
        "https://www.googleapis.com/auth/gmail.metadata",
        "https://www.googleapis.com/auth/gmail.modify",
    }
)


@dataclass
class Grant:
    email: str
    scopes: tuple[str, ...]
    revoked: bool = False


@dataclass
class GmailFake(FaultSwitches):
    """The fake's state; every method is safe to call from the test's thread."""

    latency: float = 0.0  # seconds added to every HTTP request
    token_ttl: int = DEFAULT_TOKEN_TTL
    client_id: str | None = None  # when set, the token endpoint checks the client
    client_secret: str | None = None
    mailboxes: dict[str, Mailbox] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    fetched_ids: list[str] = field(default_factory=list)
    _grants: dict[str, Grant] = field(default_factory=dict)
    _access: dict[str, tuple[str, float, tuple[str, ...]]] = field(default_factory=dict)
    _expire_after: int | None = None
    _revoke_after: tuple[str, int] | None = None

    # -- set-up ---------------------------------------------------------------------------

    def add_user(
        self, email: str, messages: int = 0, *, seed: int = 0, scopes: Iterable[str] | None = None
    ) -> str:
        """Create a mailbox with ``messages`` generated messages; returns a refresh token."""
        with self.lock:
            mailbox = self.mailboxes.get(email) or Mailbox(email, seed)
            self.mailboxes[email] = mailbox
            mailbox.generate(messages)
            return self.grant(email, scopes)

    def grant(self, email: str, scopes: Iterable[str] | None = None) -> str:
        """A new refresh token for ``email`` (default scope: gmail.readonly)."""
        token = f"1//fake-{secrets.token_urlsafe(24)}"
        chosen = tuple(scopes or ("https://www.googleapis.com/auth/gmail.readonly",))
        with self.lock:
            self._grants[token] = Grant(email, chosen)
        return token

    def mailbox(self, email: str) -> Mailbox:
        return self.mailboxes[email]

    # -- faults ---------------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """Every access token issued so far stops working now (server side)."""
        with self.lock:
            self._access.clear()

    def expire_tokens_after(self, requests: int) -> None:
        """Access tokens stop working after ``requests`` more Gmail API requests."""
        with self.lock:
            self._expire_after = requests

    def revoke_after(self, refresh_token: str, requests: int) -> None:
        """``refresh_token`` is revoked (by the user, mid-job) after ``requests`` more Gmail
        API requests: its access tokens stop working and refreshing it is ``invalid_grant``."""
        with self.lock:
            self._revoke_after = (refresh_token, requests)

    def revoke(self, refresh_token: str) -> None:
        with self.lock:
            self._grants[refresh_token].revoked = True
            self._access = {k: v for k, v in self._access.items() if v[0] != refresh_token}

    def reset_counts(self) -> None:
        with self.lock:
            self.counts.clear()
            self.fetched_ids.clear()

    # -- OAuth ----------------------------------------------------------------------------

    def token(self, form: dict[str, str]) -> Reply:
        if self.client_id is not None and (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return 401, {
                "error": "invalid_client",
                "error_description": "The OAuth client was not found.",
            }
        if form.get("grant_type") != "refresh_token":
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": "Invalid grant_type",
            }
        refresh = form.get("refresh_token", "")
        with self.lock:
            grant = self._grants.get(refresh)
            if grant is None or grant.revoked:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "Token has been expired or revoked.",
                }
            access = f"ya29.fake-{secrets.token_urlsafe(32)}"
            self._access[access] = (refresh, time.monotonic() + self.token_ttl, grant.scopes)
        return 200, {
            "access_token": access,
            "expires_in": self.token_ttl,
            "scope": " ".join(grant.scopes),
            "token_type": "Bearer",
        }

    def _authorize(self, authorization: str | None) -> tuple[Grant | None, Reply | None]:
        token = (authorization or "").removeprefix("Bearer ").strip()
        entry = self._access.get(token)
        if entry is None or entry[1] < time.monotonic():
            return None, google_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
                "authError",
            )
        grant = self._grants[entry[0]]
        if not GMAIL_SCOPES.intersection(entry[2]):
            return None, google_error(
                403, "Request had insufficient authentication scopes.", "insufficientPermissions"
            )
        return grant, None

    # -- the API --------------------------------------------------------------------------

    def api(
        self, method: str, path: str, query: dict[str, list[str]], authorization: str | None
    ) -> Reply:
        """One Gmail API call (a plain request or a batch part)."""
        with self.lock:
            if self._expire_after is not None:
                self._expire_after -= 1
                if self._expire_after < 0:
                    self._expire_after = None
                    self._access.clear()
            self._count_down_revocation()
            limited = self.rate_limited()
            if limited is not None:
                self.counts["rate_limited"] += 1
                return limited
            grant, error = self._authorize(authorization)
            if error is not None:
                return error
            assert grant is not None
            status, body = self._route(method, path, query, grant)
        fields = query.get("fields")
        if status == 200 and fields:
            try:
                body = select_fields(body, parse_fields(fields[0]))
            except ValueError as exc:
                return google_error(400, str(exc), "invalidParameter")
        return status, body

    def _count_down_revocation(self) -> None:
        if self._revoke_after is None:
            return
        token, left = self._revoke_after
        self._revoke_after = (token, left - 1) if left > 0 else None
        if left <= 0:
            self.revoke(token)

    def _route(self, method: str, path: str, query: dict[str, list[str]], grant: Grant) -> Reply:
        parts = path.strip("/").split("/")
        if method != "GET" or len(parts) < 5 or parts[:3] != ["gmail", "v1", "users"]:
            return google_error(404, f"Method not found: {method} {path}", "notFound")
        user = urllib.parse.unquote(parts[3])
        if user not in ("me", grant.email):
            return google_error(403, "Delegation denied for " + grant.email, "forbidden")
        mailbox = self.mailboxes.get(grant.email)
        if mailbox is None:
            return google_error(404, "Requested entity was not found.", "notFound")
        rest = parts[4:]
        if rest == ["profile"]:
            return self._profile(mailbox)
        if rest == ["messages"]:
            return self._list(mailbox, query)
        if len(rest) == 2 and rest[0] == "messages":
            return self._get(mailbox, rest[1], query)
        if rest == ["history"]:
            return self._history(mailbox, query)
        return google_error(404, f"Method not found: {method} {path}", "notFound")

    def _profile(self, mailbox: Mailbox) -> Reply:
        self.counts["users.getProfile"] += 1
        return 200, {
            "emailAddress": mailbox.email,
            "messagesTotal": len(mailbox.messages),
            "threadsTotal": len({m.thread_id for m in mailbox.messages.values()}),
            "historyId": str(mailbox.history_id),
        }

    def _list(self, mailbox: Mailbox, query: dict[str, list[str]]) -> Reply:
        """A page of ids; ``maxResults`` is only a bound: with ``list_page_cap`` pages are
        shorter, with ``empty_list_pages`` some hold nothing yet carry a nextPageToken."""
        self.counts["messages.list"] += 1
        try:
            size = _int_param(query, "maxResults", 100, 1, 500)
            offset = int((_first(query, "pageToken") or "0").split(".")[0])
        except ValueError as exc:
            return google_error(400, str(exc), "invalidArgument")
        include = _first(query, "includeSpamTrash") == "true"
        found = mailbox.listed(query.get("labelIds", []), include)
        estimate = self.result_size_estimate
        body: dict[str, Any] = {"resultSizeEstimate": len(found) if estimate is None else estimate}
        if offset < len(found) and self.take_empty_list_page():
            body["nextPageToken"] = f"{offset}.{self.counts['messages.list']}"
            return 200, body
        size = min(size, self.list_page_cap or size)
        page = found[offset : offset + size]
        if page:
            body["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
        if offset + size < len(found):
            body["nextPageToken"] = str(offset + size)
        for message_id in self.take_deletions_after_listing():
            if message_id in mailbox.messages:
                mailbox.delete_message(message_id)
        mailbox.generate(self.take_arrivals_after_listing())
        return 200, body

    def _get(self, mailbox: Mailbox, message_id: str, query: dict[str, list[str]]) -> Reply:
        self.counts["messages.get"] += 1
        fault = self.id_fault(message_id)
        if fault is not None:
            return fault
        self.fetched_ids.append(message_id)
        message = mailbox.messages.get(message_id)
        if message is None:
            return google_error(404, "Requested entity was not found.", "notFound")
        fmt = _first(query, "format") or "full"
        if fmt not in ("minimal", "full", "raw", "metadata"):
            return google_error(400, f"Invalid value for format: {fmt}", "invalidArgument")
        return 200, message.resource(fmt, query.get("metadataHeaders"))

    def _history(self, mailbox: Mailbox, query: dict[str, list[str]]) -> Reply:
        self.counts["history.list"] += 1
        try:
            start = int(_first(query, "startHistoryId") or "")
            size = _int_param(query, "maxResults", 100, 1, 500)
            offset = int(_first(query, "pageToken") or 0)
        except ValueError:
            return google_error(
                400, "Invalid startHistoryId, maxResults or pageToken", "invalidArgument"
            )
        if start < mailbox.history_floor or (
            start > mailbox.history_id and self.future_history_is_404
        ):
            # too old, or never issued by this mailbox (e.g. one from before a restore)
            return google_error(404, "Requested entity was not found.", "notFound")
        records = mailbox.history_since(start, query.get("historyTypes", []))
        page = records[offset : offset + size]
        body: dict[str, Any] = {"historyId": str(mailbox.history_id)}
        if page:
            body["history"] = [r.resource() for r in page]
        if offset + size < len(records):
            body["nextPageToken"] = str(offset + size)
        return 200, body

    # -- faults on the wire ---------------------------------------------------------------

    def batch_part(self, method: str, target: str, headers: dict[str, str]) -> Reply:
        """One part of a batch: an injected fault, or the call it carries."""
        with self.lock:
            self.counts["batch.parts"] += 1
        reply = self.part_fault()
        if reply is not None:
            return reply
        url = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qs(url.query)
        return self.api(method, url.path, query, headers.get("authorization"))


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _int_param(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    raw = _first(query, name)
    value = default if raw is None else int(raw)
    return max(low, min(high, value))
