from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from tributary.logs import RedactingFilter, configure_logging, redact

LOGGER = "tributary.tests.logs"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """configure_logging into a buffer; the root logger is put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    configure_logging("DEBUG", "svc-test", stream=buffer)
    yield buffer
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "connecting to postgresql+psycopg://app:s3cr3t@db:5432/app",
            "connecting to postgresql+psycopg://app:***@db:5432/app",
        ),
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("mysql+pymysql://root:p%40ss@h/db ok", "mysql+pymysql://root:***@h/db ok"),
        ("Authorization: Bearer abc.DEF-123_x", "Authorization: Bearer ***"),
        ("authorization: bearer xxx", "authorization: bearer ***"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
        (
            "GET /cb?code=1&access_token=tok123&state=x",
            "GET /cb?code=1&access_token=***&state=x",
        ),
        ("refresh_token=1//0abc&grant_type=refresh", "refresh_token=***&grant_type=refresh"),
        ("client_secret=GOCSPX-abc123 next", "client_secret=*** next"),
        (
            '{"access_token": "tok", "expires_in": 3599, "token_type": "Bearer"}',
            '{"access_token": "***", "expires_in": 3599, "token_type": "Bearer"}',
        ),
        ('{"refresh_token":"1//0g-xyz"}', '{"refresh_token":"***"}'),
        ("{'client_secret': 'abc'}", "{'client_secret': '***'}"),
        ("password=hunter2", "password=***"),
        ("token ya29.a0AfH6SMBxyz-123_abc used", "token ya29.*** used"),
        ("refresh 1//0gAbCdEfGhIjKlMnOp-qr", "refresh 1//***"),
        (
            "outline at https://1.2.3.4:1234/AbCdEf123-_xyz failed",
            "outline at https://1.2.3.4:1234/*** failed",
        ),
        (
            '{"apiUrl":"https://outline.example:40123/XxYyZz0123456789abcd/access-keys"}',
            '{"apiUrl":"https://outline.example:40123/***"}',
        ),
    ],
)
def test_redact_scrubs_secrets(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "processed 12 events in 3.2s",
        "https://oauth2.googleapis.com/token",
        "https://gmail.googleapis.com/gmail/v1/users/me/messages",
        "https://docs.example.com/some-long-readable-page-name",
        "redis://cache:6379/0",
        "token_type=Bearer max_tokens=5",
        "user@example.com wrote: a:b",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_is_idempotent() -> None:
    once = redact("redis://:pw@h/0 Bearer abc access_token=x https://h:1/AbCdEf123456")
    assert redact(once) == once


def test_json_line_shape(stream: io.StringIO) -> None:
    logging.getLogger(LOGGER).info("hello %s", "world", extra={"stream": "orders", "count": 3})

    (entry,) = lines(stream)
    assert entry["message"] == "hello world"
    assert entry["level"] == "INFO"
    assert entry["logger"] == LOGGER
    assert entry["service"] == "svc-test"
    assert entry["stream"] == "orders"
    assert entry["count"] == 3
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert "trace_id" not in entry
    assert "span_id" not in entry


def test_message_extras_and_exception_are_redacted(stream: io.StringIO) -> None:
    log = logging.getLogger(LOGGER)
    try:
        raise ConnectionError("cannot reach redis://:hunter2@cache:6379/0")
    except ConnectionError:
        log.exception(
            "token %s",
            "Bearer sekrit",
            extra={
                "url": "postgresql://u:pw@db/x",
                "access_token": "tok-abc-123",
                "nested": ["ya29.AAAAAAAAAA"],
            },
        )

    output = stream.getvalue()
    for secret in ("hunter2", "sekrit", ":pw@", "tok-abc-123", "ya29.AAAAAAAAAA"):
        assert secret not in output
    (entry,) = lines(stream)
    assert entry["message"] == "token Bearer ***"
    assert entry["access_token"] == "***"
    assert entry["url"] == "postgresql://u:***@db/x"
    assert entry["nested"] == ["ya29.***"]
    assert entry["exception"].startswith("Traceback")
    assert "ConnectionError: cannot reach redis://:***@cache:6379/0" in entry["exception"]


def test_trace_ids_of_the_current_span(stream: io.StringIO) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        logging.getLogger(LOGGER).warning("inside")
    ctx = span.get_span_context()

    (entry,) = lines(stream)
    assert entry["trace_id"] == f"{ctx.trace_id:032x}"
    assert entry["span_id"] == f"{ctx.span_id:016x}"
    assert re.fullmatch(r"[0-9a-f]{32}", entry["trace_id"])
    assert re.fullmatch(r"[0-9a-f]{16}", entry["span_id"])


def test_extras_do_not_replace_fixed_fields(stream: io.StringIO) -> None:
    logging.getLogger(LOGGER).info("x", extra={"service": "imposter", "when": object()})

    (entry,) = lines(stream)
    assert entry["service"] == "svc-test"
    assert entry["extra_service"] == "imposter"
    assert entry["when"].startswith("<object object")


def test_reconfiguring_replaces_the_handler(stream: io.StringIO) -> None:
    second = io.StringIO()
    configure_logging("INFO", "svc-test", stream=second)
    configure_logging("INFO", "svc-test", stream=second)

    logging.getLogger(LOGGER).info("once")
    logging.getLogger(LOGGER).debug("below the level")

    assert stream.getvalue() == ""
    assert [e["message"] for e in lines(second)] == ["once"]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD", "svc-test", stream=io.StringIO())


def test_redacting_filter_for_other_handlers() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(RedactingFilter())
    log = logging.getLogger(f"{LOGGER}.plain")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("dsn %s", "postgresql://u:pw@db/x")
    finally:
        log.removeHandler(handler)
        log.propagate = True

    assert buffer.getvalue() == "dsn postgresql://u:***@db/x\n"
