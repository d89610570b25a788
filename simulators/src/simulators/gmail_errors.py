"""Error bodies as Google's APIs send them, in the shapes the real Gmail API uses.

Every shape has ``error.code``, ``error.message`` and ``error.status``; they differ
in where the machine-readable reason is:

- ``classic``: ``errors: [{"domain", "reason", "message"}]`` (the shape the Gmail
  guide documents, e.g. ``usageLimits``/``userRateLimitExceeded``);
- ``error_info``: the same plus ``details: [{"@type": ...ErrorInfo, "reason":
  "RATE_LIMIT_EXCEEDED", ...}]``, as the quota system sends it. The Python client's
  ``HttpError.error_details`` then holds ``details`` and hides ``errors``;
- ``message_only``: no ``errors`` and no ``details``, only the text ("Quota exceeded
  for quota metric 'Queries' ..."): ``error_details`` is that string.
"""

from __future__ import annotations

from typing import Any, Literal

ErrorStyle = Literal["classic", "error_info", "message_only"]

STATUS_TEXT = {
    400: ("Bad Request", "INVALID_ARGUMENT"),
    401: ("Unauthorized", "UNAUTHENTICATED"),
    403: ("Forbidden", "PERMISSION_DENIED"),
    404: ("Not Found", "NOT_FOUND"),
    429: ("Too Many Requests", "RESOURCE_EXHAUSTED"),
    500: ("Internal Server Error", "INTERNAL"),
    502: ("Bad Gateway", "UNAVAILABLE"),
    503: ("Service Unavailable", "UNAVAILABLE"),
}
#: errors[].reason -> ErrorInfo.reason, for the reasons that have one
ERROR_INFO_REASONS = {
    "rateLimitExceeded": "RATE_LIMIT_EXCEEDED",
    "userRateLimitExceeded": "RATE_LIMIT_EXCEEDED",
    "insufficientPermissions": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
}
#: the text Google's quota system puts in a per-user rate-limit error
QUOTA_MESSAGE = (
    "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user' "
    "of service 'gmail.googleapis.com' for consumer 'project_number:000000000000'."
)

Reply = tuple[int, dict[str, Any]]


def google_error(
    code: int,
    message: str,
    reason: str,
    domain: str = "global",
    style: ErrorStyle = "classic",
) -> Reply:
    """An error reply (status, body) in one of the shapes Google sends."""
    status = STATUS_TEXT.get(code, ("Error", "UNKNOWN"))[1]
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if style != "message_only":
        body["errors"] = [{"message": message, "domain": domain, "reason": reason}]
    if style == "error_info":
        body["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": ERROR_INFO_REASONS.get(reason, reason.upper()),
                "domain": "googleapis.com",
                "metadata": {"service": "gmail.googleapis.com"},
            }
        ]
    return code, {"error": body}
