"""Running ``python -m traffic_sync`` as a real subprocess in tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

Launcher = Callable[..., subprocess.Popen[str]]


def service_env(redis_url: str, database_url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAFFIC_SYNC_", "OTEL_"))}
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        STREAM_PREFIX=prefix,
        HTTP_PORT="0",
        CONSUMER_NAME="traffic-sync-0",
        SHUTDOWN_TIMEOUT_SECONDS="15",
        LOG_LEVEL="WARNING",
    )
    return env


def launch(env: dict[str, str], *args: str, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "traffic_sync", *(args or ("run",))],
        env={**env, **extra},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(
    condition: Callable[[], bool], proc: subprocess.Popen[str] | None, seconds: float
) -> None:
    """Poll ``condition`` until it holds; fail early if the process died."""
    deadline = time.monotonic() + seconds
    while not condition():
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"service exited with {proc.returncode}: {err[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {seconds}s")
        time.sleep(0.02)
