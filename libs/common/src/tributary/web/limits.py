"""A bound on request bodies: larger ones get a 413 before they are read.

:class:`BodyLimit` is a pure ASGI middleware. A ``Content-Length`` above the
limit is answered at once, without reading a byte of the body; a body without
one (chunked) is counted while it streams in and refused as soon as it passes
the limit. Either way the app never holds more than ``limit`` bytes of it.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tributary.config import DEFAULT_MAX_BODY_BYTES
from tributary.web.errors import error_response

TOO_LARGE = 413


class BodyTooLarge(HTTPException):
    """Raised by the counting ``receive`` once the body passes the limit.

    An HTTPException, so that an app reading the body itself answers 413 too.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(TOO_LARGE, f"request body larger than {limit} bytes")


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, if it sent a valid one."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 (in the one error shape)."""

    def __init__(self, app: ASGIApp, limit: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = declared_length(scope)
        if length is not None and length > self.limit:
            await self._refuse(scope, receive, send)
            return
        started = False

        async def counting_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, self._counting(receive), counting_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    def _counting(self, receive: Receive) -> Receive:
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        return counted

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The connection stays open: the server discards what the client still sends
        # (uvicorn drops body bytes that come after the answer, holding none of them).
        # Closing it instead would reset it under a client still writing, and most
        # clients would then report a broken connection instead of this 413.
        message = f"request body larger than {self.limit} bytes (HTTP_MAX_BODY_BYTES)"
        await error_response(TOO_LARGE, message)(scope, receive, send)
