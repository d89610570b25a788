"""``python -m traffic_sync once`` exits 1, with one line on stderr, when its flush failed
(issue 20); in process, with the batch's apply made to fail."""

from __future__ import annotations

import logging

import pytest
import redis

from traffic_sync.counters import TrafficKeys
from traffic_sync.flush import Flusher
from traffic_sync.service import SERVICE
from tributary.cli import EXIT_FAILED, main

from .test_process import hincr


def test_once_exits_1_when_a_batch_was_not_applied(
    root_logging: logging.Logger,
    env: dict[str, str],
    sync_redis: redis.Redis,
    tkeys: TrafficKeys,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LOG_LEVEL", "CRITICAL")
    hincr(sync_redis, tkeys, 1, 10, 20)
    assert main(SERVICE, ["once"]) == 0

    def refuse(self: Flusher, batch: object) -> None:
        raise RuntimeError("the database refused the batch")

    monkeypatch.setattr(Flusher, "apply", refuse)
    hincr(sync_redis, tkeys, 2, 1, 1)
    assert main(SERVICE, ["once"]) == EXIT_FAILED
    said = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("{")]
    assert said == [
        "traffic_sync: flush not done in full: 1 batch(es) not applied "
        "(kept in Redis for the next flush), 0 applied"
    ]
