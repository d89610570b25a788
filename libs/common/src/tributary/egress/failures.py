"""What a failed request to a user-given URL is recorded as: one fixed word.

Never the response body and never the exception's text: a service that stores
or shows either can be used to read other services' answers, and an error
message that differs by port ("connection refused" against "timed out") to
scan ports. Every way of not getting an HTTP answer from the peer (refused,
reset, unreachable, no route, a connect that times out, TLS or protocol
failures) is ``connect-failed``; ``timeout`` is a peer that accepted the
connection and then did not answer within the bound.
"""

from __future__ import annotations

from typing import Final

import httpx

from tributary.egress.policy import RefusedUrl
from tributary.egress.transport import AddressRefusedAtConnect

REFUSED_ADDRESS: Final = "refused-address"
CONNECT_FAILED: Final = "connect-failed"
TIMEOUT: Final = "timeout"
TOO_LARGE: Final = "too-large"
REDIRECT: Final = "redirect"
HTTP_STATUS: Final = "http-status"
#: every failure class, for docs and tests
FAILURES: Final = (REFUSED_ADDRESS, CONNECT_FAILED, TIMEOUT, TOO_LARGE, REDIRECT, HTTP_STATUS)


class ResponseTooLarge(Exception):
    """The response body passed the policy's ``max_response_bytes``: reading stopped."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response body larger than {limit} bytes")
        self.limit = limit


def classify(exc: BaseException) -> str:
    """The failure class of an exception raised while sending or reading."""
    if isinstance(exc, RefusedUrl | AddressRefusedAtConnect) or isinstance(
        exc.__cause__, AddressRefusedAtConnect
    ):
        return REFUSED_ADDRESS
    if isinstance(exc, ResponseTooLarge):
        return TOO_LARGE
    if isinstance(exc, httpx.ConnectTimeout):
        return CONNECT_FAILED  # a filtered port must read like a closed one
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return TIMEOUT
    return CONNECT_FAILED


def status_failure(status_code: int) -> str | None:
    """The failure class of an HTTP status: None for 2xx; a 3xx is never followed."""
    if 200 <= status_code < 300:
        return None
    if 300 <= status_code < 400:
        return REDIRECT
    return HTTP_STATUS


async def read_bounded(response: httpx.Response, limit: int) -> bytes:
    """The (decoded) body of a streamed response, refusing to read past ``limit`` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ResponseTooLarge(limit)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise ResponseTooLarge(limit)
    return bytes(body)
