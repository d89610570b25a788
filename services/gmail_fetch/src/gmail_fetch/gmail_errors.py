"""What a failed Gmail call means: retry it later, give up, or a refused token refresh.

Google's error bodies come in several shapes (``{"error": {"code", "message",
"errors": [{"domain", "reason", "message"}], "status"}}``, the same with
``details: [ErrorInfo]``, or only ``code``/``message``/``status``), and the client
library's ``HttpError.error_details`` holds whichever of ``details``, ``errors`` or
``message`` comes first. So the body is read here, whole: a 403 is a rate limit
(retried like a 429) when any part of it says so, and a permission error otherwise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.auth import exceptions as auth_exceptions
from googleapiclient.errors import HttpError

from gmail_fetch.errors import AuthorizationRevoked, PermanentJobError, TransientJobError

#: errors[].reason (Gmail) and ErrorInfo.reason (Google's quota system) of a rate limit
RATE_LIMIT_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"}
)
#: token endpoint error codes (RFC 6749 5.2) that no retry can change
OAUTH_REFUSALS = frozenset(
    {"invalid_client", "unauthorized_client", "invalid_scope", "unsupported_grant_type"}
)
#: how the quota system words a rate limit when the body carries no reason
QUOTA_MESSAGE_PREFIX = "Quota exceeded for quota metric"
#: "User-rate limit exceeded.  Retry after 2023-03-07T18:03:15.961Z" (per-user limits)
RETRY_AFTER = re.compile(r"Retry after (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)")


@dataclass(frozen=True)
class ApiError:
    """The parts of a Google error reply that decide what to do about it."""

    status: int
    message: str
    reasons: frozenset[str]
    rpc_status: str = ""

    @classmethod
    def of(cls, exc: HttpError) -> ApiError:
        body = _error_body(exc.content)
        reasons = {
            str(item["reason"])
            for key in ("errors", "details")
            for item in _dicts(body.get(key))
            if item.get("reason")
        }
        message = body.get("message")
        return cls(
            status=int(exc.status_code),
            message=message if isinstance(message, str) else str(exc.reason or ""),
            reasons=frozenset(reasons),
            rpc_status=str(body.get("status") or ""),
        )

    @property
    def rate_limited(self) -> bool:
        return (
            self.status == 429
            or bool(self.reasons & RATE_LIMIT_REASONS)
            or self.rpc_status == "RESOURCE_EXHAUSTED"
            or self.message.startswith(QUOTA_MESSAGE_PREFIX)
        )

    @property
    def retryable(self) -> bool:
        """429, 5xx, rate limits (403 included), a 401 that survived a refresh."""
        return self.status == 401 or self.status >= 500 or self.rate_limited

    def retry_after(self, now: float) -> float:
        """Seconds until the time the message says to retry after (0: none said)."""
        found = RETRY_AFTER.search(self.message)
        if found is None:
            return 0.0
        when = datetime.fromisoformat(found.group(1).replace("Z", "+00:00"))
        return max(0.0, when.timestamp() - now)

    def describe(self) -> str:
        reasons = ",".join(sorted(self.reasons))
        return f"HTTP {self.status} {self.message}" + (f" ({reasons})" if reasons else "")


def _error_body(content: bytes | str | None) -> dict[str, Any]:
    try:
        data = json.loads(content or b"")
    except (TypeError, ValueError):
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a failed call."""
    if isinstance(exc, HttpError):
        return ApiError.of(exc).describe()
    return f"{type(exc).__name__}: {exc}"


def auth_failure(exc: auth_exceptions.RefreshError) -> Exception:
    """A failed token refresh: permanent only when the OAuth server refused the grant
    or the client (RFC 6749 error codes); an outage (a 502, an HTML page) is retried."""
    text = str(exc.args[0]) if exc.args else str(exc)
    data = exc.args[1] if len(exc.args) > 1 else None
    code = data.get("error") if isinstance(data, dict) else None
    if code == "invalid_grant" or (code is None and "invalid_grant" in text):
        return AuthorizationRevoked(
            "Gmail access was revoked or expired (invalid_grant); the user must authorize "
            "the account again"
        )
    if code in OAUTH_REFUSALS and not exc.retryable:
        return PermanentJobError(f"OAuth token refresh refused: {text}")
    return TransientJobError(f"OAuth token refresh failed, will retry: {text}")
