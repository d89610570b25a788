"""Request text the stores cannot keep is refused with 422 before any route sees it.

PostgreSQL text and JSONB cannot hold NUL (``\\u0000``) and nothing encodes an
unpaired surrogate (``\\udcff``) as UTF-8, so a request carrying either in its
path, its query or anywhere in its JSON body (keys too) would fail deep inside
a route with a 500, or poison a stream. :class:`TextGuard` checks them all,
once, for every route, and names the field.

The body is read whole (a :class:`~tributary.web.limits.BodyLimit` outside
bounds it) and handed on unchanged. It is parsed only when its bytes could
hold such a character, so an ordinary body costs one regular expression scan.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tributary.web.errors import invalid_request

#: characters no request text may carry
BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")
#: bytes of a JSON body that may decode to such a character: a \u0000 or \uD8xx..\uDFxx
#: escape, or a surrogate encoded raw (json.loads lets those through)
MAYBE_BAD_JSON = re.compile(rb"\\u0000|\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
Location = tuple[str | int, ...]


def problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None."""
    found = BAD_CHARACTER.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "must not contain NUL characters"
    return "must not contain unpaired surrogates"


def _strings(value: Any, loc: Location) -> Iterator[tuple[Location, str]]:
    """Every string of a parsed JSON document (keys too) with where it is; iterative,
    so that a deeply nested body cannot exhaust the stack."""
    queue: deque[tuple[Location, Any]] = deque([(loc, value)])
    while queue:
        where, item = queue.popleft()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            for key, child in item.items():
                yield (*where, key), key
                queue.append(((*where, key), child))
        elif isinstance(item, list):
            queue.extend(((*where, i), child) for i, child in enumerate(item))


def body_errors(body: bytes) -> list[dict[str, Any]]:
    """The strings of a JSON body that cannot be stored (none for a body that is not JSON:
    the route reports that)."""
    if not MAYBE_BAD_JSON.search(body):
        return []
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return []
    return _errors(_strings(document, ("body",)))


def _errors(strings: Iterator[tuple[Location, str]]) -> list[dict[str, Any]]:
    found = []
    for loc, text in strings:
        why = problem(text)
        if why is not None:
            found.append({"loc": list(loc), "msg": why, "type": "string_unstorable"})
    return found


def _query_strings(scope: Scope) -> Iterator[tuple[Location, str]]:
    # decoded as Starlette decodes it: percent escapes as UTF-8, errors replaced
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        yield ("query", name), name
        yield ("query", name), value


def url_errors(scope: Scope) -> list[dict[str, Any]]:
    """The parts of the path and query that cannot be stored."""
    strings = [(("path",), str(scope.get("path", ""))), *_query_strings(scope)]
    return _errors(iter(strings))


async def read_body(receive: Receive) -> tuple[bytes, list[Message]]:
    """The whole body, and the messages that carried it (to hand on as they came)."""
    chunks: list[bytes] = []
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks), messages


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives ``messages`` first, then whatever ``receive`` gives."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


class TextGuard:
    """422 for NUL or an unpaired surrogate in the path, the query or the JSON body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        errors = url_errors(scope)
        if errors:
            await invalid_request(errors)(scope, receive, send)
            return
        body, messages = await read_body(receive)
        errors = body_errors(body)
        if errors:
            await invalid_request(errors)(scope, receive, send)
            return
        await self.app(scope, replay(messages, receive), send)
