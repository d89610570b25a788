"""One error body for every 4xx answer and the 503s, and the handlers that produce it.

Every error is ``{"message": "...", "detail": [{"loc", "msg", "type"}, ...]}``:
``message`` says what is wrong in one line, ``detail`` lists the bad fields
(empty when no field is to blame). Nothing the client sent is echoed besides
what a message names: no ``input``, no ``ctx``, and the body is bounded
(:data:`MAX_ERROR_BYTES`) however many fields were wrong or however long.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from tributary.logs import redact

log = logging.getLogger(__name__)

#: bound on an error body, in bytes of JSON: fields past it are left out
MAX_ERROR_BYTES = 4096
#: bound on the message, in characters
MAX_MESSAGE_CHARS = 500
#: bound on one field's msg, in characters
MAX_ITEM_CHARS = 200
#: bound on one part of a field's location (a dict key may be anything), in characters
MAX_LOC_CHARS = 64
#: parts of a location kept
MAX_LOC_DEPTH = 8
#: the exceptions that mean a store is unreachable: the client may try again (503)
UNAVAILABLE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
#: statuses that carry no body
BODILESS = (204, 304)


class ErrorItem(BaseModel):
    """One bad field: where it is, what is wrong, a stable error type."""

    loc: list[str | int] = Field(description="Where: body, query, path or header, then names.")
    msg: str = Field(description="What is wrong.")
    type: str = Field(description="A stable error type, e.g. missing, string_too_long.")


class ErrorBody(BaseModel):
    """The body of every 4xx answer and of the 503 of an unreachable store."""

    message: str = Field(description="What is wrong, in one line.")
    detail: list[ErrorItem] = Field(description="The bad fields (empty: none in particular).")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode())


def _item(loc: Iterable[Any], msg: str, kind: str) -> dict[str, Any]:
    parts = [p if isinstance(p, int) else _clip(str(p), MAX_LOC_CHARS) for p in loc]
    return {
        "loc": parts[:MAX_LOC_DEPTH],
        "msg": _clip(msg, MAX_ITEM_CHARS),
        "type": _clip(kind, MAX_LOC_CHARS),
    }


def error_body(message: str, items: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The bounded error body: items (``loc``, ``msg``, ``type``) past the budget are left out."""
    detail: list[dict[str, Any]] = []
    body = {"message": _clip(message, MAX_MESSAGE_CHARS), "detail": detail}
    size = _size(body)
    for raw in items:
        item = _item(raw.get("loc", ()), str(raw.get("msg", "invalid")), str(raw.get("type", "")))
        size += _size(item) + 1
        if size > MAX_ERROR_BYTES:
            break
        detail.append(item)
    return body


def error_response(
    status: int,
    message: str,
    items: Iterable[Mapping[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An error answer in the one shape (no body where the status allows none)."""
    if status in BODILESS:
        return Response(status_code=status, headers=headers)
    return JSONResponse(status_code=status, content=error_body(message, items), headers=headers)


def describe(item: Mapping[str, Any]) -> str:
    """``loc: msg`` of one validation error (malformed JSON said plainly)."""
    loc = list(item.get("loc", ()))
    if item.get("type") == "json_invalid":
        # FastAPI puts the character offset in loc; say what is wrong instead
        reason = item.get("ctx", {}).get("error", "malformed")
        return f"body: invalid JSON ({reason} at character {loc[-1] if loc else 0})"
    where = ".".join(_clip(str(part), MAX_LOC_CHARS) for part in loc)
    msg = str(item.get("msg", "invalid"))
    return f"{where}: {msg}" if where else msg


def invalid_request(items: Sequence[Mapping[str, Any]]) -> Response:
    """422 naming every bad field (as far as the body bound allows), never its value."""
    message = "invalid request: " + "; ".join(describe(e) for e in items[:20])
    return error_response(422, message, items)


async def _validation_error(request: Request, exc: Exception) -> Response:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return invalid_request(list(errors))


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        raise exc
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return error_response(exc.status_code, message, headers=exc.headers)


async def _unavailable(request: Request, exc: Exception) -> Response:
    log.warning(
        "%s %s: store unavailable: %s",
        request.method,
        request.url.path,
        redact(f"{type(exc).__name__}: {exc}".splitlines()[0]),
    )
    return error_response(503, "a database or Redis is unavailable, try again later")


def install_error_handlers(app: FastAPI) -> None:
    """Every 4xx in the one shape; an unreachable store is a 503, not a 500."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    for exc in UNAVAILABLE:
        app.add_exception_handler(exc, _unavailable)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route that answers these error codes (documented as ErrorBody)."""
    return {code: {"model": ErrorBody, "description": HTTPStatus(code).phrase} for code in codes}
