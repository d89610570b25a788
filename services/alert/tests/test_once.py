"""``python -m alert once`` (the dry run) exits 1 with one line on stderr when it could not
do its work (issue 20), here because Redis cannot be reached; no traceback, no secret."""

from __future__ import annotations

import logging

import pytest

from alert.service import SERVICE
from tributary.cli import EXIT_FAILED, main


def test_once_that_cannot_read_its_streams_exits_1_with_one_line(
    root_logging: logging.Logger,
    postgres_url: str,
    pg_schema: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    monkeypatch.setenv("DB_SCHEMA", pg_schema)
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")
    monkeypatch.setenv("LOG_LEVEL", "CRITICAL")
    assert main(SERVICE, ["once"]) == EXIT_FAILED
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if not line.startswith("{")]
    assert len(said) == 1, err
    assert said[0].startswith("alert: once failed: ConnectionError")
    assert "hunter2" not in err
