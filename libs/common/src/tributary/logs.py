"""JSON-lines logging with trace correlation and secret redaction (DESIGN.md section 5).

Every record becomes one JSON object on one line: ``time`` (RFC 3339, UTC),
``level``, ``logger``, ``message``, ``service``, ``trace_id``/``span_id`` of
the current OpenTelemetry span, ``exception`` text, and the ``extra=`` fields.

Secrets must never reach a log line, whoever wrote the message, so redaction
is done on the final strings (message, exception text, extra values) rather
than trusted to callers. :func:`redact` is the same step as a plain function.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

MASK = "***"

# scheme://user:password@host -> scheme://user:***@host (user may be empty: redis://:pw@h)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]{0,31}://[^\s:/@]*:)[^\s@/]+(?=@)")
# Authorization header values (RFC 6750 token68); the look-ahead keeps it from
# eating a following key=value pair ("Bearer max_tokens=5")
_AUTH_SCHEME = re.compile(
    r"(?P<head>\b(?:Bearer|Basic)\s+)[A-Za-z0-9\-._~+/]+=*(?![\w\-.~+/=])", re.IGNORECASE
)
# names whose values are secrets, as query/form parameters, JSON or repr fields
_SENSITIVE_NAMES = r"[\w\-]*(?:token|secret|password|passwd|api[_\-]?key)"
_SECRET_FIELD = re.compile(
    r"(?P<head>(?<![\w\-])(?P<q>[\"']?)" + _SENSITIVE_NAMES + r"(?P=q)\s*[:=]\s*[\"']?)"
    r"[^\s\"'&,;}\]]+",
    re.IGNORECASE,
)
# Google OAuth access tokens (ya29.) and refresh tokens (1//)
_GOOGLE_TOKEN = re.compile(r"\b(?P<head>ya29\.|1//)[A-Za-z0-9\-_.]{8,}")
# https URL whose first path segment looks random: an Outline apiUrl secret
_SECRET_PATH_URL = re.compile(
    r"(?P<head>\bhttps://[^\s/\"'<>]+)/(?P<segment>[A-Za-z0-9_\-]{12,})(?:[^\s\"'<>]*)"
)
# keys of extra= fields and mappings whose whole value is a secret
_SECRET_KEY = re.compile(_SENSITIVE_NAMES + r"|authorization|cookie|set-cookie", re.IGNORECASE)


def _looks_random(segment: str) -> bool:
    """At least two of upper case, lower case and digits: not a word or slug."""
    classes = (
        any(c.isupper() for c in segment),
        any(c.islower() for c in segment),
        any(c.isdigit() for c in segment),
    )
    return sum(classes) >= 2


def _mask_secret_path(match: re.Match[str]) -> str:
    if not _looks_random(match["segment"]):
        return match[0]
    return f"{match['head']}/{MASK}"


def redact(text: str) -> str:
    """``text`` with passwords, tokens and secret URL paths replaced by ``***``."""
    text = _URL_PASSWORD.sub(rf"\g<head>{MASK}", text)
    text = _AUTH_SCHEME.sub(rf"\g<head>{MASK}", text)
    text = _SECRET_FIELD.sub(rf"\g<head>{MASK}", text)
    text = _GOOGLE_TOKEN.sub(rf"\g<head>{MASK}", text)
    return _SECRET_PATH_URL.sub(_mask_secret_path, text)


def redact_value(value: Any) -> Any:
    """Redact strings inside ``value`` (mappings and sequences too); keep the rest."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _redact_item(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    return value


def _redact_item(key: str, value: Any) -> Any:
    if _SECRET_KEY.fullmatch(key) and value not in (None, ""):
        return MASK
    return redact_value(value)


#: attributes every LogRecord has; anything else on a record came from extra=
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def _rfc3339(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One redacted JSON object per record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "service": self.service,
        }
        entry.update(_trace_fields())
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        for key, value in _extras(record).items():
            # the fixed fields win; a clashing extra keeps its value under another name
            name = key if key not in entry else f"extra_{key}"
            entry[name] = _redact_item(key, value)
        return json.dumps(entry, default=_fallback, ensure_ascii=False)


def _trace_fields() -> dict[str, str]:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}


#: extras that only repeat the message for another renderer (uvicorn's coloured copy)
_DROPPED_EXTRAS = frozenset({"color_message"})


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and k not in _DROPPED_EXTRAS
    }


def _fallback(value: Any) -> str:
    """Values json cannot encode (datetimes, UUIDs, exceptions) as redacted text."""
    return redact(str(value))


class RedactingFilter(logging.Filter):
    """Redacts a record in place, for handlers that do not use :class:`JsonFormatter`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # a bad format string is the handler's to report (handleError); a
            # filter raising here would propagate into the caller's log call
            return True
        record.msg = redact(message)
        record.args = None
        for key, value in _extras(record).items():
            setattr(record, key, _redact_item(key, value))
        return True


class _TributaryHandler(logging.StreamHandler[TextIO]):
    """Marks the handler configure_logging installed, so a second call replaces it."""


def configure_logging(level: str, service: str, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record as JSON lines to ``stream`` (default: sys.stderr at call time).

    Calling it again replaces the handler it installed; handlers added by
    others (pytest's capture, for one) are left alone.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _TributaryHandler)]:
        root.removeHandler(old)
        old.close()
    handler = _TributaryHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler
